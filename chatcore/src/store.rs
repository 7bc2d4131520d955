//! The message store: the single source of truth every delivery starts from and every client
//! recovers from.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use chrono::Utc;

use crate::change::{
    ChangeError, ChangeFeed, ChangeSource, InMemoryChangeFeed, InMemoryChangeSource, Op,
};
use crate::error::Cause;
use crate::model::{ChatMessage, ValidMessage};

/// Name of the chat collection, in MongoDB and on the change feed.
pub const CHAT_COLLECTION: &str = "chat";
/// Default page size of history queries.
pub const DEFAULT_HISTORY_LIMIT: usize = 50;
/// Largest page a history query may ask for.
pub const MAX_HISTORY_LIMIT: usize = 500;

/// A page of a conversation's history. `since` and `before` are exclusive message ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryQuery {
    /// The conversation.
    pub stream_id: String,
    /// Only messages after this id.
    pub since: Option<String>,
    /// Only messages before this id; with it the page is the `limit` messages immediately
    /// preceding it.
    pub before: Option<String>,
    /// Page size, at most [`MAX_HISTORY_LIMIT`].
    pub limit: usize,
}

impl HistoryQuery {
    /// The first page of a stream.
    pub fn stream(stream_id: impl Into<String>) -> Self {
        Self {
            stream_id: stream_id.into(),
            since: None,
            before: None,
            limit: DEFAULT_HISTORY_LIMIT,
        }
    }

    /// Sets `since`.
    pub fn since(mut self, message_id: impl Into<String>) -> Self {
        self.since = Some(message_id.into());
        self
    }

    /// Sets `before`.
    pub fn before(mut self, message_id: impl Into<String>) -> Self {
        self.before = Some(message_id.into());
        self
    }

    /// Sets the page size, clamped to `1..=MAX_HISTORY_LIMIT`.
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit.clamp(1, MAX_HISTORY_LIMIT);
        self
    }
}

/// The result of an insert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inserted {
    /// The stored message (the first one, for a repeated idempotency key).
    pub message: ChatMessage,
    /// False when the idempotency key had been seen and nothing new was stored.
    pub created: bool,
}

/// A store operation failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend cannot be reached or timed out; the HTTP layer answers 503.
    #[error("message store unavailable: {0}")]
    Unavailable(#[source] Cause),
    /// The backend answered with something this code cannot interpret.
    #[error("message store error: {0}")]
    Backend(#[source] Cause),
    /// A `since` or `before` id is not an id this store ever hands out; the HTTP layer answers 400.
    #[error("invalid message id: {0}")]
    InvalidCursor(String),
}

/// Stores chat messages and answers history queries.
///
/// Message ids must be fixed-width strings that sort (byte-wise) in the order messages were
/// stored within a stream, as ObjectIds and [`MessageIdGenerator`] ids do: `since`/`before`
/// paging and gapless resumption rely on it.
///
/// Implementing it: a store that wraps another and counts what it stored (a real backend maps
/// each call to its database, and reports a lost connection as [`StoreError::Unavailable`], which
/// the HTTP layer answers with 503).
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use async_trait::async_trait;
/// use chatcore::model::{ChatMessage, ValidMessage};
/// use chatcore::store::{HistoryQuery, InMemoryMessageStore, Inserted, MessageStore, StoreError};
///
/// #[derive(Default)]
/// struct CountingStore {
///     inner: InMemoryMessageStore,
///     stored: AtomicU64,
/// }
///
/// #[async_trait]
/// impl MessageStore for CountingStore {
///     async fn insert(
///         &self,
///         message: ValidMessage,
///         idempotency_key: Option<&str>,
///     ) -> Result<Inserted, StoreError> {
///         let inserted = self.inner.insert(message, idempotency_key).await?;
///         if inserted.created {
///             self.stored.fetch_add(1, Ordering::Relaxed);
///         }
///         Ok(inserted)
///     }
///
///     async fn history(&self, query: &HistoryQuery) -> Result<Vec<ChatMessage>, StoreError> {
///         self.inner.history(query).await
///     }
///
///     async fn ping(&self) -> Result<(), StoreError> {
///         self.inner.ping().await
///     }
/// }
/// # let _ = CountingStore::default();
/// ```
#[async_trait]
pub trait MessageStore: Send + Sync {
    /// Stores a validated message, assigning `message_id` and `created_at`.
    ///
    /// With an `idempotency_key`, a repeat of the same key by the same sender returns the first
    /// message with `created == false` and stores nothing.
    async fn insert(
        &self,
        message: ValidMessage,
        idempotency_key: Option<&str>,
    ) -> Result<Inserted, StoreError>;

    /// A page of a stream's messages, ascending by `message_id`.
    async fn history(&self, query: &HistoryQuery) -> Result<Vec<ChatMessage>, StoreError>;

    /// Checks that the backend answers (readiness).
    async fn ping(&self) -> Result<(), StoreError>;

    /// The message `message_id` of `stream_id`, if the stream has it. The provided
    /// implementation asks [`history`](Self::history) for the message before it, then for the
    /// one after that.
    async fn find(
        &self,
        stream_id: &str,
        message_id: &str,
    ) -> Result<Option<ChatMessage>, StoreError> {
        let before = self
            .history(&HistoryQuery::stream(stream_id).before(message_id).limit(1))
            .await?;
        let mut next = HistoryQuery::stream(stream_id).limit(1);
        next.since = before.last().map(|m| m.message_id.clone());
        let found = self.history(&next).await?;
        Ok(found.into_iter().find(|m| m.message_id == message_id))
    }

    /// How many messages of `stream_id` come after message `after` (every message when `None`)
    /// and were not sent by `reader`: the reader's unread count. The provided implementation
    /// pages through [`history`](Self::history); a backend with an index counts natively.
    async fn count_unread(
        &self,
        stream_id: &str,
        after: Option<&str>,
        reader: &str,
    ) -> Result<u64, StoreError> {
        let mut query = HistoryQuery::stream(stream_id).limit(MAX_HISTORY_LIMIT);
        query.since = after.map(str::to_owned);
        let mut unread = 0;
        loop {
            let page = self.history(&query).await?;
            unread += page.iter().filter(|m| m.sender_id != reader).count() as u64;
            match page.last() {
                Some(last) if page.len() == MAX_HISTORY_LIMIT => {
                    query.since = Some(last.message_id.clone());
                }
                _ => return Ok(unread),
            }
        }
    }
}

/// Generates unique ids that sort in creation order: 24 lowercase hex characters, like a MongoDB
/// ObjectId (4 bytes of Unix seconds, then an 8-byte sequence that never goes back). The sequence
/// starts at a random point, so two generators (two processes, or a restarted one) do not hand out
/// the same ids within a second, which would make a shared event store drop new messages as
/// duplicates.
#[derive(Debug)]
pub struct MessageIdGenerator {
    last_seconds: u32,
    sequence: u64,
}

impl Default for MessageIdGenerator {
    fn default() -> Self {
        use std::hash::{BuildHasher, Hasher};
        // A randomly keyed hasher is the standard library's source of per-process randomness.
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        Self {
            last_seconds: 0,
            // Leaves 2^62 ids of headroom before the sequence could overflow.
            sequence: random >> 2,
        }
    }
}

impl MessageIdGenerator {
    /// A generator whose ids all sort after `last_id` (an id a generator handed out before, e.g.
    /// the greatest one a durable store holds), so a restarted process never hands out an id
    /// below one it already stored. An id of another shape is ignored.
    pub fn resuming_after(last_id: &str) -> Self {
        let mut ids = Self::default();
        let parsed = (last_id.len() == 24)
            .then(|| {
                let seconds = u32::from_str_radix(last_id.get(..8)?, 16).ok()?;
                let sequence = u64::from_str_radix(last_id.get(8..)?, 16).ok()?;
                Some((seconds, sequence))
            })
            .flatten();
        if let Some((seconds, sequence)) = parsed {
            ids.last_seconds = seconds;
            ids.sequence = ids.sequence.max(sequence);
        }
        ids
    }

    /// The next id, strictly greater than every id returned before.
    pub fn next_id(&mut self) -> String {
        let now = u32::try_from(Utc::now().timestamp()).unwrap_or(u32::MAX);
        self.last_seconds = self.last_seconds.max(now);
        self.sequence += 1;
        format!("{:08x}{:016x}", self.last_seconds, self.sequence)
    }
}

/// The embedded message store: messages in memory, each insert appended to an
/// [`InMemoryChangeFeed`] in the same order, so delivery takes the same path as with a CDC feed.
#[derive(Debug)]
pub struct InMemoryMessageStore {
    state: Mutex<StoreState>,
    feed: Arc<InMemoryChangeFeed>,
}

#[derive(Debug, Default)]
struct StoreState {
    streams: HashMap<String, Vec<ChatMessage>>,
    idempotency: HashMap<(String, String), ChatMessage>,
    ids: MessageIdGenerator,
}

impl Default for InMemoryMessageStore {
    fn default() -> Self {
        Self::new()
    }
}

impl InMemoryMessageStore {
    /// An empty store with its own change feed.
    pub fn new() -> Self {
        Self::with_feed(Arc::new(InMemoryChangeFeed::default()))
    }

    /// An empty store publishing to `feed`.
    pub fn with_feed(feed: Arc<InMemoryChangeFeed>) -> Self {
        Self {
            state: Mutex::new(StoreState::default()),
            feed,
        }
    }

    /// The change feed this store appends to.
    pub fn feed(&self) -> &Arc<InMemoryChangeFeed> {
        &self.feed
    }

    /// Joins consumer group `group` of this store's change feed.
    pub fn change_source(&self, group: &str) -> InMemoryChangeSource {
        self.feed.subscribe(group)
    }

    fn lock(&self) -> MutexGuard<'_, StoreState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Consumer groups of the store's own feed.
#[async_trait]
impl ChangeFeed for InMemoryMessageStore {
    async fn subscribe(&self, group: &str) -> Result<Arc<dyn ChangeSource>, ChangeError> {
        Ok(Arc::new(self.change_source(group)))
    }
}

#[async_trait]
impl MessageStore for InMemoryMessageStore {
    async fn insert(
        &self,
        message: ValidMessage,
        idempotency_key: Option<&str>,
    ) -> Result<Inserted, StoreError> {
        let mut state = self.lock();
        let scoped_key = idempotency_key.map(|k| (message.sender_id().to_owned(), k.to_owned()));
        if let Some(first) = scoped_key.as_ref().and_then(|k| state.idempotency.get(k)) {
            return Ok(Inserted {
                message: first.clone(),
                created: false,
            });
        }
        let stored = message.into_stored(state.ids.next_id(), Utc::now());
        let document =
            serde_json::to_value(&stored).map_err(|e| StoreError::Backend(Cause::new(e)))?;
        state
            .streams
            .entry(stored.stream_id.clone())
            .or_default()
            .push(stored.clone());
        if let Some(key) = scoped_key {
            state.idempotency.insert(key, stored.clone());
        }
        // Appended under the store lock, so the feed's order is the store's order.
        self.feed.append(
            Op::Create,
            CHAT_COLLECTION,
            &stored.stream_id,
            Some(document),
        );
        Ok(Inserted {
            message: stored,
            created: true,
        })
    }

    async fn history(&self, query: &HistoryQuery) -> Result<Vec<ChatMessage>, StoreError> {
        let state = self.lock();
        let Some(messages) = state.streams.get(&query.stream_id) else {
            return Ok(Vec::new());
        };
        Ok(page(messages, query).to_vec())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn count_unread(
        &self,
        stream_id: &str,
        after: Option<&str>,
        reader: &str,
    ) -> Result<u64, StoreError> {
        let state = self.lock();
        let Some(messages) = state.streams.get(stream_id) else {
            return Ok(0);
        };
        let start = after.map_or(0, |after| {
            messages.partition_point(|m| m.message_id.as_str() <= after)
        });
        Ok(messages[start..]
            .iter()
            .filter(|m| m.sender_id != reader)
            .count() as u64)
    }
}

/// Selects a history page from messages sorted ascending by id.
fn page<'a>(messages: &'a [ChatMessage], query: &HistoryQuery) -> &'a [ChatMessage] {
    let start = query.since.as_deref().map_or(0, |since| {
        messages.partition_point(|m| m.message_id.as_str() <= since)
    });
    let end = query.before.as_deref().map_or(messages.len(), |before| {
        messages.partition_point(|m| m.message_id.as_str() < before)
    });
    if start >= end {
        return &[];
    }
    let window = &messages[start..end];
    if query.before.is_some() {
        &window[window.len().saturating_sub(query.limit)..]
    } else {
        &window[..window.len().min(query.limit)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::ChangeSource;
    use crate::model::NewChatMessage;

    fn valid(content: &str) -> ValidMessage {
        NewChatMessage {
            content: content.into(),
            sender_id: "alice".into(),
            receiver_id: Some("bob".into()),
            stream_id: None,
        }
        .validate(1024)
        .expect("valid")
    }

    async fn fill(store: &InMemoryMessageStore, n: usize) -> Vec<ChatMessage> {
        let mut out = Vec::new();
        for i in 0..n {
            out.push(
                store
                    .insert(valid(&format!("m{i}")), None)
                    .await
                    .expect("insert")
                    .message,
            );
        }
        out
    }

    #[test]
    fn ids_are_strictly_increasing_and_object_id_shaped() {
        let mut ids = MessageIdGenerator::default();
        let a = ids.next_id();
        let b = ids.next_id();
        assert!(a < b);
        assert_eq!(a.len(), 24);
        assert_ne!(
            a,
            MessageIdGenerator::default().next_id(),
            "generators do not collide"
        );
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn a_resumed_generator_sorts_after_the_last_stored_id() {
        let far_future = format!("{:08x}{:016x}", u32::MAX - 1, u64::MAX >> 1);
        let mut ids = MessageIdGenerator::resuming_after(&far_future);
        assert!(ids.next_id() > far_future, "even with the clock behind");
        let mut fresh = MessageIdGenerator::default();
        let last = fresh.next_id();
        assert!(MessageIdGenerator::resuming_after(&last).next_id() > last);
        let mut ignored = MessageIdGenerator::resuming_after("not an id");
        assert_eq!(ignored.next_id().len(), 24);
    }

    #[tokio::test]
    async fn history_pages_with_since_before_and_limit() {
        let store = InMemoryMessageStore::new();
        let all = fill(&store, 10).await;
        let stream = all[0].stream_id.clone();
        let ids = |v: Vec<ChatMessage>| v.into_iter().map(|m| m.content).collect::<Vec<_>>();

        let first = store
            .history(&HistoryQuery::stream(&stream).limit(3))
            .await
            .expect("history");
        assert_eq!(ids(first), ["m0", "m1", "m2"]);

        let after = store
            .history(&HistoryQuery::stream(&stream).since(&all[6].message_id))
            .await
            .expect("history");
        assert_eq!(ids(after), ["m7", "m8", "m9"]);

        let before = store
            .history(
                &HistoryQuery::stream(&stream)
                    .before(&all[5].message_id)
                    .limit(2),
            )
            .await
            .expect("history");
        assert_eq!(ids(before), ["m3", "m4"]);

        let between = store
            .history(
                &HistoryQuery::stream(&stream)
                    .since(&all[1].message_id)
                    .before(&all[4].message_id),
            )
            .await
            .expect("history");
        assert_eq!(ids(between), ["m2", "m3"]);

        let unknown = store
            .history(&HistoryQuery::stream("0000000000000000"))
            .await
            .expect("history");
        assert!(unknown.is_empty());
    }

    #[tokio::test]
    async fn an_idempotency_key_stores_once_per_sender() {
        let store = InMemoryMessageStore::new();
        let first = store.insert(valid("a"), Some("k1")).await.expect("insert");
        let again = store.insert(valid("b"), Some("k1")).await.expect("insert");
        assert!(first.created);
        assert!(!again.created);
        assert_eq!(first.message, again.message);
        let history = store
            .history(&HistoryQuery::stream(&first.message.stream_id))
            .await
            .expect("history");
        assert_eq!(history.len(), 1);
        assert_eq!(store.feed().retained(), 1, "one change event only");
    }

    #[tokio::test]
    async fn every_insert_reaches_the_change_feed_as_the_stored_document() {
        let store = InMemoryMessageStore::new();
        let source = store.change_source("g");
        let stored = fill(&store, 1).await.remove(0);
        let event = source.next().await.expect("ok").expect("event");
        assert_eq!(event.op, Op::Create);
        assert_eq!(event.collection, CHAT_COLLECTION);
        assert_eq!(event.key, stored.stream_id);
        let decoded: ChatMessage =
            serde_json::from_value(event.document.expect("document")).expect("decodes");
        assert_eq!(decoded, stored);
    }
}
