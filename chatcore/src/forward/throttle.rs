//! A forwarder layer that lets one chat notification per conversation through per window: the
//! `separate` strategy, where an ongoing conversation notifies its receiver once per
//! `NOTIFICATION_THROTTLE_TTL` (6 h by default).
//!
//! Why a layer around the [`Forwarder`] and not a step of the pipeline: it composes with any
//! consumer and any forwarder (in process or HTTP) without touching the pipeline, tests and
//! embedders stack it like any tower layer, and it sees the outcome of the delivery it guards.
//! That last point is why it does not call [`crate::dedup::Throttle::allow`], which marks the
//! window *before* delivering: a failed delivery would then suppress its own retry. The layer
//! uses the same key space (`throttle:{stream_id}:{user_id}`) on the same [`EventStore`], but claims the window,
//! delivers, and only then completes the claim (window starts) or releases it (the pipeline's
//! retry tries again).
//!
//! Only `chat_notification` deliveries are throttled; chat messages and every other notification
//! type pass through untouched.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::{Delivery, DeliveryReport, ForwardError, Forwarder};
use crate::dedup::{Claim, EventStore};
use crate::metrics::{DropReason, Metrics};
use crate::model::NotificationType;

/// How long a throttle claim stays exclusive while its delivery is attempted.
const CLAIM_LEASE: Duration = Duration::from_secs(60);

/// Wraps a forwarder so each conversation notifies its receiver at most once per `ttl`.
pub struct ThrottledForwarder {
    inner: Arc<dyn Forwarder>,
    store: Arc<dyn EventStore>,
    ttl: Duration,
    counted: Option<(Arc<Metrics>, String)>,
}

impl std::fmt::Debug for ThrottledForwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThrottledForwarder")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl ThrottledForwarder {
    /// Throttles `inner`'s chat notifications per `stream_id` for `ttl`, remembering windows in
    /// `store` (share it between instances, e.g. Redis, so the window is global).
    pub fn new(inner: Arc<dyn Forwarder>, store: Arc<dyn EventStore>, ttl: Duration) -> Self {
        Self {
            inner,
            store,
            ttl,
            counted: None,
        }
    }

    /// Counts suppressed notifications as `chatcore_events_dropped_total{consumer, reason="throttled"}`.
    pub fn counted(mut self, metrics: Arc<Metrics>, consumer: impl Into<String>) -> Self {
        self.counted = Some((metrics, consumer.into()));
        self
    }

    /// The throttle key of a delivery: the conversation of a chat notification and its
    /// recipient, so each participant of a conversation is notified once per window.
    fn key(delivery: &Delivery) -> Option<String> {
        match delivery {
            Delivery::Notify {
                user_id,
                notification,
            } if notification.notification_type == NotificationType::ChatNotification => {
                notification.payload["stream_id"]
                    .as_str()
                    .map(|stream_id| format!("throttle:{stream_id}:{user_id}"))
            }
            _ => None,
        }
    }
}

#[async_trait]
impl Forwarder for ThrottledForwarder {
    async fn forward(&self, delivery: &Delivery) -> Result<DeliveryReport, ForwardError> {
        let Some(key) = Self::key(delivery) else {
            return self.inner.forward(delivery).await;
        };
        let token = match self.store.claim(&key, CLAIM_LEASE).await {
            Ok(Claim::Acquired(token)) => token,
            // Completed: notified within the window. InProgress: another consumer instance is
            // notifying this conversation right now, which covers this message too.
            Ok(Claim::Completed | Claim::InProgress) => {
                if let Some((metrics, consumer)) = &self.counted {
                    metrics.drop_event(consumer, DropReason::Throttled);
                }
                tracing::debug!(%key, "chat notification throttled");
                return Ok(DeliveryReport::default());
            }
            Err(error) => {
                // Better a second notification than none: deliver unthrottled.
                tracing::warn!(%key, %error, "throttle store unavailable; notifying anyway");
                return self.inner.forward(delivery).await;
            }
        };
        let result = self.inner.forward(delivery).await;
        let outcome = match &result {
            Ok(report) if report.is_complete() => self.store.complete(&key, &token, self.ttl).await,
            _ => self.store.release(&key, &token).await,
        };
        if let Err(error) = outcome {
            tracing::warn!(%key, %error, "could not record the throttle window");
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dedup::InMemoryEventStore;
    use crate::model::{ChatMessage, Notification};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    #[derive(Default)]
    struct Counting {
        calls: AtomicUsize,
        fail: AtomicBool,
    }

    #[async_trait]
    impl Forwarder for Counting {
        async fn forward(&self, _: &Delivery) -> Result<DeliveryReport, ForwardError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.fail.load(Ordering::SeqCst) {
                return Err(ForwardError::Transport("down".into()));
            }
            Ok(DeliveryReport {
                delivered: 1,
                failed: 0,
            })
        }
    }

    fn message(id: &str, from: &str, to: &str) -> ChatMessage {
        ChatMessage {
            message_id: id.into(),
            content: "hi".into(),
            created_at: chrono::Utc::now(),
            stream_id: crate::stream_id::stream_id(from, to),
            sender_id: from.into(),
            receiver_id: Some(to.into()),
        }
    }

    fn notify(message: &ChatMessage) -> Delivery {
        Delivery::Notify {
            user_id: message.receiver_id.clone().unwrap_or_default(),
            notification: Notification::chat(message),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn one_notification_per_conversation_per_window_and_failures_do_not_open_it() {
        let inner = Arc::new(Counting::default());
        let metrics = Arc::new(Metrics::new());
        let layer = ThrottledForwarder::new(
            inner.clone(),
            Arc::new(InMemoryEventStore::new()),
            Duration::from_secs(60),
        )
        .counted(metrics.clone(), "notifications");
        let calls = || inner.calls.load(Ordering::SeqCst);

        inner.fail.store(true, Ordering::SeqCst);
        assert!(layer
            .forward(&notify(&message("m0", "a", "b")))
            .await
            .is_err());
        inner.fail.store(false, Ordering::SeqCst);
        // The failed attempt did not start the window: the retry goes through.
        let report = layer.forward(&notify(&message("m0", "a", "b"))).await;
        assert_eq!(report.ok().map(|r| r.delivered), Some(1));
        assert_eq!(calls(), 2);

        layer
            .forward(&notify(&message("m1", "a", "b")))
            .await
            .expect("suppressed is Ok");
        assert_eq!(calls(), 2, "same conversation and receiver: suppressed");
        assert_eq!(
            metrics.dropped_count("notifications", DropReason::Throttled),
            1
        );

        layer
            .forward(&notify(&message("m2", "a", "c")))
            .await
            .expect("ok");
        layer
            .forward(&Delivery::Chat(message("m3", "a", "b")))
            .await
            .expect("ok");
        layer
            .forward(&notify(&message("m5", "b", "a")))
            .await
            .expect("ok");
        assert_eq!(
            calls(),
            5,
            "other conversations, the other side and chat pass"
        );

        tokio::time::advance(Duration::from_secs(61)).await;
        layer
            .forward(&notify(&message("m4", "a", "b")))
            .await
            .expect("ok");
        assert_eq!(calls(), 6, "a new window");
    }
}
