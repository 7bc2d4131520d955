//! The notification inbox on the `notifications` collection.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chatcore::inbox::{
    check_query, check_selection, InboxEntry, InboxError, InboxQuery, InboxStore, ReadSelection,
    Recorded, NOTIFICATIONS_COLLECTION,
};
use chatcore::model::{Notification, NotificationType};
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use mongodb::bson::oid::ObjectId;
use mongodb::bson::{doc, Bson, DateTime as BsonDateTime, Document};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::IndexOptions;
use mongodb::{Collection, Database, IndexModel};

use crate::CallError;

/// MongoDB's duplicate-key error code.
const DUPLICATE_KEY: i32 = 11000;
/// Name of the history index.
const HISTORY_INDEX: &str = "user_id_1_notification_id_1";
/// Name of the retention (TTL) index on `kept_at`.
const TTL_INDEX: &str = "kept_at_ttl";
/// Number of per-user insert locks.
const STRIPES: usize = 64;

/// The inbox on MongoDB. Documents are
/// `{_id: "<user_id>\u{1f}<dedup key>", notification_id: ObjectId, user_id, notification_type,
/// timestamp: Date, payload, read_at: Date | null, kept_at: Date}`: the `_id` makes a write
/// idempotent per source key and recipient (an entry without a source key is keyed by its own
/// id), `{user_id: 1, notification_id: 1}` serves pages and counts, and a TTL index on
/// `kept_at` drops entries after `NOTIFICATION_RETENTION`. The wire `notification_id` is the
/// ObjectId's hex. As in the message store, one user's writes take the id and insert under a
/// per-user lock, so ids and commit order agree for everything this process writes.
#[derive(Debug, Clone)]
pub struct MongoInbox {
    notifications: Collection<Document>,
    database: Database,
    timeout: Duration,
    retention: Duration,
    stripes: Arc<[tokio::sync::Mutex<()>]>,
}

fn unavailable(error: CallError) -> InboxError {
    InboxError::Unavailable(chatcore::error::Cause::new(error))
}

fn is_duplicate_key(error: &mongodb::error::Error) -> bool {
    matches!(
        error.kind.as_ref(),
        ErrorKind::Write(WriteFailure::WriteError(e)) if e.code == DUPLICATE_KEY
    )
}

fn date(value: &DateTime<Utc>) -> BsonDateTime {
    BsonDateTime::from_millis(value.timestamp_millis())
}

fn object_id(id: &str) -> Result<ObjectId, InboxError> {
    ObjectId::parse_str(id).map_err(|_| InboxError::InvalidId(format!("{id:?}")))
}

impl MongoInbox {
    /// An inbox on `database` whose every call is bounded by `timeout`, keeping entries for
    /// `retention`.
    pub fn new(database: Database, timeout: Duration, retention: Duration) -> Self {
        Self {
            notifications: database.collection(NOTIFICATIONS_COLLECTION),
            database,
            timeout,
            retention,
            stripes: (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
        }
    }

    /// Creates the `{user_id: 1, notification_id: 1}` index and the TTL index on `kept_at`
    /// (idempotent; a changed retention updates the TTL index).
    pub async fn create_indexes(&self) -> Result<(), InboxError> {
        let history = IndexModel::builder()
            .keys(doc! { "user_id": 1, "notification_id": 1 })
            .options(
                IndexOptions::builder()
                    .name(HISTORY_INDEX.to_owned())
                    .build(),
            )
            .build();
        self.bounded(self.notifications.create_index(history))
            .await?;
        let seconds = i64::try_from(self.retention.as_secs()).unwrap_or(i64::MAX);
        match self.ttl_expiry().await? {
            Some(current) if current == seconds => return Ok(()),
            // Another NOTIFICATION_RETENTION than when it was made: replace it.
            Some(_) => {
                self.bounded(self.notifications.drop_index(TTL_INDEX))
                    .await?;
            }
            None => {}
        }
        let ttl = IndexModel::builder()
            .keys(doc! { "kept_at": 1 })
            .options(
                IndexOptions::builder()
                    .name(TTL_INDEX.to_owned())
                    .expire_after(self.retention)
                    .build(),
            )
            .build();
        self.bounded(self.notifications.create_index(ttl)).await?;
        Ok(())
    }

    /// The `expireAfterSeconds` of the TTL index, if it exists.
    async fn ttl_expiry(&self) -> Result<Option<i64>, InboxError> {
        let indexes: Vec<IndexModel> = self
            .bounded(async { self.notifications.list_indexes().await?.try_collect().await })
            .await?;
        Ok(indexes
            .iter()
            .filter_map(|index| index.options.as_ref())
            .find(|options| options.name.as_deref() == Some(TTL_INDEX))
            .map(|options| {
                options
                    .expire_after
                    .map_or(-1, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            }))
    }

    fn stripe(&self, user_id: &str) -> &tokio::sync::Mutex<()> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        user_id.hash(&mut hasher);
        &self.stripes[(hasher.finish() % self.stripes.len() as u64) as usize]
    }

    async fn bounded<T>(
        &self,
        call: impl std::future::IntoFuture<Output = mongodb::error::Result<T>>,
    ) -> Result<T, InboxError> {
        crate::bounded(self.timeout, call)
            .await
            .map_err(unavailable)
    }

    async fn count_unread(&self, user_id: &str) -> Result<u64, InboxError> {
        let filter = doc! { "user_id": user_id, "read_at": Bson::Null };
        self.bounded(self.notifications.count_documents(filter))
            .await
    }
}

fn to_document(key: &str, entry: &InboxEntry, id: ObjectId) -> Result<Document, InboxError> {
    let payload = mongodb::bson::to_bson(&entry.payload)
        .map_err(|e| InboxError::Backend(format!("cannot encode payload: {e}").into()))?;
    Ok(doc! {
        "_id": key,
        "notification_id": id,
        "user_id": &entry.user_id,
        "notification_type": entry.notification_type.as_str(),
        "timestamp": date(&entry.timestamp),
        "payload": payload,
        "read_at": Bson::Null,
        "kept_at": BsonDateTime::now(),
    })
}

fn from_document(document: &Document) -> Result<InboxEntry, InboxError> {
    let bad =
        |field: &str| InboxError::Backend(format!("notification without a valid {field}").into());
    let millis = |field: &str, value: BsonDateTime| {
        DateTime::from_timestamp_millis(value.timestamp_millis()).ok_or_else(|| bad(field))
    };
    let read_at = match document.get("read_at") {
        None | Some(Bson::Null) => None,
        Some(Bson::DateTime(at)) => Some(millis("read_at", *at)?),
        Some(_) => return Err(bad("read_at")),
    };
    let payload = document
        .get("payload")
        .cloned()
        .ok_or_else(|| bad("payload"))?
        .into_relaxed_extjson();
    Ok(InboxEntry {
        notification_id: document
            .get_object_id("notification_id")
            .map_err(|_| bad("notification_id"))?
            .to_hex(),
        user_id: document
            .get_str("user_id")
            .map_err(|_| bad("user_id"))?
            .to_owned(),
        notification_type: NotificationType::custom(
            document
                .get_str("notification_type")
                .map_err(|_| bad("notification_type"))?,
        ),
        timestamp: millis(
            "timestamp",
            *document
                .get_datetime("timestamp")
                .map_err(|_| bad("timestamp"))?,
        )?,
        payload,
        read_at,
    })
}

#[async_trait]
impl InboxStore for MongoInbox {
    async fn record(
        &self,
        user_id: &str,
        notification: &Notification,
    ) -> Result<Recorded, InboxError> {
        let _ordered = self.stripe(user_id).lock().await;
        let id = ObjectId::new();
        let key = match &notification.source_key {
            Some(source) => format!("{user_id}\u{1f}src:{source}"),
            None => format!("{user_id}\u{1f}id:{}", id.to_hex()),
        };
        let entry = InboxEntry::new(id.to_hex(), user_id, notification);
        let document = to_document(&key, &entry, id)?;
        match crate::bounded(self.timeout, self.notifications.insert_one(document)).await {
            Ok(_) => Ok(Recorded {
                entry,
                created: true,
            }),
            Err(CallError::Driver(error)) if is_duplicate_key(&error) => {
                let first = self
                    .bounded(self.notifications.find_one(doc! { "_id": &key }))
                    .await?
                    .ok_or_else(|| InboxError::Backend("a kept entry vanished".into()))?;
                Ok(Recorded {
                    entry: from_document(&first)?,
                    created: false,
                })
            }
            Err(error) => Err(unavailable(error)),
        }
    }

    async fn list(&self, query: &InboxQuery) -> Result<Vec<InboxEntry>, InboxError> {
        check_query(query)?;
        let mut range = Document::new();
        if let Some(since) = &query.since {
            range.insert("$gt", object_id(since)?);
        }
        if let Some(before) = &query.before {
            range.insert("$lt", object_id(before)?);
        }
        let mut filter = doc! { "user_id": &query.user_id };
        if !range.is_empty() {
            filter.insert("notification_id", range);
        }
        if query.unread_only {
            filter.insert("read_at", Bson::Null);
        }
        // `before` pages are the entries immediately preceding it: read them newest first.
        let newest_first = query.before.is_some();
        let order = if newest_first { -1 } else { 1 };
        let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
        let documents: Vec<Document> = self
            .bounded(async {
                self.notifications
                    .find(filter)
                    .sort(doc! { "notification_id": order })
                    .limit(limit)
                    .await?
                    .try_collect()
                    .await
            })
            .await?;
        let mut entries = documents
            .iter()
            .map(from_document)
            .collect::<Result<Vec<_>, _>>()?;
        if newest_first {
            entries.reverse();
        }
        Ok(entries)
    }

    async fn unread_count(&self, user_id: &str) -> Result<u64, InboxError> {
        self.count_unread(user_id).await
    }

    async fn mark_read(
        &self,
        user_id: &str,
        selection: &ReadSelection,
        at: DateTime<Utc>,
    ) -> Result<u64, InboxError> {
        check_selection(selection)?;
        let selected = match selection {
            ReadSelection::Ids(ids) => {
                let ids = ids
                    .iter()
                    .map(|id| object_id(id))
                    .collect::<Result<Vec<_>, _>>()?;
                doc! { "$in": ids }
            }
            ReadSelection::UpTo(up_to) => doc! { "$lte": object_id(up_to)? },
            // A selection this backend does not know marks nothing.
            _ => return self.count_unread(user_id).await,
        };
        let filter =
            doc! { "user_id": user_id, "notification_id": selected, "read_at": Bson::Null };
        let update = doc! { "$set": { "read_at": date(&at) } };
        self.bounded(self.notifications.update_many(filter, update))
            .await?;
        self.count_unread(user_id).await
    }

    async fn ping(&self) -> Result<(), InboxError> {
        self.bounded(self.database.run_command(doc! { "ping": 1 }))
            .await
            .map(|_| ())
    }
}
