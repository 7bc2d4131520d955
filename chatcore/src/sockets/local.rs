//! The in-process registry of one tier.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use tokio::sync::Notify;

use super::{
    CloseReason, DeliveryReport, Frame, QueueError, SessionHandle, SessionId, SharedFrame,
    SocketRegistry, SLOW_CLIENT_CLOSE_CODE,
};
use crate::metrics::{DeliveryResult, Metrics};
use crate::tier::Tier;

/// What a broadcast does with a session whose outbound queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SlowClientPolicy {
    /// Count the delivery as failed and close the session with [`SLOW_CLIENT_CLOSE_CODE`], so
    /// one slow reader costs neither the others nor the pipeline's retries; the client catches
    /// up with `since=`. The default.
    #[default]
    Close,
    /// Count the delivery as failed and keep the session: the pipeline retries, and after
    /// exhausted retries closes the whole stream with
    /// [`FAILOVER_CLOSE_CODE`](super::FAILOVER_CLOSE_CODE).
    Retry,
}

type Sessions = HashMap<String, HashMap<SessionId, SessionHandle>>;

/// The in-process registry of one tier.
///
/// Each session has a bounded queue, so a broadcast only does a non-blocking
/// [`SessionHandle::try_queue`] per session, sharing one [`SharedFrame`] among them. A session
/// whose queue is gone is removed on the next broadcast and by its own task on exit.
///
/// ```
/// use std::sync::Arc;
/// use chatcore::metrics::Metrics;
/// use chatcore::tier::Tier;
/// use chatcore::sockets::{
///     session_channel, DeliveryReport, Frame, FrameText, LocalSocketRegistry, SocketRegistry,
/// };
/// let registry = LocalSocketRegistry::new(Tier::Chat, Arc::new(Metrics::new()));
/// let (handle, mut receiver) = session_channel(8);
/// assert!(registry.register("stream-1", handle));
/// let report = registry.broadcast("stream-1", &Frame::new(FrameText::from("hi")));
/// assert_eq!(report, DeliveryReport { delivered: 1, failed: 0 });
/// assert_eq!(receiver.outbound.try_recv().map(|f| f.text.clone()), Ok("hi".into()));
/// ```
#[derive(Debug)]
pub struct LocalSocketRegistry {
    sessions: RwLock<Sessions>,
    emptied: Notify,
    closing: AtomicBool,
    slow_clients: SlowClientPolicy,
    tier: Tier,
    metrics: Arc<Metrics>,
}

/// What one broadcast found: the report, and the sessions to drop.
#[derive(Default)]
struct Offers {
    report: DeliveryReport,
    dead: Vec<SessionId>,
    slow: u64,
}

impl LocalSocketRegistry {
    /// An empty registry for `tier`, counting into `metrics`.
    pub fn new(tier: Tier, metrics: Arc<Metrics>) -> Self {
        Self {
            sessions: RwLock::new(HashMap::new()),
            emptied: Notify::new(),
            closing: AtomicBool::new(false),
            slow_clients: SlowClientPolicy::default(),
            tier,
            metrics,
        }
    }

    /// Sets what happens to sessions too slow to take a broadcast.
    pub fn with_slow_client_policy(mut self, policy: SlowClientPolicy) -> Self {
        self.slow_clients = policy;
        self
    }

    /// Number of open sessions under every key.
    pub fn len(&self) -> usize {
        self.read().values().map(HashMap::len).sum()
    }

    /// True when no session is open.
    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    /// Resolves once no session is open: after [`SocketRegistry::close_all`], when every
    /// session has written its close frame and ended. A process should await it (bounded by its
    /// shutdown timeout) before exiting, or clients see the connection drop instead of 1001.
    pub async fn drained(&self) {
        loop {
            let emptied = self.emptied.notified();
            if self.is_empty() {
                return;
            }
            emptied.await;
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, Sessions> {
        self.sessions.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Sessions> {
        self.sessions.write().unwrap_or_else(|e| e.into_inner())
    }

    fn remove_dead(&self, key: &str, dead: &[SessionId]) {
        let mut sessions = self.write();
        let Some(group) = sessions.get_mut(key) else {
            return;
        };
        let before = group.len();
        for id in dead {
            group.remove(id);
        }
        let removed = before - group.len();
        if group.is_empty() {
            sessions.remove(key);
        }
        let now_empty = sessions.is_empty();
        drop(sessions);
        self.count_sessions(-(removed as i64));
        if now_empty {
            self.emptied.notify_waiters();
        }
    }

    /// Queues `shared` to `session` without waiting, recording how it went.
    fn offer(&self, session: &SessionHandle, shared: &SharedFrame, outcome: &mut Offers) {
        match session.try_queue(Arc::clone(shared)) {
            Ok(()) => outcome.report.delivered += 1,
            Err(QueueError::Full) => {
                outcome.report.failed += 1;
                if self.slow_clients == SlowClientPolicy::Close {
                    // Signalled before the handle is dropped, so the session sends it.
                    session.request_close(CloseReason::new(
                        SLOW_CLIENT_CLOSE_CODE,
                        "too slow to keep up; reconnect with since=",
                    ));
                    outcome.slow += 1;
                    outcome.dead.push(session.id());
                }
            }
            Err(QueueError::Closed) => {
                outcome.report.failed += 1;
                outcome.dead.push(session.id());
            }
        }
    }

    /// Queues `frame` to every session of `key` but `except`, then drops the dead and counts.
    fn offer_all(&self, key: &str, except: Option<SessionId>, frame: &Frame) -> DeliveryReport {
        let mut outcome = Offers::default();
        {
            let sessions = self.read();
            if let Some(group) = sessions.get(key) {
                // Encoded once, allocated once; each session takes a reference.
                let shared = Arc::new(frame.clone());
                for (id, session) in group {
                    if Some(*id) != except {
                        self.offer(session, &shared, &mut outcome);
                    }
                }
            }
        }
        if !outcome.dead.is_empty() {
            self.remove_dead(key, &outcome.dead);
        }
        if outcome.slow > 0 {
            tracing::info!(
                key,
                slow = outcome.slow,
                "closed sessions too slow to keep up"
            );
        }
        self.count_deliveries(outcome.report, outcome.slow);
        outcome.report
    }

    // The metrics this registry records, in one place.

    fn count_sessions(&self, delta: i64) {
        self.metrics.sockets_changed(self.tier, delta);
    }

    fn count_deliveries(&self, report: DeliveryReport, slow_closed: u64) {
        for (result, n) in [
            (DeliveryResult::Delivered, report.delivered as u64),
            (DeliveryResult::Failed, report.failed as u64),
            (DeliveryResult::SlowClientClosed, slow_closed),
        ] {
            if n > 0 {
                self.metrics.deliveries(self.tier, result, n);
            }
        }
    }
}

impl SocketRegistry for LocalSocketRegistry {
    fn register(&self, key: &str, session: SessionHandle) -> bool {
        let mut sessions = self.write();
        // Checked under the write lock so `close_all` cannot miss a session registered meanwhile.
        if self.closing.load(Ordering::SeqCst) {
            return false;
        }
        sessions
            .entry(key.to_owned())
            .or_default()
            .insert(session.id(), session);
        drop(sessions);
        self.count_sessions(1);
        true
    }

    fn unregister(&self, key: &str, id: SessionId) {
        self.remove_dead(key, &[id]);
    }

    fn broadcast(&self, key: &str, frame: &Frame) -> DeliveryReport {
        self.offer_all(key, None, frame)
    }

    fn relay(&self, key: &str, from: SessionId, frame: &Frame) -> DeliveryReport {
        self.offer_all(key, Some(from), frame)
    }

    fn count_client_frame(&self, outcome: crate::metrics::ClientFrameOutcome) {
        self.metrics.client_frame(outcome);
    }

    fn close(&self, key: &str, reason: CloseReason) -> usize {
        let sessions = self.read();
        let group = sessions.get(key);
        for session in group.into_iter().flat_map(HashMap::values) {
            session.request_close(reason.clone());
        }
        group.map_or(0, HashMap::len)
    }

    fn close_user(&self, key: &str, user_id: &str, reason: CloseReason) -> usize {
        let sessions = self.read();
        let mut asked = 0;
        let group = sessions.get(key).into_iter().flat_map(HashMap::values);
        for session in group.filter(|s| s.user() == Some(user_id)) {
            session.request_close(reason.clone());
            asked += 1;
        }
        asked
    }

    fn close_all(&self, reason: CloseReason) -> usize {
        let sessions = self.write();
        self.closing.store(true, Ordering::SeqCst);
        let mut asked = 0;
        for session in sessions.values().flat_map(HashMap::values) {
            session.request_close(reason.clone());
            asked += 1;
        }
        asked
    }

    fn sessions(&self, key: &str) -> usize {
        self.read().get(key).map_or(0, HashMap::len)
    }
}

#[cfg(test)]
mod tests;
