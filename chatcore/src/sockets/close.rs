//! Why a session is closed: the close codes the tiers send and the reason that goes with them.

/// Close code sent when the server shuts down ("going away").
pub const SHUTDOWN_CLOSE_CODE: u16 = 1001;
/// Close code sent when a client sent a message over
/// [`WebSocketSettings::max_message_size`](super::WebSocketSettings::max_message_size).
pub const MESSAGE_TOO_BIG_CLOSE_CODE: u16 = 1009;
/// Close code sent when the server cannot serve the session (e.g. history unavailable).
pub const INTERNAL_ERROR_CLOSE_CODE: u16 = 1011;
/// Close code sent when delivery to a stream gave up: the client should fetch history with
/// `since=` and reconnect.
pub const FAILOVER_CLOSE_CODE: u16 = 4000;
/// Close code sent to a client too slow to keep up (its queue was full, see
/// [`SlowClientPolicy::Close`](super::SlowClientPolicy::Close)): it should reconnect with
/// `since=`.
pub const SLOW_CLIENT_CLOSE_CODE: u16 = 4001;
/// Close code sent when a session reached
/// [`SessionConfig::max_age`](super::SessionConfig::max_age): the client reconnects with
/// `since=`, which also moves it to its key's current instance after a balancer rebalanced.
pub const SESSION_EXPIRED_CLOSE_CODE: u16 = 4002;

/// Close code sent to a member's chat sessions of a group they were removed from (or left): the
/// client drops the conversation; reconnecting is refused with 403.
pub const REMOVED_FROM_GROUP_CLOSE_CODE: u16 = 4003;

/// The longest reason a close frame carries, in bytes (RFC 6455: 125 less the code).
pub const MAX_CLOSE_REASON_BYTES: usize = 123;

/// A websocket close code and reason.
///
/// ```
/// use chatcore::sockets::{CloseReason, FAILOVER_CLOSE_CODE};
/// let reason = CloseReason::new(FAILOVER_CLOSE_CODE, "delivery gave up");
/// assert_eq!(reason.sent_reason(), "delivery gave up");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseReason {
    /// RFC 6455 close code.
    pub code: u16,
    /// Human-readable reason (at most [`MAX_CLOSE_REASON_BYTES`] are sent).
    pub reason: String,
}

impl CloseReason {
    /// Builds a close reason.
    pub fn new(code: u16, reason: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
        }
    }

    /// The reason as a close frame carries it: cut to [`MAX_CLOSE_REASON_BYTES`] on a character
    /// boundary.
    pub fn sent_reason(&self) -> &str {
        truncate_utf8(&self.reason, MAX_CLOSE_REASON_BYTES)
    }
}

fn truncate_utf8(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_reasons_are_cut_on_a_char_boundary() {
        assert_eq!(truncate_utf8("ééé", 3), "é");
        assert_eq!(truncate_utf8("abc", 10), "abc");
        let long = CloseReason::new(FAILOVER_CLOSE_CODE, "é".repeat(100));
        assert_eq!(long.sent_reason().len(), 122);
    }
}
