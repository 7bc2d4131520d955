//! Forwarding: handing a payload to a websocket tier under a routing key, and learning how many
//! sessions got it.
//!
//! [`InProcessForwarder`] broadcasts to local [`SocketRegistry`]s (the embedded mode, and the body
//! of the internal HTTP routes); [`HttpForwarder`] calls remote tiers' internal routes.

#[cfg(feature = "http-client")]
mod http;
mod inbox;
mod throttle;

use std::sync::Arc;

use async_trait::async_trait;

use crate::conversation::ReadMarker;
use crate::model::{ChatMessage, Notification};
use crate::sockets::{
    CloseReason, Frame, FrameText, SocketRegistry, FAILOVER_CLOSE_CODE,
    REMOVED_FROM_GROUP_CLOSE_CODE,
};

#[cfg(feature = "http-client")]
#[cfg_attr(docsrs, doc(cfg(feature = "http-client")))]
pub use http::{HttpForwarder, TierEndpoint};

pub use crate::headers::ROUTING_KEY_HEADER;
pub use inbox::InboxForwarder;
pub use throttle::ThrottledForwarder;

pub use crate::sockets::DeliveryReport;
pub use crate::tier::Tier;

/// One payload for one routing key on one tier.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
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
    /// A read receipt to the protocol-2 sessions of its `stream_id` (a `read` frame).
    Read(ReadMarker),
}

/// The `read` frame of socket protocol 2.
#[derive(serde::Serialize)]
struct ReadFrame<'a> {
    r#type: &'static str,
    stream_id: &'a str,
    user_id: &'a str,
    message_id: &'a str,
    read_at: String,
}

impl Delivery {
    /// The tier it goes to.
    pub fn tier(&self) -> Tier {
        match self {
            Self::Chat(_) | Self::Read(_) => Tier::Chat,
            Self::Notify { .. } => Tier::Notifications,
        }
    }

    /// The routing key: `stream_id` or `user_id`.
    pub fn routing_key(&self) -> &str {
        match self {
            Self::Chat(message) => &message.stream_id,
            Self::Notify { user_id, .. } => user_id,
            Self::Read(marker) => &marker.stream_id,
        }
    }

    /// Encodes the websocket frame. Chat frames carry their `message_id`, and notifications kept
    /// in the inbox their `notification_id`, so a session never sends the same one twice
    /// (retries, replay overlap). A chat message is the bare message for protocol-1 sessions
    /// and `{"type": "message", "message": {...}}` for protocol-2 ones; a read receipt is a
    /// `read` frame for protocol-2 sessions only.
    pub fn frame(&self) -> Result<Frame, ForwardError> {
        let encode = |e: serde_json::Error| ForwardError::Encode(e.to_string());
        match self {
            Self::Chat(message) => {
                let text = serde_json::to_string(message).map_err(encode)?;
                let typed = format!(r#"{{"type":"message","message":{text}}}"#);
                Ok(
                    Frame::with_id(FrameText::from(text), message.message_id.as_str())
                        .with_typed(FrameText::from(typed)),
                )
            }
            Self::Read(marker) => {
                let frame = ReadFrame {
                    r#type: "read",
                    stream_id: &marker.stream_id,
                    user_id: &marker.user_id,
                    message_id: &marker.message_id,
                    read_at: crate::model::rfc3339::format(&marker.read_at),
                };
                let text = serde_json::to_string(&frame).map_err(encode)?;
                Ok(Frame::typed_only(FrameText::from(text)))
            }
            Self::Notify { notification, .. } => {
                let text = FrameText::from(serde_json::to_string(notification).map_err(encode)?);
                Ok(match &notification.notification_id {
                    Some(id) => Frame::with_id(text, id),
                    None => Frame::new(text),
                })
            }
        }
    }
}

/// A delivery could not be attempted or its answer was not understood.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ForwardError {
    /// The payload could not be encoded.
    #[error("cannot encode payload: {0}")]
    Encode(String),
    /// The notification could not be kept in the inbox, so it was not pushed.
    #[error("inbox unavailable: {0}")]
    Inbox(String),
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
///
/// Implementing it: a decorator that sends chat messages on and drops notifications of muted
/// users (wrap the node's forwarder with it through the builder's `layer_forwarder`). A report
/// with failed sessions is `Ok`: the pipeline retries it; an `Err` is a delivery that could not be
/// attempted.
///
/// ```
/// use std::collections::HashSet;
/// use std::sync::Arc;
/// use async_trait::async_trait;
/// use chatcore::forward::{Delivery, DeliveryReport, ForwardError, Forwarder};
///
/// struct Muting {
///     inner: Arc<dyn Forwarder>,
///     muted: HashSet<String>,
/// }
///
/// #[async_trait]
/// impl Forwarder for Muting {
///     async fn forward(&self, delivery: &Delivery) -> Result<DeliveryReport, ForwardError> {
///         match delivery {
///             Delivery::Notify { user_id, .. } if self.muted.contains(user_id) => {
///                 Ok(DeliveryReport::default())
///             }
///             _ => self.inner.forward(delivery).await,
///         }
///     }
/// }
/// # let _ = |inner: Arc<dyn Forwarder>| Muting { inner, muted: HashSet::new() };
/// ```
#[async_trait]
pub trait Forwarder: Send + Sync {
    /// Delivers one payload and reports per-session results. A report with failures is returned
    /// as `Ok`; the caller decides whether to retry.
    async fn forward(&self, delivery: &Delivery) -> Result<DeliveryReport, ForwardError>;
}

/// Closes a conversation's chat sessions: the chat consumer's failure policy after exhausted
/// retries, so clients reconnect and recover from the store. The tiers' forwarders
/// ([`InProcessForwarder`], the HTTP forwarder) are closers too; a forwarder that does not reach
/// chat sessions (e-mail, a notification bridge) need not be one.
#[async_trait]
pub trait StreamCloser: Send + Sync {
    /// Closes every chat session of `stream_id` with the failover code, returning how many were
    /// closed.
    async fn close_stream(&self, stream_id: &str, reason: &str) -> Result<usize, ForwardError>;

    /// Closes `user_id`'s chat sessions of `stream_id` with
    /// [`REMOVED_FROM_GROUP_CLOSE_CODE`] (a member
    /// removed from a group), returning how many were closed.
    async fn close_member(&self, stream_id: &str, user_id: &str) -> Result<usize, ForwardError>;
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
}

#[async_trait]
impl StreamCloser for InProcessForwarder {
    async fn close_stream(&self, stream_id: &str, reason: &str) -> Result<usize, ForwardError> {
        Ok(self
            .chat
            .close(stream_id, CloseReason::new(FAILOVER_CLOSE_CODE, reason)))
    }

    async fn close_member(&self, stream_id: &str, user_id: &str) -> Result<usize, ForwardError> {
        let reason = CloseReason::new(REMOVED_FROM_GROUP_CLOSE_CODE, "removed from the group");
        Ok(self.chat.close_user(stream_id, user_id, reason))
    }
}
