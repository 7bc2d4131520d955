//! `LocalSocketRegistry::broadcast` of one chat frame to 1, 100 and 10 000 sessions registered
//! under one key.
//!
//! Only the broadcasts are timed. Every session queue holds `QUEUE_CAPACITY` frames; at most that
//! many broadcasts run back to back in one timed span, then — outside the timed span — every
//! receiver is drained and the number of drained frames is checked, so a queue never fills and
//! the benchmark can never silently measure the `Full` failure path.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chatcore::forward::{Delivery, DeliveryReport};
use chatcore::metrics::Metrics;
use chatcore::model::{NewChatMessage, DEFAULT_MAX_CONTENT_BYTES};
use chatcore::sockets::{
    session_channel, Frame, LocalSocketRegistry, SessionReceiver, SocketRegistry,
};
use chatcore::tier::Tier;
use chrono::DateTime;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

/// Frames each session queue can hold; also the longest run of broadcasts between two drains.
const QUEUE_CAPACITY: usize = 64;
const SESSION_COUNTS: [usize; 3] = [1, 100, 10_000];

struct Fixture {
    registry: LocalSocketRegistry,
    receivers: Vec<SessionReceiver>,
    key: String,
    frame: Frame,
}

impl Fixture {
    fn new(sessions: usize) -> Self {
        let message = NewChatMessage {
            content: "hi, are we still on for tomorrow?".into(),
            sender_id: "user123".into(),
            receiver_id: Some("user456".into()),
            stream_id: None,
        }
        .validate(DEFAULT_MAX_CONTENT_BYTES)
        .expect("valid message")
        .into_stored(
            "6745f0a9000000000000002a".into(),
            DateTime::from_timestamp_millis(1_764_189_417_123).expect("valid timestamp"),
        );
        let key = message.stream_id.clone();
        let frame = Delivery::Chat(message).frame().expect("encodable");

        let registry = LocalSocketRegistry::new(Tier::Chat, Arc::new(Metrics::new()));
        let mut receivers = Vec::with_capacity(sessions);
        for _ in 0..sessions {
            let (handle, receiver) = session_channel(QUEUE_CAPACITY);
            assert!(registry.register(&key, handle));
            receivers.push(receiver);
        }
        assert_eq!(registry.sessions(&key), sessions);
        Self {
            registry,
            receivers,
            key,
            frame,
        }
    }

    /// Empties every session queue; returns how many frames were in them.
    fn drain(&mut self) -> usize {
        let mut frames = 0;
        for receiver in &mut self.receivers {
            while receiver.outbound.try_recv().is_ok() {
                frames += 1;
            }
        }
        frames
    }
}

fn bench_broadcast(c: &mut Criterion) {
    let mut group = c.benchmark_group("broadcast");
    for sessions in SESSION_COUNTS {
        let mut fixture = Fixture::new(sessions);
        let expected = DeliveryReport {
            delivered: sessions,
            failed: 0,
        };

        // Checked once, outside any timing: every session gets the frame, none fails.
        let report = fixture.registry.broadcast(&fixture.key, &fixture.frame);
        assert_eq!(report, expected);
        assert_eq!(fixture.drain(), sessions);

        group.throughput(Throughput::Elements(sessions as u64));
        group.bench_function(BenchmarkId::new("sessions", sessions), |b| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                let mut remaining = iters;
                while remaining > 0 {
                    let run = remaining.min(QUEUE_CAPACITY as u64);
                    let mut last = DeliveryReport::default();
                    let start = Instant::now();
                    for _ in 0..run {
                        last = black_box(
                            fixture
                                .registry
                                .broadcast(black_box(&fixture.key), black_box(&fixture.frame)),
                        );
                    }
                    timed += start.elapsed();
                    // Untimed: the last report was complete and every broadcast of the run
                    // reached every session (so no queue was ever full).
                    assert_eq!(last, expected);
                    assert_eq!(fixture.drain(), run as usize * sessions);
                    remaining -= run;
                }
                timed
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    targets = bench_broadcast
}
criterion_main!(benches);
