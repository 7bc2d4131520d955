//! Delivery semantics end to end: the internal routes' 200 / 206 / 500 answers with sessions made
//! to fail, notifications of every type, close-stream, and the pipeline's retry with growing
//! delays followed by the failover that closes the conversation's sockets.

use crate::common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chatcore::forward::{Delivery, DeliveryReport, ForwardError, Forwarder, Tier};
use chatcore::metrics::Outcome;
use chatcore::sockets::{session_channel, Frame, SocketRegistry};
use chatcore::stream_id::stream_id;
use common::{settings, TestServer, WAIT};
use serde_json::{json, Value};
use tokio::time::Instant;

fn chat_message(id: &str, a: &str, b: &str) -> Value {
    json!({
        "message_id": id, "content": format!("forwarded {id}"), "created_at": "2026-11-26T12:00:00.000Z",
        "stream_id": stream_id(a, b), "sender_id": a, "receiver_id": b
    })
}

async fn status_and_body(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON body"))
}

#[tokio::test]
async fn forward_answers_200_206_and_500_as_sessions_succeed_or_fail() {
    let server = TestServer::start().await;
    let stream = stream_id("alice", "bob");
    let forward = |id: &str| {
        let body = chat_message(id, "alice", "bob");
        let server = &server;
        async move { server.post_json("/chat/forward-to-websocket", &body).await }
    };

    let (status, body) = status_and_body(forward("f0").await).await;
    assert_eq!(
        (status, body),
        (200, json!({"delivered": 0, "stream_id": stream})),
        "no sessions is not a failure"
    );

    let mut socket = server.subscribe_chat("alice", "bob", None).await;
    let (status, body) = status_and_body(forward("f1").await).await;
    assert_eq!(
        (status, body),
        (200, json!({"delivered": 1, "stream_id": stream}))
    );
    assert_eq!(socket.next_json().await, chat_message("f1", "alice", "bob"));

    // A session that never drains its one-frame queue: it takes one frame, then fails.
    let (stuck, _stuck_queue) = session_channel(1);
    assert!(server.chat_sockets.register(&stream, stuck));
    let (status, _) = status_and_body(forward("f2").await).await;
    assert_eq!(status, 200);
    let (status, body) = status_and_body(forward("f3").await).await;
    assert_eq!(status, 206, "{body}");
    assert_eq!(
        (body["delivered"].clone(), body["failed"].clone()),
        (json!(1), json!(1))
    );
    assert!(body["error"].is_string());
    assert_eq!(socket.next_json().await, chat_message("f2", "alice", "bob"));
    assert_eq!(socket.next_json().await, chat_message("f3", "alice", "bob"));

    // Only failing sessions: 500.
    let lonely = stream_id("carol", "dave");
    let (dead, dead_queue) = session_channel(1);
    assert!(server.chat_sockets.register(&lonely, dead));
    drop(dead_queue);
    let response = server
        .post_json(
            "/chat/forward-to-websocket",
            &chat_message("f4", "carol", "dave"),
        )
        .await;
    let (status, body) = status_and_body(response).await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(
        (body["delivered"].clone(), body["failed"].clone()),
        (json!(0), json!(1))
    );
    assert_eq!(
        server.chat_sockets.sessions(&lonely),
        0,
        "the dead session was removed"
    );

    let mut forged = chat_message("f5", "alice", "bob");
    forged["stream_id"] = json!(stream_id("alice", "mallory"));
    let (status, _) = status_and_body(
        server
            .post_json("/chat/forward-to-websocket", &forged)
            .await,
    )
    .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn every_notification_type_reaches_the_users_sockets_and_bad_payloads_get_400() {
    let server = TestServer::start().await;
    let mut bob = server.subscribe_notifications("bob").await;
    let cases = [
        (
            "/notifications/purchase",
            "purchase_notification",
            json!({
            "order_id": "o1", "buyer_id": "alice", "shop_owner_id": "bob", "product_name": "lamp",
            "amount": 12.5, "currency": "EUR", "status": "completed", "purchased_at": "2026-11-26T10:00:00.000Z"}),
        ),
        (
            "/notifications/payment-reminder",
            "payment_reminder_notification",
            json!({
            "order_id": "o1", "amount": 12.5, "currency": "EUR", "due_date": "2026-12-01T00:00:00.000Z",
            "days_overdue": 0, "message": "due soon"}),
        ),
        (
            "/notifications/shipping",
            "shipping_update_notification",
            json!({
            "order_id": "o1", "tracking_number": "T1", "status": "in_transit", "location": "Lyon",
            "estimated_delivery": "2026-11-28T00:00:00.000Z", "updated_at": "2026-11-26T10:00:00.000Z"}),
        ),
        (
            "/notifications/shipping-update",
            "shipping_update_notification",
            json!({
            "order_id": "o2", "tracking_number": "T2", "status": "delivered", "location": "Paris",
            "estimated_delivery": "2026-11-28T00:00:00.000Z", "updated_at": "2026-11-26T11:00:00.000Z"}),
        ),
    ];
    for (path, kind, payload) in &cases {
        let (status, body) = status_and_body(
            server
                .post_json(&format!("{path}?user_id=bob"), payload)
                .await,
        )
        .await;
        assert_eq!(
            (status, body),
            (200, json!({"delivered": 1, "user_id": "bob"})),
            "{path}"
        );
        let envelope = bob.next_json().await;
        assert_eq!(envelope["notification_type"], *kind);
        assert_eq!(&envelope["payload"], payload);

        let (status, body) = status_and_body(server.post_json(path, payload).await).await;
        assert_eq!(status, 400, "{path} without user_id: {body}");
        let (status, _) = status_and_body(
            server
                .post_json(&format!("{path}?user_id=bob"), &json!({"order_id": "o1"}))
                .await,
        )
        .await;
        assert_eq!(status, 400, "{path} with an incomplete payload");
    }
    // Chat notifications default to the message's receiver.
    let (status, body) = status_and_body(
        server
            .post_json("/notifications/chat", &chat_message("n1", "alice", "bob"))
            .await,
    )
    .await;
    assert_eq!(
        (status, body),
        (200, json!({"delivered": 1, "user_id": "bob"}))
    );
    let envelope = bob.next_json().await;
    assert_eq!(envelope["notification_type"], "chat_notification");
    assert_eq!(envelope["payload"], chat_message("n1", "alice", "bob"));
}

#[tokio::test]
async fn close_stream_closes_that_conversation_with_4000_only() {
    let server = TestServer::start().await;
    let mut closing = server.subscribe_chat("alice", "bob", None).await;
    let mut other = server.subscribe_chat("alice", "carol", None).await;
    let (status, body) = status_and_body(
        server
            .post_json(
                "/chat/close-stream",
                &json!({"stream_id": stream_id("alice", "bob"), "reason": "test"}),
            )
            .await,
    )
    .await;
    assert_eq!((status, body["closed"].clone()), (200, json!(1)));
    assert_eq!(closing.next_close_code().await, Some(4000));
    let still_open = server.send("still here", "carol", "alice").await;
    assert_eq!(other.next_json().await, still_open);
}

/// Fails the first `failures` deliveries to one tier, recording when each was attempted.
struct Flaky {
    inner: Arc<dyn Forwarder>,
    tier: Tier,
    failures: usize,
    attempts: Mutex<Vec<Instant>>,
}

impl Flaky {
    fn attempts(&self) -> Vec<Instant> {
        self.attempts.lock().expect("lock").clone()
    }
}

#[async_trait]
impl Forwarder for Flaky {
    async fn forward(&self, delivery: &Delivery) -> Result<DeliveryReport, ForwardError> {
        if delivery.tier() == self.tier {
            let attempt = {
                let mut attempts = self.attempts.lock().expect("lock");
                attempts.push(Instant::now());
                attempts.len()
            };
            if attempt <= self.failures {
                return Err(ForwardError::Transport(format!(
                    "injected failure {attempt}"
                )));
            }
        }
        self.inner.forward(delivery).await
    }
}

/// Starts a server whose pipeline forwards through a [`Flaky`] layer; returns the layer's
/// instance once the app built it.
async fn flaky_server(tier: Tier, failures: usize, flags: &[&str]) -> (TestServer, Arc<Flaky>) {
    let built: Arc<Mutex<Option<Arc<Flaky>>>> = Arc::default();
    let sink = Arc::clone(&built);
    let server = TestServer::start_with(settings(flags), move |backends| {
        backends.layer_forwarder(move |inner| {
            let flaky = Arc::new(Flaky {
                inner,
                tier,
                failures,
                attempts: Mutex::default(),
            });
            *sink.lock().expect("lock") = Some(Arc::clone(&flaky));
            flaky
        })
    })
    .await;
    let flaky = built
        .lock()
        .expect("lock")
        .clone()
        .expect("layer applied at start");
    (server, flaky)
}

#[tokio::test]
async fn a_failing_forwarder_is_retried_with_growing_delays_then_the_stream_is_closed() {
    let retries = 3;
    let (server, flaky) = flaky_server(
        Tier::Chat,
        usize::MAX,
        &[
            "--message-retry-max-retries",
            "3",
            "--message-retry-initial-interval",
            "40ms",
            "--message-retry-multiplier",
            "2",
        ],
    )
    .await;
    let mut socket = server.subscribe_chat("alice", "bob", None).await;
    let mut bob = server.subscribe_notifications("bob").await;
    let stored = server.send("doomed", "alice", "bob").await;

    assert_eq!(
        socket.next_close_code().await,
        Some(4000),
        "failover closes the stream's sockets"
    );
    let attempts = flaky.attempts();
    assert_eq!(
        attempts.len(),
        1 + retries,
        "first attempt plus {retries} retries"
    );
    let gaps: Vec<Duration> = attempts.windows(2).map(|w| w[1] - w[0]).collect();
    for (i, gap) in gaps.iter().enumerate() {
        let nominal = Duration::from_millis(40 * 2u64.pow(i as u32));
        assert!(
            *gap >= nominal,
            "retry {i} waited {gap:?}, less than {nominal:?}"
        );
    }
    assert!(
        gaps.windows(2).all(|w| w[1] > w[0]),
        "delays grow: {gaps:?}"
    );

    // The notification tier was not the failing one: it got the message once.
    let envelope = bob.next_json().await;
    assert_eq!(envelope["payload"], stored);
    assert_eq!(server.metrics.event_count("chat", Outcome::Failed), 1);
    let metrics = server.metrics.render();
    assert!(
        metrics.contains(r#"chatcore_failovers_total{consumer="chat"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"chatcore_retries_total{consumer="chat"} 3"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_forwarder_that_recovers_delivers_once_without_failover() {
    let (server, flaky) =
        flaky_server(Tier::Chat, 2, &["--message-retry-initial-interval", "10ms"]).await;
    let mut socket = server.subscribe_chat("alice", "bob", None).await;
    let first = server.send("eventually", "alice", "bob").await;
    assert_eq!(socket.next_json().await, first);
    let sentinel = server.send("sentinel", "alice", "bob").await;
    assert_eq!(socket.next_json().await, sentinel, "no duplicate, no close");
    assert_eq!(
        flaky.attempts().len(),
        4,
        "three attempts for the first message, one for the sentinel"
    );
    assert!(
        !server.metrics.render().contains("chatcore_failovers_total"),
        "no failure policy ran"
    );
    // The event is done once its notification is kept too (a MongoDB write on that backend),
    // which may be after the chat frame arrived: await the count.
    tokio::time::timeout(WAIT, async {
        while server.metrics.event_count("chat", Outcome::Success) < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("both events succeed");
    assert_eq!(server.metrics.event_count("chat", Outcome::Success), 2);
}

#[tokio::test]
async fn a_failing_notification_tier_is_retried_alone_and_chat_is_not_sent_twice() {
    let (server, _flaky) = flaky_server(
        Tier::Notifications,
        1,
        &["--message-retry-initial-interval", "10ms"],
    )
    .await;
    let mut chat = server.subscribe_chat("alice", "bob", None).await;
    let mut bob = server.subscribe_notifications("bob").await;
    let message = server.send("hello", "alice", "bob").await;
    let sentinel = server.send("sentinel", "alice", "bob").await;
    assert_eq!(chat.next_json().await, message);
    assert_eq!(
        chat.next_json().await,
        sentinel,
        "the chat tier was not retried"
    );
    assert_eq!(
        bob.next_json().await["payload"],
        message,
        "the notification arrived on retry"
    );
    assert_eq!(bob.next_json().await["payload"], sentinel);
}

#[tokio::test]
async fn a_broadcast_to_a_stuck_session_does_not_delay_the_others() {
    let server = TestServer::start().await;
    let stream = stream_id("alice", "bob");
    let (stuck, _never_drained) = session_channel(1);
    assert!(server.chat_sockets.register(&stream, stuck));
    let _ = server
        .chat_sockets
        .broadcast(&stream, &Frame::new("filler".into()));
    let mut socket = server.subscribe_chat("alice", "bob", None).await;
    let message = server.send("through", "alice", "bob").await;
    // The healthy socket gets the message on the first attempt, while the stuck one keeps
    // failing until the pipeline gives up and closes the stream.
    assert_eq!(socket.next_json().await, message);
}

/// A message store that is down.
struct DownStore;

#[async_trait]
impl chatcore::store::MessageStore for DownStore {
    async fn insert(
        &self,
        _: chatcore::model::ValidMessage,
        _: Option<&str>,
    ) -> Result<chatcore::store::Inserted, chatcore::store::StoreError> {
        Err(chatcore::store::StoreError::Unavailable(
            "connection refused".into(),
        ))
    }
    async fn history(
        &self,
        _: &chatcore::store::HistoryQuery,
    ) -> Result<Vec<chatcore::model::ChatMessage>, chatcore::store::StoreError> {
        Err(chatcore::store::StoreError::Unavailable(
            "connection refused".into(),
        ))
    }
    async fn ping(&self) -> Result<(), chatcore::store::StoreError> {
        Err(chatcore::store::StoreError::Unavailable(
            "connection refused".into(),
        ))
    }
}

#[tokio::test]
async fn an_unavailable_store_answers_503_and_replays_close_with_1011() {
    // The store is replaced and the feed of the configured one kept: nothing is stored, so
    // nothing reaches the feed.
    let server = TestServer::start_with(settings(&[]), |builder| {
        builder.message_store(Arc::new(DownStore))
    })
    .await;
    let response = server
        .post_json(
            "/chat/messages",
            &json!({"content": "x", "sender_id": "alice", "receiver_id": "bob"}),
        )
        .await;
    let (status, body) = status_and_body(response).await;
    assert_eq!(status, 503, "{body}");
    assert!(body["error"].is_string());
    let (status, _) = server
        .get_json(&format!(
            "/chat/messages?stream_id={}",
            stream_id("alice", "bob")
        ))
        .await;
    assert_eq!(status, 503);
    let (status, body) = server.get_json("/readyz").await;
    assert_eq!(
        (status, body["status"].clone()),
        (503, json!("unavailable"))
    );
    let mut socket = server
        .subscribe_chat("alice", "bob", Some("000000000000000000000001"))
        .await;
    assert_eq!(socket.next_close_code().await, Some(1011));
}

/// Delays every chat delivery, so messages are still in flight when a client reconnects.
struct Slow {
    inner: Arc<dyn Forwarder>,
    delay: Duration,
}

#[async_trait]
impl Forwarder for Slow {
    async fn forward(&self, delivery: &Delivery) -> Result<DeliveryReport, ForwardError> {
        if delivery.tier() == Tier::Chat {
            tokio::time::sleep(self.delay).await;
        }
        self.inner.forward(delivery).await
    }
}

#[tokio::test]
async fn a_client_resuming_with_since_never_gets_messages_it_already_had_that_were_in_flight() {
    let server = TestServer::start_with(settings(&[]), |backends| {
        backends.layer_forwarder(|inner| {
            Arc::new(Slow {
                inner,
                delay: Duration::from_millis(100),
            })
        })
    })
    .await;
    let mut had = Vec::new();
    for i in 0..3 {
        had.push(server.send(&format!("had {i}"), "alice", "bob").await);
    }
    // The client already shows all three (it read them from history) and resumes after the last,
    // while the pipeline is still delivering them.
    let since = had[2]["message_id"].as_str().expect("id").to_owned();
    let mut socket = server.subscribe_chat("alice", "bob", Some(&since)).await;
    let new = server.send("new", "bob", "alice").await;
    assert_eq!(
        socket.next_json().await,
        new,
        "nothing at or before `since` is sent again"
    );
}
