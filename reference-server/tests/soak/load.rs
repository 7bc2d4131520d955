//! The soak's client program: conversations whose two participants each have two devices (a
//! chat socket and a notification socket per device), steady paced posts that a failed attempt
//! retries with the same `Idempotency-Key`, and sockets that resume with `since=` after any
//! close, recording every frame with its arrival time.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

/// `since=` for a device that has seen nothing yet: before every MongoDB id.
const BEFORE_EVERYTHING: &str = "000000000000000000000000";

/// Wait between a lost connection and the next attempt (a real client's first backoff step).
const RECONNECT_BACKOFF: Duration = Duration::from_millis(300);

/// One received frame.
#[derive(Debug, Clone)]
pub struct Frame {
    /// The message id.
    pub id: String,
    /// The client's own key of the message (from its content), to find stored copies.
    pub key: String,
    /// When it arrived.
    pub at: Instant,
}

/// What a device's socket saw.
#[derive(Debug, Default)]
pub struct SocketLog {
    /// Every frame in arrival order (repeats included).
    pub frames: Vec<Frame>,
    /// Connections made.
    pub connections: usize,
    /// The newest message id received, for `since=`.
    newest: Option<String>,
    seen: std::collections::HashSet<String>,
}

impl SocketLog {
    fn record(&mut self, frame: Frame) {
        // The client's own de-duplication: a message id seen before is not "newer".
        if self.seen.insert(frame.id.clone()) {
            self.newest = Some(frame.id.clone());
        }
        self.frames.push(frame);
    }
}

/// A socket of a device: a conversation's chat socket or a user's notification socket.
pub struct Socket {
    /// e.g. `alice-3 device 1 chat`.
    pub label: String,
    /// Its log.
    pub log: Arc<Mutex<SocketLog>>,
}

impl Socket {
    /// A chat socket of `user` in the conversation with `peer`.
    pub fn chat(ws: &str, user: &str, peer: &str, device: usize, stop: &CancellationToken) -> Self {
        let stream_id = chatcore::stream_id::stream_id(user, peer);
        let url = format!(
            "{ws}/chat/subscribe?stream_id={stream_id}&sender_id={user}&receiver_id={peer}"
        );
        Self::spawn(format!("{user} device {device} chat"), url, true, stop)
    }

    /// The notification socket of `user`'s device.
    pub fn notifications(ws: &str, user: &str, device: usize, stop: &CancellationToken) -> Self {
        let url = format!("{ws}/notifications/subscribe?user_id={user}");
        Self::spawn(
            format!("{user} device {device} notifications"),
            url,
            false,
            stop,
        )
    }

    fn spawn(label: String, url: String, chat: bool, stop: &CancellationToken) -> Self {
        let log = Arc::new(Mutex::new(SocketLog::default()));
        tokio::spawn(run(url, chat, log.clone(), stop.clone()));
        Self { label, log }
    }

    /// Connections made so far.
    pub fn connections(&self) -> usize {
        self.log.lock().expect("log").connections
    }
}

async fn run(url: String, chat: bool, log: Arc<Mutex<SocketLog>>, stop: CancellationToken) {
    while !stop.is_cancelled() {
        let target = {
            let log = log.lock().expect("log");
            match (&log.newest, log.connections) {
                (Some(newest), _) if chat => format!("{url}&since={newest}"),
                (None, n) if chat && n > 0 => format!("{url}&since={BEFORE_EVERYTHING}"),
                _ => url.clone(),
            }
        };
        let connect = tokio_tungstenite::connect_async(target.as_str());
        let mut socket = tokio::select! {
            () = stop.cancelled() => return,
            connected = tokio::time::timeout(Duration::from_secs(10), connect) => match connected {
                Ok(Ok((socket, _))) => socket,
                _ => {
                    tokio::time::sleep(RECONNECT_BACKOFF).await;
                    continue;
                }
            },
        };
        log.lock().expect("log").connections += 1;
        loop {
            let next = tokio::select! {
                () = stop.cancelled() => return,
                next = socket.next() => next,
            };
            match next {
                Some(Ok(Message::Text(text))) => {
                    if let Some(frame) = frame(&text, chat) {
                        log.lock().expect("log").record(frame);
                    }
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            }
        }
        tokio::time::sleep(RECONNECT_BACKOFF).await;
    }
}

fn frame(text: &str, chat: bool) -> Option<Frame> {
    let json: Value = serde_json::from_str(text).ok()?;
    let message = if chat {
        &json
    } else if json["notification_type"] == "chat_notification" {
        &json["payload"]
    } else {
        return None;
    };
    Some(Frame {
        id: message["message_id"].as_str()?.to_owned(),
        key: key_of(message["content"].as_str()?)?.to_owned(),
        at: Instant::now(),
    })
}

/// The client key inside a message's content.
pub fn key_of(content: &str) -> Option<&str> {
    content.split_whitespace().find(|w| w.starts_with("soak-"))
}

/// One acknowledged post.
#[derive(Debug, Clone)]
pub struct Acked {
    /// The stored message's id.
    pub id: String,
    /// Its client key (also its Idempotency-Key).
    pub key: String,
    /// When the acknowledged attempt was sent.
    pub sent: Instant,
    /// Attempts it took.
    pub attempts: usize,
}

/// What one conversation's sender did.
#[derive(Debug, Default)]
pub struct SendLog {
    /// Posts started.
    pub sent: usize,
    /// Posts acknowledged (201, or 200 for a repeated key), in order.
    pub acked: Vec<Acked>,
    /// Posts given up after retrying for too long (not acknowledged: not counted as lost).
    pub abandoned: Vec<String>,
    /// Attempts that failed (5xx, reset, timeout), retried with the same key.
    pub failed_attempts: usize,
}

/// A conversation of two users, each with two devices.
pub struct Conversation {
    /// Its index.
    pub index: usize,
    /// The participants.
    pub users: [String; 2],
    /// The stream.
    pub stream_id: String,
    /// Chat sockets: both devices of both users.
    pub chat: Vec<Socket>,
    /// Notification sockets, `(user index, socket)`.
    pub notifications: Vec<(usize, Socket)>,
    /// The sender's log.
    pub sends: Arc<Mutex<SendLog>>,
}

impl Conversation {
    /// Opens the four devices of conversation `index`.
    pub fn open(index: usize, ws: &str, stop: &CancellationToken) -> Self {
        let users = [format!("soak-a{index}"), format!("soak-b{index}")];
        let stream_id = chatcore::stream_id::stream_id(&users[0], &users[1]);
        let mut chat = Vec::new();
        let mut notifications = Vec::new();
        for (u, user) in users.iter().enumerate() {
            let peer = &users[1 - u];
            for device in 0..2 {
                chat.push(Socket::chat(ws, user, peer, device, stop));
                notifications.push((u, Socket::notifications(ws, user, device, stop)));
            }
        }
        Self {
            index,
            users,
            stream_id,
            chat,
            notifications,
            sends: Arc::default(),
        }
    }

    /// Every socket of the conversation.
    pub fn sockets(&self) -> impl Iterator<Item = &Socket> {
        self.chat
            .iter()
            .chain(self.notifications.iter().map(|(_, s)| s))
    }
}

/// How long a post is retried before the client gives up on it.
const GIVE_UP_AFTER: Duration = Duration::from_secs(60);

/// Posts in conversation `index` every `every` (the first after `offset`), alternating senders,
/// until `stop`; each post is retried with its key until acknowledged.
#[allow(clippy::too_many_arguments)] // one conversation's whole load, passed by the driver
pub async fn send_paced(
    http: reqwest::Client,
    public: String,
    users: [String; 2],
    index: usize,
    sends: Arc<Mutex<SendLog>>,
    (every, offset): (Duration, Duration),
    stop: CancellationToken,
) {
    let mut ticks = tokio::time::interval_at(Instant::now() + offset, every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for n in 0.. {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let sender = n % 2;
        let key = format!("soak-{index}-{n}");
        let body = json!({
            "content": format!("message {n} of conversation {index} {key}"),
            "sender_id": users[sender],
            "receiver_id": users[1 - sender],
        });
        sends.lock().expect("sends").sent += 1;
        post_until_acked(&http, &public, &body, key, &sends).await;
    }
}

async fn post_until_acked(
    http: &reqwest::Client,
    public: &str,
    body: &Value,
    key: String,
    sends: &Mutex<SendLog>,
) {
    let first = Instant::now();
    let mut backoff = Duration::from_millis(200);
    for attempt in 1.. {
        let sent = Instant::now();
        let response = http
            .post(format!("{public}/chat/messages"))
            .header("Idempotency-Key", &key)
            .timeout(Duration::from_secs(10))
            .json(body)
            .send()
            .await;
        let stored = match response {
            Ok(r) if r.status().as_u16() == 201 || r.status().as_u16() == 200 => {
                r.json::<Value>().await.ok()
            }
            Ok(r) if r.status().is_client_error() && r.status().as_u16() != 429 => {
                panic!("POST {body} answered {}", r.status())
            }
            _ => None,
        };
        let id = stored.as_ref().and_then(|s| s["message_id"].as_str());
        {
            let mut log = sends.lock().expect("sends");
            if let Some(id) = id {
                log.acked.push(Acked {
                    id: id.to_owned(),
                    key,
                    sent,
                    attempts: attempt,
                });
                return;
            }
            log.failed_attempts += 1;
            if first.elapsed() > GIVE_UP_AFTER {
                log.abandoned.push(key);
                return;
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}
