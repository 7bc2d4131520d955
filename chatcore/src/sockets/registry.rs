//! The registry of a tier's sessions: what the forwarders and the session loop need of it.

use super::{CloseReason, DeliveryReport, Frame, SessionHandle, SessionId};

/// Routes frames to the sessions registered under a key (`stream_id` or `user_id`).
///
/// Implementations must be safe to share between tasks, and must never wait on a session in
/// [`broadcast`](Self::broadcast): a dead or slow session counts as failed and costs the others
/// nothing. [`LocalSocketRegistry`](super::LocalSocketRegistry) is the in-process one.
pub trait SocketRegistry: Send + Sync {
    /// Adds a session under `key`. Returns `false` (and drops the handle) when the registry is
    /// shutting down.
    fn register(&self, key: &str, session: SessionHandle) -> bool;

    /// Removes a session; unknown ids are ignored.
    fn unregister(&self, key: &str, id: SessionId);

    /// Queues `frame` to every session of `key` without waiting on any of them.
    fn broadcast(&self, key: &str, frame: &Frame) -> DeliveryReport;

    /// Queues `frame` to every session of `key` but `from` (a client's typing frame), without
    /// waiting on any of them.
    fn relay(&self, key: &str, from: SessionId, frame: &Frame) -> DeliveryReport;

    /// Counts a frame a client sent (`chatcore_client_frames_total`).
    fn count_client_frame(&self, outcome: crate::metrics::ClientFrameOutcome);

    /// Asks every session of `key` to close; returns how many were asked.
    fn close(&self, key: &str, reason: CloseReason) -> usize;

    /// Asks the sessions of `key` that belong to `user_id` to close (a member removed from a
    /// group); returns how many were asked.
    fn close_user(&self, key: &str, user_id: &str, reason: CloseReason) -> usize;

    /// Asks every session to close and refuses new ones (shutdown).
    fn close_all(&self, reason: CloseReason) -> usize;

    /// Number of sessions under `key`.
    fn sessions(&self, key: &str) -> usize;
}
