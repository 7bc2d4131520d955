//! The notification inbox on the `notifications` table (schema version 2).
//!
//! Every chat message makes an inbox entry (its receiver's chat notification), so inbox writes
//! are as many as messages: they go through the backend's group-commit writer, in the same
//! batches as the messages and feed positions, each in a savepoint of its own and answered once
//! the batch is fsynced (`synchronous=FULL`). (A write connection of their own made the two
//! writers take turns through SQLite's busy handler, which sleeps for milliseconds at a time, and
//! paid one fsync per entry.) Reads share the backend's read connections.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use chatcore::inbox::{
    check_query, check_selection, InboxEntry, InboxError, InboxQuery, InboxStore, ReadSelection,
    Recorded,
};
use chatcore::model::{Notification, NotificationType};
use chatcore::store::MessageIdGenerator;
use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::{Shared, SqliteError};

/// The columns every query reads, in [`entry`]'s order.
const COLUMNS: &str = "notification_id, user_id, notification_type, timestamp, payload, read_at";

/// The inbox kept in the backend's file, entries expiring after a retention period.
#[derive(Debug, Clone)]
pub struct SqliteInbox {
    shared: Arc<Shared>,
    /// Only used on the writer thread, inside a job: ids follow the commit order.
    ids: Arc<Mutex<MessageIdGenerator>>,
    retention: Duration,
}

fn failed(error: impl std::error::Error + Send + Sync + 'static) -> InboxError {
    InboxError::Unavailable(chatcore::error::Cause::new(error))
}

impl SqliteInbox {
    pub(crate) async fn open(
        shared: Arc<Shared>,
        retention: Duration,
    ) -> Result<Self, SqliteError> {
        let last: Option<String> = shared
            .writer
            .transact(|c| {
                c.query_row("SELECT max(notification_id) FROM notifications", [], |r| {
                    r.get(0)
                })
            })
            .await?;
        let ids = last
            .as_deref()
            .map(MessageIdGenerator::resuming_after)
            .unwrap_or_default();
        Ok(Self {
            shared,
            ids: Arc::new(Mutex::new(ids)),
            retention,
        })
    }

    /// Entries kept before this instant have expired.
    fn oldest(&self) -> i64 {
        let retention = chrono::Duration::from_std(self.retention).unwrap_or(chrono::Duration::MAX);
        Utc::now()
            .checked_sub_signed(retention)
            .map_or(i64::MIN, |t| t.timestamp_millis())
    }

    /// Runs `write` on the backend's writer, in the next batch's transaction.
    async fn write<T, F>(&self, write: F) -> Result<T, InboxError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &mut MessageIdGenerator) -> rusqlite::Result<T> + Send + 'static,
    {
        let ids = Arc::clone(&self.ids);
        self.shared
            .writer
            .transact(move |connection| write(connection, &mut lock(&ids)))
            .await
            .map_err(failed)
    }
}

fn lock(ids: &Mutex<MessageIdGenerator>) -> MutexGuard<'_, MessageIdGenerator> {
    ids.lock().unwrap_or_else(|e| e.into_inner())
}

fn millis(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

fn instant(millis: i64) -> rusqlite::Result<DateTime<Utc>> {
    DateTime::from_timestamp_millis(millis)
        .ok_or(rusqlite::Error::IntegralValueOutOfRange(0, millis))
}

fn conversion(error: serde_json::Error) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(error))
}

/// An entry from a row of [`COLUMNS`].
fn entry(row: &Row<'_>) -> rusqlite::Result<InboxEntry> {
    let kind: String = row.get(2)?;
    let payload: String = row.get(4)?;
    Ok(InboxEntry {
        notification_id: row.get(0)?,
        user_id: row.get(1)?,
        notification_type: serde_json::from_value::<NotificationType>(kind.into())
            .map_err(conversion)?,
        timestamp: instant(row.get(3)?)?,
        payload: serde_json::from_str(&payload).map_err(conversion)?,
        read_at: row.get::<_, Option<i64>>(5)?.map(instant).transpose()?,
    })
}

fn unread(connection: &Connection, user_id: &str, oldest: i64) -> rusqlite::Result<u64> {
    connection
        .prepare_cached(
            "SELECT count(*) FROM notifications
             WHERE user_id = ?1 AND kept_at >= ?2 AND read_at IS NULL",
        )?
        .query_row(params![user_id, oldest], |r| r.get(0))
}

#[async_trait]
impl InboxStore for SqliteInbox {
    async fn record(
        &self,
        user_id: &str,
        notification: &Notification,
    ) -> Result<Recorded, InboxError> {
        let user_id = user_id.to_owned();
        let notification = notification.clone();
        let oldest = self.oldest();
        let kind = notification.notification_type.as_str().to_owned();
        let payload = serde_json::to_string(&notification.payload).map_err(failed)?;
        self.write(move |tx, ids| {
            // Expired entries, everyone's (an index seek when there are none; reads skip them
            // anyway).
            tx.prepare_cached("DELETE FROM notifications WHERE kept_at < ?1")?
                .execute(params![oldest])?;
            if let Some(key) = &notification.source_key {
                let first = tx
                    .prepare_cached(&format!(
                        "SELECT {COLUMNS} FROM notifications WHERE user_id = ?1 AND source_key = ?2"
                    ))?
                    .query_row(params![user_id, key], entry)
                    .optional()?;
                if let Some(entry) = first {
                    return Ok(Recorded {
                        entry,
                        created: false,
                    });
                }
            }
            let entry = InboxEntry::new(ids.next_id(), &user_id, &notification);
            tx.prepare_cached(
                "INSERT INTO notifications (notification_id, user_id, notification_type,
                     timestamp, payload, read_at, source_key, kept_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, NULL, ?6, ?7)",
            )?
            .execute(params![
                entry.notification_id,
                user_id,
                kind,
                millis(entry.timestamp),
                payload,
                notification.source_key,
                Utc::now().timestamp_millis(),
            ])?;
            Ok(Recorded {
                entry,
                created: true,
            })
        })
        .await
    }

    async fn list(&self, query: &InboxQuery) -> Result<Vec<InboxEntry>, InboxError> {
        check_query(query)?;
        let query = query.clone();
        let oldest = self.oldest();
        self.shared
            .readers
            .run(move |c| {
                // `before` pages backwards: the `limit` entries just before it, then ascending.
                let order = if query.before.is_some() {
                    "DESC"
                } else {
                    "ASC"
                };
                let sql = format!(
                    "SELECT {COLUMNS} FROM notifications
                     WHERE user_id = ?1 AND kept_at >= ?2
                       AND (?3 IS NULL OR notification_id > ?3)
                       AND (?4 IS NULL OR notification_id < ?4)
                       AND (?5 = 0 OR read_at IS NULL)
                     ORDER BY notification_id {order} LIMIT ?6"
                );
                let mut page = c
                    .prepare_cached(&sql)?
                    .query_map(
                        params![
                            query.user_id,
                            oldest,
                            query.since,
                            query.before,
                            query.unread_only,
                            i64::try_from(query.limit).unwrap_or(i64::MAX),
                        ],
                        entry,
                    )?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                if query.before.is_some() {
                    page.reverse();
                }
                Ok(page)
            })
            .await
            .map_err(failed)
    }

    async fn unread_count(&self, user_id: &str) -> Result<u64, InboxError> {
        let user_id = user_id.to_owned();
        let oldest = self.oldest();
        self.shared
            .readers
            .run(move |c| unread(c, &user_id, oldest))
            .await
            .map_err(failed)
    }

    async fn mark_read(
        &self,
        user_id: &str,
        selection: &ReadSelection,
        at: DateTime<Utc>,
    ) -> Result<u64, InboxError> {
        check_selection(selection)?;
        let user_id = user_id.to_owned();
        let selection = selection.clone();
        let oldest = self.oldest();
        self.write(move |tx, _| {
            let at = millis(at);
            match &selection {
                ReadSelection::Ids(ids) => {
                    let mut mark = tx.prepare_cached(
                        "UPDATE notifications SET read_at = ?3
                         WHERE user_id = ?1 AND notification_id = ?2 AND read_at IS NULL",
                    )?;
                    for id in ids {
                        mark.execute(params![user_id, id, at])?;
                    }
                }
                ReadSelection::UpTo(up_to) => {
                    tx.prepare_cached(
                        "UPDATE notifications SET read_at = ?3
                         WHERE user_id = ?1 AND notification_id <= ?2 AND read_at IS NULL",
                    )?
                    .execute(params![user_id, up_to, at])?;
                }
                // A selection this backend does not know marks nothing.
                _ => {}
            }
            unread(tx, &user_id, oldest)
        })
        .await
    }

    async fn ping(&self) -> Result<(), InboxError> {
        self.shared
            .readers
            .run(|c| c.query_row("SELECT 1", [], |_| Ok(())))
            .await
            .map_err(failed)
    }
}
