//! The notification inbox: every notification the notification tier pushes is
//! first kept here, under its recipient, with read state, so a user who was offline finds it
//! later and a socket resuming with `since=` misses nothing.
//!
//! [`InboxStore`] is the trait a backend implements; [`InMemoryInbox`] is the embedded one, and
//! `chatcore::testing::inbox` (feature `test-util`) holds the checks every implementation must pass (the memory and MongoDB
//! tests run them; a new backend's tests call them too). Entries are written by
//! [`crate::forward::InboxForwarder`], the layer in front of the notification tier's sockets.

mod memory;

#[doc(hidden)]
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};

use crate::model::{rfc3339, Notification, NotificationType};

pub use memory::InMemoryInbox;

/// Name of the MongoDB collection (and of the SQLite table) holding inbox entries.
pub const NOTIFICATIONS_COLLECTION: &str = "notifications";
/// How long entries are kept by default (`NOTIFICATION_RETENTION`, 30 days).
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(30 * 24 * 60 * 60);
/// Default page size of inbox queries.
pub const DEFAULT_INBOX_LIMIT: usize = crate::store::DEFAULT_HISTORY_LIMIT;
/// Largest page an inbox query may ask for.
pub const MAX_INBOX_LIMIT: usize = crate::store::MAX_HISTORY_LIMIT;
/// Largest number of ids one `POST /notifications/read` may name.
pub const MAX_READ_IDS: usize = 500;

/// One kept notification, as `GET /notifications` answers it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InboxEntry {
    /// Unique, time-ordered id: 24 lowercase hex characters that sort in the order entries were
    /// kept (what the pushed envelope's `notification_id` says).
    #[cfg_attr(feature = "openapi", schema(pattern = "^[0-9a-f]{24}$"))]
    pub notification_id: String,
    /// The recipient.
    pub user_id: String,
    /// What the payload is.
    pub notification_type: NotificationType,
    /// When the notification was produced (RFC 3339, UTC).
    #[serde(with = "rfc3339")]
    pub timestamp: DateTime<Utc>,
    /// The typed payload.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub payload: serde_json::Value,
    /// When the user marked it read (RFC 3339), or null.
    #[serde(with = "optional_rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub read_at: Option<DateTime<Utc>>,
}

impl InboxEntry {
    /// A new, unread entry of `notification` for `user_id` with id `notification_id`; the
    /// timestamp is kept to the millisecond, the precision of the wire format.
    pub fn new(notification_id: String, user_id: &str, notification: &Notification) -> Self {
        Self {
            notification_id,
            user_id: user_id.to_owned(),
            notification_type: notification.notification_type.clone(),
            timestamp: notification.timestamp.trunc_subsecs(3),
            payload: notification.payload.clone(),
            read_at: None,
        }
    }

    /// The envelope pushed on the notification socket: the envelope's usual shape plus `notification_id`.
    pub fn envelope(&self) -> Notification {
        Notification {
            notification_type: self.notification_type.clone(),
            timestamp: self.timestamp,
            payload: self.payload.clone(),
            notification_id: Some(self.notification_id.clone()),
            source_key: None,
        }
    }
}

/// Serde helpers for an optional RFC 3339 timestamp (`null` when absent).
pub mod optional_rfc3339 {
    use super::*;
    use serde::{Deserializer, Serializer};

    /// Serializes `Some` as [`rfc3339::format`] does, `None` as null.
    pub fn serialize<S: Serializer>(
        value: &Option<DateTime<Utc>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(value) => s.serialize_str(&rfc3339::format(value)),
            None => s.serialize_none(),
        }
    }

    /// Accepts null or any RFC 3339 timestamp.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        let text = Option::<String>::deserialize(d)?;
        text.map(|text| {
            DateTime::parse_from_rfc3339(&text)
                .map(|t| t.with_timezone(&Utc))
                .map_err(serde::de::Error::custom)
        })
        .transpose()
    }
}

/// The result of [`InboxStore::record`].
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    /// The kept entry (the first one, for a repeated source key).
    pub entry: InboxEntry,
    /// False when the source key had been kept for this user already and nothing was written.
    pub created: bool,
}

/// A page of a user's inbox. `since` and `before` are exclusive notification ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxQuery {
    /// Whose inbox.
    pub user_id: String,
    /// Only entries after this id.
    pub since: Option<String>,
    /// Only entries before this id; with it the page is the `limit` entries immediately
    /// preceding it.
    pub before: Option<String>,
    /// Page size, at most [`MAX_INBOX_LIMIT`].
    pub limit: usize,
    /// Only entries not read yet.
    pub unread_only: bool,
}

impl InboxQuery {
    /// The first page of `user_id`'s inbox.
    pub fn user(user_id: impl Into<String>) -> Self {
        Self {
            user_id: user_id.into(),
            since: None,
            before: None,
            limit: DEFAULT_INBOX_LIMIT,
            unread_only: false,
        }
    }

    /// Sets `since`.
    pub fn since(mut self, notification_id: impl Into<String>) -> Self {
        self.since = Some(notification_id.into());
        self
    }

    /// Sets `before`.
    pub fn before(mut self, notification_id: impl Into<String>) -> Self {
        self.before = Some(notification_id.into());
        self
    }

    /// Sets the page size, clamped to `1..=MAX_INBOX_LIMIT`.
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit.clamp(1, MAX_INBOX_LIMIT);
        self
    }

    /// Only unread entries.
    pub fn unread(mut self) -> Self {
        self.unread_only = true;
        self
    }
}

/// What [`InboxStore::mark_read`] marks.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReadSelection {
    /// These entries (unknown ids are ignored).
    Ids(Vec<String>),
    /// Every entry up to and including this id.
    UpTo(String),
}

/// An inbox operation failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum InboxError {
    /// The backend cannot be reached or timed out; the HTTP layer answers 503.
    #[error("inbox unavailable: {0}")]
    Unavailable(#[source] crate::error::Cause),
    /// The backend answered with something this code cannot interpret.
    #[error("inbox error: {0}")]
    Backend(#[source] crate::error::Cause),
    /// An id is not a notification id; the HTTP layer answers 400.
    #[error("invalid notification id: {0}")]
    InvalidId(String),
}

/// True when `id` has the shape of a notification id: 24 lowercase hex characters.
///
/// ```
/// assert!(chatcore::inbox::is_notification_id("65f1c0a2b3c4d5e6f7a8b9c0"));
/// assert!(!chatcore::inbox::is_notification_id("65F1C0A2B3C4D5E6F7A8B9C0"));
/// assert!(!chatcore::inbox::is_notification_id("nope"));
/// ```
pub fn is_notification_id(id: &str) -> bool {
    id.len() == 24 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Checks `id` with [`is_notification_id`], naming `field` in the error.
pub fn check_notification_id(field: &str, id: &str) -> Result<(), InboxError> {
    if is_notification_id(id) {
        Ok(())
    } else {
        Err(InboxError::InvalidId(format!(
            "{field} {id:?} is not a notification id (24 lowercase hex characters)"
        )))
    }
}

/// Keeps users' notifications with their read state.
///
/// Contract for implementations (checked by `chatcore::testing::inbox` (feature `test-util`)):
/// - notification ids are [`is_notification_id`]-shaped and sort byte-wise in the order entries
///   were kept for a user, so `since`/`before` paging and `since=` resumption work;
/// - [`InboxStore::record`] is idempotent on ([`Notification::source_key`], `user_id`): a
///   repeat returns the first entry unchanged with `created == false`; without a source key
///   every call keeps a new entry;
/// - pages are ascending; `before` gives the `limit` entries immediately preceding it;
/// - marking read is idempotent: an entry read once keeps its first `read_at`;
/// - entries older than the retention may disappear (a TTL), never sooner.
#[async_trait]
pub trait InboxStore: Send + Sync {
    /// Keeps `notification` in `user_id`'s inbox, unread, and returns the entry.
    async fn record(
        &self,
        user_id: &str,
        notification: &Notification,
    ) -> Result<Recorded, InboxError>;

    /// A page of a user's inbox, ascending by `notification_id`. Ids are checked with
    /// [`check_notification_id`] before any backend call.
    async fn list(&self, query: &InboxQuery) -> Result<Vec<InboxEntry>, InboxError>;

    /// How many of `user_id`'s entries are unread.
    async fn unread_count(&self, user_id: &str) -> Result<u64, InboxError>;

    /// Marks the selected entries of `user_id` read at `at` (entries already read keep their
    /// time) and returns the unread count afterwards.
    async fn mark_read(
        &self,
        user_id: &str,
        selection: &ReadSelection,
        at: DateTime<Utc>,
    ) -> Result<u64, InboxError>;

    /// Checks that the backend answers (readiness).
    async fn ping(&self) -> Result<(), InboxError>;
}

/// Checks every id a query or selection carries, before a backend sees it.
pub fn check_query(query: &InboxQuery) -> Result<(), InboxError> {
    for (field, id) in [("since", &query.since), ("before", &query.before)] {
        if let Some(id) = id {
            check_notification_id(field, id)?;
        }
    }
    Ok(())
}

/// Checks every id of a selection.
pub fn check_selection(selection: &ReadSelection) -> Result<(), InboxError> {
    match selection {
        ReadSelection::Ids(ids) => ids
            .iter()
            .try_for_each(|id| check_notification_id("notification_ids", id)),
        ReadSelection::UpTo(id) => check_notification_id("up_to", id),
    }
}
