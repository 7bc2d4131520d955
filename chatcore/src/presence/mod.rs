//! Presence: is a user connected to the notification tier right now? The e-mail consumer asks
//! before e-mailing a chat message, so only offline receivers get one.
//!
//! In one process [`RegistryPresence`] looks at the notification socket registry; across
//! processes `HttpPresence` (feature `http-client`) asks the notification tier's internal route
//! `GET /notifications/presence?user_id=` (`presence_router`, feature `http`), through the
//! balancer that hashes on `user_id`, so the instance holding the user's sockets answers.

#[cfg(feature = "http-client")]
mod client;
#[cfg(feature = "http")]
mod route;

use std::sync::Arc;

use async_trait::async_trait;

use crate::sockets::SocketRegistry;

#[cfg(feature = "http-client")]
#[cfg_attr(docsrs, doc(cfg(feature = "http-client")))]
pub use client::HttpPresence;
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub use route::presence_router;

/// Presence could not be learned.
#[derive(Debug, Clone, thiserror::Error)]
#[error("presence unknown: {0}")]
pub struct PresenceError(pub String);

/// Tells whether a user has an open notification socket.
#[async_trait]
pub trait Presence: Send + Sync {
    /// True when `user_id` has at least one notification session.
    async fn is_online(&self, user_id: &str) -> Result<bool, PresenceError>;
}

/// Presence from a local notification socket registry (one process).
#[derive(Clone)]
pub struct RegistryPresence(pub Arc<dyn SocketRegistry>);

#[async_trait]
impl Presence for RegistryPresence {
    async fn is_online(&self, user_id: &str) -> Result<bool, PresenceError> {
        Ok(self.0.sessions(user_id) > 0)
    }
}
