//! The write path of one chat message before it reaches a store or a socket:
//! `NewChatMessage::validate`, `ValidMessage::into_stored`, `serde_json::to_string` of the
//! `ChatMessage`, and the websocket frame encoding `Delivery::Chat(..).frame()`.

use std::hint::black_box;
use std::time::Duration;

use chatcore::forward::Delivery;
use chatcore::model::{ChatMessage, NewChatMessage, DEFAULT_MAX_CONTENT_BYTES};
use chatcore::stream_id::stream_id;
use chrono::{DateTime, Utc};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};

/// A message id in the shape the in-memory store assigns (8 + 16 hex chars).
const MESSAGE_ID: &str = "6745f0a9000000000000002a";
const SENDER: &str = "user123";
const RECEIVER: &str = "user456";

fn new_message(content: String) -> NewChatMessage {
    NewChatMessage {
        content,
        sender_id: SENDER.into(),
        receiver_id: Some(RECEIVER.into()),
        // Supplied, so validation also compares it with the recomputed one.
        stream_id: Some(stream_id(SENDER, RECEIVER)),
    }
}

/// Plain ASCII prose of exactly `len` bytes (no characters that JSON has to escape).
fn prose(len: usize) -> String {
    const WORDS: &str = "Lorem ipsum dolor sit amet, consectetur adipiscing elit. ";
    WORDS.chars().cycle().take(len).collect()
}

fn bench_size(c: &mut Criterion, label: &str, content: String) {
    let created_at: DateTime<Utc> =
        DateTime::from_timestamp_millis(1_764_189_417_123).expect("valid timestamp");
    let message = new_message(content);
    let valid = message
        .clone()
        .validate(DEFAULT_MAX_CONTENT_BYTES)
        .expect("benchmark message is valid");
    let stored: ChatMessage = valid.clone().into_stored(MESSAGE_ID.into(), created_at);
    let json = serde_json::to_string(&stored).expect("serializable");
    assert_eq!(
        serde_json::from_str::<ChatMessage>(&json).expect("round-trips"),
        stored
    );
    let delivery = Delivery::Chat(stored.clone());
    let frame = delivery.frame().expect("encodable");
    assert_eq!(frame.text.as_str(), json);

    let mut group = c.benchmark_group(format!("validate_serialize/{label}"));

    // Inputs are cloned in the untimed setup; outputs are dropped outside the timed part.
    group.bench_function("validate", |b| {
        b.iter_batched(
            || message.clone(),
            |m| m.validate(black_box(DEFAULT_MAX_CONTENT_BYTES)),
            BatchSize::SmallInput,
        )
    });

    group.bench_function("to_string", |b| {
        b.iter(|| serde_json::to_string(black_box(&stored)))
    });

    group.bench_function("validate+into_stored+to_string", |b| {
        b.iter_batched(
            || (message.clone(), String::from(MESSAGE_ID)),
            |(m, id)| {
                let stored = m
                    .validate(black_box(DEFAULT_MAX_CONTENT_BYTES))
                    .expect("valid")
                    .into_stored(id, black_box(created_at));
                serde_json::to_string(&stored)
            },
            BatchSize::SmallInput,
        )
    });

    group.bench_function("delivery_frame", |b| {
        b.iter(|| black_box(&delivery).frame())
    });

    group.finish();
}

fn bench_validate_serialize(c: &mut Criterion) {
    bench_size(c, "short", "hi, are we still on for tomorrow?".into());
    bench_size(c, "10KB", prose(10 * 1024));
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = bench_validate_serialize
}
criterion_main!(benches);
