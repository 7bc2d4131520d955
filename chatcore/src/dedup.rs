//! Idempotent processing: an [`EventStore`] claims an event key atomically before delivery,
//! completes it with a TTL afterwards, and releases it when processing is abandoned so a retry is
//! not mistaken for a duplicate.
//!
//! Unlike an `EXISTS` then `SET`, a claim is one atomic step: of two consumers racing on
//! the same key exactly one gets [`Claim::Acquired`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::metrics::Metrics;

/// Default time a completed key suppresses duplicates (`DEDUPLICATION_TTL`).
pub const DEFAULT_DEDUPLICATION_TTL: Duration = Duration::from_secs(5 * 60);
/// Default time a claim stays exclusive while its event is being processed.
pub const DEFAULT_CLAIM_LEASE: Duration = Duration::from_secs(60);

/// Proof of a claim, needed to complete or release it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClaimToken(String);

impl ClaimToken {
    /// A token unique across processes: a random per-process prefix and a counter.
    pub fn unique() -> Self {
        static PROCESS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let process = PROCESS.get_or_init(|| {
            use std::hash::{BuildHasher, Hasher};
            std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish()
        });
        Self(format!(
            "{process:016x}-{}",
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ))
    }

    /// Wraps a backend-generated unique token.
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    /// The token text, as stored in the backend.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The answer to a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Claim {
    /// The caller owns the key until the lease ends and must complete or release it.
    Acquired(ClaimToken),
    /// The key was completed within its TTL: the event is a duplicate.
    Completed,
    /// Another consumer holds an unexpired claim on the key.
    InProgress,
}

/// The event store could not be reached or answered unexpectedly.
#[derive(Debug, Clone, thiserror::Error)]
#[error("event store unavailable: {0}")]
pub struct EventStoreError(#[source] pub crate::error::Cause);

/// Remembers which events were processed.
///
/// Implementing it: the claim must be one atomic step of the backend (Redis `SET NX PX`, a
/// conditional insert), never a read followed by a write, or two consumers both process the
/// event. A toy store on one mutex:
///
/// ```
/// use std::collections::HashMap;
/// use std::sync::Mutex;
/// use std::time::{Duration, Instant};
/// use async_trait::async_trait;
/// use chatcore::dedup::{Claim, ClaimToken, EventStore, EventStoreError};
///
/// #[derive(Default)]
/// struct MutexStore {
///     /// key -> (holder while claimed, expiry)
///     keys: Mutex<HashMap<String, (Option<ClaimToken>, Instant)>>,
/// }
///
/// #[async_trait]
/// impl EventStore for MutexStore {
///     async fn claim(&self, key: &str, lease: Duration) -> Result<Claim, EventStoreError> {
///         let mut keys = self.keys.lock().map_err(|_| EventStoreError("poisoned".into()))?;
///         let now = Instant::now();
///         match keys.get(key) {
///             Some((None, expires)) if *expires > now => return Ok(Claim::Completed),
///             Some((Some(_), expires)) if *expires > now => return Ok(Claim::InProgress),
///             _ => {}
///         }
///         let token = ClaimToken::unique();
///         keys.insert(key.to_owned(), (Some(token.clone()), now + lease));
///         Ok(Claim::Acquired(token))
///     }
///
///     async fn complete(&self, key: &str, token: &ClaimToken, ttl: Duration) -> Result<(), EventStoreError> {
///         let mut keys = self.keys.lock().map_err(|_| EventStoreError("poisoned".into()))?;
///         if matches!(keys.get(key), Some((Some(holder), _)) if holder == token) {
///             keys.insert(key.to_owned(), (None, Instant::now() + ttl));
///         }
///         Ok(())
///     }
///
///     async fn release(&self, key: &str, token: &ClaimToken) -> Result<(), EventStoreError> {
///         let mut keys = self.keys.lock().map_err(|_| EventStoreError("poisoned".into()))?;
///         if matches!(keys.get(key), Some((Some(holder), _)) if holder == token) {
///             keys.remove(key);
///         }
///         Ok(())
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let store = MutexStore::default();
/// let lease = Duration::from_secs(30);
/// let Ok(Claim::Acquired(token)) = store.claim("m1:s1", lease).await else { panic!() };
/// assert_eq!(store.claim("m1:s1", lease).await.ok(), Some(Claim::InProgress));
/// store.complete("m1:s1", &token, Duration::from_secs(300)).await.unwrap();
/// assert_eq!(store.claim("m1:s1", lease).await.ok(), Some(Claim::Completed));
/// # }
/// ```
#[async_trait]
pub trait EventStore: Send + Sync {
    /// Atomically claims `key` for `lease` unless it is claimed or completed.
    async fn claim(&self, key: &str, lease: Duration) -> Result<Claim, EventStoreError>;

    /// Marks `key` processed for `ttl`, if the claim is still ours.
    async fn complete(
        &self,
        key: &str,
        token: &ClaimToken,
        ttl: Duration,
    ) -> Result<(), EventStoreError>;

    /// Gives the claim up so the event can be claimed again, if it is still ours.
    async fn release(&self, key: &str, token: &ClaimToken) -> Result<(), EventStoreError>;
}

/// The embedded event store: a map of keys with expiry, swept as it is used.
#[derive(Debug, Default)]
pub struct InMemoryEventStore {
    entries: Mutex<HashMap<String, Entry>>,
    operations: AtomicU64,
}

#[derive(Debug, Clone)]
struct Entry {
    holder: Option<ClaimToken>,
    expires: Instant,
}

/// Every this many claims the in-memory store drops all expired keys.
const SWEEP_EVERY: u64 = 1024;

impl InMemoryEventStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of keys held, expired or not (for tests and benchmarks).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn sweep_now_and_then(&self, entries: &mut HashMap<String, Entry>, now: Instant) {
        if self
            .operations
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(SWEEP_EVERY)
        {
            entries.retain(|_, entry| entry.expires > now);
        }
    }
}

#[async_trait]
impl EventStore for InMemoryEventStore {
    async fn claim(&self, key: &str, lease: Duration) -> Result<Claim, EventStoreError> {
        let now = Instant::now();
        let mut entries = self.lock();
        self.sweep_now_and_then(&mut entries, now);
        if let Some(entry) = entries.get(key).filter(|e| e.expires > now) {
            return Ok(match entry.holder {
                Some(_) => Claim::InProgress,
                None => Claim::Completed,
            });
        }
        let token = ClaimToken::unique();
        entries.insert(
            key.to_owned(),
            Entry {
                holder: Some(token.clone()),
                expires: now + lease,
            },
        );
        Ok(Claim::Acquired(token))
    }

    async fn complete(
        &self,
        key: &str,
        token: &ClaimToken,
        ttl: Duration,
    ) -> Result<(), EventStoreError> {
        let mut entries = self.lock();
        let ours_or_free = entries
            .get(key)
            .is_none_or(|e| e.holder.as_ref() == Some(token) || e.expires <= Instant::now());
        if ours_or_free {
            entries.insert(
                key.to_owned(),
                Entry {
                    holder: None,
                    expires: Instant::now() + ttl,
                },
            );
        }
        Ok(())
    }

    async fn release(&self, key: &str, token: &ClaimToken) -> Result<(), EventStoreError> {
        let mut entries = self.lock();
        if entries.get(key).and_then(|e| e.holder.as_ref()) == Some(token) {
            entries.remove(key);
        }
        Ok(())
    }
}

/// What to do when the event store cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum UnavailablePolicy {
    /// Process the event anyway, risking a duplicate (the default).
    #[default]
    FailOpen,
    /// Refuse to process; the event is retried later and nothing is committed meanwhile.
    FailClosed,
}

impl UnavailablePolicy {
    fn label(self) -> &'static str {
        match self {
            Self::FailOpen => "fail_open",
            Self::FailClosed => "fail_closed",
        }
    }
}

/// Settings of a [`Deduplicator`].
#[derive(Debug, Clone)]
pub struct DedupConfig {
    /// How long a completed key suppresses duplicates.
    pub ttl: Duration,
    /// How long a claim stays exclusive while processing.
    pub lease: Duration,
    /// Behaviour when the store is unreachable.
    pub on_unavailable: UnavailablePolicy,
}

impl Default for DedupConfig {
    fn default() -> Self {
        Self {
            ttl: DEFAULT_DEDUPLICATION_TTL,
            lease: DEFAULT_CLAIM_LEASE,
            on_unavailable: UnavailablePolicy::default(),
        }
    }
}

/// The decision taken before processing an event.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Admission {
    /// Process it. The token is `None` when the store was unreachable and the policy is fail-open.
    Process(Option<ClaimToken>),
    /// Already processed: drop it.
    Duplicate,
    /// Someone else is processing it: wait and ask again.
    Busy,
}

/// The event store was unreachable and the policy is fail-closed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("event store unavailable and policy is fail-closed: {0}")]
pub struct Refused(pub EventStoreError);

/// An [`EventStore`] with TTLs and a failure policy: the piece the pipeline talks to.
#[derive(Clone)]
pub struct Deduplicator {
    store: Arc<dyn EventStore>,
    config: DedupConfig,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Deduplicator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deduplicator")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Deduplicator {
    /// Wraps `store`.
    pub fn new(store: Arc<dyn EventStore>, config: DedupConfig, metrics: Arc<Metrics>) -> Self {
        Self {
            store,
            config,
            metrics,
        }
    }

    /// The settings.
    pub fn config(&self) -> &DedupConfig {
        &self.config
    }

    /// Claims `key` and decides whether to process the event.
    pub async fn admit(&self, key: &str) -> Result<Admission, Refused> {
        match self.store.claim(key, self.config.lease).await {
            Ok(Claim::Acquired(token)) => Ok(Admission::Process(Some(token))),
            Ok(Claim::Completed) => Ok(Admission::Duplicate),
            Ok(Claim::InProgress) => Ok(Admission::Busy),
            Err(error) => self
                .unavailable(key, error)
                .map(|()| Admission::Process(None)),
        }
    }

    /// Marks the event processed. An unreachable store is logged and counted: the event was
    /// delivered, so the caller goes on.
    pub async fn finish(&self, key: &str, token: Option<&ClaimToken>) {
        let Some(token) = token else { return };
        if let Err(error) = self.store.complete(key, token, self.config.ttl).await {
            self.count_error();
            tracing::warn!(%key, %error, "could not mark event processed; a redelivery may duplicate it");
        }
    }

    /// Gives up the claim so a redelivery is processed rather than dropped.
    pub async fn abandon(&self, key: &str, token: Option<&ClaimToken>) {
        let Some(token) = token else { return };
        if let Err(error) = self.store.release(key, token).await {
            self.count_error();
            tracing::warn!(%key, %error, "could not release claim; a redelivery waits for the lease to end");
        }
    }

    fn unavailable(&self, key: &str, error: EventStoreError) -> Result<(), Refused> {
        self.count_error();
        match self.config.on_unavailable {
            UnavailablePolicy::FailOpen => {
                tracing::warn!(%key, %error, "event store unavailable: processing anyway (fail-open)");
                Ok(())
            }
            UnavailablePolicy::FailClosed => {
                tracing::warn!(%key, %error, "event store unavailable: refusing (fail-closed)");
                Err(Refused(error))
            }
        }
    }

    fn count_error(&self) {
        self.metrics
            .event_store_error(self.config.on_unavailable.label());
    }
}

/// Default window of a [`Throttle`]: one notification per conversation per six hours.
pub const DEFAULT_THROTTLE_TTL: Duration = Duration::from_secs(6 * 60 * 60);

/// Lets the first event of a key through per TTL and suppresses the rest: the `separate` strategy,
/// where an ongoing conversation notifies its receiver once. Built on any [`EventStore`], so it is
/// shared by every consumer that uses the same store; keys are `throttle:{key}`.
#[derive(Clone)]
pub struct Throttle {
    store: Arc<dyn EventStore>,
    ttl: Duration,
}

impl std::fmt::Debug for Throttle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Throttle")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl Throttle {
    /// A throttle with window `ttl` on `store`.
    pub fn new(store: Arc<dyn EventStore>, ttl: Duration) -> Self {
        Self { store, ttl }
    }

    /// True when this is the first event of `key` within the window (and marks it).
    pub async fn allow(&self, key: &str) -> Result<bool, EventStoreError> {
        let key = format!("throttle:{key}");
        match self.store.claim(&key, self.ttl).await? {
            Claim::Acquired(token) => {
                self.store.complete(&key, &token, self.ttl).await?;
                Ok(true)
            }
            Claim::Completed | Claim::InProgress => Ok(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn exactly_one_of_many_racing_claims_wins() {
        let store = Arc::new(InMemoryEventStore::new());
        let mut handles = Vec::new();
        for _ in 0..32 {
            let store = Arc::clone(&store);
            handles.push(tokio::spawn(async move {
                store.claim("k", Duration::from_secs(10)).await
            }));
        }
        let mut acquired = 0;
        for handle in handles {
            if matches!(handle.await, Ok(Ok(Claim::Acquired(_)))) {
                acquired += 1;
            }
        }
        assert_eq!(acquired, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn completed_keys_expire_after_their_ttl() {
        let store = InMemoryEventStore::new();
        let Ok(Claim::Acquired(token)) = store.claim("k", Duration::from_secs(1)).await else {
            panic!("first claim must win");
        };
        assert_eq!(
            store.claim("k", Duration::from_secs(1)).await.ok(),
            Some(Claim::InProgress)
        );
        store
            .complete("k", &token, Duration::from_secs(60))
            .await
            .expect("complete");
        assert_eq!(
            store.claim("k", Duration::from_secs(1)).await.ok(),
            Some(Claim::Completed)
        );
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(matches!(
            store.claim("k", Duration::from_secs(1)).await,
            Ok(Claim::Acquired(_))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn released_and_expired_claims_are_claimable_again() {
        let store = InMemoryEventStore::new();
        let Ok(Claim::Acquired(token)) = store.claim("k", Duration::from_secs(5)).await else {
            panic!("first claim must win");
        };
        store.release("k", &token).await.expect("release");
        let Ok(Claim::Acquired(second)) = store.claim("k", Duration::from_secs(5)).await else {
            panic!("released key must be claimable");
        };
        // A stale holder cannot release someone else's claim.
        store.release("k", &token).await.expect("release");
        assert_eq!(
            store.claim("k", Duration::from_secs(5)).await.ok(),
            Some(Claim::InProgress)
        );
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(matches!(
            store.claim("k", Duration::from_secs(5)).await,
            Ok(Claim::Acquired(_))
        ));
        drop(second);
    }

    #[tokio::test(start_paused = true)]
    async fn the_throttle_passes_once_per_key_per_window() {
        let throttle = Throttle::new(Arc::new(InMemoryEventStore::new()), Duration::from_secs(60));
        assert_eq!(throttle.allow("s1").await.ok(), Some(true));
        assert_eq!(throttle.allow("s1").await.ok(), Some(false));
        assert_eq!(
            throttle.allow("s2").await.ok(),
            Some(true),
            "keys are independent"
        );
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(throttle.allow("s1").await.ok(), Some(true), "a new window");
    }

    struct Unreachable;

    #[async_trait]
    impl EventStore for Unreachable {
        async fn claim(&self, _: &str, _: Duration) -> Result<Claim, EventStoreError> {
            Err(EventStoreError("connection refused".into()))
        }
        async fn complete(
            &self,
            _: &str,
            _: &ClaimToken,
            _: Duration,
        ) -> Result<(), EventStoreError> {
            Err(EventStoreError("connection refused".into()))
        }
        async fn release(&self, _: &str, _: &ClaimToken) -> Result<(), EventStoreError> {
            Err(EventStoreError("connection refused".into()))
        }
    }

    #[tokio::test]
    async fn unreachable_store_follows_the_policy_and_is_counted() {
        let metrics = Arc::new(Metrics::new());
        let open = Deduplicator::new(
            Arc::new(Unreachable),
            DedupConfig::default(),
            metrics.clone(),
        );
        assert_eq!(open.admit("k").await.ok(), Some(Admission::Process(None)));
        let closed = Deduplicator::new(
            Arc::new(Unreachable),
            DedupConfig {
                on_unavailable: UnavailablePolicy::FailClosed,
                ..DedupConfig::default()
            },
            metrics.clone(),
        );
        assert!(closed.admit("k").await.is_err());
        let text = metrics.render();
        assert!(
            text.contains(r#"chatcore_event_store_errors_total{policy="fail_open"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"chatcore_event_store_errors_total{policy="fail_closed"} 1"#),
            "{text}"
        );
    }
}
