//! A session's place in its registry, from before its history is read until it ends.

use std::sync::Arc;

use super::{session_channel, Protocol, SessionConfig, SessionId, SessionReceiver, SocketRegistry};

/// A registered session; unregisters itself when dropped. [`Subscription::run`] serves it on a
/// websocket.
pub struct Subscription {
    pub(super) registry: Arc<dyn SocketRegistry>,
    pub(super) key: String,
    pub(super) id: SessionId,
    pub(super) receiver: SessionReceiver,
    pub(super) config: SessionConfig,
    pub(super) registered: bool,
    pub(super) floor: Option<Arc<str>>,
    pub(super) protocol: Protocol,
    pub(super) user: Option<Arc<str>>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("key", &self.key)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Subscription {
    /// Registers a new session under `key`. Frames broadcast from now on are queued for it, so
    /// a caller can read history afterwards and lose nothing in between.
    pub fn open(registry: Arc<dyn SocketRegistry>, key: &str, config: SessionConfig) -> Self {
        Self::open_as(registry, key, None, config)
    }

    /// Registers a new session of `user` under `key` (see [`Subscription::open`]), so the
    /// registry can close a user's sessions of a key ([`SocketRegistry::close_user`]).
    pub fn open_as(
        registry: Arc<dyn SocketRegistry>,
        key: &str,
        user: Option<&str>,
        config: SessionConfig,
    ) -> Self {
        let (mut handle, receiver) = session_channel(config.queue_capacity);
        if let Some(user) = user {
            handle = handle.for_user(user);
        }
        let id = handle.id();
        let registered = registry.register(key, handle);
        Self {
            registry,
            key: key.to_owned(),
            id,
            receiver,
            config,
            registered,
            floor: None,
            protocol: Protocol::Bare,
            user: user.map(Arc::from),
        }
    }

    /// Sends the frames of `protocol` (bare chat messages by default).
    pub fn with_protocol(mut self, protocol: Protocol) -> Self {
        self.protocol = protocol;
        self
    }

    /// Skips every frame whose dedup id sorts at or below `since`: a client resuming after
    /// `since` already has those messages, even when one of them was still in flight when it
    /// reconnected. Message ids sort in store order (a [`crate::store::MessageStore`] guarantee).
    pub fn after(mut self, since: &str) -> Self {
        self.floor = Some(Arc::from(since));
        self
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if self.registered {
            self.registry.unregister(&self.key, self.id);
        }
    }
}
