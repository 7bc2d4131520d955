//! Helpers shared by the end-to-end tests: a real `chat-server` on an ephemeral loopback port,
//! an HTTP client, and websocket clients that await frames with a deadline.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use chatcore::app::ChatAppBuilder;
use chatcore::metrics::Metrics;
use chatcore::sockets::LocalSocketRegistry;
use chatcore::stream_id::stream_id;
use clap::Parser;
use futures::{SinkExt, StreamExt};
use reference_server::config::StoreKind;
use reference_server::{ServerError, Settings};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Upper bound of any single wait in these tests.
pub const WAIT: Duration = Duration::from_secs(10);

/// Settings as the environment and these flags give them. When Kafka or MongoDB is configured and
/// the flags name no topic or database, each server gets a topic, group and database of its own.
pub fn settings(flags: &[&str]) -> Settings {
    let mut args: Vec<String> = vec!["chat-server".into()];
    args.extend(flags.iter().map(|f| f.to_string()));
    let mut settings = Settings::parse_from(args);
    let named = flags.contains(&"--kafka-topic");
    if Settings::present(&settings.kafka.bootstrap_servers).is_some() && !named {
        let unique = chatcore::dedup::ClaimToken::unique();
        settings.kafka.topic = format!("e2e-{}", unique.as_str());
        settings.kafka.group = format!("e2e-group-{}", unique.as_str());
    }
    if Settings::present(&settings.mongo.uri).is_some() && !flags.contains(&"--mongo-database") {
        let unique = chatcore::dedup::ClaimToken::unique();
        settings.mongo.database = format!("e2e_{}", unique.as_str().replace('-', "_"));
    }
    // Without STORE (nor MONGO_URI) these tests run in memory; with STORE=sqlite (a
    // scripts/test.sh step) each server gets a fresh DATA_DIR of its own.
    if settings.store.kind.is_none() && Settings::present(&settings.mongo.uri).is_none() {
        settings.store.kind = Some(StoreKind::Memory);
    }
    if settings.store.kind == Some(StoreKind::Sqlite) && !flags.contains(&"--data-dir") {
        settings.store.data_dir = temp_data_dir();
    }
    settings
}

/// Prefix of the data directories [`settings`] makes; [`TestServer::stop`] removes them.
const TEMP_DATA_PREFIX: &str = "chatcore-e2e-";

/// A fresh data directory path under the system's temporary directory.
pub fn temp_data_dir() -> std::path::PathBuf {
    let unique = chatcore::dedup::ClaimToken::unique();
    std::env::temp_dir().join(format!("{TEMP_DATA_PREFIX}{}", unique.as_str()))
}

/// A running server.
pub struct TestServer {
    pub base: String,
    pub ws_base: String,
    pub http: reqwest::Client,
    pub chat_sockets: Arc<LocalSocketRegistry>,
    pub notification_sockets: Arc<LocalSocketRegistry>,
    pub metrics: Arc<Metrics>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ServerError>>,
    /// A temporary SQLite data directory to remove once stopped.
    data_dir: Option<std::path::PathBuf>,
}

impl TestServer {
    /// Starts the server with the default settings.
    pub async fn start() -> Self {
        Self::start_with(settings(&[]), |backends| backends).await
    }

    /// Starts the server with `settings` and backends adjusted by `customize`.
    pub async fn start_with(
        settings: Settings,
        customize: impl FnOnce(ChatAppBuilder) -> ChatAppBuilder,
    ) -> Self {
        let app = reference_server::build_app_with(&settings, customize)
            .await
            .expect("app");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let chat_sockets = app.chat_sockets().clone();
        let notification_sockets = app.notification_sockets().clone();
        let metrics = app.metrics().clone();
        let options = reference_server::ServeOptions::from(&settings);
        let data_dir = (settings.store_kind() == Ok(StoreKind::Sqlite)
            && settings
                .store
                .data_dir
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(TEMP_DATA_PREFIX)))
        .then(|| settings.store.data_dir.clone());
        let task = tokio::spawn(async move {
            reference_server::serve_app_with(app, listener.into(), &options, async move {
                let _ = stopped.await;
            })
            .await
        });
        Self {
            base: format!("http://{addr}"),
            ws_base: format!("ws://{addr}"),
            http: reqwest::Client::new(),
            chat_sockets,
            notification_sockets,
            metrics,
            stop: Some(stop),
            task,
            data_dir,
        }
    }

    /// POSTs a message body as JSON.
    pub async fn post_json(&self, path: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.base))
            .json(body)
            .send()
            .await
            .expect("request")
    }

    /// POSTs a chat message and returns the stored message (asserting 201).
    pub async fn send(&self, content: &str, sender: &str, receiver: &str) -> Value {
        let response = self
            .post_json(
                "/chat/messages",
                &json!({"content": content, "sender_id": sender, "receiver_id": receiver}),
            )
            .await;
        assert_eq!(response.status(), 201, "POST should store the message");
        response.json().await.expect("json")
    }

    /// GETs a path and returns status and JSON body.
    pub async fn get_json(&self, path_and_query: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}{path_and_query}", self.base))
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// The whole history of a conversation, ascending.
    pub async fn history(&self, a: &str, b: &str) -> Vec<Value> {
        let (status, body) = self
            .get_json(&format!(
                "/chat/messages?stream_id={}&limit=500",
                stream_id(a, b)
            ))
            .await;
        assert_eq!(status, 200);
        body["messages"]
            .as_array()
            .cloned()
            .expect("messages array")
    }

    /// Opens a chat subscription of the conversation between `a` and `b`.
    pub async fn subscribe_chat(&self, a: &str, b: &str, since: Option<&str>) -> Ws {
        let mut url = format!(
            "{}/chat/subscribe?stream_id={}&sender_id={a}&receiver_id={b}",
            self.ws_base,
            stream_id(a, b)
        );
        if let Some(since) = since {
            url.push_str(&format!("&since={since}"));
        }
        self.connect(&url).await
    }

    /// Opens a notification subscription of `user_id`.
    pub async fn subscribe_notifications(&self, user_id: &str) -> Ws {
        self.connect(&format!(
            "{}/notifications/subscribe?user_id={user_id}",
            self.ws_base
        ))
        .await
    }

    /// Opens a websocket on `path_and_query` (e.g. a group subscription), or returns the status
    /// the handshake was refused with.
    pub async fn try_connect(&self, path_and_query: &str) -> Result<Ws, u16> {
        let url = format!("{}{path_and_query}", self.ws_base);
        match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
            .await
            .expect("handshake in time")
        {
            Ok((stream, _)) => Ok(Ws(stream)),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                Err(response.status().as_u16())
            }
            Err(other) => panic!("websocket error: {other}"),
        }
    }

    /// Connects and waits until the session is registered, so nothing posted afterwards is missed.
    async fn connect(&self, url: &str) -> Ws {
        let (stream, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
            .await
            .expect("connect in time")
            .expect("websocket handshake");
        Ws(stream)
    }

    /// Waits until `registry` has `n` sessions under `key`.
    pub async fn await_sessions(&self, registry: &LocalSocketRegistry, key: &str, n: usize) {
        use chatcore::sockets::SocketRegistry;
        tokio::time::timeout(WAIT, async {
            while registry.sessions(key) != n {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("sessions registered in time");
    }

    /// Number of chat sessions of a stream.
    pub fn chat_sockets_count(&self, stream_id: &str) -> usize {
        use chatcore::sockets::SocketRegistry;
        self.chat_sockets.sessions(stream_id)
    }

    /// Asks the server to shut down and waits for it.
    pub async fn stop(mut self) -> Result<(), ServerError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let stopped = tokio::time::timeout(WAIT * 3, &mut self.task)
            .await
            .expect("server stops in time")
            .expect("server task");
        if let Some(dir) = self.data_dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
        stopped
    }
}

/// A websocket client.
pub struct Ws(pub WebSocketStream<MaybeTlsStream<TcpStream>>);

/// What a websocket yields next, ignoring pings and pongs.
#[derive(Debug)]
pub enum Event {
    Json(Value),
    Closed(Option<CloseFrame>),
}

impl Ws {
    /// The next text frame or close, within [`WAIT`].
    pub async fn next_event(&mut self) -> Event {
        loop {
            let message = tokio::time::timeout(WAIT, self.0.next())
                .await
                .expect("a frame in time");
            match message {
                Some(Ok(Message::Text(text))) => {
                    return Event::Json(serde_json::from_str(&text).expect("frame is JSON"))
                }
                Some(Ok(Message::Close(frame))) => return Event::Closed(frame),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Event::Closed(None),
            }
        }
    }

    /// The next JSON frame; fails on a close.
    pub async fn next_json(&mut self) -> Value {
        match self.next_event().await {
            Event::Json(value) => value,
            Event::Closed(frame) => panic!("socket closed instead of a frame: {frame:?}"),
        }
    }

    /// The close code the server sent next.
    pub async fn next_close_code(&mut self) -> Option<u16> {
        match self.next_event().await {
            Event::Closed(frame) => frame.map(|f| u16::from(f.code)),
            Event::Json(value) => panic!("expected a close, got {value}"),
        }
    }

    /// Sends a close from the client side.
    pub async fn close(mut self) {
        let _ = self.0.send(Message::Close(None)).await;
    }
}
