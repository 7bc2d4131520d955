//! # chatcore-mongo
//!
//! The MongoDB backend of chatcore, on the official `mongodb` driver:
//!
//! - [`MongoMessageStore`]: the [`chatcore::store::MessageStore`] on the `chat` collection, with
//!   ObjectId message ids, the `{stream_id: 1, _id: 1}` index, idempotency keys, and a bounded
//!   timeout on every call (a store that does not answer is "unavailable", never a hang);
//! - [`MongoChangeStream`]: a [`chatcore::change::ChangeSource`] over a change stream of the
//!   collection, decoding to the same change events as the Kafka source and checkpointing resume
//!   tokens only once the pipeline is done with an event, so a restart resumes after the last
//!   completed event;
//! - [`MongoUserDirectory`]: recipients of e-mail notifications from `user_email`;
//! - [`MongoInbox`]: the [`chatcore::inbox::InboxStore`] on the `notifications` collection, with
//!   a TTL index for the retention;
//! - [`MongoConversations`]: the [`chatcore::conversation::ConversationStore`] on the
//!   `conversations`, `read_markers` and `conversation_view` collections: groups changed
//!   atomically without transactions (optimistic, on the members read), monotonic read markers
//!   and the conversation list's view, each write a guarded upsert.
//!
//! Everything here sticks to what MongoDB 6+ replica sets support.

#![warn(missing_docs)]
#![deny(unreachable_pub)]

mod change_stream;
mod conversations;
mod directory;
mod inbox;
mod order;
mod store;

use std::time::Duration;

use mongodb::options::ClientOptions;
use mongodb::{Client, Database};

pub use change_stream::{MongoChangeStream, CHECKPOINT_COLLECTION};
pub use conversations::MongoConversations;
pub use directory::{MongoUserDirectory, USER_EMAIL_COLLECTION};
pub use inbox::MongoInbox;
pub use store::{MongoMessageStore, IDEMPOTENCY_COLLECTION};

/// Where and how to reach MongoDB (`MONGO_URI`, `MONGO_DATABASE`).
#[derive(Debug, Clone)]
pub struct MongoConfig {
    /// The connection string.
    pub uri: String,
    /// The database holding `chat`, `user_email` and the change checkpoints.
    pub database: String,
    /// Upper bound of every store call and of server selection.
    pub timeout: Duration,
}

impl MongoConfig {
    /// A configuration with a 3 s timeout.
    pub fn new(uri: impl Into<String>, database: impl Into<String>) -> Self {
        Self {
            uri: uri.into(),
            database: database.into(),
            timeout: Duration::from_secs(3),
        }
    }
}

/// MongoDB could not be configured.
#[derive(Debug, thiserror::Error)]
#[error("MongoDB configuration: {0}")]
pub struct MongoConfigError(String);

/// Why a bounded MongoDB call failed.
#[derive(Debug)]
pub(crate) enum CallError {
    /// No answer within the bound.
    TimedOut(Duration),
    /// The driver's error.
    Driver(mongodb::error::Error),
}

impl std::error::Error for CallError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::TimedOut(_) => None,
            Self::Driver(error) => Some(error),
        }
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TimedOut(bound) => write!(f, "MongoDB did not answer within {bound:?}"),
            Self::Driver(error) => error.fmt(f),
        }
    }
}

/// Runs one MongoDB call with an upper bound: every call of this crate goes through here, so a
/// server that does not answer is an error, never a hang.
pub(crate) async fn bounded<T>(
    timeout: Duration,
    call: impl std::future::IntoFuture<Output = mongodb::error::Result<T>>,
) -> Result<T, CallError> {
    match tokio::time::timeout(timeout, call.into_future()).await {
        Ok(result) => result.map_err(CallError::Driver),
        Err(_) => Err(CallError::TimedOut(timeout)),
    }
}

/// Opens a client and its database. No round trip is made: connections are established lazily,
/// so a service starts while MongoDB is down and answers 503 until it is back.
pub async fn connect(config: &MongoConfig) -> Result<Database, MongoConfigError> {
    let mut options = ClientOptions::parse(&config.uri)
        .await
        .map_err(|e| MongoConfigError(e.to_string()))?;
    options.server_selection_timeout = Some(config.timeout);
    options.connect_timeout = Some(config.timeout);
    options
        .app_name
        .get_or_insert_with(|| "chatcore".to_owned());
    let client = Client::with_options(options).map_err(|e| MongoConfigError(e.to_string()))?;
    Ok(client.database(&config.database))
}
