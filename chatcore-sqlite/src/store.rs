//! The message store on the `messages` table.

use std::sync::Arc;

use async_trait::async_trait;
use chatcore::model::{ChatMessage, ValidMessage};
use chatcore::store::{HistoryQuery, Inserted, MessageStore, StoreError};
use chrono::DateTime;
use rusqlite::{params, OptionalExtension};
use tokio::sync::oneshot;

use crate::writer::Command;
use crate::{Shared, SqliteError};

/// The chat message store. Ids come from one [`chatcore::store::MessageIdGenerator`] on the
/// writer thread, resumed after the greatest stored id, so id order is commit order within the
/// file, across restarts too. An insert is answered once its transaction is fsynced.
#[derive(Debug, Clone)]
pub struct SqliteMessageStore {
    shared: Arc<Shared>,
}

impl SqliteMessageStore {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

/// The store's own change feed: every insert is appended to it in the same transaction.
#[async_trait]
impl chatcore::change::ChangeFeed for SqliteMessageStore {
    async fn subscribe(
        &self,
        group: &str,
    ) -> Result<Arc<dyn chatcore::change::ChangeSource>, chatcore::change::ChangeError> {
        let source = crate::feed::SqliteChangeSource::join(Arc::clone(&self.shared), group)
            .await
            .map_err(|e| {
                chatcore::change::ChangeError::Unavailable(chatcore::error::Cause::new(e))
            })?;
        Ok(Arc::new(source))
    }
}

fn unavailable(error: SqliteError) -> StoreError {
    StoreError::Unavailable(chatcore::error::Cause::new(error))
}

/// Reads `(message_id, content, created_at, stream_id, sender_id, receiver_id)`. A group
/// message's `receiver_id` is stored as the empty string (never a valid id), so the column
/// stays `NOT NULL` in files written before groups existed.
pub(crate) fn message_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<ChatMessage> {
    let millis: i64 = row.get(2)?;
    let created_at = DateTime::from_timestamp_millis(millis)
        .ok_or_else(|| rusqlite::Error::IntegralValueOutOfRange(2, millis))?;
    Ok(ChatMessage {
        message_id: row.get(0)?,
        content: row.get(1)?,
        created_at,
        stream_id: row.get(3)?,
        sender_id: row.get(4)?,
        receiver_id: Some(row.get::<_, String>(5)?).filter(|r| !r.is_empty()),
    })
}

const COLUMNS: &str = "message_id, content, created_at, stream_id, sender_id, receiver_id";

/// A reader's unread count: a range of the `messages_by_stream` index (see the test of its plan).
const COUNT_UNREAD: &str = "SELECT count(*) FROM messages
     WHERE stream_id = ?1 AND message_id > ?2 AND sender_id != ?3";

#[async_trait]
impl MessageStore for SqliteMessageStore {
    async fn insert(
        &self,
        message: ValidMessage,
        idempotency_key: Option<&str>,
    ) -> Result<Inserted, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.shared
            .writer
            .send(Command::Insert {
                message,
                key: idempotency_key.map(str::to_owned),
                reply,
            })
            .map_err(unavailable)?;
        answer
            .await
            .map_err(|_| unavailable(SqliteError::WriterStopped))?
    }

    async fn history(&self, query: &HistoryQuery) -> Result<Vec<ChatMessage>, StoreError> {
        let stream_id = query.stream_id.clone();
        let since = query.since.clone().unwrap_or_default();
        let before = query.before.clone();
        let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
        self.shared
            .readers
            .run(move |c| match before {
                None => {
                    let mut statement = c.prepare_cached(&format!(
                        "SELECT {COLUMNS} FROM messages
                         WHERE stream_id = ?1 AND message_id > ?2
                         ORDER BY message_id LIMIT ?3"
                    ))?;
                    let rows =
                        statement.query_map(params![stream_id, since, limit], message_row)?;
                    rows.collect()
                }
                Some(before) => {
                    let mut statement = c.prepare_cached(&format!(
                        "SELECT {COLUMNS} FROM messages
                         WHERE stream_id = ?1 AND message_id > ?2 AND message_id < ?3
                         ORDER BY message_id DESC LIMIT ?4"
                    ))?;
                    let rows = statement
                        .query_map(params![stream_id, since, before, limit], message_row)?;
                    let mut page: Vec<ChatMessage> = rows.collect::<rusqlite::Result<_>>()?;
                    page.reverse();
                    Ok(page)
                }
            })
            .await
            .map_err(unavailable)
    }

    /// One lookup by primary key, checked against the stream.
    async fn find(
        &self,
        stream_id: &str,
        message_id: &str,
    ) -> Result<Option<ChatMessage>, StoreError> {
        let (stream_id, message_id) = (stream_id.to_owned(), message_id.to_owned());
        self.shared
            .readers
            .run(move |c| {
                c.prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM messages WHERE message_id = ?1 AND stream_id = ?2"
                ))?
                .query_row(params![message_id, stream_id], message_row)
                .optional()
            })
            .await
            .map_err(unavailable)
    }

    /// One count on the `(stream_id, message_id)` index.
    async fn count_unread(
        &self,
        stream_id: &str,
        after: Option<&str>,
        reader: &str,
    ) -> Result<u64, StoreError> {
        let stream_id = stream_id.to_owned();
        // Every id sorts after the empty string, as in `history`.
        let after = after.unwrap_or_default().to_owned();
        let reader = reader.to_owned();
        self.shared
            .readers
            .run(move |c| {
                c.prepare_cached(COUNT_UNREAD)?
                    .query_row(params![stream_id, after, reader], |row| row.get(0))
            })
            .await
            .map_err(unavailable)
    }

    /// Reads from the file and waits for the writer to answer.
    async fn ping(&self) -> Result<(), StoreError> {
        self.shared
            .readers
            .run(|c| c.query_row("SELECT 1", [], |_| Ok(())))
            .await
            .map_err(unavailable)?;
        self.shared.writer.flush().await.map_err(unavailable)
    }
}

#[cfg(test)]
mod tests {
    /// The unread count searches the `(stream_id, message_id)` index rather than scanning.
    #[test]
    fn the_unread_count_is_a_range_of_the_stream_index() {
        let mut connection = rusqlite::Connection::open_in_memory().expect("open");
        crate::schema::migrate(&mut connection).expect("migrate");
        let mut statement = connection
            .prepare(&format!("EXPLAIN QUERY PLAN {}", super::COUNT_UNREAD))
            .expect("explain");
        let plan: Vec<String> = statement
            .query_map(rusqlite::params!["s", "", "r"], |row| row.get(3))
            .expect("plan")
            .collect::<rusqlite::Result<_>>()
            .expect("rows");
        assert_eq!(
            plan,
            ["SEARCH messages USING INDEX messages_by_stream (stream_id=? AND message_id>?)"]
        );
    }
}
