//! The change feed: events describing writes to the store, in per-key order, acknowledged one by
//! one once the pipeline is done with them.
//!
//! A [`ChangeSource`] is the only way delivery learns about messages: Debezium over Kafka and
//! MongoDB change streams in production (backend crates), [`InMemoryChangeFeed`] when embedded.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::error::Cause;

/// What happened to the document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Op {
    /// An insert (Debezium `c`).
    Create,
    /// An update (Debezium `u`).
    Update,
    /// A delete (Debezium `d`).
    Delete,
    /// A snapshot read (Debezium `r`).
    Read,
}

/// Where an event sits in its source, so the source can commit past it.
///
/// Kafka uses `partition` and `offset`; a MongoDB change stream keeps `partition` 0, a local sequence
/// number as `offset`, and its resume token in `token`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SourcePosition {
    /// Kafka partition, or 0 for sources without partitions.
    pub partition: i32,
    /// Offset within the partition, increasing in delivery order.
    pub offset: i64,
    /// Opaque resume token for sources that need one.
    pub token: Option<String>,
}

/// One change to one document.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeEvent {
    /// The kind of change.
    pub op: Op,
    /// The collection (or topic) the document belongs to, e.g. `chat`.
    pub collection: String,
    /// The record key the source ordered the event by (for chat: the `stream_id`).
    pub key: String,
    /// The document after the change as plain JSON; `None` for deletes.
    pub document: Option<serde_json::Value>,
    /// Where to commit once the event is done.
    pub position: SourcePosition,
    /// Set when the source could not decode the record: the pipeline drops the event as
    /// `invalid_format` and acknowledges it, so one poison record never blocks its partition.
    pub malformed: Option<String>,
}

impl ChangeEvent {
    /// An event for a record that could not be decoded.
    pub fn malformed(key: String, position: SourcePosition, reason: impl Into<String>) -> Self {
        Self {
            op: Op::Create,
            collection: String::new(),
            key,
            document: None,
            position,
            malformed: Some(reason.into()),
        }
    }
}

/// A source failed to produce or commit an event.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ChangeError {
    /// The backend is unreachable or answered with an error; the caller may try again.
    #[error("change source unavailable: {0}")]
    Unavailable(#[source] Cause),
    /// The position handed to `done` was never delivered by this source.
    #[error("unknown position {partition}:{offset}")]
    UnknownPosition {
        /// Partition of the position.
        partition: i32,
        /// Offset of the position.
        offset: i64,
    },
}

/// A feed of [`ChangeEvent`]s in per-key order.
///
/// Events are committed only through [`ChangeSource::done`], and a source commits position `p` only
/// once every event it delivered before `p` on the same partition is done too: after a crash the
/// feed resumes at the first event that was not finished, so nothing acknowledged is lost.
#[async_trait]
pub trait ChangeSource: Send + Sync {
    /// Waits for the next event; `Ok(None)` when the source has ended for good.
    async fn next(&self) -> Result<Option<ChangeEvent>, ChangeError>;

    /// Tells the source that the pipeline is finished with the event at `position`.
    async fn done(&self, position: &SourcePosition) -> Result<(), ChangeError>;

    /// Flushes what is finished (e.g. a final offset commit) before the consumer stops.
    async fn close(&self) {}
}

/// A store's change feed, from which consumer groups are opened: each group reads every event
/// once, resuming at its first unfinished event. A node opens the groups its notification
/// strategy needs (the chat consumer, and the notification consumer of `separate` and
/// `segregated`), so a store handed to it always comes with the feed it writes to.
///
/// Implementing it for a store whose feed is a broker topic or a change stream:
///
/// ```
/// use std::sync::Arc;
/// use async_trait::async_trait;
/// use chatcore::change::{ChangeError, ChangeFeed, ChangeSource, InMemoryChangeFeed};
///
/// /// A feed whose groups are groups of one in-memory feed (a broker would open a consumer
/// /// in consumer group `group` here).
/// struct MyFeed(Arc<InMemoryChangeFeed>);
///
/// #[async_trait]
/// impl ChangeFeed for MyFeed {
///     async fn subscribe(&self, group: &str) -> Result<Arc<dyn ChangeSource>, ChangeError> {
///         Ok(Arc::new(self.0.subscribe(group)))
///     }
/// }
/// # let _ = MyFeed(Arc::new(InMemoryChangeFeed::default()));
/// ```
#[async_trait]
pub trait ChangeFeed: Send + Sync {
    /// Opens consumer group `group` of the feed (created on first use).
    async fn subscribe(&self, group: &str) -> Result<Arc<dyn ChangeSource>, ChangeError>;
}

#[async_trait]
impl ChangeFeed for Arc<InMemoryChangeFeed> {
    async fn subscribe(&self, group: &str) -> Result<Arc<dyn ChangeSource>, ChangeError> {
        Ok(Arc::new(InMemoryChangeFeed::subscribe(self, group)))
    }
}

/// Tracks delivered-but-unfinished offsets per partition and yields the commit point: the first
/// offset that is not finished yet. Backend sources use it to commit only contiguous work.
///
/// ```
/// use chatcore::change::OffsetTracker;
/// let mut tracker = OffsetTracker::default();
/// tracker.delivered(0, 10);
/// tracker.delivered(0, 11);
/// assert_eq!(tracker.finished(0, 11), None); // 10 is still in flight
/// assert_eq!(tracker.finished(0, 10), Some(12)); // commit "next offset to read" = 12
/// ```
#[derive(Debug, Default)]
pub struct OffsetTracker {
    partitions: HashMap<i32, PartitionTrack>,
}

#[derive(Debug)]
struct PartitionTrack {
    in_flight: BTreeSet<i64>,
    next_offset: i64,
    committed: i64,
}

impl OffsetTracker {
    /// Records that `offset` of `partition` was handed to the pipeline.
    pub fn delivered(&mut self, partition: i32, offset: i64) {
        let track = self
            .partitions
            .entry(partition)
            .or_insert_with(|| PartitionTrack {
                in_flight: BTreeSet::new(),
                next_offset: offset,
                committed: offset,
            });
        track.in_flight.insert(offset);
        track.next_offset = track.next_offset.max(offset + 1);
    }

    /// Records that `offset` is finished. Returns the new commit point (the next offset to read)
    /// when it advanced, `None` otherwise.
    pub fn finished(&mut self, partition: i32, offset: i64) -> Option<i64> {
        let track = self.partitions.get_mut(&partition)?;
        if !track.in_flight.remove(&offset) {
            return None;
        }
        let commit = track
            .in_flight
            .first()
            .copied()
            .unwrap_or(track.next_offset);
        (commit > track.committed).then(|| {
            track.committed = commit;
            commit
        })
    }

    /// True when `offset` of `partition` was delivered and is not finished yet.
    pub fn is_in_flight(&self, partition: i32, offset: i64) -> bool {
        self.partitions
            .get(&partition)
            .is_some_and(|t| t.in_flight.contains(&offset))
    }

    /// Forgets a partition (after a rebalance took it away).
    pub fn forget(&mut self, partition: i32) {
        self.partitions.remove(&partition);
    }
}

/// A record appended to the in-memory feed.
#[derive(Debug, Clone)]
struct FeedRecord {
    op: Op,
    collection: String,
    key: String,
    document: Option<serde_json::Value>,
}

/// The embedded change feed: an append-only log with named consumer groups, like a one-partition
/// Kafka topic. Each group resumes after its last contiguous finished event; records every group
/// has finished are trimmed. With no group subscribed the log keeps at most
/// `retain_without_consumers` records.
#[derive(Debug)]
pub struct InMemoryChangeFeed {
    state: Mutex<FeedState>,
    appended: Notify,
}

#[derive(Debug)]
struct FeedState {
    base: i64,
    log: VecDeque<FeedRecord>,
    groups: HashMap<String, GroupState>,
    retain_without_consumers: usize,
}

#[derive(Debug, Default)]
struct GroupState {
    committed: i64,
    generation: u64,
    tracker: OffsetTracker,
}

/// How many records the feed keeps while no consumer group is subscribed.
pub const DEFAULT_RETAIN_WITHOUT_CONSUMERS: usize = 100_000;

impl Default for InMemoryChangeFeed {
    fn default() -> Self {
        Self::new(DEFAULT_RETAIN_WITHOUT_CONSUMERS)
    }
}

impl InMemoryChangeFeed {
    /// Creates an empty feed.
    pub fn new(retain_without_consumers: usize) -> Self {
        Self {
            state: Mutex::new(FeedState {
                base: 0,
                log: VecDeque::new(),
                groups: HashMap::new(),
                retain_without_consumers,
            }),
            appended: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, FeedState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends a change; returns its offset.
    pub fn append(
        &self,
        op: Op,
        collection: &str,
        key: &str,
        document: Option<serde_json::Value>,
    ) -> i64 {
        let offset = {
            let mut state = self.lock();
            state.log.push_back(FeedRecord {
                op,
                collection: collection.to_owned(),
                key: key.to_owned(),
                document,
            });
            state.trim();
            state.base + state.log.len() as i64 - 1
        };
        self.appended.notify_waiters();
        offset
    }

    /// Joins consumer group `group`, starting at its first unfinished event (or at the oldest
    /// retained record for a new group). A new subscription to the same group takes over from the
    /// previous one, as a Kafka rebalance would: events the old one left unfinished are delivered
    /// again.
    pub fn subscribe(self: &Arc<Self>, group: &str) -> InMemoryChangeSource {
        let (cursor, generation) = {
            let mut state = self.lock();
            let base = state.base;
            let group_state = state
                .groups
                .entry(group.to_owned())
                .or_insert_with(|| GroupState {
                    committed: base,
                    ..GroupState::default()
                });
            group_state.generation += 1;
            group_state.tracker = OffsetTracker::default();
            (group_state.committed, group_state.generation)
        };
        InMemoryChangeSource {
            feed: Arc::clone(self),
            group: group.to_owned(),
            generation,
            cursor: Mutex::new(cursor),
        }
    }

    /// The committed offset (next to read after a restart) of `group`.
    pub fn committed(&self, group: &str) -> Option<i64> {
        self.lock().groups.get(group).map(|g| g.committed)
    }

    /// Number of records currently retained.
    pub fn retained(&self) -> usize {
        self.lock().log.len()
    }
}

impl FeedState {
    fn trim(&mut self) {
        let end = self.base + self.log.len() as i64;
        let keep_from = match self.groups.values().map(|g| g.committed).min() {
            Some(min_committed) => min_committed,
            None => end - self.retain_without_consumers as i64,
        };
        while self.base < keep_from && !self.log.is_empty() {
            self.log.pop_front();
            self.base += 1;
        }
    }

    fn read(&self, offset: i64) -> Option<&FeedRecord> {
        usize::try_from(offset - self.base)
            .ok()
            .and_then(|i| self.log.get(i))
    }
}

/// One consumer of an [`InMemoryChangeFeed`] group.
#[derive(Debug)]
pub struct InMemoryChangeSource {
    feed: Arc<InMemoryChangeFeed>,
    group: String,
    generation: u64,
    cursor: Mutex<i64>,
}

impl InMemoryChangeSource {
    fn try_next(&self) -> Option<ChangeEvent> {
        let mut cursor = self.cursor.lock().unwrap_or_else(|e| e.into_inner());
        let mut state = self.feed.lock();
        *cursor = (*cursor).max(state.base);
        let record = state.read(*cursor)?.clone();
        let offset = *cursor;
        *cursor += 1;
        if let Some(group) = state.groups.get_mut(&self.group) {
            if group.generation == self.generation {
                group.tracker.delivered(0, offset);
            }
        }
        Some(ChangeEvent {
            op: record.op,
            collection: record.collection,
            key: record.key,
            document: record.document,
            position: SourcePosition {
                partition: 0,
                offset,
                token: None,
            },
            malformed: None,
        })
    }
}

#[async_trait]
impl ChangeSource for InMemoryChangeSource {
    async fn next(&self) -> Result<Option<ChangeEvent>, ChangeError> {
        loop {
            let appended = self.feed.appended.notified();
            tokio::pin!(appended);
            appended.as_mut().enable();
            if let Some(event) = self.try_next() {
                return Ok(Some(event));
            }
            appended.await;
        }
    }

    async fn done(&self, position: &SourcePosition) -> Result<(), ChangeError> {
        let mut state = self.feed.lock();
        let Some(group) = state.groups.get_mut(&self.group) else {
            return Ok(());
        };
        if group.generation != self.generation {
            // Another subscriber took the group over; it will deliver this event again.
            return Ok(());
        }
        if !group
            .tracker
            .is_in_flight(position.partition, position.offset)
        {
            return Err(ChangeError::UnknownPosition {
                partition: position.partition,
                offset: position.offset,
            });
        }
        if let Some(commit) = group.tracker.finished(position.partition, position.offset) {
            group.committed = group.committed.max(commit);
            state.trim();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed() -> Arc<InMemoryChangeFeed> {
        Arc::new(InMemoryChangeFeed::default())
    }

    #[tokio::test]
    async fn delivers_in_order_and_commits_only_contiguous_work() {
        let feed = feed();
        let source = feed.subscribe("g");
        for key in ["a", "b", "c"] {
            feed.append(Op::Create, "chat", key, None);
        }
        let mut events = Vec::new();
        for _ in 0..3 {
            events.push(source.next().await.expect("ok").expect("event"));
        }
        assert_eq!(
            events.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(),
            ["a", "b", "c"]
        );
        source.done(&events[1].position).await.expect("done");
        assert_eq!(feed.committed("g"), Some(0));
        source.done(&events[0].position).await.expect("done");
        assert_eq!(feed.committed("g"), Some(2));
        source.done(&events[2].position).await.expect("done");
        assert_eq!(feed.committed("g"), Some(3));
        assert_eq!(feed.retained(), 0, "finished records are trimmed");
    }

    #[tokio::test]
    async fn a_new_subscriber_gets_what_the_old_one_left_unfinished() {
        let feed = feed();
        let first = feed.subscribe("g");
        feed.append(Op::Create, "chat", "a", None);
        feed.append(Op::Create, "chat", "b", None);
        let a = first.next().await.expect("ok").expect("a");
        first.done(&a.position).await.expect("done");
        let _b = first.next().await.expect("ok").expect("b");
        drop(first); // crashed before finishing b
        let second = feed.subscribe("g");
        let again = second.next().await.expect("ok").expect("b again");
        assert_eq!(again.key, "b");
    }

    #[tokio::test]
    async fn next_waits_for_an_append() {
        let feed = feed();
        let source = feed.subscribe("g");
        let waiter = tokio::spawn(async move { source.next().await });
        tokio::task::yield_now().await;
        feed.append(Op::Create, "chat", "late", None);
        let event = waiter.await.expect("join").expect("ok").expect("event");
        assert_eq!(event.key, "late");
    }

    #[tokio::test]
    async fn done_on_an_unknown_position_is_an_error() {
        let feed = feed();
        let source = feed.subscribe("g");
        let bogus = SourcePosition {
            partition: 0,
            offset: 42,
            token: None,
        };
        assert!(matches!(
            source.done(&bogus).await,
            Err(ChangeError::UnknownPosition { offset: 42, .. })
        ));
    }

    #[test]
    fn without_consumers_the_log_is_bounded() {
        let feed = InMemoryChangeFeed::new(2);
        for key in ["a", "b", "c"] {
            feed.append(Op::Create, "chat", key, None);
        }
        assert_eq!(feed.retained(), 2);
    }
}
