//! The writer thread: the only connection that writes. It blocks for a command, drains whatever
//! else is queued (up to [`MAX_BATCH`]), applies it all in one `BEGIN IMMEDIATE` transaction and
//! commits once (`synchronous=FULL`: fsynced before anyone is answered). Under load many POSTs
//! share one fsync; alone, a POST waits for exactly one. Other components' writes (the inbox)
//! join the same batches as [`Job`]s, so the file has one writer and nobody waits on SQLite's
//! busy handler.

use std::path::Path;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use chatcore::email::UserEmail;
use chatcore::model::{ChatMessage, ValidMessage};
use chatcore::store::{Inserted, MessageIdGenerator, StoreError, CHAT_COLLECTION};
use chrono::Utc;
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};
use tokio::sync::oneshot;

use crate::feed::{Feed, FeedRecord};
use crate::SqliteError;

/// Most commands applied in one transaction.
pub(crate) const MAX_BATCH: usize = 1024;

/// What the writer is asked to do.
pub(crate) enum Command {
    /// Store a message (and its change event), unless its idempotency key was seen.
    Insert {
        message: ValidMessage,
        key: Option<String>,
        reply: oneshot::Sender<Result<Inserted, StoreError>>,
    },
    /// Add or replace a user's address.
    Upsert {
        user: UserEmail,
        reply: oneshot::Sender<Result<(), SqliteError>>,
    },
    /// Register a consumer group (at the oldest retained event if new); answers its position.
    Join {
        group: String,
        reply: oneshot::Sender<Result<i64, SqliteError>>,
    },
    /// Move a group's durable position forward (never back). Not answered.
    Commit { group: String, next_offset: i64 },
    /// Answered once everything queued before it is applied.
    Flush {
        reply: oneshot::Sender<Result<(), SqliteError>>,
    },
    /// Another component's write, applied in the batch's transaction.
    Job(Box<dyn Job>),
}

/// A write of another component applied inside a batch's transaction, in a savepoint of its own
/// (a job that fails changes nothing and fails no other command), answered after the commit.
pub(crate) trait Job: Send {
    /// Runs the write; `false` when it failed and its changes are to be rolled back.
    fn apply(&mut self, connection: &Connection) -> bool;
    /// Answers the caller once the batch is committed (`Ok`) or could not be.
    fn answer(self: Box<Self>, committed: Result<(), String>);
}

/// A closure as a [`Job`], its result sent back on a channel.
struct ClosureJob<T, F> {
    work: Option<F>,
    result: Option<rusqlite::Result<T>>,
    reply: oneshot::Sender<Result<T, SqliteError>>,
}

impl<T, F> Job for ClosureJob<T, F>
where
    T: Send,
    F: FnOnce(&Connection) -> rusqlite::Result<T> + Send,
{
    fn apply(&mut self, connection: &Connection) -> bool {
        let Some(work) = self.work.take() else {
            return false;
        };
        let result = work(connection);
        let applied = result.is_ok();
        self.result = Some(result);
        applied
    }

    fn answer(self: Box<Self>, committed: Result<(), String>) {
        let answer = match (committed, self.result) {
            (Err(reason), _) => Err(SqliteError::Commit(reason)),
            (Ok(()), Some(result)) => result.map_err(SqliteError::from),
            (Ok(()), None) => Err(SqliteError::Commit("the write was not applied".into())),
        };
        let _ = self.reply.send(answer);
    }
}

/// The sending side of the writer's queue.
#[derive(Debug)]
pub(crate) struct Writer {
    commands: mpsc::Sender<Command>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Insert { .. } => "Insert",
            Self::Upsert { .. } => "Upsert",
            Self::Join { .. } => "Join",
            Self::Commit { .. } => "Commit",
            Self::Flush { .. } => "Flush",
            Self::Job(_) => "Job",
        })
    }
}

impl Writer {
    /// Opens the write connection, migrates, and starts the thread.
    pub(crate) fn start(
        path: &Path,
        feed: Arc<Feed>,
        retain_without_consumers: usize,
    ) -> Result<Self, SqliteError> {
        let mut connection = Connection::open(path)?;
        connection.busy_timeout(Duration::from_secs(5))?;
        let mode: String = connection.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(mode, "SQLite did not switch to WAL mode");
        }
        connection.pragma_update(None, "synchronous", "FULL")?;
        connection.pragma_update(None, "foreign_keys", "ON")?;
        crate::schema::migrate(&mut connection)?;
        let last_id: Option<String> =
            connection.query_row("SELECT max(message_id) FROM messages", [], |r| r.get(0))?;
        let head: i64 = connection.query_row(
            "SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'change_feed'), 0)",
            [],
            |r| r.get(0),
        )?;
        feed.start_at(head);
        let state = WriterState {
            connection,
            ids: last_id
                .as_deref()
                .map(MessageIdGenerator::resuming_after)
                .unwrap_or_default(),
            feed,
            head,
            retain_without_consumers: i64::try_from(retain_without_consumers).unwrap_or(i64::MAX),
        };
        let (commands, queue) = mpsc::channel();
        std::thread::Builder::new()
            .name("chatcore-sqlite-writer".into())
            .spawn(move || state.run(queue))
            .map_err(|source| SqliteError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(Self { commands })
    }

    /// Queues a command; fails when the thread has stopped.
    pub(crate) fn send(&self, command: Command) -> Result<(), SqliteError> {
        self.commands
            .send(command)
            .map_err(|_| SqliteError::WriterStopped)
    }

    /// Waits until everything queued before is applied.
    pub(crate) async fn flush(&self) -> Result<(), SqliteError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Flush { reply })?;
        answer.await.map_err(|_| SqliteError::WriterStopped)?
    }

    /// Runs `work` on the writer thread in the next batch's transaction and answers its result
    /// once that transaction is committed (fsynced).
    pub(crate) async fn transact<T, F>(&self, work: F) -> Result<T, SqliteError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Job(Box::new(ClosureJob {
            work: Some(work),
            result: None,
            reply,
        })))?;
        answer.await.map_err(|_| SqliteError::WriterStopped)?
    }
}

struct WriterState {
    connection: Connection,
    ids: MessageIdGenerator,
    feed: Arc<Feed>,
    /// Offset of the last committed change event.
    head: i64,
    retain_without_consumers: i64,
}

/// What a staged command answers once the transaction commits.
enum Answer {
    Inserted(Inserted),
    Position(i64),
    Done,
}

impl WriterState {
    fn run(mut self, queue: mpsc::Receiver<Command>) {
        while let Ok(first) = queue.recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(command) => batch.push(command),
                    Err(_) => break,
                }
            }
            self.apply(batch);
        }
        tracing::debug!("chatcore-sqlite writer stopped");
    }

    /// Applies a batch in one transaction and answers every command after the commit.
    fn apply(&mut self, mut batch: Vec<Command>) {
        let needs_transaction = batch
            .iter()
            .any(|command| !matches!(command, Command::Flush { .. }));
        let mut records = Vec::new();
        let outcome = if needs_transaction {
            self.commit_batch(&mut batch, &mut records)
        } else {
            Ok(batch.iter().map(|_| Answer::Done).collect())
        };
        match outcome {
            Ok(answers) => {
                if let Some((last, _)) = records.last() {
                    self.head = *last;
                }
                self.feed.publish(records);
                answer_all(batch, answers);
            }
            Err(error) => {
                tracing::error!(%error, commands = batch.len(), "SQLite commit failed; nothing of the batch is stored");
                fail_all(batch, &error.to_string());
            }
        }
    }

    fn commit_batch(
        &mut self,
        batch: &mut [Command],
        records: &mut Vec<(i64, FeedRecord)>,
    ) -> rusqlite::Result<Vec<Answer>> {
        let mut transaction = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut answers = Vec::with_capacity(batch.len());
        let mut head = self.head;
        for command in batch.iter_mut() {
            let answer = match command {
                Command::Insert { message, key, .. } => {
                    let (inserted, record) =
                        insert(&transaction, &mut self.ids, message, key.as_deref())?;
                    if let Some(record) = record {
                        head = transaction.last_insert_rowid();
                        records.push((head, record));
                    }
                    Answer::Inserted(inserted)
                }
                Command::Upsert { user, .. } => {
                    transaction
                        .prepare_cached(
                            "INSERT INTO user_email (user_id, email, name) VALUES (?1, ?2, ?3)
                             ON CONFLICT (user_id) DO UPDATE SET email = ?2, name = ?3",
                        )?
                        .execute(params![user.user_id, user.email, user.name])?;
                    Answer::Done
                }
                Command::Join { group, .. } => Answer::Position(join(&transaction, group, head)?),
                Command::Commit { group, next_offset } => {
                    transaction
                        .prepare_cached(
                            "UPDATE consumer_positions SET next_offset = max(next_offset, ?2)
                             WHERE consumer = ?1",
                        )?
                        .execute(params![*group, *next_offset])?;
                    Answer::Done
                }
                Command::Flush { .. } => Answer::Done,
                Command::Job(job) => {
                    let savepoint = transaction.savepoint()?;
                    if job.apply(&savepoint) {
                        savepoint.commit()?;
                    }
                    Answer::Done
                }
            };
            answers.push(answer);
        }
        trim(&transaction, head, self.retain_without_consumers)?;
        transaction.commit()?;
        Ok(answers)
    }
}

/// Stores `message` unless its sender already used `key`; returns the change event to publish.
fn insert(
    transaction: &Transaction<'_>,
    ids: &mut MessageIdGenerator,
    message: &ValidMessage,
    key: Option<&str>,
) -> rusqlite::Result<(Inserted, Option<FeedRecord>)> {
    if let Some(key) = key {
        let first = transaction
            .prepare_cached(
                "SELECT m.message_id, m.content, m.created_at, m.stream_id, m.sender_id,
                        m.receiver_id
                 FROM idempotency i JOIN messages m ON m.message_id = i.message_id
                 WHERE i.sender_id = ?1 AND i.key = ?2",
            )?
            .query_row(params![message.sender_id(), key], crate::store::message_row)
            .optional()?;
        if let Some(message) = first {
            let inserted = Inserted {
                message,
                created: false,
            };
            return Ok((inserted, None));
        }
    }
    let stored: ChatMessage = message.clone().into_stored(ids.next_id(), Utc::now());
    transaction
        .prepare_cached(
            "INSERT INTO messages (message_id, stream_id, sender_id, receiver_id, content, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            stored.message_id,
            stored.stream_id,
            stored.sender_id,
            // The empty string for a group message (see `store::message_row`).
            stored.receiver_id.as_deref().unwrap_or_default(),
            stored.content,
            stored.created_at.timestamp_millis()
        ])?;
    if let Some(key) = key {
        transaction
            .prepare_cached(
                "INSERT INTO idempotency (sender_id, key, message_id) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![stored.sender_id, key, stored.message_id])?;
    }
    let document = serde_json::to_value(&stored)
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
    let text = document.to_string();
    transaction
        .prepare_cached(
            "INSERT INTO change_feed (op, collection, key, document) VALUES ('c', ?1, ?2, ?3)",
        )?
        .execute(params![CHAT_COLLECTION, stored.stream_id, text])?;
    let record = FeedRecord {
        collection: CHAT_COLLECTION.to_owned(),
        key: stored.stream_id.clone(),
        document: Some(document),
    };
    let inserted = Inserted {
        message: stored,
        created: true,
    };
    Ok((inserted, Some(record)))
}

/// Registers `group` at the oldest retained event (or after `head` when none is) if it is new,
/// and returns its position.
fn join(transaction: &Transaction<'_>, group: &str, head: i64) -> rusqlite::Result<i64> {
    transaction
        .prepare_cached(
            "INSERT INTO consumer_positions (consumer, next_offset)
             VALUES (?1, coalesce((SELECT min(offset) FROM change_feed), ?2 + 1))
             ON CONFLICT (consumer) DO NOTHING",
        )?
        .execute(params![group, head])?;
    transaction
        .prepare_cached("SELECT next_offset FROM consumer_positions WHERE consumer = ?1")?
        .query_row([group], |row| row.get(0))
}

/// Deletes the events every group is past, or, with no group, all but the newest
/// `retain_without_consumers`.
fn trim(transaction: &Transaction<'_>, head: i64, retain: i64) -> rusqlite::Result<()> {
    let oldest_needed: Option<i64> = transaction
        .prepare_cached("SELECT min(next_offset) FROM consumer_positions")?
        .query_row([], |row| row.get(0))?;
    let keep_from = oldest_needed.unwrap_or_else(|| head.saturating_sub(retain) + 1);
    transaction
        .prepare_cached("DELETE FROM change_feed WHERE offset < ?1")?
        .execute([keep_from])?;
    Ok(())
}

fn answer_all(batch: Vec<Command>, answers: Vec<Answer>) {
    for (command, answer) in batch.into_iter().zip(answers) {
        match (command, answer) {
            (Command::Insert { reply, .. }, Answer::Inserted(inserted)) => {
                let _ = reply.send(Ok(inserted));
            }
            (Command::Join { reply, .. }, Answer::Position(position)) => {
                let _ = reply.send(Ok(position));
            }
            (Command::Upsert { reply, .. } | Command::Flush { reply }, _) => {
                let _ = reply.send(Ok(()));
            }
            (Command::Job(job), _) => job.answer(Ok(())),
            _ => {}
        }
    }
}

fn fail_all(batch: Vec<Command>, reason: &str) {
    for command in batch {
        match command {
            Command::Insert { reply, .. } => {
                let _ = reply.send(Err(StoreError::Unavailable(reason.into())));
            }
            Command::Join { reply, .. } => {
                let _ = reply.send(Err(SqliteError::Commit(reason.to_owned())));
            }
            Command::Upsert { reply, .. } | Command::Flush { reply } => {
                let _ = reply.send(Err(SqliteError::Commit(reason.to_owned())));
            }
            Command::Job(job) => job.answer(Err(reason.to_owned())),
            Command::Commit { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A failing job rolls back its own savepoint only: the other commands of its batch commit.
    #[tokio::test]
    async fn a_failing_job_changes_nothing_and_fails_no_other_command_of_its_batch() {
        let dir = std::env::temp_dir().join(format!(
            "chatcore-sqlite-writer-{}",
            chatcore::dedup::ClaimToken::unique().as_str()
        ));
        std::fs::create_dir_all(&dir).expect("temporary directory");
        let writer = Writer::start(&dir.join("test.db"), Arc::default(), 16).expect("writer");
        // The first job holds the writer thread until the others are queued, so they share the
        // next batch. A first poll of `transact` queues its command.
        let (release, hold) = mpsc::channel::<()>();
        let first = writer.transact(move |_| {
            let _ = hold.recv();
            Ok(())
        });
        let failing = writer.transact(|c| {
            c.execute_batch(
                "INSERT INTO user_email (user_id, email, name) VALUES ('ann', 'a@example.com', 'A');
                 INSERT INTO no_such_table VALUES (1);",
            )
        });
        let succeeding = writer.transact(|c| {
            c.execute(
                "INSERT INTO user_email (user_id, email, name) VALUES ('bob', 'b@example.com', 'B')",
                [],
            )
        });
        tokio::pin!(first, failing, succeeding);
        assert!(futures::poll!(&mut first).is_pending());
        assert!(futures::poll!(&mut failing).is_pending());
        assert!(futures::poll!(&mut succeeding).is_pending());
        release.send(()).expect("release");
        first.await.expect("first job");
        assert!(failing.await.is_err());
        assert_eq!(succeeding.await.expect("second job"), 1);
        let users: Vec<String> = writer
            .transact(|c| {
                let mut statement = c.prepare("SELECT user_id FROM user_email ORDER BY user_id")?;
                let rows = statement.query_map([], |r| r.get(0))?;
                rows.collect()
            })
            .await
            .expect("users");
        assert_eq!(users, ["bob"]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
