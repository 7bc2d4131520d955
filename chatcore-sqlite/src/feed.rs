//! The change feed in the file: `change_feed` rows written in the same transaction as the
//! messages they describe, and one durable position per consumer group in `consumer_positions`.
//!
//! Events committed since the process started are also kept in a bounded in-memory tail, so a
//! consumer that keeps up reads them without a query; one that is behind (after a restart, or
//! further back than the tail) reads the file in batches. Positions follow
//! [`OffsetTracker`]: a group's position moves to the first event it has not finished, however
//! out of order the pipeline finishes them.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use chatcore::change::{ChangeError, ChangeEvent, ChangeSource, OffsetTracker, Op, SourcePosition};
use tokio::sync::{oneshot, Notify};

use crate::writer::Command;
use crate::{Shared, SqliteError};

/// Most recent events kept in memory.
const TAIL_CAPACITY: usize = 8192;
/// Events read from the file (or the tail) at once.
const READ_BATCH: usize = 256;

/// A committed change event.
#[derive(Debug, Clone)]
pub(crate) struct FeedRecord {
    pub(crate) collection: String,
    pub(crate) key: String,
    pub(crate) document: Option<serde_json::Value>,
}

/// The in-process side of the feed: the tail of recent events, the wake-up of waiting consumers,
/// and each group's in-flight events.
#[derive(Debug, Default)]
pub(crate) struct Feed {
    tail: Mutex<Tail>,
    appended: Notify,
    groups: Mutex<HashMap<String, GroupTrack>>,
}

#[derive(Debug, Default)]
struct Tail {
    records: VecDeque<(i64, Arc<FeedRecord>)>,
    /// Offset of the last committed event.
    head: i64,
}

#[derive(Debug, Default)]
struct GroupTrack {
    generation: u64,
    tracker: OffsetTracker,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Feed {
    /// Sets the last committed offset found in the file at start-up.
    pub(crate) fn start_at(&self, head: i64) {
        lock(&self.tail).head = head;
    }

    /// Makes events just committed visible to consumers and wakes them.
    pub(crate) fn publish(&self, records: Vec<(i64, FeedRecord)>) {
        if records.is_empty() {
            return;
        }
        {
            let mut tail = lock(&self.tail);
            for (offset, record) in records {
                tail.head = offset;
                tail.records.push_back((offset, Arc::new(record)));
            }
            let excess = tail.records.len().saturating_sub(TAIL_CAPACITY);
            tail.records.drain(..excess);
        }
        self.appended.notify_waiters();
    }

    fn head(&self) -> i64 {
        lock(&self.tail).head
    }

    /// Up to `max` events from `from` on, when the tail still holds `from`.
    fn read_tail(&self, from: i64, max: usize) -> Option<Vec<(i64, Arc<FeedRecord>)>> {
        let tail = lock(&self.tail);
        let (front, _) = tail.records.front()?;
        if *front > from {
            return None;
        }
        let start = tail.records.partition_point(|(offset, _)| *offset < from);
        Some(tail.records.iter().skip(start).take(max).cloned().collect())
    }
}

/// One consumer of a group of the file's change feed.
#[derive(Debug)]
pub struct SqliteChangeSource {
    shared: Arc<Shared>,
    group: String,
    generation: u64,
    cursor: tokio::sync::Mutex<Cursor>,
}

#[derive(Debug)]
struct Cursor {
    next: i64,
    buffered: VecDeque<ChangeEvent>,
}

impl SqliteChangeSource {
    pub(crate) async fn join(shared: Arc<Shared>, group: &str) -> Result<Self, SqliteError> {
        let (reply, answer) = oneshot::channel();
        shared.writer.send(Command::Join {
            group: group.to_owned(),
            reply,
        })?;
        let next = answer.await.map_err(|_| SqliteError::WriterStopped)??;
        let generation = {
            let mut groups = lock(&shared.feed.groups);
            let track = groups.entry(group.to_owned()).or_default();
            track.generation += 1;
            track.tracker = OffsetTracker::default();
            track.generation
        };
        tracing::debug!(group, next, "change feed group joined");
        Ok(Self {
            shared,
            group: group.to_owned(),
            generation,
            cursor: tokio::sync::Mutex::new(Cursor {
                next,
                buffered: VecDeque::new(),
            }),
        })
    }

    /// The group this source reads for.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// Records that `offset` was handed to the pipeline.
    fn delivered(&self, offset: i64) {
        let mut groups = lock(&self.shared.feed.groups);
        if let Some(track) = groups.get_mut(&self.group) {
            if track.generation == self.generation {
                track.tracker.delivered(0, offset);
            }
        }
    }

    /// Fills the buffer from `cursor.next` on: from the tail when it holds it, else the file.
    async fn refill(&self, cursor: &mut Cursor) -> Result<(), ChangeError> {
        let head = self.shared.feed.head();
        let events = match self.shared.feed.read_tail(cursor.next, READ_BATCH) {
            Some(records) => records
                .into_iter()
                .map(|(offset, record)| event(offset, Op::Create, &record))
                .collect(),
            None => read_file(&self.shared, cursor.next).await?,
        };
        cursor.next = match events.last() {
            Some(last) => last.position.offset + 1,
            // Nothing at or after `next` up to `head`: those events were trimmed.
            None => head + 1,
        };
        cursor.buffered.extend(events);
        Ok(())
    }
}

fn position(offset: i64) -> SourcePosition {
    SourcePosition {
        partition: 0,
        offset,
        token: None,
    }
}

fn event(offset: i64, op: Op, record: &FeedRecord) -> ChangeEvent {
    ChangeEvent {
        op,
        collection: record.collection.clone(),
        key: record.key.clone(),
        document: record.document.clone(),
        position: position(offset),
        malformed: None,
    }
}

/// A change event as stored: `(offset, op, collection, key, document)`.
type Row = (i64, String, String, String, Option<String>);

async fn read_file(shared: &Shared, from: i64) -> Result<Vec<ChangeEvent>, ChangeError> {
    let rows: Vec<Row> = shared
        .readers
        .run(move |c| {
            let mut statement = c.prepare_cached(
                "SELECT offset, op, collection, key, document FROM change_feed
                 WHERE offset >= ?1 ORDER BY offset LIMIT ?2",
            )?;
            let rows = statement.query_map([from, READ_BATCH as i64], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })?;
            rows.collect()
        })
        .await
        .map_err(|e| ChangeError::Unavailable(chatcore::error::Cause::new(e)))?;
    Ok(rows.into_iter().map(decode_row).collect())
}

/// A stored row as an event; one that cannot be read is a malformed event (counted and skipped
/// by the pipeline), never a stuck feed.
fn decode_row((offset, op, collection, key, document): Row) -> ChangeEvent {
    let op = match op.as_str() {
        "c" => Op::Create,
        "u" => Op::Update,
        "d" => Op::Delete,
        "r" => Op::Read,
        other => {
            return ChangeEvent::malformed(key, position(offset), format!("unknown op {other:?}"))
        }
    };
    let document = match document.as_deref().map(serde_json::from_str).transpose() {
        Ok(document) => document,
        Err(error) => {
            return ChangeEvent::malformed(key, position(offset), format!("document: {error}"))
        }
    };
    let record = FeedRecord {
        collection,
        key,
        document,
    };
    event(offset, op, &record)
}

#[async_trait]
impl ChangeSource for SqliteChangeSource {
    async fn next(&self) -> Result<Option<ChangeEvent>, ChangeError> {
        loop {
            let appended = self.shared.feed.appended.notified();
            tokio::pin!(appended);
            appended.as_mut().enable();
            {
                let mut cursor = self.cursor.lock().await;
                if cursor.buffered.is_empty() && cursor.next <= self.shared.feed.head() {
                    self.refill(&mut cursor).await?;
                }
                if let Some(event) = cursor.buffered.pop_front() {
                    self.delivered(event.position.offset);
                    return Ok(Some(event));
                }
                if cursor.next <= self.shared.feed.head() {
                    continue;
                }
            }
            appended.await;
        }
    }

    async fn done(&self, position: &SourcePosition) -> Result<(), ChangeError> {
        let commit = {
            let mut groups = lock(&self.shared.feed.groups);
            let Some(track) = groups.get_mut(&self.group) else {
                return Ok(());
            };
            if track.generation != self.generation {
                // Another subscriber took the group over; it delivers this event again.
                return Ok(());
            }
            if !track
                .tracker
                .is_in_flight(position.partition, position.offset)
            {
                return Err(ChangeError::UnknownPosition {
                    partition: position.partition,
                    offset: position.offset,
                });
            }
            track.tracker.finished(position.partition, position.offset)
        };
        if let Some(next_offset) = commit {
            self.shared
                .writer
                .send(Command::Commit {
                    group: self.group.clone(),
                    next_offset,
                })
                .map_err(|e| ChangeError::Unavailable(chatcore::error::Cause::new(e)))?;
        }
        Ok(())
    }

    async fn close(&self) {
        if let Err(error) = self.shared.writer.flush().await {
            tracing::warn!(%error, group = %self.group, "change feed positions not flushed");
        }
    }
}
