//! Load generator: Kafka → `Pipeline` → local sessions, against a real broker
//! (`CHATCORE_TEST_KAFKA`, started by `scripts/services.sh up`).
//!
//! Not a criterion bench: a plain `main` on a tokio multi-thread runtime that measures two things.
//!
//! - **Backlog**: `EVENTS` Debezium-shaped records are produced to a fresh topic and
//!   acknowledged by the broker *before* the consumer starts; then a `Pipeline` over a
//!   `KafkaChangeSource` (new consumer group, `auto.offset.reset=earliest`) drains them. Reported:
//!   events per second from the first to the last frame a session dequeued (the maximum consume
//!   rate), and from the pipeline's start (which includes joining the group).
//! - **Paced**: the pipeline runs first on another fresh topic; once a probe record has come
//!   through (the group is joined and fetching), another `EVENTS` records are produced at
//!   `PACED_RATE` per second. The latency of each record is the time from the producer call
//!   (`FutureProducer::send_result`, which enqueues it in librdkafka) to the moment the session's
//!   receiver task dequeues its frame. Reported: p50/p90/p99/max, and events per second from the
//!   first send to the last receive.
//!
//! The pipeline is assembled like the `Harness` of `chatcore-kafka/tests/kafka.rs`: `ChatHandler`
//! (default: chat frame and receiver notification), a `Deduplicator` over an
//! `InMemoryEventStore`, an `InProcessForwarder` over two `LocalSocketRegistry`s, and the default
//! `PipelineConfig` (32 lanes). One session per conversation is registered on the chat tier (none
//! on the notification tier, so the notification frame is encoded and broadcast to nobody). Each
//! session is a `session_channel` whose queue can hold every message of the run, drained by its own
//! task that timestamps each frame and keeps it; frames are decoded only after the run.
//!
//! Records are keyed by `stream_id` (so a conversation stays on one of the `PARTITIONS`
//! partitions), spread round-robin over `CONVERSATIONS` conversations, and produced by one
//! `FutureProducer` (`acks=all`, idempotent, `linger.ms=1`).
//!
//! At the end of each mode the bench asserts that every session received exactly the messages of
//! its conversation, each once and in the order produced, with nothing else; that the pipeline
//! counted every event as a success, with no drop, failure or retry; and that the broker
//! acknowledged every record. A run that lost or duplicated anything panics instead of printing
//! figures.
//!
//! Without `CHATCORE_TEST_KAFKA` it prints one line and exits 0. `cargo bench` passes `--bench`;
//! without it (e.g. `cargo test --benches`) a small smoke run checks the same assertions. Other
//! arguments are ignored. `KAFKA_BENCH_EVENTS` and `KAFKA_BENCH_RATE` override the number of
//! events per mode and the paced rate; `KAFKA_BENCH_DUMP=<file>` writes one line per paced record
//! (`sent_ms latency_ms conversation`, `sent_ms` from the first send) to see when stalls happened.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chatcore::change::Op;
use chatcore::debezium::encode_change;
use chatcore::dedup::{ClaimToken, DedupConfig, Deduplicator, InMemoryEventStore};
use chatcore::forward::InProcessForwarder;
use chatcore::metrics::{DropReason, Metrics, Outcome};
use chatcore::model::{ChatMessage, NewChatMessage};
use chatcore::pipeline::{ChatHandler, Pipeline, PipelineConfig};
use chatcore::sockets::{
    session_channel, LocalSocketRegistry, SessionReceiver, SharedFrame, SocketRegistry,
};
use chatcore::store::MessageIdGenerator;
use chatcore::tier::Tier;
use chatcore_kafka::{KafkaChangeSource, KafkaPublisher, KafkaSourceConfig};
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Partitions of each topic.
const PARTITIONS: i32 = 3;
/// Conversations (streams), one session each.
const CONVERSATIONS: usize = 100;
/// Records per mode.
const EVENTS: usize = 20_000;
/// Records per second in the paced mode.
const PACED_RATE: u64 = 2_000;
/// Records per mode in the smoke run (no `--bench`).
const SMOKE_EVENTS: usize = 400;
/// The producer's `linger.ms`.
const LINGER_MS: &str = "1";
/// The consumer name the pipeline counts under.
const CONSUMER: &str = "chat";
/// Longest wait for a mode's records to arrive.
const WAIT: Duration = Duration::from_secs(120);
/// How long to keep listening after the last expected frame, so a duplicate would be caught.
const GRACE: Duration = Duration::from_millis(500);

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let Some(bootstrap) = std::env::var("CHATCORE_TEST_KAFKA")
        .ok()
        .filter(|s| !s.is_empty())
    else {
        println!(
            "kafka_pipeline: CHATCORE_TEST_KAFKA is not set; run `eval \"$(scripts/services.sh up)\"` first (skipped)"
        );
        return;
    };
    let bench = args.iter().any(|a| a == "--bench");
    let events = env_number("KAFKA_BENCH_EVENTS")
        .map(|n| n as usize)
        .unwrap_or(if bench { EVENTS } else { SMOKE_EVENTS });
    let rate = env_number("KAFKA_BENCH_RATE").unwrap_or(PACED_RATE).max(1);
    assert!(events >= 2, "KAFKA_BENCH_EVENTS: at least 2");
    if !bench {
        println!("kafka_pipeline: smoke run (no --bench): {events} events per mode");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        println!(
            "kafka_pipeline: broker {bootstrap}, {PARTITIONS} partitions, {CONVERSATIONS} conversations, {} lanes, {} runtime workers",
            PipelineConfig::default().lanes,
            runtime_workers(),
        );
        backlog(&bootstrap, events).await;
        paced(&bootstrap, events, rate).await;
    });
}

fn env_number(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value}: not a number")),
    )
}

fn runtime_workers() -> usize {
    tokio::runtime::Handle::current().metrics().num_workers()
}

/// Pre-produced backlog: the maximum consume rate.
async fn backlog(bootstrap: &str, events: usize) {
    let topic = create_topic(bootstrap).await;
    let producer = producer(bootstrap);
    let mut ids = MessageIdGenerator::default();
    let streams = conversations();
    let outgoing = workload(&mut ids, &streams, events);

    let produce_start = Instant::now();
    let mut deliveries = Vec::with_capacity(outgoing.len());
    for out in &outgoing {
        deliveries.push(enqueue(&producer, &topic, out).await);
    }
    await_deliveries(deliveries).await;
    let produce_time = produce_start.elapsed();

    let started = Instant::now();
    let consumer = Consumer::start(bootstrap, &topic, &streams, events);
    consumer.wait_for(events as u64).await;
    let run = consumer.finish().await;
    let received = verify(&outgoing, &run, streams.len());

    let first = received.iter().min().copied().expect("events > 0");
    let last = received.iter().max().copied().expect("events > 0");
    let steady = last.duration_since(first);
    let overall = last.duration_since(started);
    println!(
        "backlog: {events} records (value {} bytes on average) produced and acknowledged in {:.2} s ({:.0}/s), then consumed",
        outgoing.iter().map(|o| o.value.len()).sum::<usize>() / events,
        produce_time.as_secs_f64(),
        events as f64 / produce_time.as_secs_f64(),
    );
    println!(
        "backlog: {:.0} events/s first→last frame ({:.3} s); {:.0} events/s from pipeline start ({:.3} s, first frame after {} ms)",
        (events - 1) as f64 / steady.as_secs_f64(),
        steady.as_secs_f64(),
        events as f64 / overall.as_secs_f64(),
        overall.as_secs_f64(),
        first.duration_since(started).as_millis(),
    );
}

/// Paced production while the pipeline runs: produce-to-socket latency.
async fn paced(bootstrap: &str, events: usize, rate: u64) {
    let topic = create_topic(bootstrap).await;
    let producer = producer(bootstrap);
    let mut ids = MessageIdGenerator::default();
    let mut streams = conversations();
    let mut outgoing = workload(&mut ids, &streams, events);
    // The probe conversation: records sent until one arrives, so timing starts once the group is
    // joined and fetching.
    let probe_stream = streams.len();
    streams.push(("probe-a".to_owned(), "probe-b".to_owned()));

    let consumer = Consumer::start(bootstrap, &topic, &streams, events);
    let probing = Instant::now();
    let mut deliveries = Vec::new();
    while consumer.received() == 0 {
        assert!(
            probing.elapsed() < WAIT,
            "no probe came through in {WAIT:?}"
        );
        let probe = outbound(
            &mut ids,
            &streams,
            probe_stream,
            outgoing.len(),
            format!("probe {}", outgoing.len() - events),
        );
        deliveries.push(enqueue(&producer, &topic, &probe).await);
        outgoing.push(probe);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let probes = outgoing.len() - events;
    let probe_wait = probing.elapsed();

    let period = Duration::from_secs_f64(1.0 / rate as f64);
    let start = tokio::time::Instant::now();
    let mut sent_at = Vec::with_capacity(events);
    for (i, out) in outgoing[..events].iter().enumerate() {
        let due = start + period * u32::try_from(i).expect("events fit u32");
        if tokio::time::Instant::now() < due {
            tokio::time::sleep_until(due).await;
        }
        sent_at.push(Instant::now());
        deliveries.push(enqueue(&producer, &topic, out).await);
    }
    let last_send = Instant::now();
    await_deliveries(deliveries).await;
    consumer.wait_for((events + probes) as u64).await;
    let run = consumer.finish().await;
    let received = verify(&outgoing, &run, streams.len());

    let mut latencies: Vec<Duration> = sent_at
        .iter()
        .zip(&received[..events])
        .map(|(sent, got)| got.saturating_duration_since(*sent))
        .collect();
    if let Ok(path) = std::env::var("KAFKA_BENCH_DUMP") {
        let lines: String = sent_at
            .iter()
            .zip(&latencies)
            .zip(&outgoing[..events])
            .map(|((sent, latency), out)| {
                format!(
                    "{:.3} {:.3} {}\n",
                    sent.duration_since(sent_at[0]).as_secs_f64() * 1e3,
                    latency.as_secs_f64() * 1e3,
                    out.conversation,
                )
            })
            .collect();
        std::fs::write(&path, lines).expect("write KAFKA_BENCH_DUMP");
        println!("paced: per-record `sent_ms latency_ms conversation` written to {path}");
    }
    latencies.sort_unstable();
    let first_send = sent_at[0];
    let last_receive = received[..events]
        .iter()
        .max()
        .copied()
        .expect("events > 0");
    println!(
        "paced: {events} events at {rate}/s (sent at {:.0}/s; {probes} probe(s) first, {} ms until one arrived)",
        (events - 1) as f64 / last_send.duration_since(first_send).as_secs_f64().max(1e-9),
        probe_wait.as_millis(),
    );
    println!(
        "paced: {:.0} events/s first send→last frame; latency p50 {} p90 {} p99 {} max {}",
        events as f64 / last_receive.duration_since(first_send).as_secs_f64(),
        millis(percentile(&latencies, 0.50)),
        millis(percentile(&latencies, 0.90)),
        millis(percentile(&latencies, 0.99)),
        millis(*latencies.last().expect("events > 0")),
    );
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn millis(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// A record to produce: its message, its conversation and its Debezium value.
struct Outgoing {
    conversation: usize,
    index: usize,
    message: ChatMessage,
    value: String,
}

/// The participants of each conversation.
fn conversations() -> Vec<(String, String)> {
    (0..CONVERSATIONS)
        .map(|c| (format!("user-a{c}"), format!("user-b{c}")))
        .collect()
}

/// `events` messages, round-robin over the conversations.
fn workload(
    ids: &mut MessageIdGenerator,
    streams: &[(String, String)],
    events: usize,
) -> Vec<Outgoing> {
    (0..events)
        .map(|i| {
            let conversation = i % streams.len();
            outbound(
                ids,
                streams,
                conversation,
                i,
                format!("message {i} in conversation {conversation} of the kafka_pipeline load"),
            )
        })
        .collect()
}

fn outbound(
    ids: &mut MessageIdGenerator,
    streams: &[(String, String)],
    conversation: usize,
    index: usize,
    content: String,
) -> Outgoing {
    let (sender, receiver) = &streams[conversation];
    let message = NewChatMessage {
        content,
        sender_id: sender.clone(),
        receiver_id: Some(receiver.clone()),
        stream_id: None,
    }
    .validate(65_536)
    .expect("valid message")
    .into_stored(ids.next_id(), chrono::Utc::now());
    let document = serde_json::to_value(&message).expect("json");
    let value =
        encode_change(Op::Create, "chat_db", "chat", Some(&document), now_millis()).to_string();
    Outgoing {
        conversation,
        index,
        message,
        value,
    }
}

fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

async fn create_topic(bootstrap: &str) -> String {
    let name = format!("bench-kafka-pipeline-{}", ClaimToken::unique().as_str());
    KafkaPublisher::new(bootstrap, "chat_db")
        .expect("publisher")
        .ensure_topic(&name, PARTITIONS)
        .await
        .expect("topic created");
    name
}

fn producer(bootstrap: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", LINGER_MS)
        .set("message.timeout.ms", "30000")
        .create()
        .expect("producer")
}

/// Hands one record to librdkafka (waiting while its queue is full).
async fn enqueue(producer: &FutureProducer, topic: &str, out: &Outgoing) -> DeliveryFuture {
    let mut record = FutureRecord::to(topic)
        .key(out.message.stream_id.as_str())
        .payload(out.value.as_str());
    loop {
        match producer.send_result(record) {
            Ok(delivery) => return delivery,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err((error, _)) => panic!("produce to {topic}: {error}"),
        }
    }
}

/// Every record was acknowledged by the broker.
async fn await_deliveries(deliveries: Vec<DeliveryFuture>) {
    for delivery in futures::future::join_all(deliveries).await {
        if let Err((error, _)) = delivery.expect("delivery report") {
            panic!("record not delivered: {error}");
        }
    }
}

/// A frame as a session's receiver task dequeued it.
struct Received {
    at: Instant,
    frame: SharedFrame,
}

/// A running pipeline with one drained session per conversation.
struct Consumer {
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    pipeline: JoinHandle<()>,
    stop_drains: CancellationToken,
    drains: Vec<JoinHandle<Vec<Received>>>,
    received: Arc<AtomicU64>,
}

/// What a finished consumer saw.
struct RunResult {
    metrics: Arc<Metrics>,
    sessions: Vec<Vec<Received>>,
}

impl Consumer {
    fn start(bootstrap: &str, topic: &str, streams: &[(String, String)], events: usize) -> Self {
        let metrics = Arc::new(Metrics::new());
        let chat = Arc::new(LocalSocketRegistry::new(Tier::Chat, metrics.clone()));
        let notifications = Arc::new(LocalSocketRegistry::new(
            Tier::Notifications,
            metrics.clone(),
        ));
        let received = Arc::new(AtomicU64::new(0));
        let stop_drains = CancellationToken::new();
        let mut drains = Vec::with_capacity(streams.len());
        for (a, b) in streams {
            let stream_id = chatcore::stream_id::stream_id(a, b);
            // Room for every message of the run (and for the paced mode's probes), so a broadcast
            // never finds a queue full.
            let (handle, receiver) = session_channel(events + 4096);
            assert!(chat.register(&stream_id, handle), "session registered");
            drains.push(tokio::spawn(drain(
                receiver,
                stop_drains.clone(),
                received.clone(),
            )));
        }
        let source = KafkaChangeSource::new(KafkaSourceConfig::new(
            bootstrap,
            topic,
            format!("bench-group-{}", ClaimToken::unique().as_str()),
        ))
        .expect("kafka source");
        let dedup = Deduplicator::new(
            Arc::new(InMemoryEventStore::new()),
            DedupConfig::default(),
            metrics.clone(),
        );
        let pipeline = Pipeline::new(
            Arc::new(source),
            Arc::new(ChatHandler::default()),
            dedup,
            Arc::new(InProcessForwarder::new(chat, notifications)),
            PipelineConfig {
                name: CONSUMER.to_owned(),
                ..PipelineConfig::default()
            },
            metrics.clone(),
        );
        let shutdown = CancellationToken::new();
        let pipeline = tokio::spawn(pipeline.run(shutdown.clone()));
        Self {
            metrics,
            shutdown,
            pipeline,
            stop_drains,
            drains,
            received,
        }
    }

    fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Until the sessions have dequeued `total` frames.
    async fn wait_for(&self, total: u64) {
        let deadline = Instant::now() + WAIT;
        while self.received() < total {
            assert!(
                Instant::now() < deadline,
                "only {} of {total} frames arrived in {WAIT:?} (events: {} ok, {} failed)",
                self.received(),
                self.metrics.event_count(CONSUMER, Outcome::Success),
                self.metrics.event_count(CONSUMER, Outcome::Failed),
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Listens a little longer for strays, then stops the pipeline and the sessions.
    async fn finish(self) -> RunResult {
        tokio::time::sleep(GRACE).await;
        self.shutdown.cancel();
        tokio::time::timeout(WAIT, self.pipeline)
            .await
            .expect("pipeline stops")
            .expect("pipeline task");
        self.stop_drains.cancel();
        let mut sessions = Vec::with_capacity(self.drains.len());
        for drain in self.drains {
            sessions.push(drain.await.expect("drain task"));
        }
        RunResult {
            metrics: self.metrics,
            sessions,
        }
    }
}

/// A session's receiver task: timestamps and keeps every frame until told to stop.
async fn drain(
    mut receiver: SessionReceiver,
    stop: CancellationToken,
    count: Arc<AtomicU64>,
) -> Vec<Received> {
    let mut frames = Vec::new();
    loop {
        tokio::select! {
            biased;
            frame = receiver.outbound.recv() => match frame {
                Some(frame) => {
                    frames.push(Received { at: Instant::now(), frame });
                    count.fetch_add(1, Ordering::Relaxed);
                }
                None => break,
            },
            () = stop.cancelled() => break,
        }
    }
    frames
}

/// Asserts exactly-once, in-order delivery of `outgoing` to the sessions and a clean pipeline;
/// returns the receive time of each record, by index.
fn verify(outgoing: &[Outgoing], run: &RunResult, streams: usize) -> Vec<Instant> {
    let metrics = &run.metrics;
    let total = outgoing.len() as u64;
    assert_eq!(
        metrics.event_count(CONSUMER, Outcome::Success),
        total,
        "every event processed successfully"
    );
    assert_eq!(metrics.event_count(CONSUMER, Outcome::Failed), 0);
    for reason in [
        DropReason::Duplicate,
        DropReason::InvalidFormat,
        DropReason::IgnoredOp,
        DropReason::Throttled,
    ] {
        assert_eq!(
            metrics.dropped_count(CONSUMER, reason),
            0,
            "no event dropped as {reason:?}"
        );
    }
    let retries = metrics.retry_count(CONSUMER);
    assert_eq!(retries, 0, "no delivery retried");

    let mut expected: Vec<Vec<&Outgoing>> = (0..streams).map(|_| Vec::new()).collect();
    for out in outgoing {
        expected[out.conversation].push(out);
    }
    let mut received_at: Vec<Option<Instant>> = vec![None; outgoing.len()];
    assert_eq!(run.sessions.len(), streams);
    for (conversation, (frames, expected)) in run.sessions.iter().zip(&expected).enumerate() {
        assert_eq!(
            frames.len(),
            expected.len(),
            "conversation {conversation}: frame count"
        );
        for (position, (got, want)) in frames.iter().zip(expected).enumerate() {
            let message: ChatMessage =
                serde_json::from_str(&got.frame.text).expect("a chat message frame");
            assert_eq!(
                message, want.message,
                "conversation {conversation}, message {position}: exactly once, in order"
            );
            received_at[want.index] = Some(got.at);
        }
    }
    received_at
        .into_iter()
        .map(|at| at.expect("every record received"))
        .collect()
}
