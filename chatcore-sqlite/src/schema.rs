//! The file's schema and its versioned migrations (`PRAGMA user_version`).
//!
//! - version 1: the chat messages, their idempotency claims, the change feed, the consumer
//!   positions and the user e-mail directory;
//! - version 2: the notification inbox;
//! - version 3: the conversations: groups and their members, read markers and the conversation
//!   list's view.
//!
//! Later versions append to [`MIGRATIONS`]; everything stays in this same file, so one
//! transaction can write a message, its inbox entries and its change event. A migration is never
//! edited once released.

use rusqlite::Connection;

use crate::SqliteError;

/// Version 1: chat messages, idempotency, change feed, consumer positions, user e-mails.
const V1_CHAT: &str = "
CREATE TABLE messages (
    message_id  TEXT PRIMARY KEY,
    stream_id   TEXT NOT NULL,
    sender_id   TEXT NOT NULL,
    receiver_id TEXT NOT NULL,
    content     TEXT NOT NULL,
    created_at  INTEGER NOT NULL -- Unix milliseconds
) WITHOUT ROWID;
CREATE INDEX messages_by_stream ON messages (stream_id, message_id);

CREATE TABLE idempotency (
    sender_id  TEXT NOT NULL,
    key        TEXT NOT NULL,
    message_id TEXT NOT NULL REFERENCES messages (message_id),
    PRIMARY KEY (sender_id, key)
) WITHOUT ROWID;

-- AUTOINCREMENT: offsets are never reused, even after every row was trimmed.
CREATE TABLE change_feed (
    offset     INTEGER PRIMARY KEY AUTOINCREMENT,
    op         TEXT NOT NULL,
    collection TEXT NOT NULL,
    key        TEXT NOT NULL,
    document   TEXT
);

-- One row per consumer group: the next offset it reads after a restart.
CREATE TABLE consumer_positions (
    consumer    TEXT PRIMARY KEY,
    next_offset INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE user_email (
    user_id TEXT PRIMARY KEY,
    email   TEXT NOT NULL,
    name    TEXT NOT NULL
) WITHOUT ROWID;
";

/// Version 2: the notification inbox (one entry per source key and recipient).
const V2_INBOX: &str = "
CREATE TABLE notifications (
    notification_id   TEXT PRIMARY KEY,
    user_id           TEXT NOT NULL,
    notification_type TEXT NOT NULL,
    timestamp         INTEGER NOT NULL, -- Unix milliseconds
    payload           TEXT NOT NULL,    -- JSON
    read_at           INTEGER,          -- Unix milliseconds, NULL while unread
    source_key        TEXT,             -- the event it came from, for idempotent writes
    kept_at           INTEGER NOT NULL  -- Unix milliseconds, for the retention
) WITHOUT ROWID;
CREATE INDEX notifications_by_user ON notifications (user_id, notification_id);
CREATE INDEX notifications_by_age ON notifications (kept_at);
CREATE UNIQUE INDEX notifications_by_source ON notifications (user_id, source_key)
    WHERE source_key IS NOT NULL;
";

/// Version 3: conversations (tables named after `chatcore::conversation`'s collections): groups,
/// their members, read markers and the conversation list's view (one entry per user and
/// conversation: its latest message).
const V3_CONVERSATIONS: &str = "
CREATE TABLE conversations (
    stream_id  TEXT PRIMARY KEY,
    title      TEXT,
    created_by TEXT,
    created_at INTEGER -- Unix milliseconds
) WITHOUT ROWID;

CREATE TABLE conversation_members (
    stream_id TEXT NOT NULL REFERENCES conversations (stream_id),
    user_id   TEXT NOT NULL,
    PRIMARY KEY (stream_id, user_id)
) WITHOUT ROWID;
CREATE INDEX conversation_members_by_user ON conversation_members (user_id, stream_id);

CREATE TABLE read_markers (
    stream_id  TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    message_id TEXT NOT NULL,
    read_at    INTEGER NOT NULL, -- Unix milliseconds: when the marker last moved
    PRIMARY KEY (stream_id, user_id)
) WITHOUT ROWID;

-- The latest message of each of a user's conversations, as the view consumer saw it.
CREATE TABLE conversation_view (
    user_id         TEXT NOT NULL,
    stream_id       TEXT NOT NULL,
    last_message_id TEXT NOT NULL,
    sender_id       TEXT NOT NULL,
    receiver_id     TEXT,             -- NULL for a group message
    content         TEXT NOT NULL,
    created_at      INTEGER NOT NULL, -- Unix milliseconds, of the last message
    PRIMARY KEY (user_id, stream_id)
) WITHOUT ROWID;
CREATE INDEX conversation_view_by_activity
    ON conversation_view (user_id, created_at DESC, last_message_id DESC);
";

/// Every migration, in order: entry `i` brings the file from version `i` to `i + 1`.
pub const MIGRATIONS: &[&str] = &[V1_CHAT, V2_INBOX, V3_CONVERSATIONS];

/// The schema version this build writes.
pub fn current_version() -> u32 {
    MIGRATIONS.len() as u32
}

/// Brings the file up to [`current_version`], one transaction per migration. A file written by a
/// newer build is refused rather than misread.
pub(crate) fn migrate(connection: &mut Connection) -> Result<u32, SqliteError> {
    let found: u32 = connection.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    if found > current_version() {
        return Err(SqliteError::Schema {
            found,
            known: current_version(),
        });
    }
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let transaction = connection.transaction()?;
        transaction.execute_batch(migration)?;
        transaction.pragma_update(None, "user_version", index as u32 + 1)?;
        transaction.commit()?;
        tracing::info!(version = index + 1, "chatcore-sqlite schema migrated");
    }
    Ok(current_version())
}
