//! Timing and sizing of websocket sessions.

use std::time::Duration;

use super::{SlowClientPolicy, WebSocketSettings};

/// Default capacity of a session's outbound queue.
pub const DEFAULT_QUEUE_CAPACITY: usize = 256;

/// Timing and sizing of websocket sessions.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// How often the server pings (30 s by default).
    pub ping_interval: Duration,
    /// How long without any frame from the client before the session is dropped (40 s by
    /// default).
    pub pong_wait: Duration,
    /// Upper bound of one write (10 s by default).
    pub write_wait: Duration,
    /// Frames a session may have queued before broadcasts to it count as failed.
    pub queue_capacity: usize,
    /// What a broadcast does with a session whose queue is full.
    pub slow_clients: SlowClientPolicy,
    /// Longest life of a session (less up to a tenth, spread by session, so reconnects do not
    /// come all at once), after which it closes with
    /// [`SESSION_EXPIRED_CLOSE_CODE`](super::SESSION_EXPIRED_CLOSE_CODE); `None`: unbounded.
    /// Bounds how long a socket can stay on an instance its key no longer maps to.
    pub max_age: Option<Duration>,
    /// Buffer sizes and incoming-message limits of the socket.
    pub websocket: WebSocketSettings,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            ping_interval: Duration::from_secs(30),
            pong_wait: Duration::from_secs(40),
            write_wait: Duration::from_secs(10),
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            slow_clients: SlowClientPolicy::default(),
            max_age: None,
            websocket: WebSocketSettings::default(),
        }
    }
}
