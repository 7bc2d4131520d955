//! Websocket clients of the topology test. Each device stays connected through nginx, records
//! every frame and the node that served each connection, and — like a real client — reconnects
//! with `since=<last message id>` whenever its connection ends, until told to stop.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

/// Header naming the node that answered.
const NODE_HEADER: &str = "x-chatcore-node";

/// `since=` for a client that has seen nothing yet: before every MongoDB id.
const BEFORE_EVERYTHING: &str = "000000000000000000000000";

/// Wait between a lost connection and the next attempt.
const RECONNECT_BACKOFF: Duration = Duration::from_millis(300);

/// One websocket connection of a device.
#[derive(Debug, Clone)]
pub struct Connection {
    /// The node nginx placed it on.
    pub node: String,
    /// When the handshake completed.
    pub opened: Instant,
}

/// What a device saw.
#[derive(Debug, Default)]
pub struct DeviceLog {
    /// Message ids in arrival order, with the index of the connection that brought each.
    pub received: Vec<(String, usize)>,
    /// Every connection, in order.
    pub connections: Vec<Connection>,
    /// Close code of the last connection's end (`None`: dropped without a close frame).
    pub last_close: Option<u16>,
    /// `read` frames of protocol 2: (reader, message id).
    pub reads: Vec<(String, String)>,
}

impl DeviceLog {
    /// The ids only.
    pub fn ids(&self) -> Vec<String> {
        self.received.iter().map(|(id, _)| id.clone()).collect()
    }
}

/// A connected client: a chat device of one conversation, or a user's notification socket.
pub struct Device {
    /// For messages, e.g. `conversation 7, bob`.
    pub label: String,
    /// Its log.
    pub log: Arc<Mutex<DeviceLog>>,
    task: JoinHandle<()>,
}

impl Device {
    /// A chat device of `sender` in the conversation with `receiver`.
    pub fn chat(ws_base: &str, sender: &str, receiver: &str, stop: CancellationToken) -> Self {
        let stream_id = chatcore::stream_id::stream_id(sender, receiver);
        let url = format!(
            "{ws_base}/chat/subscribe?stream_id={stream_id}&sender_id={sender}&receiver_id={receiver}"
        );
        Self::spawn(format!("{sender} with {receiver}"), url, true, stop)
    }

    /// A protocol-2 chat device of `user_id` in group `stream_id`; records typed `message` frames
    /// as messages and `read` frames as reads.
    pub fn group(ws_base: &str, stream_id: &str, user_id: &str, stop: CancellationToken) -> Self {
        let url =
            format!("{ws_base}/chat/subscribe?stream_id={stream_id}&user_id={user_id}&protocol=2");
        Self::spawn(format!("{user_id} in the group"), url, true, stop)
    }

    /// The notification socket of `user_id`; records the ids of chat notifications.
    pub fn notifications(ws_base: &str, user_id: &str, stop: CancellationToken) -> Self {
        let url = format!("{ws_base}/notifications/subscribe?user_id={user_id}");
        Self::spawn(format!("notifications of {user_id}"), url, false, stop)
    }

    fn spawn(label: String, url: String, resumable: bool, stop: CancellationToken) -> Self {
        let log = Arc::new(Mutex::new(DeviceLog::default()));
        let task = tokio::spawn(run(url, resumable, log.clone(), stop));
        Self { label, log, task }
    }

    /// Number of connections made so far.
    pub fn connections(&self) -> usize {
        self.log.lock().expect("log").connections.len()
    }

    /// Waits for the device's loop to end (after `stop` and the server's close).
    pub async fn finish(self, within: Duration) -> DeviceLog {
        tokio::time::timeout(within, self.task)
            .await
            .unwrap_or_else(|_| panic!("{} still connected after {within:?}", self.label))
            .expect("device task");
        Arc::try_unwrap(self.log)
            .map(|log| log.into_inner().expect("log"))
            .unwrap_or_else(|_| panic!("log still shared"))
    }
}

async fn run(url: String, resumable: bool, log: Arc<Mutex<DeviceLog>>, stop: CancellationToken) {
    loop {
        if stop.is_cancelled() {
            return;
        }
        let target = {
            let log = log.lock().expect("log");
            match (resumable, log.received.last(), log.connections.is_empty()) {
                (true, Some((last, _)), _) => format!("{url}&since={last}"),
                (true, None, false) => format!("{url}&since={BEFORE_EVERYTHING}"),
                _ => url.clone(),
            }
        };
        let (mut socket, response) = match tokio_tungstenite::connect_async(target.as_str()).await {
            Ok(connected) => connected,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let node = response
            .headers()
            .get(NODE_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("?")
            .to_owned();
        let connection = {
            let mut log = log.lock().expect("log");
            log.connections.push(Connection {
                node,
                opened: Instant::now(),
            });
            log.connections.len() - 1
        };
        let close = loop {
            match socket.next().await {
                Some(Ok(Message::Text(text))) => {
                    if let Some(read) = read_frame(&text) {
                        log.lock().expect("log").reads.push(read);
                    } else if let Some(id) = message_id(&text, resumable) {
                        log.lock().expect("log").received.push((id, connection));
                    }
                }
                Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break None,
            }
        };
        log.lock().expect("log").last_close = close;
        // A real client backs off before reconnecting; messages stored meanwhile come back
        // through the `since=` replay.
        tokio::time::sleep(RECONNECT_BACKOFF).await;
    }
}

/// The reader and message of a protocol-2 `read` frame.
fn read_frame(text: &str) -> Option<(String, String)> {
    let json: Value = serde_json::from_str(text).ok()?;
    if json["type"] != "read" {
        return None;
    }
    Some((
        json["user_id"].as_str()?.to_owned(),
        json["message_id"].as_str()?.to_owned(),
    ))
}

/// The message id of a chat frame (bare, or a protocol-2 `message` frame), or of the message
/// inside a chat notification.
fn message_id(text: &str, chat: bool) -> Option<String> {
    let json: Value = serde_json::from_str(text).ok()?;
    let message = if chat && json["type"] == "message" {
        &json["message"]
    } else if chat {
        &json
    } else {
        if json["notification_type"] != "chat_notification" {
            return None;
        }
        &json["payload"]
    };
    message["message_id"].as_str().map(str::to_owned)
}
