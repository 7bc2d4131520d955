//! Groups, read markers and the conversation list's view (schema version 3).
//!
//! Writes go through the backend's group-commit writer, each in a savepoint of its own within a
//! batch's transaction and answered once the batch is fsynced: a membership change reads the
//! members and writes the result in that one savepoint, so it applies as a whole or not at all
//! and no other write interleaves. Reads share the backend's read connections, each answered by
//! one statement (one consistent snapshot of the file).
//!
//! Message ids are fixed-width lowercase hex strings, so SQLite's default (`BINARY`, byte-wise)
//! ordering of text is their store order, as Rust's `str` ordering is.

use std::sync::Arc;

use async_trait::async_trait;
use chatcore::conversation::{
    Activity, Conversation, ConversationError, ConversationKind, ConversationStore, MembersChanged,
    ReadMarker, ValidMembershipChange,
};
use chatcore::model::ChatMessage;
use chrono::{DateTime, SubsecRound, Utc};
use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::{Shared, SqliteError};

/// The columns a group's queries read, in [`GroupRow`]'s order: the group's, then one member.
const GROUP_COLUMNS: &str = "c.stream_id, c.title, c.created_by, c.created_at, m.user_id";

/// The columns a view query reads, in [`activity_row`]'s order.
const VIEW_COLUMNS: &str =
    "stream_id, last_message_id, sender_id, receiver_id, content, created_at";

/// The conversation store kept in the backend's file.
#[derive(Debug, Clone)]
pub struct SqliteConversations {
    shared: Arc<Shared>,
}

fn failed(error: impl std::error::Error + Send + Sync + 'static) -> ConversationError {
    ConversationError::Unavailable(chatcore::error::Cause::new(error))
}

impl SqliteConversations {
    /// Checks that the file has the conversation tables (schema version 3, migrated on open).
    pub(crate) async fn open(shared: Arc<Shared>) -> Result<Self, SqliteError> {
        shared
            .readers
            .run(|c| {
                c.prepare("SELECT stream_id FROM conversations LIMIT 0")
                    .map(drop)
            })
            .await?;
        Ok(Self { shared })
    }

    /// Runs `query` on a read connection.
    async fn read<T, F>(&self, query: F) -> Result<T, ConversationError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        self.shared.readers.run(query).await.map_err(failed)
    }

    /// Runs `write` on the backend's writer, in the next batch's transaction.
    async fn write<T, F>(&self, write: F) -> Result<T, ConversationError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        self.shared.writer.transact(write).await.map_err(failed)
    }
}

fn millis(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

fn instant(column: usize, millis: i64) -> rusqlite::Result<DateTime<Utc>> {
    DateTime::from_timestamp_millis(millis)
        .ok_or(rusqlite::Error::IntegralValueOutOfRange(column, millis))
}

/// One row of [`GROUP_COLUMNS`]: a group and one of its members (`None` for a group without any,
/// which a membership change never leaves).
struct GroupRow {
    group: Conversation,
    member: Option<String>,
}

fn group_row(row: &Row<'_>) -> rusqlite::Result<GroupRow> {
    Ok(GroupRow {
        group: Conversation {
            stream_id: row.get(0)?,
            kind: ConversationKind::Group,
            members: Vec::new(),
            title: row.get(1)?,
            created_by: row.get(2)?,
            created_at: row
                .get::<_, Option<i64>>(3)?
                .map(|at| instant(3, at))
                .transpose()?,
        },
        member: row.get(4)?,
    })
}

/// Folds rows ordered by group, then member, into the groups with their (sorted) members.
fn fold_groups(
    rows: impl Iterator<Item = rusqlite::Result<GroupRow>>,
) -> rusqlite::Result<Vec<Conversation>> {
    let mut groups: Vec<Conversation> = Vec::new();
    for row in rows {
        let GroupRow { mut group, member } = row?;
        match groups.last_mut() {
            Some(last) if last.stream_id == group.stream_id => last.members.extend(member),
            _ => {
                group.members.extend(member);
                groups.push(group);
            }
        }
    }
    Ok(groups)
}

/// The group `stream_id` with its members, sorted.
fn load_group(connection: &Connection, stream_id: &str) -> rusqlite::Result<Option<Conversation>> {
    let mut statement = connection.prepare_cached(&format!(
        "SELECT {GROUP_COLUMNS} FROM conversations c
         LEFT JOIN conversation_members m ON m.stream_id = c.stream_id
         WHERE c.stream_id = ?1
         ORDER BY m.user_id"
    ))?;
    let rows = statement.query_map([stream_id], group_row)?;
    Ok(fold_groups(rows)?.pop())
}

/// Moves the members of `stream_id` from `before` to `after` (both sorted): deletes who left,
/// adds who joined.
fn store_members(
    connection: &Connection,
    stream_id: &str,
    before: &[String],
    after: &[String],
) -> rusqlite::Result<()> {
    let mut remove = connection
        .prepare_cached("DELETE FROM conversation_members WHERE stream_id = ?1 AND user_id = ?2")?;
    for member in before.iter().filter(|m| after.binary_search(m).is_err()) {
        remove.execute(params![stream_id, member])?;
    }
    let mut add = connection.prepare_cached(
        "INSERT INTO conversation_members (stream_id, user_id) VALUES (?1, ?2)
         ON CONFLICT (stream_id, user_id) DO NOTHING",
    )?;
    for member in after.iter().filter(|m| before.binary_search(m).is_err()) {
        add.execute(params![stream_id, member])?;
    }
    Ok(())
}

fn marker_row(row: &Row<'_>) -> rusqlite::Result<ReadMarker> {
    Ok(ReadMarker {
        stream_id: row.get(0)?,
        user_id: row.get(1)?,
        message_id: row.get(2)?,
        read_at: instant(3, row.get(3)?)?,
        moved: false,
    })
}

fn load_marker(
    connection: &Connection,
    stream_id: &str,
    user_id: &str,
) -> rusqlite::Result<Option<ReadMarker>> {
    connection
        .prepare_cached(
            "SELECT stream_id, user_id, message_id, read_at FROM read_markers
             WHERE stream_id = ?1 AND user_id = ?2",
        )?
        .query_row(params![stream_id, user_id], marker_row)
        .optional()
}

/// A user's view entries, latest first: a walk of `conversation_view_by_activity`.
fn activity_query() -> String {
    format!(
        "SELECT {VIEW_COLUMNS} FROM conversation_view
         WHERE user_id = ?1
         ORDER BY created_at DESC, last_message_id DESC
         LIMIT ?2"
    )
}

/// A view entry from a row of [`VIEW_COLUMNS`].
fn activity_row(row: &Row<'_>) -> rusqlite::Result<Activity> {
    let stream_id: String = row.get(0)?;
    Ok(Activity {
        last_message: ChatMessage {
            message_id: row.get(1)?,
            content: row.get(4)?,
            created_at: instant(5, row.get(5)?)?,
            stream_id: stream_id.clone(),
            sender_id: row.get(2)?,
            receiver_id: row.get(3)?,
        },
        stream_id,
    })
}

#[async_trait]
impl ConversationStore for SqliteConversations {
    async fn create_group(&self, group: Conversation) -> Result<Conversation, ConversationError> {
        // Stored and answered as it reads back: members sorted, time to the millisecond.
        let mut group = group;
        group.members.sort();
        group.members.dedup();
        group.created_at = group.created_at.map(|at| at.trunc_subsecs(3));
        let stored = group.clone();
        self.write(move |tx| {
            // A `stream_id` met again (64 random bits: in practice never) replaces the group.
            let before = load_group(tx, &stored.stream_id)?.map(|g| g.members);
            tx.prepare_cached(
                "INSERT INTO conversations (stream_id, title, created_by, created_at)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (stream_id) DO UPDATE
                 SET title = ?2, created_by = ?3, created_at = ?4",
            )?
            .execute(params![
                stored.stream_id,
                stored.title,
                stored.created_by,
                stored.created_at.map(millis),
            ])?;
            store_members(
                tx,
                &stored.stream_id,
                before.as_deref().unwrap_or_default(),
                &stored.members,
            )
        })
        .await?;
        Ok(group)
    }

    async fn group(&self, stream_id: &str) -> Result<Option<Conversation>, ConversationError> {
        let stream_id = stream_id.to_owned();
        self.read(move |c| load_group(c, &stream_id)).await
    }

    async fn change_members(
        &self,
        stream_id: &str,
        change: &ValidMembershipChange,
        max_members: usize,
    ) -> Result<MembersChanged, ConversationError> {
        let stream_id = stream_id.to_owned();
        let change = change.clone();
        // A refused change writes nothing: the inner result carries why.
        self.write(move |tx| {
            let Some(group) = load_group(tx, &stream_id)? else {
                return Ok(Err(ConversationError::NotFound(stream_id)));
            };
            let changed = match change.apply_to(&group, max_members) {
                Ok(changed) => changed,
                Err(refused) => return Ok(Err(refused)),
            };
            store_members(
                tx,
                &stream_id,
                &group.members,
                &changed.conversation.members,
            )?;
            Ok(Ok(changed))
        })
        .await?
    }

    async fn groups_of(&self, user_id: &str) -> Result<Vec<Conversation>, ConversationError> {
        let user_id = user_id.to_owned();
        self.read(move |c| {
            let mut statement = c.prepare_cached(&format!(
                "SELECT {GROUP_COLUMNS} FROM conversation_members mine
                 JOIN conversations c ON c.stream_id = mine.stream_id
                 JOIN conversation_members m ON m.stream_id = c.stream_id
                 WHERE mine.user_id = ?1
                 ORDER BY mine.stream_id, m.user_id"
            ))?;
            let rows = statement.query_map([user_id], group_row)?;
            fold_groups(rows)
        })
        .await
    }

    async fn mark_read(
        &self,
        stream_id: &str,
        user_id: &str,
        message_id: &str,
    ) -> Result<ReadMarker, ConversationError> {
        let (stream_id, user_id, message_id) = (
            stream_id.to_owned(),
            user_id.to_owned(),
            message_id.to_owned(),
        );
        self.write(move |tx| {
            if let Some(held) = load_marker(tx, &stream_id, &user_id)? {
                if held.message_id >= message_id {
                    return Ok(held);
                }
            }
            let marker = ReadMarker {
                stream_id,
                user_id,
                message_id,
                read_at: Utc::now().trunc_subsecs(3),
                moved: true,
            };
            tx.prepare_cached(
                "INSERT INTO read_markers (stream_id, user_id, message_id, read_at)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (stream_id, user_id) DO UPDATE SET message_id = ?3, read_at = ?4",
            )?
            .execute(params![
                marker.stream_id,
                marker.user_id,
                marker.message_id,
                millis(marker.read_at),
            ])?;
            Ok(marker)
        })
        .await
    }

    async fn read_marker(
        &self,
        stream_id: &str,
        user_id: &str,
    ) -> Result<Option<ReadMarker>, ConversationError> {
        let (stream_id, user_id) = (stream_id.to_owned(), user_id.to_owned());
        self.read(move |c| load_marker(c, &stream_id, &user_id))
            .await
    }

    async fn record_activity(
        &self,
        members: &[String],
        message: &ChatMessage,
    ) -> Result<(), ConversationError> {
        if members.is_empty() {
            return Ok(());
        }
        let members = members.to_vec();
        let message = message.clone();
        self.write(move |tx| {
            // Only a newer message replaces the one held: a redelivered one changes nothing.
            let mut upsert = tx.prepare_cached(
                "INSERT INTO conversation_view (user_id, stream_id, last_message_id, sender_id,
                     receiver_id, content, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (user_id, stream_id) DO UPDATE
                 SET last_message_id = excluded.last_message_id,
                     sender_id = excluded.sender_id,
                     receiver_id = excluded.receiver_id,
                     content = excluded.content,
                     created_at = excluded.created_at
                 WHERE excluded.last_message_id > conversation_view.last_message_id",
            )?;
            for member in &members {
                upsert.execute(params![
                    member,
                    message.stream_id,
                    message.message_id,
                    message.sender_id,
                    message.receiver_id,
                    message.content,
                    millis(message.created_at),
                ])?;
            }
            Ok(())
        })
        .await
    }

    async fn activity(
        &self,
        user_id: &str,
        limit: usize,
    ) -> Result<Vec<Activity>, ConversationError> {
        let user_id = user_id.to_owned();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |c| {
            let mut statement = c.prepare_cached(&activity_query())?;
            let rows = statement.query_map(params![user_id, limit], activity_row)?;
            rows.collect()
        })
        .await
    }

    async fn activity_of(
        &self,
        user_id: &str,
        stream_id: &str,
    ) -> Result<Option<Activity>, ConversationError> {
        let (user_id, stream_id) = (user_id.to_owned(), stream_id.to_owned());
        self.read(move |c| {
            c.prepare_cached(&format!(
                "SELECT {VIEW_COLUMNS} FROM conversation_view
                 WHERE user_id = ?1 AND stream_id = ?2"
            ))?
            .query_row(params![user_id, stream_id], activity_row)
            .optional()
        })
        .await
    }

    /// Reads from the file and waits for the writer to answer.
    async fn ping(&self) -> Result<(), ConversationError> {
        self.read(|c| c.query_row("SELECT 1", [], |_| Ok(())))
            .await?;
        self.shared.writer.flush().await.map_err(failed)
    }
}

#[cfg(test)]
mod tests {
    use chatcore::conversation::{
        CONVERSATIONS_COLLECTION, CONVERSATION_VIEW_COLLECTION, READ_MARKERS_COLLECTION,
    };

    /// The tables carry the names of `chatcore::conversation`'s collections.
    #[test]
    fn the_tables_are_named_after_the_collections() {
        let mut connection = rusqlite::Connection::open_in_memory().expect("open");
        crate::schema::migrate(&mut connection).expect("migrate");
        for table in [
            CONVERSATIONS_COLLECTION,
            READ_MARKERS_COLLECTION,
            CONVERSATION_VIEW_COLLECTION,
            "conversation_members",
        ] {
            let found: i64 = connection
                .query_row(
                    "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
                    [table],
                    |row| row.get(0),
                )
                .expect("query");
            assert_eq!(found, 1, "table {table}");
        }
    }

    /// The conversation list walks its index, latest first, without sorting.
    #[test]
    fn the_activity_query_walks_its_index() {
        let mut connection = rusqlite::Connection::open_in_memory().expect("open");
        crate::schema::migrate(&mut connection).expect("migrate");
        let mut statement = connection
            .prepare(&format!("EXPLAIN QUERY PLAN {}", super::activity_query()))
            .expect("explain");
        let plan: Vec<String> = statement
            .query_map(rusqlite::params!["u", 10], |row| row.get(3))
            .expect("plan")
            .collect::<rusqlite::Result<_>>()
            .expect("rows");
        assert_eq!(
            plan,
            ["SEARCH conversation_view USING INDEX conversation_view_by_activity (user_id=?)"]
        );
    }
}
