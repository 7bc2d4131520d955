//! The durable SQLite default against `STORE=memory`, side by side in one run: POSTs per second
//! and POST→socket latency, paced at 2 000 msg/s and at full speed, with the server's CPU and RSS.
//!
//! Not a criterion bench: a plain `main`. The server is the release `chat-server` binary
//! (`target/release/chat-server`, or `CHAT_SERVER_BIN`) in its own process, started fresh for
//! each run on a free loopback port with `STORE=sqlite` (a new temporary `DATA_DIR`, fsync on:
//! `synchronous=FULL`) or `STORE=memory`, `POST_RATE_LIMIT_PER_SECOND=0`, `LOG_LEVEL=warn`.
//! Each run: one websocket per conversation (50), one warm-up POST per conversation awaited on its
//! socket, then two phases:
//!
//! - **paced**: 2 000 POSTs/s for 4 s (8 000 POSTs), each sent on its own task at its instant;
//! - **full speed**: 8 000 POSTs from 16 client tasks with one request in flight each.
//!
//! Per phase: POSTs/s (POSTs / first request start → last 201 read), POST→socket latency p50/p99
//! (request start → frame read, matched by `message_id`), the server's CPU (utime + stime from
//! `/proc/<pid>/stat` over the phase, in % of one core) and its RSS at the end
//! (`/proc/<pid>/status` VmRSS). Every POST must arrive once on its socket, or the run panics.
//! Runs alternate memory, sqlite `RUNS` times (`SQLITE_BENCH_RUNS`, default 3); the medians are
//! printed side by side.
//!
//! `cargo bench -p chatcore-benches --bench sqlite_store` (after
//! `cargo build --release -p reference-server`). Without `--bench` it prints how to run it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chatcore::stream_id::stream_id;
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::Message;

const CONVERSATIONS: usize = 50;
const PACED_RATE: u64 = 2_000;
const PACED_SECONDS: u64 = 4;
const FULL_MESSAGES: usize = 8_000;
const FULL_IN_FLIGHT: usize = 16;

fn binary() -> PathBuf {
    std::env::var_os("CHAT_SERVER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/chat-server")
        })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

struct Server {
    child: Child,
    base: String,
    ws: String,
    data_dir: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

async fn start(store: &str, http: &reqwest::Client) -> Server {
    let port = free_port();
    let unique = chatcore::dedup::ClaimToken::unique();
    let data_dir = std::env::temp_dir().join(format!("chatcore-bench-{}", unique.as_str()));
    let child = Command::new(binary())
        .env_clear()
        .env("STORE", store)
        .env("DATA_DIR", &data_dir)
        .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("POST_RATE_LIMIT_PER_SECOND", "0")
        .env("SOCKET_QUEUE_CAPACITY", "4096")
        .env("LOG_LEVEL", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (cargo build --release -p reference-server)",
                binary().display()
            )
        });
    let server = Server {
        child,
        base: format!("http://127.0.0.1:{port}"),
        ws: format!("ws://127.0.0.1:{port}"),
        data_dir,
    };
    for _ in 0..200 {
        if let Ok(r) = http.get(format!("{}/readyz", server.base)).send().await {
            if r.status().is_success() {
                return server;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("chat-server did not become ready");
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let after_name = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 14 and 15 of the whole line are the 12th and 13th after the name.
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

fn ticks_per_second() -> f64 {
    100.0 // USER_HZ on Linux
}

/// Frames read per message id.
type Arrivals = Arc<Mutex<HashMap<String, (Instant, usize, usize)>>>;

struct Conversation {
    sender: String,
    receiver: String,
}

async fn open_sockets(server: &Server, arrivals: &Arrivals) -> Vec<Conversation> {
    let mut conversations = Vec::new();
    for i in 0..CONVERSATIONS {
        let (sender, receiver) = (format!("bench-a{i}"), format!("bench-b{i}"));
        let url = format!(
            "{}/chat/subscribe?stream_id={}&sender_id={sender}&receiver_id={receiver}",
            server.ws,
            stream_id(&sender, &receiver)
        );
        let (socket, _) = tokio_tungstenite::connect_async(url).await.expect("ws");
        let arrivals = arrivals.clone();
        tokio::spawn(async move {
            let (_sink, mut stream) = socket.split();
            while let Some(Ok(message)) = stream.next().await {
                if let Message::Text(text) = message {
                    let at = Instant::now();
                    let frame: Value = serde_json::from_str(&text).expect("json");
                    let id = frame["message_id"].as_str().expect("id").to_owned();
                    let mut arrivals = arrivals.lock().await;
                    let entry = arrivals.entry(id).or_insert((at, i, 0));
                    entry.2 += 1;
                }
            }
        });
        conversations.push(Conversation { sender, receiver });
    }
    conversations
}

/// One POST: (conversation, start, answered, message_id).
type Sent = (usize, Instant, Instant, String);

async fn post(
    http: &reqwest::Client,
    base: &str,
    conversations: &[Conversation],
    n: usize,
) -> Sent {
    let c = n % conversations.len();
    let started = Instant::now();
    let response = http
        .post(format!("{base}/chat/messages"))
        .json(&json!({"content": format!("bench {n}"), "sender_id": conversations[c].sender, "receiver_id": conversations[c].receiver}))
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.expect("json");
    let id = body["message_id"].as_str().expect("id").to_owned();
    (c, started, Instant::now(), id)
}

/// Figures of one phase.
#[derive(Debug, Clone, Copy, Default)]
struct Figures {
    posts_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    cpu_percent: f64,
    rss_mib: f64,
}

async fn settle(arrivals: &Arrivals, sent: &[Sent]) -> Vec<f64> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        {
            let arrivals = arrivals.lock().await;
            if sent.iter().all(|(_, _, _, id)| arrivals.contains_key(id)) {
                let mut latencies: Vec<f64> = sent
                    .iter()
                    .map(|(c, started, _, id)| {
                        let (at, socket, count) = arrivals[id];
                        assert_eq!(socket, *c, "delivered on its own conversation");
                        assert_eq!(count, 1, "delivered once");
                        at.saturating_duration_since(*started).as_secs_f64() * 1000.0
                    })
                    .collect();
                latencies.sort_by(f64::total_cmp);
                return latencies;
            }
        }
        assert!(Instant::now() < deadline, "frames missing after 60 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn phase(
    server: &Server,
    http: &reqwest::Client,
    arrivals: &Arrivals,
    conversations: &Arc<Vec<Conversation>>,
    paced: bool,
    offset: usize,
) -> Figures {
    let pid = server.child.id();
    let cpu_before = cpu_ticks(pid);
    let began = Instant::now();
    let mut tasks = Vec::new();
    if paced {
        let total = (PACED_RATE * PACED_SECONDS) as usize;
        let interval = Duration::from_secs(1) / PACED_RATE as u32;
        for n in 0..total {
            tokio::time::sleep_until((began + interval * n as u32).into()).await;
            let (http, base, conversations) =
                (http.clone(), server.base.clone(), conversations.clone());
            tasks.push(tokio::spawn(async move {
                vec![post(&http, &base, &conversations, offset + n).await]
            }));
        }
    } else {
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        for _ in 0..FULL_IN_FLIGHT {
            let (http, base, conversations, next) = (
                http.clone(),
                server.base.clone(),
                conversations.clone(),
                next.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let mut out = Vec::new();
                loop {
                    let n = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    if n >= FULL_MESSAGES {
                        return out;
                    }
                    out.push(post(&http, &base, &conversations, offset + n).await);
                }
            }));
        }
    }
    let mut sent = Vec::new();
    for task in tasks {
        sent.extend(task.await.expect("poster"));
    }
    let first = sent.iter().map(|s| s.1).min().expect("posts");
    let last = sent.iter().map(|s| s.2).max().expect("posts");
    let latencies = settle(arrivals, &sent).await;
    let wall = began.elapsed().as_secs_f64();
    let cpu = (cpu_ticks(pid) - cpu_before) as f64 / ticks_per_second();
    Figures {
        posts_per_second: sent.len() as f64 / (last - first).as_secs_f64(),
        p50_ms: percentile(&latencies, 0.50),
        p99_ms: percentile(&latencies, 0.99),
        cpu_percent: cpu / wall * 100.0,
        rss_mib: rss_kib(pid) as f64 / 1024.0,
    }
}

async fn run(store: &str) -> (Figures, Figures) {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .expect("client");
    let server = start(store, &http).await;
    let arrivals: Arrivals = Arc::new(Mutex::new(HashMap::new()));
    let conversations = Arc::new(open_sockets(&server, &arrivals).await);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut warm = Vec::new();
    for n in 0..CONVERSATIONS {
        warm.push(post(&http, &server.base, &conversations, 1_000_000 + n).await);
    }
    settle(&arrivals, &warm).await;
    let paced = phase(&server, &http, &arrivals, &conversations, true, 0).await;
    let full = phase(&server, &http, &arrivals, &conversations, false, 100_000).await;
    (paced, full)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn medians(runs: &[Figures]) -> Figures {
    let pick = |f: fn(&Figures) -> f64| median(runs.iter().map(f).collect());
    Figures {
        posts_per_second: pick(|f| f.posts_per_second),
        p50_ms: pick(|f| f.p50_ms),
        p99_ms: pick(|f| f.p99_ms),
        cpu_percent: pick(|f| f.cpu_percent),
        rss_mib: pick(|f| f.rss_mib),
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("sqlite_store: run with `cargo bench -p chatcore-benches --bench sqlite_store`");
        return;
    }
    let runs: usize = std::env::var("SQLITE_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let mut results: HashMap<&str, (Vec<Figures>, Vec<Figures>)> = HashMap::new();
    for round in 0..runs {
        for store in ["memory", "sqlite"] {
            let (paced, full) = runtime.block_on(run(store));
            println!("run {round} {store:6}  paced {paced:?}\n              full  {full:?}");
            let entry = results.entry(store).or_default();
            entry.0.push(paced);
            entry.1.push(full);
        }
    }
    println!("\nmedians of {runs} runs (server process: CPU in % of one core, RSS at the end)");
    println!("| store | phase | POSTs/s | POST→socket p50 | p99 | server CPU | server RSS |");
    println!("| --- | --- | ---: | ---: | ---: | ---: | ---: |");
    for store in ["memory", "sqlite"] {
        let (paced, full) = &results[store];
        for (name, figures) in [
            ("2 000/s paced", medians(paced)),
            ("full speed, 16 in flight", medians(full)),
        ] {
            println!(
                "| {store} | {name} | {:.0} | {:.2} ms | {:.2} ms | {:.0} % | {:.1} MiB |",
                figures.posts_per_second,
                figures.p50_ms,
                figures.p99_ms,
                figures.cpu_percent,
                figures.rss_mib
            );
        }
    }
}
