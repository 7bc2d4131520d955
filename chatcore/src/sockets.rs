//! Websocket sessions and the registry that routes frames to them.
//!
//! Each session has a bounded outbound queue drained by its own task, so a broadcast only ever
//! does a non-blocking `try_send` per session: a slow or dead client costs the others nothing. A
//! session whose queue is gone is removed on the next broadcast and by its own task on exit.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures::{SinkExt, StreamExt};
use tokio::sync::{mpsc, watch};
use tokio::time::{sleep_until, timeout, Instant};

use crate::forward::DeliveryReport;
use crate::metrics::{DeliveryLabels, DeliveryResult, Metrics, SocketLabels, TierLabel};

/// Close code sent when the server shuts down ("going away").
pub const SHUTDOWN_CLOSE_CODE: u16 = 1001;
/// Close code sent when the server cannot serve the session (e.g. history unavailable).
pub const INTERNAL_ERROR_CLOSE_CODE: u16 = 1011;
/// Close code sent when delivery to a stream gave up: the client should fetch history with
/// `since=` and reconnect.
pub const FAILOVER_CLOSE_CODE: u16 = 4000;
/// Close code sent to a client too slow to keep up (its queue was full, see
/// [`SlowClientPolicy::Close`]): it should reconnect with `since=`.
pub const SLOW_CLIENT_CLOSE_CODE: u16 = 4001;
/// Close code sent when a session reached [`SessionConfig::max_age`]: the client reconnects with
/// `since=`, which also moves it to its key's current instance after a balancer rebalanced.
pub const SESSION_EXPIRED_CLOSE_CODE: u16 = 4002;

/// What a broadcast does with a session whose outbound queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SlowClientPolicy {
    /// Count the delivery as failed and close the session with [`SLOW_CLIENT_CLOSE_CODE`], so
    /// one slow reader costs neither the others nor the pipeline's retries; the client catches
    /// up with `since=`. The default.
    #[default]
    Close,
    /// Count the delivery as failed and keep the session: the pipeline retries, and after
    /// exhausted retries closes the whole stream with [`FAILOVER_CLOSE_CODE`].
    Retry,
}

/// Identifies one session within a registry.
pub type SessionId = u64;

/// One outbound websocket text frame, cheap to clone for a broadcast.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The text.
    pub text: Utf8Bytes,
    /// When set, a session sends a frame with this id at most once.
    pub dedup_id: Option<Arc<str>>,
}

impl Frame {
    /// A frame without a dedup id.
    pub fn new(text: Utf8Bytes) -> Self {
        Self {
            text,
            dedup_id: None,
        }
    }

    /// A frame a session sends at most once (chat messages, keyed by `message_id`).
    pub fn with_id(text: Utf8Bytes, id: &str) -> Self {
        Self {
            text,
            dedup_id: Some(Arc::from(id)),
        }
    }
}

/// A websocket close code and reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseReason {
    /// RFC 6455 close code.
    pub code: u16,
    /// Human-readable reason (at most 123 bytes are sent).
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
}

/// The registry's side of a session: where to queue frames and how to ask it to close.
#[derive(Debug)]
pub struct SessionHandle {
    id: SessionId,
    outbound: mpsc::Sender<Frame>,
    close: watch::Sender<Option<CloseReason>>,
}

impl SessionHandle {
    /// The session id.
    pub fn id(&self) -> SessionId {
        self.id
    }
}

/// The session's side: the queue to drain and the close signal to watch.
#[derive(Debug)]
pub struct SessionReceiver {
    /// Frames to send, in order.
    pub outbound: mpsc::Receiver<Frame>,
    /// Becomes `Some` when the registry asks the session to close.
    pub close: watch::Receiver<Option<CloseReason>>,
}

static NEXT_SESSION_ID: AtomicU64 = AtomicU64::new(1);

/// Creates a connected handle/receiver pair with a queue of `capacity` frames.
pub fn session_channel(capacity: usize) -> (SessionHandle, SessionReceiver) {
    let (outbound_tx, outbound_rx) = mpsc::channel(capacity.max(1));
    let (close_tx, close_rx) = watch::channel(None);
    (
        SessionHandle {
            id: NEXT_SESSION_ID.fetch_add(1, Ordering::Relaxed),
            outbound: outbound_tx,
            close: close_tx,
        },
        SessionReceiver {
            outbound: outbound_rx,
            close: close_rx,
        },
    )
}

/// Routes frames to the sessions registered under a key (`stream_id` or `user_id`).
pub trait SocketRegistry: Send + Sync {
    /// Adds a session under `key`. Returns `false` (and drops the handle) when the registry is
    /// shutting down.
    fn register(&self, key: &str, session: SessionHandle) -> bool;

    /// Removes a session; unknown ids are ignored.
    fn unregister(&self, key: &str, id: SessionId);

    /// Queues `frame` to every session of `key` without waiting on any of them.
    fn broadcast(&self, key: &str, frame: &Frame) -> DeliveryReport;

    /// Asks every session of `key` to close; returns how many were asked.
    fn close(&self, key: &str, reason: CloseReason) -> usize;

    /// Asks every session to close and refuses new ones (shutdown).
    fn close_all(&self, reason: CloseReason) -> usize;

    /// Number of sessions under `key`.
    fn sessions(&self, key: &str) -> usize;
}

/// The in-process registry of one tier.
#[derive(Debug)]
pub struct LocalSocketRegistry {
    sessions: RwLock<HashMap<String, HashMap<SessionId, SessionHandle>>>,
    emptied: tokio::sync::Notify,
    closing: AtomicBool,
    slow_clients: SlowClientPolicy,
    tier: TierLabel,
    metrics: Arc<Metrics>,
}

impl LocalSocketRegistry {
    /// An empty registry for `tier`, counting into `metrics`.
    pub fn new(tier: TierLabel, metrics: Arc<Metrics>) -> Self {
        Self {
            sessions: RwLock::new(HashMap::new()),
            emptied: tokio::sync::Notify::new(),
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

    fn read(&self) -> RwLockReadGuard<'_, HashMap<String, HashMap<SessionId, SessionHandle>>> {
        self.sessions.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, HashMap<String, HashMap<SessionId, SessionHandle>>> {
        self.sessions.write().unwrap_or_else(|e| e.into_inner())
    }

    fn gauge_add(&self, delta: i64) {
        self.metrics
            .sockets
            .get_or_create(&SocketLabels { tier: self.tier })
            .inc_by(delta);
    }

    fn count_deliveries(&self, report: DeliveryReport) {
        for (result, n) in [
            (DeliveryResult::delivered, report.delivered),
            (DeliveryResult::failed, report.failed),
        ] {
            if n > 0 {
                self.metrics
                    .deliveries
                    .get_or_create(&DeliveryLabels {
                        tier: self.tier,
                        result,
                    })
                    .inc_by(n as u64);
            }
        }
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
        self.gauge_add(-(removed as i64));
        if now_empty {
            self.emptied.notify_waiters();
        }
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
            .insert(session.id, session);
        drop(sessions);
        self.gauge_add(1);
        true
    }

    fn unregister(&self, key: &str, id: SessionId) {
        self.remove_dead(key, &[id]);
    }

    fn broadcast(&self, key: &str, frame: &Frame) -> DeliveryReport {
        let mut report = DeliveryReport::default();
        let mut dead = Vec::new();
        let mut slow = 0;
        {
            let sessions = self.read();
            for session in sessions.get(key).into_iter().flat_map(HashMap::values) {
                match session.outbound.try_send(frame.clone()) {
                    Ok(()) => report.delivered += 1,
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        report.failed += 1;
                        if self.slow_clients == SlowClientPolicy::Close {
                            // Signalled before the handle is dropped, so the session sends it.
                            session.close.send_replace(Some(CloseReason::new(
                                SLOW_CLIENT_CLOSE_CODE,
                                "too slow to keep up; reconnect with since=",
                            )));
                            slow += 1;
                            dead.push(session.id);
                        }
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => {
                        report.failed += 1;
                        dead.push(session.id);
                    }
                }
            }
        }
        if !dead.is_empty() {
            self.remove_dead(key, &dead);
        }
        if slow > 0 {
            tracing::info!(key, slow, "closed sessions too slow to keep up");
            self.metrics
                .deliveries
                .get_or_create(&DeliveryLabels {
                    tier: self.tier,
                    result: DeliveryResult::slow_client_closed,
                })
                .inc_by(slow);
        }
        self.count_deliveries(report);
        report
    }

    fn close(&self, key: &str, reason: CloseReason) -> usize {
        let sessions = self.read();
        let group = sessions.get(key);
        for session in group.into_iter().flat_map(HashMap::values) {
            session.close.send_replace(Some(reason.clone()));
        }
        group.map_or(0, HashMap::len)
    }

    fn close_all(&self, reason: CloseReason) -> usize {
        let sessions = self.write();
        self.closing.store(true, Ordering::SeqCst);
        let mut asked = 0;
        for session in sessions.values().flat_map(HashMap::values) {
            session.close.send_replace(Some(reason.clone()));
            asked += 1;
        }
        asked
    }

    fn sessions(&self, key: &str) -> usize {
        self.read().get(key).map_or(0, HashMap::len)
    }
}

/// Default capacity of a session's outbound queue.
pub const DEFAULT_QUEUE_CAPACITY: usize = 256;

/// Caps the websockets one user may hold open in this process (`SOCKETS_PER_USER`), across
/// tiers. Cheap to clone; clones share the counts.
///
/// ```
/// use chatcore::sockets::SocketQuota;
/// let quota = SocketQuota::new(Some(1));
/// let first = quota.acquire("alice").expect("under the cap");
/// assert!(quota.acquire("alice").is_none());
/// drop(first);
/// assert!(quota.acquire("alice").is_some());
/// ```
#[derive(Debug, Clone, Default)]
pub struct SocketQuota {
    limit: Option<usize>,
    open: Arc<std::sync::Mutex<HashMap<String, usize>>>,
}

impl SocketQuota {
    /// At most `limit` sockets per user; `None` means no cap.
    pub fn new(limit: Option<usize>) -> Self {
        Self {
            limit,
            open: Arc::default(),
        }
    }

    /// The cap.
    pub fn limit(&self) -> Option<usize> {
        self.limit
    }

    /// Takes one of `user_id`'s slots until the guard is dropped; `None` when they are all
    /// taken.
    pub fn acquire(&self, user_id: &str) -> Option<QuotaGuard> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(user_id.to_owned()).or_default();
        if self.limit.is_some_and(|limit| *count >= limit) {
            return None;
        }
        *count += 1;
        Some(QuotaGuard {
            quota: self.clone(),
            user_id: user_id.to_owned(),
        })
    }

    /// Sockets `user_id` holds now.
    pub fn open(&self, user_id: &str) -> usize {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.get(user_id).copied().unwrap_or(0)
    }

    fn release(&self, user_id: &str) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(user_id) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(user_id);
            }
        }
    }
}

/// One socket's slot in a [`SocketQuota`], given back on drop.
#[derive(Debug)]
pub struct QuotaGuard {
    quota: SocketQuota,
    user_id: String,
}

impl Drop for QuotaGuard {
    fn drop(&mut self) {
        self.quota.release(&self.user_id);
    }
}

/// Timing and sizing of websocket sessions.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// How often the server pings (`PING_INTERVAL`, 30s).
    pub ping_interval: Duration,
    /// How long without any frame from the client before the session is dropped (`PONG_WAIT`, 40s).
    pub pong_wait: Duration,
    /// Upper bound of one write (`WRITE_WAIT`, 10s).
    pub write_wait: Duration,
    /// Frames a session may have queued before broadcasts to it count as failed.
    pub queue_capacity: usize,
    /// What a broadcast does with a session whose queue is full.
    pub slow_clients: SlowClientPolicy,
    /// Longest life of a session (less up to a tenth, spread by session, so reconnects do not
    /// come all at once), after which it closes with [`SESSION_EXPIRED_CLOSE_CODE`]; `None`:
    /// unbounded. Bounds how long a socket can stay on an instance its key no longer maps to.
    pub max_age: Option<Duration>,
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
        }
    }
}

/// A registered session; unregisters itself when dropped.
pub struct Subscription {
    registry: Arc<dyn SocketRegistry>,
    key: String,
    id: SessionId,
    receiver: SessionReceiver,
    config: SessionConfig,
    registered: bool,
    floor: Option<Arc<str>>,
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
        let (handle, receiver) = session_channel(config.queue_capacity);
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
        }
    }

    /// Skips every frame whose dedup id sorts at or below `since`: a client resuming after
    /// `since` already has those messages, even when one of them was still in flight when it
    /// reconnected. Message ids sort in store order (a [`crate::store::MessageStore`] guarantee).
    pub fn after(mut self, since: &str) -> Self {
        self.floor = Some(Arc::from(since));
        self
    }

    /// Runs the session on `socket` until either side closes it or it fails: first `replay` (in
    /// order), then queued frames, each sent at most once per dedup id; pings every
    /// `ping_interval`; drops the client after `pong_wait` of silence.
    pub async fn run(mut self, socket: WebSocket, replay: Vec<Frame>) {
        let (mut sink, mut stream) = socket.split();
        if !self.registered {
            let reason = CloseReason::new(SHUTDOWN_CLOSE_CODE, "server shutting down");
            let _ = send_close(&mut sink, &reason, self.config.write_wait).await;
            return;
        }
        let mut sent = RecentIds::new(self.config.queue_capacity.max(64) * 2);
        for frame in replay {
            if !self.send(&mut sink, &mut sent, frame).await {
                return;
            }
        }
        let mut ping = tokio::time::interval_at(
            Instant::now() + self.config.ping_interval,
            self.config.ping_interval,
        );
        let silence = sleep_until(Instant::now() + self.config.pong_wait);
        tokio::pin!(silence);
        let expiry = expiry(self.config.max_age, self.id);
        tokio::pin!(expiry);
        loop {
            // Biased, close first: a session asked to close (shutdown, failover, too slow) sends
            // its close frame next instead of first draining its queue, and never misses it
            // because the registry dropped its queue meanwhile.
            tokio::select! {
                biased;
                changed = self.receiver.close.changed() => {
                    let reason = self.receiver.close.borrow().clone();
                    if changed.is_err() { return }
                    if let Some(reason) = reason {
                        let _ = send_close(&mut sink, &reason, self.config.write_wait).await;
                        return;
                    }
                }
                () = &mut expiry => {
                    let reason = CloseReason::new(
                        SESSION_EXPIRED_CLOSE_CODE,
                        "session max age reached; reconnect with since=",
                    );
                    let _ = send_close(&mut sink, &reason, self.config.write_wait).await;
                    return;
                }
                frame = self.receiver.outbound.recv() => match frame {
                    Some(frame) => if !self.send(&mut sink, &mut sent, frame).await { return },
                    None => return,
                },
                _ = ping.tick() => {
                    let ping = Message::Ping(bytes::Bytes::new());
                    if !matches!(timeout(self.config.write_wait, sink.send(ping)).await, Ok(Ok(()))) {
                        return;
                    }
                }
                () = &mut silence => {
                    tracing::debug!(key = %self.key, "no pong within PONG_WAIT: dropping session");
                    return;
                }
                incoming = stream.next() => match incoming {
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                    Some(Ok(_)) => silence.as_mut().reset(Instant::now() + self.config.pong_wait),
                },
            }
        }
    }

    /// Closes `socket` with `reason` instead of running the session (e.g. replay failed).
    pub async fn refuse(self, socket: WebSocket, reason: CloseReason) {
        let (mut sink, _) = socket.split();
        let _ = send_close(&mut sink, &reason, self.config.write_wait).await;
    }

    async fn send(
        &self,
        sink: &mut futures::stream::SplitSink<WebSocket, Message>,
        sent: &mut RecentIds,
        frame: Frame,
    ) -> bool {
        if let Some(id) = &frame.dedup_id {
            let already_had = self.floor.as_ref().is_some_and(|floor| id <= floor);
            if already_had || !sent.insert(id) {
                return true;
            }
        }
        matches!(
            timeout(self.config.write_wait, sink.send(Message::Text(frame.text))).await,
            Ok(Ok(()))
        )
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if self.registered {
            self.registry.unregister(&self.key, self.id);
        }
    }
}

/// Resolves when session `id` has lived `max_age`, less its share of a tenth spread by id.
async fn expiry(max_age: Option<Duration>, id: SessionId) {
    let Some(max_age) = max_age else {
        return std::future::pending().await;
    };
    let spread = (max_age / 10).mul_f64((id % 1000) as f64 / 1000.0);
    tokio::time::sleep(max_age.saturating_sub(spread)).await;
}

async fn send_close(
    sink: &mut futures::stream::SplitSink<WebSocket, Message>,
    reason: &CloseReason,
    write_wait: Duration,
) -> bool {
    let frame = CloseFrame {
        code: reason.code,
        reason: Utf8Bytes::from(truncate_utf8(&reason.reason, 123).to_owned()),
    };
    matches!(
        timeout(write_wait, sink.send(Message::Close(Some(frame)))).await,
        Ok(Ok(()))
    )
}

fn truncate_utf8(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The last `capacity` dedup ids a session sent.
#[derive(Debug)]
struct RecentIds {
    order: VecDeque<Arc<str>>,
    set: HashSet<Arc<str>>,
    capacity: usize,
}

impl RecentIds {
    fn new(capacity: usize) -> Self {
        Self {
            order: VecDeque::with_capacity(capacity),
            set: HashSet::with_capacity(capacity),
            capacity,
        }
    }

    /// Records `id`; false when it was already recorded.
    fn insert(&mut self, id: &Arc<str>) -> bool {
        if !self.set.insert(Arc::clone(id)) {
            return false;
        }
        self.order.push_back(Arc::clone(id));
        if self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry() -> LocalSocketRegistry {
        LocalSocketRegistry::new(TierLabel::chat, Arc::new(Metrics::new()))
    }

    fn frame(text: &'static str) -> Frame {
        Frame::new(Utf8Bytes::from_static(text))
    }

    #[test]
    fn broadcast_reaches_every_session_of_the_key_only() {
        let registry = registry();
        let (a, mut a_rx) = session_channel(4);
        let (b, mut b_rx) = session_channel(4);
        let (other, mut other_rx) = session_channel(4);
        assert!(registry.register("s1", a));
        assert!(registry.register("s1", b));
        assert!(registry.register("s2", other));
        let report = registry.broadcast("s1", &frame("hi"));
        assert_eq!(
            report,
            DeliveryReport {
                delivered: 2,
                failed: 0
            }
        );
        assert_eq!(a_rx.outbound.try_recv().map(|f| f.text), Ok("hi".into()));
        assert_eq!(b_rx.outbound.try_recv().map(|f| f.text), Ok("hi".into()));
        assert!(other_rx.outbound.try_recv().is_err());
    }

    #[test]
    fn a_full_queue_fails_without_blocking_and_a_dead_session_is_removed() {
        let registry = registry().with_slow_client_policy(SlowClientPolicy::Retry);
        let (slow, _slow_rx) = session_channel(1);
        let (dead, dead_rx) = session_channel(4);
        let (healthy, mut healthy_rx) = session_channel(4);
        registry.register("s", slow);
        registry.register("s", dead);
        registry.register("s", healthy);
        drop(dead_rx);
        let first = registry.broadcast("s", &frame("1"));
        assert_eq!(
            first,
            DeliveryReport {
                delivered: 2,
                failed: 1
            }
        );
        assert_eq!(registry.sessions("s"), 2, "dead session removed");
        let second = registry.broadcast("s", &frame("2"));
        assert_eq!(
            second,
            DeliveryReport {
                delivered: 1,
                failed: 1
            },
            "slow session's queue is full"
        );
        assert_eq!(
            healthy_rx.outbound.try_recv().map(|f| f.text),
            Ok("1".into())
        );
        assert_eq!(
            healthy_rx.outbound.try_recv().map(|f| f.text),
            Ok("2".into())
        );
    }

    #[test]
    fn close_signals_sessions_and_close_all_refuses_new_ones() {
        let registry = registry();
        let (a, a_rx) = session_channel(4);
        registry.register("s", a);
        assert_eq!(registry.close("s", CloseReason::new(4000, "gave up")), 1);
        assert_eq!(
            a_rx.close.borrow().as_ref().map(|r| r.code),
            Some(FAILOVER_CLOSE_CODE)
        );
        assert_eq!(registry.close_all(CloseReason::new(1001, "bye")), 1);
        let (late, _late_rx) = session_channel(4);
        assert!(!registry.register("s", late));
    }

    #[test]
    fn a_slow_session_is_closed_with_4001_and_the_next_broadcast_is_complete() {
        let metrics = Arc::new(Metrics::new());
        let registry = LocalSocketRegistry::new(TierLabel::chat, metrics.clone());
        let (slow, slow_rx) = session_channel(1);
        let (healthy, mut healthy_rx) = session_channel(4);
        registry.register("s", slow);
        registry.register("s", healthy);
        assert_eq!(registry.broadcast("s", &frame("1")).failed, 0);
        let second = registry.broadcast("s", &frame("2"));
        assert_eq!(
            second,
            DeliveryReport {
                delivered: 1,
                failed: 1
            }
        );
        assert_eq!(
            slow_rx.close.borrow().as_ref().map(|r| r.code),
            Some(SLOW_CLIENT_CLOSE_CODE)
        );
        assert_eq!(registry.sessions("s"), 1, "the slow session is gone");
        let third = registry.broadcast("s", &frame("3"));
        assert_eq!(
            third,
            DeliveryReport {
                delivered: 1,
                failed: 0
            }
        );
        let texts: Vec<_> = std::iter::from_fn(|| healthy_rx.outbound.try_recv().ok())
            .map(|f| f.text)
            .collect();
        assert_eq!(texts, vec!["1", "2", "3"]);
        assert!(metrics
            .render()
            .contains(r#"chatcore_deliveries_total{tier="chat",result="slow_client_closed"} 1"#));
    }

    #[tokio::test]
    async fn drained_resolves_once_the_last_session_is_gone() {
        let registry = Arc::new(registry());
        let (a, _a_rx) = session_channel(4);
        let (b, _b_rx) = session_channel(4);
        let (a_id, b_id) = (a.id, b.id);
        registry.register("s1", a);
        registry.register("s2", b);
        assert_eq!(registry.len(), 2);
        let waiter = tokio::spawn({
            let registry = registry.clone();
            async move { registry.drained().await }
        });
        registry.unregister("s1", a_id);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "one session is still open");
        registry.unregister("s2", b_id);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("drained after the last session")
            .expect("task");
        assert!(registry.is_empty());
    }

    #[test]
    fn recent_ids_forget_the_oldest() {
        let mut ids = RecentIds::new(2);
        let (a, b, c): (Arc<str>, Arc<str>, Arc<str>) = ("a".into(), "b".into(), "c".into());
        assert!(ids.insert(&a));
        assert!(!ids.insert(&a));
        assert!(ids.insert(&b));
        assert!(ids.insert(&c));
        assert!(ids.insert(&a), "a was evicted");
    }

    #[test]
    fn close_reasons_are_cut_on_a_char_boundary() {
        assert_eq!(truncate_utf8("ééé", 3), "é");
        assert_eq!(truncate_utf8("abc", 10), "abc");
    }
}
