//! The seed's three notification strategies (`NOTIFICATION_STRATEGY`), end to end through real
//! HTTP and websocket clients: `separate` throttles chat notifications per conversation and
//! receiver; under `segregated` a failing notification tier does not delay chat, while under
//! `concurrent` it does. On embedded backends here; scripts/test.sh does not need to rerun these.

use crate::common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chatcore::forward::{Delivery, DeliveryReport, ForwardError, Forwarder};
use chatcore::metrics::{DropReason, Metrics, Outcome};
use common::{settings, TestServer, WAIT};

/// Waits until `condition` holds, polling.
async fn until(what: &str, mut condition: impl FnMut() -> bool) {
    tokio::time::timeout(WAIT, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what} in time"));
}

fn dropped(metrics: &Metrics, consumer: &str, reason: DropReason) -> u64 {
    metrics.dropped_count(consumer, reason)
}

#[tokio::test]
async fn separate_notifies_a_conversation_once_per_window_and_again_after_it() {
    const TTL: Duration = Duration::from_millis(1500);
    let server = TestServer::start_with(
        settings(&[
            "--notification-strategy",
            "separate",
            "--notification-throttle-ttl",
            "1500ms",
        ]),
        |backends| backends,
    )
    .await;
    // Names of their own: a shared event store (REDIS_ADDR) keeps throttle windows across runs.
    let unique = chatcore::dedup::ClaimToken::unique();
    let (alice, bob_id, carol) = (
        format!("alice-{}", unique.as_str()),
        format!("bob-{}", unique.as_str()),
        format!("carol-{}", unique.as_str()),
    );
    let (alice, bob_id, carol) = (alice.as_str(), bob_id.as_str(), carol.as_str());
    let mut alice_chat = server.subscribe_chat(alice, bob_id, None).await;
    let mut bob = server.subscribe_notifications(bob_id).await;
    server
        .await_sessions(&server.notification_sockets, bob_id, 1)
        .await;

    let first = server.send("hello", alice, bob_id).await;
    let envelope = bob.next_json().await;
    let window_started_before = Instant::now();
    assert_eq!(envelope["notification_type"], "chat_notification");
    assert_eq!(envelope["payload"], first);

    let second = server.send("how are you?", alice, bob_id).await;
    let third = server.send("are you there?", alice, bob_id).await;
    let other = server.send("hi bob, carol here", carol, bob_id).await;
    // Chat is not throttled: every message reaches the conversation's socket, in order.
    for expected in [&first, &second, &third] {
        assert_eq!(&alice_chat.next_json().await, expected);
    }
    // Another conversation is not throttled by this one.
    let envelope = bob.next_json().await;
    assert_eq!(
        envelope["payload"], other,
        "the suppressed messages sent nothing"
    );
    until("both follow-ups throttled", || {
        dropped(&server.metrics, "notifications", DropReason::Throttled) == 2
    })
    .await;

    // Once the window has passed, the conversation notifies again.
    while window_started_before.elapsed() < TTL + Duration::from_millis(100) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let later = server.send("let's meet", alice, bob_id).await;
    let envelope = bob.next_json().await;
    assert_eq!(envelope["payload"], later, "a new window");
    assert_eq!(
        dropped(&server.metrics, "notifications", DropReason::Throttled),
        2
    );
    assert_eq!(alice_chat.next_json().await, later);
    server.stop().await.expect("clean stop");
}

/// A notification tier that is down: every notification fails, chat goes through.
struct NotificationsDown(Arc<dyn Forwarder>);

#[async_trait]
impl Forwarder for NotificationsDown {
    async fn forward(&self, delivery: &Delivery) -> Result<DeliveryReport, ForwardError> {
        match delivery {
            Delivery::Notify { .. } => Err(ForwardError::Transport(
                "notification tier: connection refused".into(),
            )),
            _ => self.0.forward(delivery).await,
        }
    }
}

/// Sends three messages while the notification tier is down and returns how many reached the
/// chat socket within `within` of the first POST.
async fn chat_delivered_while_notifications_are_down(strategy: &str, within: Duration) -> usize {
    let server = TestServer::start_with(
        settings(&[
            "--notification-strategy",
            strategy,
            // Coupled retries would hold the conversation back for seconds.
            "--message-retry-initial-interval",
            "3s",
            "--notifications-message-retry-max-retries",
            "0",
        ]),
        |backends| backends.layer_forwarder(|inner| Arc::new(NotificationsDown(inner))),
    )
    .await;
    // Names of their own: a shared event store (REDIS_ADDR) keeps throttle claims across runs.
    let alice = format!("alice-{}", chatcore::dedup::ClaimToken::unique().as_str());
    let mut chat = server.subscribe_chat(&alice, "bob", None).await;
    let started = Instant::now();
    let mut sent = Vec::new();
    for n in 0..3 {
        sent.push(server.send(&format!("m{n}"), &alice, "bob").await);
    }
    let mut received = 0;
    while received < sent.len() {
        let left = within.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, chat.next_json()).await {
            Ok(message) => {
                assert_eq!(message, sent[received], "in order");
                received += 1;
            }
            Err(_) => break,
        }
    }
    if strategy == "segregated" {
        // The notification consumer ran its own policy: log and skip, once per message.
        until("notifications skipped", || {
            server.metrics.event_count("notifications", Outcome::Failed) == 3
        })
        .await;
        until("chat events counted", || {
            server.metrics.event_count("chat", Outcome::Success) == 3
        })
        .await;
    }
    server.stop().await.expect("clean stop");
    received
}

#[tokio::test]
async fn segregated_chat_is_not_delayed_by_a_failing_notification_tier() {
    assert_eq!(
        chat_delivered_while_notifications_are_down("segregated", Duration::from_secs(2)).await,
        3,
        "every chat message promptly"
    );
}

#[tokio::test]
async fn concurrent_chat_waits_for_the_notification_retries() {
    // The contrast that shows the test above measures something: with one consumer, the failed
    // notification of the first message holds the conversation until its retry.
    assert_eq!(
        chat_delivered_while_notifications_are_down("concurrent", Duration::from_secs(2)).await,
        1
    );
}
