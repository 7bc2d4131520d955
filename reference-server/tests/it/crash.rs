//! Crash safety of the durable embedded default, with real processes: `chat-server` on
//! `STORE=sqlite` takes 2 000 POSTs at full speed from 16 connections and is killed with SIGKILL
//! at a random moment, several rounds on the same `DATA_DIR`. After each restart every message
//! that got a 201 is in history exactly once and in each connection's sending order, nothing is
//! stored that was never sent, a socket resuming with `since=` its last frame gets everything
//! after it exactly once, and the change events left unacknowledged at the kill are delivered
//! and acknowledged (the feed drains). A second `chat-server` on a `DATA_DIR` in use exits 1 with
//! one line.

use crate::common;
use crate::processes;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chatcore::stream_id::stream_id;
use chatcore_sqlite::{SqliteBackend, SqliteConfig};
use common::Ws;
use processes::{await_http_ok, free_port, Process};
use serde_json::{json, Value};

const ROUNDS: usize = 3;
const MESSAGES: usize = 2000;
const CONNECTIONS: usize = 16;
const CONVERSATIONS: usize = 4;
const WAIT: Duration = Duration::from_secs(30);

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_chat-server"))
}

/// A random number in `0..bound` from the standard library's per-process random keys.
fn random_below(bound: usize) -> usize {
    use std::hash::{BuildHasher, Hasher};
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    (random % bound as u64) as usize
}

fn participants(conversation: usize) -> (String, String) {
    (format!("alice{conversation}"), format!("bob{conversation}"))
}

struct Server {
    process: Process,
    base: String,
    ws_base: String,
}

async fn start(http: &reqwest::Client, data_dir: &Path, logs: &Path, name: &str) -> Server {
    let port = free_port();
    let env: Vec<(String, String)> = [
        ("STORE", "sqlite".to_owned()),
        ("DATA_DIR", data_dir.display().to_string()),
        ("LISTEN_ADDR", format!("127.0.0.1:{port}")),
        ("POST_RATE_LIMIT_PER_SECOND", "0".to_owned()),
        ("LOG_LEVEL", "warn".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let mut process = Process::spawn(name, binary(), &[], &env, logs);
    let base = format!("http://127.0.0.1:{port}");
    await_http_ok(http, &format!("{base}/readyz"), &mut process).await;
    Server {
        process,
        base,
        ws_base: format!("ws://127.0.0.1:{port}"),
    }
}

async fn subscribe(server: &Server, conversation: usize, since: Option<&str>) -> Ws {
    let (a, b) = participants(conversation);
    let mut url = format!(
        "{}/chat/subscribe?stream_id={}&sender_id={a}&receiver_id={b}",
        server.ws_base,
        stream_id(&a, &b)
    );
    if let Some(since) = since {
        url.push_str(&format!("&since={since}"));
    }
    let (socket, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
        .await
        .expect("connect in time")
        .expect("handshake");
    Ws(socket)
}

/// The whole history of a conversation, paged with `since`.
async fn history(http: &reqwest::Client, server: &Server, conversation: usize) -> Vec<Value> {
    let (a, b) = participants(conversation);
    let mut all: Vec<Value> = Vec::new();
    loop {
        let mut url = format!(
            "{}/chat/messages?stream_id={}&limit=500",
            server.base,
            stream_id(&a, &b)
        );
        if let Some(last) = all.last() {
            url.push_str(&format!(
                "&since={}",
                last["message_id"].as_str().expect("id")
            ));
        }
        let body: Value = http
            .get(url)
            .send()
            .await
            .expect("history")
            .json()
            .await
            .expect("json");
        let page = body["messages"].as_array().cloned().expect("messages");
        if page.is_empty() {
            return all;
        }
        all.extend(page);
    }
}

/// What the posting clients saw.
#[derive(Default)]
struct Sent {
    /// Every content a POST was attempted with.
    attempted: HashSet<String>,
    /// Message ids of the 201s, per connection in sending order.
    acknowledged: HashMap<usize, Vec<String>>,
}

/// Posts up to [`MESSAGES`] from [`CONNECTIONS`] connections until the server dies; `kill_at`
/// 201s in, the server is killed with SIGKILL while the others keep posting.
async fn post_until_killed(server: &mut Server, round: usize, sent: &Arc<Mutex<Sent>>) {
    let kill_at = 100 + random_below(MESSAGES - 200);
    let attempts = Arc::new(AtomicUsize::new(0));
    let acked = Arc::new(AtomicUsize::new(0));
    let mut posters = Vec::new();
    for connection in 0..CONNECTIONS {
        let (attempts, acked, sent) = (attempts.clone(), acked.clone(), sent.clone());
        let base = server.base.clone();
        posters.push(tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .build()
                .expect("client");
            let (a, b) = participants(connection % CONVERSATIONS);
            while attempts.fetch_add(1, Ordering::SeqCst) < MESSAGES {
                let content = format!("r{round}-c{connection}-{}", random_below(usize::MAX));
                sent.lock().unwrap().attempted.insert(content.clone());
                let response = http
                    .post(format!("{base}/chat/messages"))
                    .json(&json!({"content": content, "sender_id": a, "receiver_id": b}))
                    .send()
                    .await;
                let Ok(response) = response else { return };
                if response.status() != 201 {
                    return;
                }
                let Ok(body) = response.json::<Value>().await else {
                    return;
                };
                assert_eq!(body["content"], content.as_str());
                let id = body["message_id"].as_str().expect("id").to_owned();
                sent.lock()
                    .unwrap()
                    .acknowledged
                    .entry(connection)
                    .or_default()
                    .push(id);
                acked.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while acked.load(Ordering::SeqCst) < kill_at {
        assert!(tokio::time::Instant::now() < deadline, "POSTs too slow");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    server.process.kill().await;
    for poster in posters {
        poster.await.expect("poster");
    }
    eprintln!(
        "round {round}: killed after {} 201s of {} attempts",
        acked.load(Ordering::SeqCst),
        attempts.load(Ordering::SeqCst).min(MESSAGES)
    );
}

/// Collects a socket's frames until it closes.
fn record(mut socket: Ws) -> tokio::task::JoinHandle<Vec<Value>> {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    tokio::spawn(async move {
        let mut frames = Vec::new();
        while let Some(Ok(message)) = socket.0.next().await {
            if let Message::Text(text) = message {
                frames.push(serde_json::from_str(&text).expect("frame is JSON"));
            }
        }
        frames
    })
}

fn id(message: &Value) -> &str {
    message["message_id"].as_str().expect("message_id")
}

/// Events the file holds that the change handler has not acknowledged.
async fn unacknowledged(data_dir: &Path) -> u64 {
    let backend = SqliteBackend::open(SqliteConfig::new(data_dir))
        .await
        .expect("open the file of the killed server");
    backend.retained().await.expect("count")
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_no_acknowledged_message_and_resumes_without_gaps() {
    let root = TempDir(common::temp_data_dir());
    let data_dir = root.0.join("data");
    let logs = root.0.join("logs");
    std::fs::create_dir_all(&logs).expect("logs dir");
    let http = reqwest::Client::new();
    let sent = Arc::new(Mutex::new(Sent::default()));
    let mut last_seen: Vec<Option<String>> = vec![None; CONVERSATIONS];
    let mut undelivered_at_kills = 0;
    for round in 0..ROUNDS {
        let mut server = start(&http, &data_dir, &logs, &format!("round{round}")).await;
        let mut recorders = Vec::new();
        for (conversation, since) in last_seen.iter().enumerate() {
            recorders.push(record(
                subscribe(&server, conversation, since.as_deref()).await,
            ));
        }
        post_until_killed(&mut server, round, &sent).await;
        for (conversation, recorder) in recorders.into_iter().enumerate() {
            let frames = tokio::time::timeout(WAIT, recorder)
                .await
                .expect("socket ends with the process")
                .expect("recorder");
            let ids: Vec<&str> = frames.iter().map(id).collect();
            assert!(
                ids.windows(2).all(|w| w[0] < w[1]),
                "frames in order, each once"
            );
            if let Some(last) = frames.last() {
                last_seen[conversation] = Some(id(last).to_owned());
            }
        }
        undelivered_at_kills += unacknowledged(&data_dir).await;

        let mut restarted = start(&http, &data_dir, &logs, &format!("round{round}-restart")).await;
        check_history(&http, &restarted, &sent).await;
        for (conversation, since) in last_seen.iter_mut().enumerate() {
            let stored = history(&http, &restarted, conversation).await;
            let expected: Vec<&Value> = stored
                .iter()
                .filter(|m| since.as_deref().is_none_or(|s| id(m) > s))
                .collect();
            let mut socket = subscribe(&restarted, conversation, since.as_deref()).await;
            for message in &expected {
                assert_eq!(&&socket.next_json().await, message, "resumed in order");
            }
            let (a, b) = participants(conversation);
            let sentinel: Value = http
                .post(format!("{}/chat/messages", restarted.base))
                .json(&json!({"content": "sentinel", "sender_id": a, "receiver_id": b}))
                .send()
                .await
                .expect("post")
                .json()
                .await
                .expect("json");
            assert_eq!(socket.next_json().await, sentinel, "nothing twice");
            *since = Some(id(&sentinel).to_owned());
        }
        let status = restarted.process.terminate(WAIT).await;
        assert!(status.success(), "graceful stop: {status}");
        assert_eq!(
            unacknowledged(&data_dir).await,
            0,
            "after the restart every event is delivered and acknowledged"
        );
    }
    assert!(
        undelivered_at_kills > 0,
        "the kills left events to deliver after the restart"
    );
}

/// Every 201 is stored once, in each connection's order; nothing unsent is stored.
async fn check_history(http: &reqwest::Client, server: &Server, sent: &Mutex<Sent>) {
    let mut stored_ids = HashSet::new();
    let mut position = HashMap::new();
    for conversation in 0..CONVERSATIONS {
        let messages = history(http, server, conversation).await;
        let ids: Vec<&str> = messages.iter().map(id).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "history ascending");
        let sent = sent.lock().unwrap();
        for (index, message) in messages.iter().enumerate() {
            let content = message["content"].as_str().expect("content");
            assert!(
                content == "sentinel" || sent.attempted.contains(content),
                "{content} was never sent"
            );
            assert!(stored_ids.insert(id(message).to_owned()), "stored once");
            position.insert(id(message).to_owned(), (conversation, index));
        }
    }
    let sent = sent.lock().unwrap();
    for ids in sent.acknowledged.values() {
        let places: Vec<_> = ids
            .iter()
            .map(|id| {
                *position
                    .get(id)
                    .unwrap_or_else(|| panic!("201'd {id} lost"))
            })
            .collect();
        assert!(
            places.windows(2).all(|w| w[0] < w[1]),
            "a connection's messages in the order it sent them"
        );
    }
}

#[tokio::test]
async fn a_second_chat_server_on_the_same_data_dir_exits_1_with_one_line() {
    let root = TempDir(common::temp_data_dir());
    let data_dir = root.0.join("data");
    let logs = root.0.join("logs");
    std::fs::create_dir_all(&logs).expect("logs dir");
    let http = reqwest::Client::new();
    let mut first = start(&http, &data_dir, &logs, "first").await;
    let second = tokio::process::Command::new(binary())
        .env_clear()
        .env("DATA_DIR", &data_dir)
        .env("LISTEN_ADDR", format!("127.0.0.1:{}", free_port()))
        .output()
        .await
        .expect("second");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("chat-server: DATA_DIR: ")
            && stderr.contains("in use by another process"),
        "{stderr}"
    );
    first.process.assert_running();
    let status = first.process.terminate(WAIT).await;
    assert!(
        status.success(),
        "the first keeps serving and stops cleanly"
    );
}
