//! Websocket load generator against `chat-server` binaries run as their own processes: memory
//! per idle socket, and CPU and latency per delivered frame in fan-out.
//!
//! Not a criterion bench: a plain `main`. Each `--server NAME=PATH` is a `chat-server` binary
//! (e.g. a build of an older commit next to the current one); every round runs each workload on
//! each server in turn, so before and after share the machine's conditions, and the medians over
//! the rounds are printed at the end, one line per figure. A server is started for every
//! workload in role `all` (`STORE=memory`: the in-memory store and its own change feed), with the internal routes on a
//! second listener, `AUTH_MODE=none`, no per-user socket cap and no post rate limit, pings every
//! `PING_INTERVAL` (5 s here, so heartbeats run during the idle measurement).
//!
//! Workloads (all sizes are flags):
//!
//! - `idle-chat` / `idle-notifications`: opens `--idle` sockets (one conversation or user each)
//!   on `/chat/subscribe` or `/notifications/subscribe`, every client reading (so it answers the
//!   server's pings), waits two ping intervals and reads `VmRSS` from `/proc/<pid>/status`.
//!   Reported: (RSS after − RSS before the sockets) / sockets.
//! - `fanout SxK`: S conversations × K sockets each; 100 forwards per conversation
//!   (`POST /chat/forward-to-websocket` on the internal listener, a `ChatMessage` with a
//!   300-byte content) by 32 client tasks, each owning a share of the conversations, so one
//!   conversation has one forward in flight and its frames have one order. Reported: frames/s
//!   (frames / first forward → last frame), forward→frame latency p50/p99/max, lost frames, and
//!   server CPU (utime+stime from `/proc/<pid>/stat`, same window) per delivered frame.
//! - `large`: 8 conversations × 2 sockets, 20 forwards each of 64 KiB content, all conversations
//!   at once: checks every frame arrives whole (exactly the forwarded JSON) and in order.
//! - `e2e`: 50 conversations, one socket each; `POST /chat/messages` paced at `--rate` per
//!   second for `--seconds` (each POST its own task, so the pace does not wait for answers).
//!   Reported: POST→frame latency p50/p99/max.
//!
//! Every delivered frame is checked: a fan-out frame must be its conversation's next forward,
//! byte for byte; a run that lost, duplicated, reordered or corrupted anything reports it as
//! loss and the bench exits non-zero.
//!
//! ```sh
//! cargo run --release -p chatcore-benches --bin socket_load -- \
//!   --server before=/path/to/old/chat-server --server after=target/release/chat-server
//! ```
//!
//! Without `--server` it prints one line and exits 0.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chatcore::stream_id::stream_id;
use clap::Parser;
use futures::stream::SplitStream;
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Longest wait for a phase (connecting, the frames of a run).
const WAIT: Duration = Duration::from_secs(120);
/// Server ping interval during the runs.
const PING_INTERVAL: Duration = Duration::from_secs(5);
/// Forwards per conversation in fan-out.
const FORWARDS: usize = 100;
/// Client tasks forwarding at once.
const IN_FLIGHT: usize = 32;

#[derive(Debug, Parser)]
struct Args {
    /// `NAME=PATH` of a chat-server binary; repeat to compare.
    #[arg(long = "server")]
    servers: Vec<String>,
    /// Rounds of every workload on every server.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Sockets of the idle workloads.
    #[arg(long, default_value_t = 19_000)]
    idle: usize,
    /// Fan-out shapes, `SxK`.
    #[arg(long, value_delimiter = ',', default_value = "100x10,1000x2,100x2")]
    fanout: Vec<String>,
    /// POSTs per second of the end-to-end workload.
    #[arg(long, default_value_t = 2000)]
    rate: usize,
    /// Seconds of the end-to-end workload.
    #[arg(long, default_value_t = 5)]
    seconds: usize,
    /// Workloads to run (idle-chat, idle-notifications, fanout, large, e2e).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "idle-chat,idle-notifications,fanout,large,e2e"
    )]
    only: Vec<String>,
    /// Ignored (`cargo bench` passes it).
    #[arg(long)]
    bench: bool,
}

fn main() {
    let args = Args::parse_from(std::env::args().filter(|a| a != "--list"));
    if args.servers.is_empty() {
        println!("socket_load: pass --server NAME=PATH (a chat-server binary); nothing to do");
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let failed = runtime.block_on(run(args));
    if failed {
        std::process::exit(1);
    }
}

/// One figure of one workload on one server in one round.
type Figures = Vec<(String, f64, &'static str)>;

async fn run(args: Args) -> bool {
    let servers: Vec<(String, String)> = args
        .servers
        .iter()
        .map(|s| {
            let (name, path) = s.split_once('=').expect("--server NAME=PATH");
            (name.to_owned(), path.to_owned())
        })
        .collect();
    let mut all: HashMap<(String, String), Vec<f64>> = HashMap::new();
    let mut order: Vec<(String, &'static str)> = Vec::new();
    let mut failed = false;
    for round in 1..=args.rounds {
        for workload in workloads(&args) {
            for (name, path) in &servers {
                let figures = run_workload(path, &workload, &args).await;
                for (figure, value, unit) in figures {
                    println!("round {round} {name} {workload} {figure} {value:.2} {unit}");
                    if figure.ends_with("lost") && value > 0.0 {
                        failed = true;
                    }
                    let key = format!("{workload} {figure}");
                    if !order.iter().any(|(k, _)| *k == key) {
                        order.push((key.clone(), unit));
                    }
                    all.entry((key, name.clone())).or_default().push(value);
                }
            }
        }
    }
    println!("--- medians over {} rounds", args.rounds);
    for (key, unit) in &order {
        let mut line = format!("{key}:");
        let mut medians = Vec::new();
        for (name, _) in &servers {
            if let Some(values) = all.get_mut(&(key.clone(), name.clone())) {
                let m = median(values);
                medians.push(m);
                line.push_str(&format!(" {name} {m:.2} {unit};"));
            }
        }
        if let [first, .., last] = medians[..] {
            if first > 0.0 {
                line.push_str(&format!(" ratio last/first {:.3}", last / first));
            }
        }
        println!("{line}");
    }
    failed
}

fn workloads(args: &Args) -> Vec<String> {
    let mut out = Vec::new();
    for w in &args.only {
        if w == "fanout" {
            out.extend(args.fanout.iter().map(|f| format!("fanout-{f}")));
        } else {
            out.push(w.clone());
        }
    }
    out
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

async fn run_workload(path: &str, workload: &str, args: &Args) -> Figures {
    let server = Server::start(path).await;
    let figures = match workload {
        "idle-chat" => idle(&server, args.idle, Tier::Chat).await,
        "idle-notifications" => idle(&server, args.idle, Tier::Notifications).await,
        "large" => fanout(&server, 8, 2, 20, 64 * 1024, 8).await,
        "e2e" => e2e(&server, args.rate, args.seconds).await,
        fan => {
            let shape = fan.trim_start_matches("fanout-");
            let (s, k) = shape.split_once('x').expect("SxK");
            let (s, k) = (s.parse().expect("S"), k.parse().expect("K"));
            fanout(&server, s, k, FORWARDS, 300, IN_FLIGHT).await
        }
    };
    server.stop();
    figures
}

/// A running chat-server.
struct Server {
    child: Child,
    public: String,
    internal: String,
}

impl Server {
    async fn start(path: &str) -> Self {
        let (public, internal) = (free_port(), free_port());
        let child = Command::new(path)
            .env_clear()
            .env("LISTEN_ADDR", &public)
            .env("INTERNAL_LISTEN_ADDR", &internal)
            .env("AUTH_MODE", "none")
            .env("SOCKETS_PER_USER", "0")
            .env("POST_RATE_LIMIT_PER_SECOND", "0")
            .env("PING_INTERVAL", "5s")
            .env("PONG_WAIT", "60s")
            .env("SESSION_MAX_AGE", "0s")
            .env("LOG_LEVEL", "warn")
            // The in-memory store (builds from before the SQLite default ignore it), so the
            // figures compare the socket path, not the stores.
            .env("STORE", "memory")
            .stdout(Stdio::null())
            .spawn()
            .expect("start chat-server");
        let server = Self {
            child,
            public,
            internal,
        };
        let client = reqwest::Client::new();
        let url = format!("http://{}/healthz", server.public);
        let started = Instant::now();
        while !client
            .get(&url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            assert!(started.elapsed() < WAIT, "server did not come up");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        server
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").to_string()
}

/// Resident set size of `pid` in KiB.
fn rss_kib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS");
    line.split_whitespace()
        .nth(1)
        .expect("value")
        .parse()
        .expect("number")
}

/// utime + stime of `pid`, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let after_name = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 14 and 15 of stat(5); the slice starts at field 3.
    let ticks: f64 =
        fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime");
    ticks / clock_ticks()
}

fn clock_ticks() -> f64 {
    let out = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .expect("getconf");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(100.0)
}

#[derive(Clone, Copy)]
enum Tier {
    Chat,
    Notifications,
}

fn conversation(i: usize) -> (String, String, String) {
    let (a, b) = (format!("user{i}"), format!("peer{i}"));
    let stream = stream_id(&a, &b);
    (a, b, stream)
}

async fn connect(url: String) -> Socket {
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let (socket, _) = tokio::time::timeout(
        WAIT,
        tokio_tungstenite::connect_async_with_config(url, Some(config), true),
    )
    .await
    .expect("connect in time")
    .expect("connect");
    socket
}

fn chat_url(server: &Server, i: usize) -> String {
    let (a, b, stream) = conversation(i);
    format!(
        "ws://{}/chat/subscribe?stream_id={stream}&sender_id={a}&receiver_id={b}",
        server.public
    )
}

/// Opens `urls` with at most 256 handshakes at a time, in order.
async fn connect_all(urls: Vec<String>) -> Vec<Socket> {
    let mut sockets = Vec::with_capacity(urls.len());
    for chunk in urls.chunks(256) {
        let mut set = JoinSet::new();
        for (n, url) in chunk.iter().cloned().enumerate() {
            set.spawn(async move { (n, connect(url).await) });
        }
        let mut opened: Vec<_> = set.join_all().await;
        opened.sort_by_key(|(n, _)| *n);
        sockets.extend(opened.into_iter().map(|(_, s)| s));
    }
    sockets
}

async fn idle(server: &Server, n: usize, tier: Tier) -> Figures {
    let url = |i: usize| match tier {
        Tier::Chat => chat_url(server, i),
        Tier::Notifications => format!(
            "ws://{}/notifications/subscribe?user_id=user{i}",
            server.public
        ),
    };
    // One socket opened and closed first, so lazily built server state is not counted.
    drop(connect_all(vec![url(n + 1)]).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_kib(server.pid());
    let sockets = connect_all((0..n).map(url).collect()).await;
    let readers: Vec<_> = sockets
        .into_iter()
        .map(|socket| {
            tokio::spawn(async move {
                let (_sink, mut stream) = socket.split();
                // Reading answers the server's pings.
                while let Some(Ok(_)) = stream.next().await {}
            })
        })
        .collect();
    tokio::time::sleep(PING_INTERVAL * 2 + Duration::from_secs(1)).await;
    let after = rss_kib(server.pid());
    let open = readers.iter().filter(|r| !r.is_finished()).count();
    for reader in &readers {
        reader.abort();
    }
    vec![
        (
            "rss per socket".into(),
            (after - before) * 1024.0 / n as f64 / 1000.0,
            "KB",
        ),
        ("rss total".into(), after / 1024.0, "MiB"),
        ("sockets lost".into(), (n - open) as f64, "sockets"),
    ]
}

/// What a reader saw: receive instants and texts.
type Seen = Vec<(Instant, String)>;

fn read_all(
    mut stream: SplitStream<Socket>,
    expect: usize,
    done: Arc<AtomicUsize>,
) -> tokio::task::JoinHandle<Seen> {
    tokio::spawn(async move {
        let mut seen = Vec::with_capacity(expect);
        while seen.len() < expect {
            match tokio::time::timeout(WAIT, stream.next()).await {
                Ok(Some(Ok(Message::Text(text)))) => {
                    seen.push((Instant::now(), text.to_string()));
                    done.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Some(Ok(_))) => {}
                _ => break,
            }
        }
        seen
    })
}

/// The forward body of `seq` on conversation `stream`, as the server encodes a `ChatMessage`
/// (field order included), so a frame can be compared with it byte for byte.
fn forwarded(stream: usize, seq: usize, content_bytes: usize) -> String {
    let (a, b, stream_id) = conversation(stream);
    let mut content = format!("{seq:06} ");
    while content.len() < content_bytes {
        content.push_str("lorem ipsum ");
    }
    content.truncate(content_bytes);
    format!(
        r#"{{"message_id":"m{stream:06}{seq:06}","content":{},"created_at":"2026-12-01T00:00:00.000Z","stream_id":"{stream_id}","sender_id":"{a}","receiver_id":"{b}"}}"#,
        Value::String(content)
    )
}

async fn fanout(
    server: &Server,
    streams: usize,
    per_stream: usize,
    forwards: usize,
    content_bytes: usize,
    in_flight: usize,
) -> Figures {
    let urls = (0..streams)
        .flat_map(|s| std::iter::repeat_n(chat_url(server, s), per_stream))
        .collect();
    let sockets = connect_all(urls).await;
    let done = Arc::new(AtomicUsize::new(0));
    let readers: Vec<_> = sockets
        .into_iter()
        .map(|socket| read_all(socket.split().1, forwards, done.clone()))
        .collect();
    // The bodies, built before the clock starts.
    let bodies: Vec<Vec<String>> = (0..streams)
        .map(|s| {
            (0..forwards)
                .map(|q| forwarded(s, q, content_bytes))
                .collect()
        })
        .collect();
    let bodies = Arc::new(bodies);
    let sent_at: Arc<Mutex<Vec<Vec<Option<Instant>>>>> =
        Arc::new(Mutex::new(vec![vec![None; forwards]; streams]));
    let client = reqwest::Client::new();
    let url = format!("http://{}/chat/forward-to-websocket", server.internal);
    let cpu_before = cpu_seconds(server.pid());
    let start = Instant::now();
    let mut workers = JoinSet::new();
    for w in 0..in_flight.min(streams) {
        let (client, url, bodies, sent_at) =
            (client.clone(), url.clone(), bodies.clone(), sent_at.clone());
        workers.spawn(async move {
            for q in 0..forwards {
                for s in (w..streams).step_by(in_flight) {
                    let at = Instant::now();
                    sent_at.lock().expect("lock")[s][q] = Some(at);
                    let response = client
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(bodies[s][q].clone())
                        .send()
                        .await
                        .expect("forward");
                    assert!(
                        response.status().is_success(),
                        "forward: {}",
                        response.status()
                    );
                    let _ = response.bytes().await;
                }
            }
        });
    }
    workers.join_all().await;
    let expected = streams * per_stream * forwards;
    let deadline = Instant::now() + WAIT;
    while done.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let cpu = cpu_seconds(server.pid()) - cpu_before;
    let mut latencies = Vec::with_capacity(expected);
    let mut good = 0usize;
    let mut last = start;
    let sent_at = sent_at.lock().expect("lock").clone();
    for (n, reader) in readers.into_iter().enumerate() {
        let s = n / per_stream;
        let seen = reader.await.expect("reader");
        for (q, (at, text)) in seen.iter().enumerate() {
            // In order and whole: the q-th frame is exactly the q-th forward.
            if q < forwards && *text == bodies[s][q] {
                good += 1;
                last = last.max(*at);
                if let Some(sent) = sent_at[s][q] {
                    latencies.push(at.duration_since(sent).as_secs_f64() * 1e3);
                }
            }
        }
    }
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(f64::NAN)
    };
    let elapsed = last.duration_since(start).as_secs_f64();
    vec![
        ("frames/s".into(), good as f64 / elapsed, "frames/s"),
        ("latency p50".into(), pct(0.50), "ms"),
        ("latency p99".into(), pct(0.99), "ms"),
        (
            "latency max".into(),
            latencies.last().copied().unwrap_or(f64::NAN),
            "ms",
        ),
        ("frames lost".into(), (expected - good) as f64, "frames"),
        ("cpu per frame".into(), cpu * 1e6 / good.max(1) as f64, "us"),
    ]
}

async fn e2e(server: &Server, rate: usize, seconds: usize) -> Figures {
    const CONVERSATIONS: usize = 50;
    let total = rate * seconds;
    let sockets = connect_all((0..CONVERSATIONS).map(|i| chat_url(server, i)).collect()).await;
    let done = Arc::new(AtomicUsize::new(0));
    let readers: Vec<_> = sockets
        .into_iter()
        .enumerate()
        .map(|(i, socket)| {
            read_all(
                socket.split().1,
                total / CONVERSATIONS + usize::from(i < total % CONVERSATIONS),
                done.clone(),
            )
        })
        .collect();
    let client = reqwest::Client::new();
    let url = format!("http://{}/chat/messages", server.public);
    let sent_at = Arc::new(Mutex::new(vec![None; total]));
    let start = Instant::now();
    let mut posts = JoinSet::new();
    for n in 0..total {
        let due = start + Duration::from_secs_f64(n as f64 / rate as f64);
        tokio::time::sleep_until(due.into()).await;
        let (a, b, _) = conversation(n % CONVERSATIONS);
        let body = json!({"sender_id": a, "receiver_id": b, "content": format!("e{n}")});
        let (client, url, sent_at) = (client.clone(), url.clone(), sent_at.clone());
        posts.spawn(async move {
            sent_at.lock().expect("lock")[n] = Some(Instant::now());
            let response = client.post(&url).json(&body).send().await.expect("post");
            assert!(
                response.status().is_success(),
                "post: {}",
                response.status()
            );
        });
    }
    posts.join_all().await;
    let deadline = Instant::now() + WAIT;
    while done.load(Ordering::Relaxed) < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let sent_at = sent_at.lock().expect("lock").clone();
    let mut latencies = Vec::with_capacity(total);
    for reader in readers {
        for (at, text) in reader.await.expect("reader") {
            let message: Value = serde_json::from_str(&text).expect("json");
            let n: usize = message["content"].as_str().expect("content")[1..]
                .parse()
                .expect("n");
            if let Some(sent) = sent_at[n] {
                latencies.push(at.duration_since(sent).as_secs_f64() * 1e3);
            }
        }
    }
    latencies.sort_by(f64::total_cmp);
    let got = latencies.len();
    let pct = |p: f64| {
        latencies
            .get(((got as f64 * p) as usize).min(got.saturating_sub(1)))
            .copied()
            .unwrap_or(f64::NAN)
    };
    vec![
        ("latency p50".into(), pct(0.50), "ms"),
        ("latency p99".into(), pct(0.99), "ms"),
        (
            "latency max".into(),
            latencies.last().copied().unwrap_or(f64::NAN),
            "ms",
        ),
        ("frames lost".into(), (total - got) as f64, "frames"),
    ]
}
