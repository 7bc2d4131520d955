//! End-to-end load generator: HTTP `POST /chat/messages` → store → change feed → pipeline →
//! websocket frame, through a real `chat-server` started in this process.
//!
//! Not a criterion bench: a plain `main` on a tokio multi-thread runtime. The server is
//! `reference_server::build_app_with(&settings, |b| b)` served by `reference_server::serve_app` on
//! `127.0.0.1:0`, on the same runtime as the client. `settings` come from the environment exactly
//! as `chat-server` reads them (`Settings::parse_from` with the environment), so the backend is
//! chosen by the usual variables:
//!
//! - none: the SQLite store (a fresh `DATA_DIR` per run) and its change feed, in-memory event
//!   store (embedded); `STORE=memory`: the in-memory store and its own feed;
//! - `MONGO_URI`: MongoDB store and its change stream;
//! - `MONGO_URI`, `REDIS_ADDR`, `CHAT_PERSISTENCE_CHANGE_KAFKA_BOOTSTRAP_SERVERS`: the production
//!   path, MongoDB change stream → relay → Kafka → consumer → Redis dedup → sockets.
//!
//! As in `reference-server/tests/common`, a server with MongoDB gets a database of its own
//! (`bench_…`) and a server with Kafka a topic and consumer group of their own (`bench-…`,
//! `bench-group-…`); `MONGO_DATABASE` and the topic and group variables are overridden.
//!
//! The run: one websocket per conversation on `/chat/subscribe` (`CONVERSATIONS` of them, each
//! checked to be registered on the server); a warm-up of one POST per conversation, all awaited on
//! their sockets (this includes the Kafka consumer joining its group); then `MESSAGES` POSTs,
//! round-robin over the conversations, by `IN_FLIGHT` client tasks that each send one request at a
//! time. For each POST the client records the instant before the request is built and the instant
//! its 201 body has been read; each socket's reader task records the instant a text frame is read
//! and keeps the frame, which is decoded only after the run. Reported:
//!
//! - POSTs per second: measured POSTs / (first request start → last response read);
//! - POST response latency p50/p99 (request start → body read);
//! - POST-to-socket latency p50/p90/p99/max (request start → frame read), matched by the
//!   `message_id` of the POST response; the frame can arrive before the response does;
//! - deliveries per second: measured POSTs / (first request start → last frame read).
//!
//! After the last expected frame the sockets are read for `GRACE` more, so a late duplicate would
//! be seen. Then the bench asserts that every POST (warm-up included) arrived exactly once, on its
//! own conversation's socket, as exactly the JSON the POST returned, and that no socket received
//! anything else. A run that lost, duplicated or misrouted a message panics instead of printing
//! figures.
//!
//! `cargo bench` passes `--bench`; without it (e.g. `cargo test --benches`) a small smoke run
//! checks the same assertions. Other arguments are ignored. `POST_BENCH_CONVERSATIONS`,
//! `POST_BENCH_MESSAGES` and `POST_BENCH_IN_FLIGHT` override the sizes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chatcore::dedup::ClaimToken;
use chatcore::sockets::SocketRegistry;
use chatcore::stream_id::stream_id;
use clap::Parser;
use futures::StreamExt;
use reference_server::Settings;
use serde_json::{json, Value};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_util::sync::CancellationToken;

/// Conversations, one websocket each.
const CONVERSATIONS: usize = 50;
/// Measured POSTs.
const MESSAGES: usize = 2_000;
/// Client tasks, each with one POST in flight.
const IN_FLIGHT: usize = 16;
/// Sizes of the smoke run (no `--bench`).
const SMOKE: (usize, usize, usize) = (4, 40, 4);
/// Longest wait for the frames of a phase, and for one HTTP or websocket call.
const WAIT: Duration = Duration::from_secs(60);
/// How long to keep reading after the last expected frame, so a duplicate would be caught.
const GRACE: Duration = Duration::from_millis(500);

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let bench = args.iter().any(|a| a == "--bench");
    let (smoke_c, smoke_m, smoke_f) = SMOKE;
    let sizes = Sizes {
        conversations: env_number("POST_BENCH_CONVERSATIONS").unwrap_or(if bench {
            CONVERSATIONS
        } else {
            smoke_c
        }),
        messages: env_number("POST_BENCH_MESSAGES").unwrap_or(if bench {
            MESSAGES
        } else {
            smoke_m
        }),
        in_flight: env_number("POST_BENCH_IN_FLIGHT").unwrap_or(if bench {
            IN_FLIGHT
        } else {
            smoke_f
        }),
    };
    assert!(
        sizes.conversations >= 1 && sizes.messages >= 1 && sizes.in_flight >= 1,
        "POST_BENCH_*: at least 1"
    );
    if !bench {
        println!("post_to_socket: smoke run (no --bench)");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(run(sizes));
}

fn env_number(name: &str) -> Option<usize> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value}: not a number")),
    )
}

#[derive(Debug, Clone, Copy)]
struct Sizes {
    conversations: usize,
    messages: usize,
    in_flight: usize,
}

/// Settings from the environment, with a database, topic and group of this run's own when
/// MongoDB or Kafka is configured (like `tests/common`, which does the same when no flag names
/// them), so runs never see each other's messages.
fn settings() -> Settings {
    let mut settings = Settings::parse_from(["chat-server"]);
    let unique = ClaimToken::unique();
    let unique = unique.as_str();
    if Settings::present(&settings.kafka.bootstrap_servers).is_some() {
        settings.kafka.topic = format!("bench-{unique}");
        settings.kafka.group = format!("bench-group-{unique}");
    }
    if Settings::present(&settings.mongo.uri).is_some() {
        settings.mongo.database = format!("bench_{}", unique.replace('-', "_"));
    }
    // The SQLite default gets a fresh DATA_DIR per run (left behind under the temp directory).
    settings.store.data_dir = std::env::temp_dir().join(format!("chatcore-bench-{unique}"));
    settings
}

/// One line naming the backends the settings select.
fn describe(settings: &Settings) -> String {
    let store = match settings.store_kind() {
        Ok(reference_server::config::StoreKind::Mongo) => {
            format!("MongoDB (database {})", settings.mongo.database)
        }
        Ok(reference_server::config::StoreKind::Sqlite) => {
            format!("SQLite ({})", settings.store.data_dir.display())
        }
        _ => "in memory".to_owned(),
    };
    let feed = match Settings::present(&settings.kafka.bootstrap_servers) {
        Some(bootstrap) => format!(
            "store feed → relay → Kafka {bootstrap} (topic {}, {} partitions, group {})",
            settings.kafka.topic, settings.kafka.topic_partitions, settings.kafka.group
        ),
        None => "the store's own feed".to_owned(),
    };
    let events = match Settings::present(&settings.event_store.redis_addr) {
        Some(_) => "Redis",
        None => "in memory",
    };
    format!("store {store}; change feed {feed}; event store {events}")
}

/// A conversation: its participants and stream.
struct Conversation {
    sender: String,
    receiver: String,
    stream: String,
}

/// One POST as the client saw it.
struct Sent {
    conversation: usize,
    started: Instant,
    answered: Instant,
    stored: Value,
}

/// One frame as a socket's reader saw it.
struct Received {
    at: Instant,
    text: Utf8Bytes,
}

async fn run(sizes: Sizes) {
    let settings = settings();
    let backend = describe(&settings);
    let app = reference_server::build_app_with(&settings, |backends| backends)
        .await
        .expect("server app");
    let chat_sockets = app.chat_sockets().clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(reference_server::serve_app(
        app,
        listener,
        settings.server.shutdown_timeout,
        async move {
            let _ = stopped.await;
        },
    ));
    println!(
        "post_to_socket: {backend}; {} conversations, {} POSTs, {} in flight, {} runtime workers (client and server)",
        sizes.conversations,
        sizes.messages,
        sizes.in_flight,
        tokio::runtime::Handle::current().metrics().num_workers(),
    );

    let conversations: Arc<Vec<Conversation>> = Arc::new(
        (0..sizes.conversations)
            .map(|i| {
                let sender = format!("bench-{i}-alice");
                let receiver = format!("bench-{i}-bob");
                let stream = stream_id(&sender, &receiver);
                Conversation {
                    sender,
                    receiver,
                    stream,
                }
            })
            .collect(),
    );

    // One socket per conversation, registered before the handshake completes.
    let received = Arc::new(AtomicUsize::new(0));
    let stop_reading = CancellationToken::new();
    let mut readers: Vec<JoinHandle<Vec<Received>>> = Vec::new();
    for conversation in conversations.iter() {
        let url = format!(
            "ws://{addr}/chat/subscribe?stream_id={}&sender_id={}&receiver_id={}",
            conversation.stream, conversation.sender, conversation.receiver
        );
        let (socket, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
            .await
            .expect("websocket connects in time")
            .expect("websocket handshake");
        assert_eq!(
            chat_sockets.sessions(&conversation.stream),
            1,
            "session registered"
        );
        readers.push(tokio::spawn(read_frames(
            socket,
            Arc::clone(&received),
            stop_reading.clone(),
        )));
    }

    let http = reqwest::Client::builder()
        .timeout(WAIT)
        .build()
        .expect("HTTP client");
    let base = Arc::new(format!("http://{addr}"));

    // Warm-up: one POST per conversation, every frame awaited.
    let warm_started = Instant::now();
    let warm = post_all(
        &http,
        &base,
        &conversations,
        "warm-up",
        sizes.conversations,
        sizes.in_flight,
    )
    .await;
    await_count(&received, warm.len(), "warm-up").await;
    let warm_took = warm_started.elapsed();

    // Measured run.
    let sent = post_all(
        &http,
        &base,
        &conversations,
        "message",
        sizes.messages,
        sizes.in_flight,
    )
    .await;
    await_count(&received, warm.len() + sent.len(), "measured run").await;
    tokio::time::sleep(GRACE).await;
    stop_reading.cancel();
    let mut frames = Vec::new();
    for reader in readers {
        frames.push(reader.await.expect("reader task"));
    }
    let _ = stop.send(());
    tokio::time::timeout(settings.server.shutdown_timeout + WAIT, server)
        .await
        .expect("server stops in time")
        .expect("server task")
        .expect("server ran");

    // Every POST exactly once, on its own socket, as the JSON the POST returned; nothing else.
    let by_id: HashMap<&str, &Sent> = warm
        .iter()
        .chain(&sent)
        .map(|s| (s.stored["message_id"].as_str().expect("message_id"), s))
        .collect();
    assert_eq!(
        by_id.len(),
        warm.len() + sent.len(),
        "message ids are unique"
    );
    let mut arrived: HashMap<&str, Instant> = HashMap::new();
    for (socket, socket_frames) in frames.iter().enumerate() {
        for frame in socket_frames {
            let value: Value = serde_json::from_str(frame.text.as_str()).expect("frame is JSON");
            let id = value["message_id"]
                .as_str()
                .expect("frame has a message_id");
            let Some(post) = by_id.get(id) else {
                panic!("socket {socket} received a message nobody posted: {value}");
            };
            assert_eq!(
                post.conversation, socket,
                "message {id} arrived on another conversation's socket"
            );
            assert_eq!(value, post.stored, "frame equals the stored message");
            let first = arrived.insert(by_id_key(&by_id, id), frame.at);
            assert!(first.is_none(), "message {id} arrived twice");
        }
    }
    let lost = by_id.len() - arrived.len();
    assert_eq!(lost, 0, "{lost} messages never arrived");
    println!(
        "post_to_socket: checked: {} POSTs ({} warm-up) each arrived exactly once on its conversation's socket, nothing else arrived",
        by_id.len(),
        warm.len()
    );

    report(&sent, &arrived, warm_took);
}

/// The key of `id` in `by_id`, borrowed from the map (so `arrived` outlives the frames).
fn by_id_key<'a>(by_id: &HashMap<&'a str, &Sent>, id: &str) -> &'a str {
    by_id.get_key_value(id).expect("known id").0
}

/// Reads text frames until cancelled, stamping each as it is read.
async fn read_frames(
    mut socket: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    received: Arc<AtomicUsize>,
    stop: CancellationToken,
) -> Vec<Received> {
    let mut frames = Vec::new();
    loop {
        let message = tokio::select! {
            () = stop.cancelled() => break,
            message = socket.next() => message,
        };
        match message {
            Some(Ok(Message::Text(text))) => {
                frames.push(Received {
                    at: Instant::now(),
                    text,
                });
                received.fetch_add(1, Ordering::Relaxed);
            }
            Some(Ok(Message::Close(frame))) => panic!("server closed a socket: {frame:?}"),
            Some(Ok(_)) => {}
            Some(Err(error)) => panic!("socket failed: {error}"),
            None => panic!("socket ended"),
        }
    }
    let _ = socket.close(None).await;
    frames
}

/// Waits until `expected` frames have been read in all.
async fn await_count(received: &AtomicUsize, expected: usize, phase: &str) {
    let deadline = Instant::now() + WAIT;
    while received.load(Ordering::Relaxed) < expected {
        assert!(
            Instant::now() < deadline,
            "{phase}: only {} of {expected} frames within {WAIT:?}",
            received.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Sends `count` POSTs round-robin over the conversations from `in_flight` tasks.
async fn post_all(
    http: &reqwest::Client,
    base: &Arc<String>,
    conversations: &Arc<Vec<Conversation>>,
    label: &'static str,
    count: usize,
    in_flight: usize,
) -> Vec<Sent> {
    let next = Arc::new(AtomicUsize::new(0));
    let workers: Vec<JoinHandle<Vec<Sent>>> = (0..in_flight.min(count))
        .map(|_| {
            let (http, base, conversations, next) = (
                http.clone(),
                Arc::clone(base),
                Arc::clone(conversations),
                Arc::clone(&next),
            );
            tokio::spawn(async move {
                let url = format!("{base}/chat/messages");
                let mut sent = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        return sent;
                    }
                    let index = i % conversations.len();
                    let conversation = &conversations[index];
                    let started = Instant::now();
                    let response = http
                        .post(&url)
                        .json(&json!({
                            "content": format!("{label} {i}"),
                            "sender_id": conversation.sender,
                            "receiver_id": conversation.receiver,
                        }))
                        .send()
                        .await
                        .expect("POST");
                    let status = response.status();
                    let body = response.text().await.expect("POST body");
                    let answered = Instant::now();
                    assert_eq!(status, 201, "POST stores the message: {body}");
                    let stored: Value = serde_json::from_str(&body).expect("POST body is JSON");
                    assert_eq!(stored["stream_id"], conversation.stream.as_str());
                    sent.push(Sent {
                        conversation: index,
                        started,
                        answered,
                        stored,
                    });
                }
            })
        })
        .collect();
    let mut sent = Vec::with_capacity(count);
    for worker in workers {
        sent.extend(worker.await.expect("POST task"));
    }
    sent
}

/// Nearest-rank percentile of sorted durations.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn report(sent: &[Sent], arrived: &HashMap<&str, Instant>, warm_took: Duration) {
    let first_start = sent.iter().map(|s| s.started).min().expect("a POST");
    let last_answer = sent.iter().map(|s| s.answered).max().expect("a POST");
    let mut responses: Vec<Duration> = sent.iter().map(|s| s.answered - s.started).collect();
    let mut deliveries: Vec<Duration> = Vec::with_capacity(sent.len());
    let mut last_frame = first_start;
    let mut frame_first = 0;
    for s in sent {
        let id = s.stored["message_id"].as_str().expect("message_id");
        let at = arrived[id];
        deliveries.push(at.saturating_duration_since(s.started));
        last_frame = last_frame.max(at);
        if at < s.answered {
            frame_first += 1;
        }
    }
    responses.sort();
    deliveries.sort();
    let n = sent.len() as f64;
    let posting = last_answer - first_start;
    let delivering = last_frame - first_start;
    println!(
        "post_to_socket: warm-up ({} POSTs, connect and join included) took {}",
        arrived.len() - sent.len(),
        ms(warm_took)
    );
    println!(
        "post_to_socket: POSTs/s {:.0} ({} POSTs in {}); deliveries/s {:.0} (last frame after {})",
        n / posting.as_secs_f64(),
        sent.len(),
        ms(posting),
        n / delivering.as_secs_f64(),
        ms(delivering)
    );
    println!(
        "post_to_socket: POST response latency p50 {} p99 {}",
        ms(percentile(&responses, 50.0)),
        ms(percentile(&responses, 99.0))
    );
    println!(
        "post_to_socket: POST-to-socket latency p50 {} p90 {} p99 {} max {} ({} of {} frames arrived before their POST response)",
        ms(percentile(&deliveries, 50.0)),
        ms(percentile(&deliveries, 90.0)),
        ms(percentile(&deliveries, 99.0)),
        ms(*deliveries.last().expect("a delivery")),
        frame_first,
        sent.len()
    );
}
