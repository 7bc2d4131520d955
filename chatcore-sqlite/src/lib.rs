//! # chatcore-sqlite
//!
//! The durable embedded backend of chatcore: everything in one SQLite file (the library is
//! compiled in, no system package), `DATA_DIR/chatcore.db`.
//!
//! - [`SqliteMessageStore`]: the [`chatcore::store::MessageStore`], with idempotency keys and
//!   history on the `(stream_id, message_id)` index;
//! - [`SqliteChangeSource`]: a [`chatcore::change::ChangeSource`] over the change feed kept in the
//!   same file, with one durable position per consumer group (resumed at the first unfinished
//!   event after a restart; events every group is past are trimmed);
//! - [`SqliteUserDirectory`]: recipients of e-mail notifications;
//! - [`SqliteInbox`]: the notification inbox ([`chatcore::inbox::InboxStore`]);
//! - [`SqliteConversations`]: groups and their members, read markers and the conversation list's
//!   view ([`chatcore::conversation::ConversationStore`]); the store counts unread messages on
//!   its `(stream_id, message_id)` index.
//!
//! Writes go through one writer thread that drains its queue and commits what it found in one
//! transaction (group commit) with `synchronous=FULL` in WAL mode: an insert is answered only once
//! it is on disk, and concurrent inserts share one fsync. A message and its change event are
//! written in the same transaction, so the feed never misses a stored message nor holds one the
//! store lost. Reads run on their own connections on tokio's blocking pool and never wait for the
//! writer. An OS lock on `DATA_DIR/chatcore.lock` keeps a second process off the same directory.

#![warn(missing_docs)]
#![deny(unreachable_pub)]

mod conversations;
mod directory;
mod feed;
mod inbox;
mod readers;
pub mod schema;
mod store;
mod writer;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use conversations::SqliteConversations;
pub use directory::SqliteUserDirectory;
pub use feed::SqliteChangeSource;
pub use inbox::SqliteInbox;
pub use store::SqliteMessageStore;

use crate::feed::Feed;
use crate::readers::Readers;
use crate::writer::Writer;

/// Name of the database file inside the data directory.
pub const DATABASE_FILE: &str = "chatcore.db";
/// Name of the lock file inside the data directory.
pub const LOCK_FILE: &str = "chatcore.lock";

/// Where the file lives and how the feed is kept.
#[derive(Debug, Clone)]
pub struct SqliteConfig {
    /// The data directory (`DATA_DIR`), created if missing.
    pub data_dir: PathBuf,
    /// How many change events the feed keeps while no consumer group has ever joined.
    pub retain_without_consumers: usize,
}

impl SqliteConfig {
    /// The file in `data_dir`, keeping [`chatcore::change::DEFAULT_RETAIN_WITHOUT_CONSUMERS`]
    /// events without consumers.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            retain_without_consumers: chatcore::change::DEFAULT_RETAIN_WITHOUT_CONSUMERS,
        }
    }

    /// The database file.
    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join(DATABASE_FILE)
    }
}

/// The backend could not be opened or used.
#[derive(Debug, thiserror::Error)]
pub enum SqliteError {
    /// Another process holds the data directory.
    #[error("{0} is in use by another process (it holds {LOCK_FILE})")]
    Locked(PathBuf),
    /// The directory or lock file cannot be created or opened.
    #[error("{path}: {source}")]
    Io {
        /// The path at fault.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// SQLite refused an operation.
    #[error("SQLite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The file was written by a newer build.
    #[error("the database has schema version {found}; this build knows up to {known}")]
    Schema {
        /// Version in the file.
        found: u32,
        /// Latest version this build knows.
        known: u32,
    },
    /// The writer thread has stopped.
    #[error("the SQLite writer has stopped")]
    WriterStopped,
    /// A transaction could not be committed; nothing of it is stored.
    #[error("SQLite commit failed: {0}")]
    Commit(String),
    /// A blocking task panicked or was cancelled.
    #[error("a SQLite task failed: {0}")]
    Task(String),
}

/// State shared by the store, the feed's sources and the directory.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) writer: Writer,
    pub(crate) readers: Arc<Readers>,
    pub(crate) feed: Arc<Feed>,
    path: PathBuf,
    /// Held for the life of the backend: the OS releases it when the process dies.
    _lock: File,
}

/// The open file: hands out the store, change sources and the directory, all on one writer.
#[derive(Debug, Clone)]
pub struct SqliteBackend {
    shared: Arc<Shared>,
}

impl SqliteBackend {
    /// Creates the directory if missing, takes its lock, opens (or creates) the file in WAL mode,
    /// migrates the schema and starts the writer thread.
    pub async fn open(config: SqliteConfig) -> Result<Self, SqliteError> {
        tokio::task::spawn_blocking(move || Self::open_blocking(&config))
            .await
            .map_err(|e| SqliteError::Task(e.to_string()))?
    }

    fn open_blocking(config: &SqliteConfig) -> Result<Self, SqliteError> {
        let lock = lock_data_dir(&config.data_dir)?;
        let path = config.database_path();
        let feed = Arc::new(Feed::default());
        let writer = Writer::start(&path, Arc::clone(&feed), config.retain_without_consumers)?;
        let readers = Arc::new(Readers::new(path.clone()));
        tracing::info!(path = %path.display(), "chatcore-sqlite opened");
        Ok(Self {
            shared: Arc::new(Shared {
                writer,
                readers,
                feed,
                path,
                _lock: lock,
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// The message store.
    pub fn store(&self) -> SqliteMessageStore {
        SqliteMessageStore::new(Arc::clone(&self.shared))
    }

    /// The user e-mail directory.
    pub fn directory(&self) -> SqliteUserDirectory {
        SqliteUserDirectory::new(Arc::clone(&self.shared))
    }

    /// The notification inbox, its entries kept for `retention`.
    pub async fn inbox(&self, retention: std::time::Duration) -> Result<SqliteInbox, SqliteError> {
        SqliteInbox::open(Arc::clone(&self.shared), retention).await
    }

    /// The conversation store: groups, read markers and the conversation list's view.
    pub async fn conversations(&self) -> Result<SqliteConversations, SqliteError> {
        SqliteConversations::open(Arc::clone(&self.shared)).await
    }

    /// Joins consumer group `group` of the change feed at its first unfinished event (a new group
    /// starts at the oldest retained event). A second subscription to the same group takes over
    /// from the first: what the first left unfinished is delivered again.
    pub async fn subscribe(&self, group: &str) -> Result<SqliteChangeSource, SqliteError> {
        SqliteChangeSource::join(Arc::clone(&self.shared), group).await
    }

    /// The durable position of `group`: the next offset it reads after a restart.
    pub async fn committed(&self, group: &str) -> Result<Option<i64>, SqliteError> {
        let group = group.to_owned();
        self.shared
            .readers
            .run(move |c| {
                use rusqlite::OptionalExtension;
                c.query_row(
                    "SELECT next_offset FROM consumer_positions WHERE consumer = ?1",
                    [group],
                    |row| row.get(0),
                )
                .optional()
            })
            .await
    }

    /// Number of change events the file retains.
    pub async fn retained(&self) -> Result<u64, SqliteError> {
        self.shared
            .readers
            .run(|c| c.query_row("SELECT count(*) FROM change_feed", [], |row| row.get(0)))
            .await
    }

    /// Writes a consistent copy of the whole file to `destination` (SQLite's `VACUUM INTO`) while
    /// the backend keeps serving; `destination` must not exist.
    pub async fn backup_to(&self, destination: impl Into<PathBuf>) -> Result<(), SqliteError> {
        let destination = destination.into().to_string_lossy().into_owned();
        let source = self.shared.path.clone();
        tokio::task::spawn_blocking(move || {
            let connection = rusqlite::Connection::open(source)?;
            connection.execute("VACUUM INTO ?1", [destination])?;
            Ok(())
        })
        .await
        .map_err(|e| SqliteError::Task(e.to_string()))?
    }

    /// Waits until every write queued before this call is committed (or failed).
    pub async fn flush(&self) -> Result<(), SqliteError> {
        self.shared.writer.flush().await
    }
}

/// Creates `dir` if missing and takes an exclusive OS lock on its lock file, without waiting.
fn lock_data_dir(dir: &Path) -> Result<File, SqliteError> {
    let io = |source| SqliteError::Io {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(LOCK_FILE))
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(SqliteError::Locked(dir.to_path_buf())),
        Err(std::fs::TryLockError::Error(source)) => Err(io(source)),
    }
}

/// Consumer groups of the file's change feed (see [`SqliteBackend::subscribe`]).
#[async_trait::async_trait]
impl chatcore::change::ChangeFeed for SqliteBackend {
    async fn subscribe(
        &self,
        group: &str,
    ) -> Result<Arc<dyn chatcore::change::ChangeSource>, chatcore::change::ChangeError> {
        let source = SqliteBackend::subscribe(self, group).await.map_err(|e| {
            chatcore::change::ChangeError::Unavailable(chatcore::error::Cause::new(e))
        })?;
        Ok(Arc::new(source))
    }
}
