//! Forwarding: handing a payload to a websocket tier under a routing key, and learning how many
//! sessions got it.
//!
//! [`InProcessForwarder`] broadcasts to local [`SocketRegistry`]s (the embedded mode, and the body
//! of the internal HTTP routes); [`HttpForwarder`] calls remote tiers' internal routes.

mod http;
mod throttle;

use std::sync::Arc;

use async_trait::async_trait;
use axum::extract::ws::Utf8Bytes;

use crate::model::{ChatMessage, Notification};
use crate::sockets::{CloseReason, Frame, SocketRegistry, FAILOVER_CLOSE_CODE};

pub use http::{HttpForwarder, TierEndpoint, ROUTING_KEY_HEADER};
pub use throttle::ThrottledForwarder;

/// The websocket tiers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tier {
    /// Chat sockets, keyed by `stream_id`.
    Chat,
    /// Notification sockets, keyed by `user_id`.
    Notifications,
}

/// One payload for one routing key on one tier.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    /// A chat message to the sessions of its `stream_id`.
    Chat(ChatMessage),
    /// A notification to the sessions of `user_id`.
    Notify {
        /// The recipient.
        user_id: String,
        /// The envelope.
        notification: Notification,
    },
}

impl Delivery {
    /// The tier it goes to.
    pub fn tier(&self) -> Tier {
        match self {
            Self::Chat(_) => Tier::Chat,
            Self::Notify { .. } => Tier::Notifications,
        }
    }

    /// The routing key: `stream_id` or `user_id`.
    pub fn routing_key(&self) -> &str {
        match self {
            Self::Chat(message) => &message.stream_id,
            Self::Notify { user_id, .. } => user_id,
        }
    }

    /// Encodes the websocket frame. Chat frames carry their `message_id` so a session never
    /// sends the same message twice (retries, replay overlap).
    pub fn frame(&self) -> Result<Frame, ForwardError> {
        let encode = |e: serde_json::Error| ForwardError::Encode(e.to_string());
        match self {
            Self::Chat(message) => {
                let text = serde_json::to_string(message).map_err(encode)?;
                Ok(Frame::with_id(
                    Utf8Bytes::from(text),
                    message.message_id.as_str(),
                ))
            }
            Self::Notify { notification, .. } => {
                let text = serde_json::to_string(notification).map_err(encode)?;
                Ok(Frame::new(Utf8Bytes::from(text)))
            }
        }
    }
}

/// How a delivery went: sessions that got the payload and sessions that did not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeliveryReport {
    /// Sessions the payload was queued to.
    pub delivered: usize,
    /// Sessions that were dead or too slow.
    pub failed: usize,
}

impl DeliveryReport {
    /// True when no session failed (also when there were no sessions at all).
    pub fn is_complete(&self) -> bool {
        self.failed == 0
    }
}

/// A delivery could not be attempted or its answer was not understood.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ForwardError {
    /// The payload could not be encoded.
    #[error("cannot encode payload: {0}")]
    Encode(String),
    /// The remote tier could not be reached.
    #[error("transport error: {0}")]
    Transport(String),
    /// The remote tier did not answer in time.
    #[error("timed out after {0:?}")]
    Timeout(std::time::Duration),
    /// The remote tier answered with an unexpected status.
    #[error("unexpected status {status}: {body}")]
    Status {
        /// HTTP status code.
        status: u16,
        /// Response body, truncated.
        body: String,
    },
}

/// Delivers payloads to websocket tiers.
#[async_trait]
pub trait Forwarder: Send + Sync {
    /// Delivers one payload and reports per-session results. A report with failures is returned
    /// as `Ok`; the caller decides whether to retry.
    async fn forward(&self, delivery: &Delivery) -> Result<DeliveryReport, ForwardError>;

    /// Closes every chat session of `stream_id` (failover after exhausted retries), returning how
    /// many were closed.
    async fn close_stream(&self, stream_id: &str, reason: &str) -> Result<usize, ForwardError>;
}

/// Broadcasts to local socket registries.
#[derive(Clone)]
pub struct InProcessForwarder {
    chat: Arc<dyn SocketRegistry>,
    notifications: Arc<dyn SocketRegistry>,
}

impl std::fmt::Debug for InProcessForwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcessForwarder").finish_non_exhaustive()
    }
}

impl InProcessForwarder {
    /// Forwards chat messages to `chat` and notifications to `notifications`.
    pub fn new(chat: Arc<dyn SocketRegistry>, notifications: Arc<dyn SocketRegistry>) -> Self {
        Self {
            chat,
            notifications,
        }
    }

    fn registry(&self, tier: Tier) -> &Arc<dyn SocketRegistry> {
        match tier {
            Tier::Chat => &self.chat,
            Tier::Notifications => &self.notifications,
        }
    }
}

#[async_trait]
impl Forwarder for InProcessForwarder {
    async fn forward(&self, delivery: &Delivery) -> Result<DeliveryReport, ForwardError> {
        let frame = delivery.frame()?;
        let report = self
            .registry(delivery.tier())
            .broadcast(delivery.routing_key(), &frame);
        Ok(report)
    }

    async fn close_stream(&self, stream_id: &str, reason: &str) -> Result<usize, ForwardError> {
        Ok(self
            .chat
            .close(stream_id, CloseReason::new(FAILOVER_CLOSE_CODE, reason)))
    }
}
