//! The message store on the `chat` collection.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chatcore::model::{ChatMessage, ValidMessage};
use chatcore::store::{HistoryQuery, Inserted, MessageStore, StoreError, CHAT_COLLECTION};
use futures::TryStreamExt;
use mongodb::bson::oid::ObjectId;
use mongodb::bson::{doc, DateTime as BsonDateTime, Document};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::IndexOptions;
use mongodb::{Collection, Database, IndexModel};

use crate::CallError;

/// Collection of idempotency claims: `{_id: "<sender_id>\u{1f}<key>", message_id: ObjectId}`.
pub const IDEMPOTENCY_COLLECTION: &str = "chat_idempotency";

/// MongoDB's duplicate-key error code.
const DUPLICATE_KEY: i32 = 11000;

/// The chat message store. Documents are
/// `{_id: ObjectId, content, created_at: Date, stream_id, sender_id, receiver_id}`; the
/// `message_id` on the wire is the ObjectId's hex.
///
/// Within a stream, ids must sort in commit order (history paging and `since=` rely on it), but
/// ObjectIds are made by the client before the write, so two concurrent inserts can commit in the
/// other order. Inserts of one stream therefore take the id and write under a per-stream lock
/// (striped), which keeps id order and commit order equal for everything this process writes.
/// Several persistence processes writing to the same stream at the same instant are not ordered
/// by this; route a stream's writes to one instance (as the chat tier already is) to keep it.
#[derive(Debug, Clone)]
pub struct MongoMessageStore {
    chat: Collection<Document>,
    idempotency: Collection<Document>,
    database: Database,
    timeout: Duration,
    stripes: Arc<[tokio::sync::Mutex<()>]>,
}

/// Number of per-stream insert locks.
const STRIPES: usize = 64;

fn unavailable(error: CallError) -> StoreError {
    StoreError::Unavailable(chatcore::error::Cause::new(error))
}

fn is_duplicate_key(error: &mongodb::error::Error) -> bool {
    matches!(
        error.kind.as_ref(),
        ErrorKind::Write(WriteFailure::WriteError(e)) if e.code == DUPLICATE_KEY
    )
}

impl MongoMessageStore {
    /// A store on `database` whose every call is bounded by `timeout`.
    pub fn new(database: Database, timeout: Duration) -> Self {
        Self {
            chat: database.collection(CHAT_COLLECTION),
            idempotency: database.collection(IDEMPOTENCY_COLLECTION),
            database,
            timeout,
            stripes: (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
        }
    }

    fn stripe(&self, stream_id: &str) -> &tokio::sync::Mutex<()> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        stream_id.hash(&mut hasher);
        &self.stripes[(hasher.finish() % self.stripes.len() as u64) as usize]
    }

    /// Creates the `{stream_id: 1, _id: 1}` history index (idempotent).
    pub async fn create_indexes(&self) -> Result<(), StoreError> {
        let index = IndexModel::builder()
            .keys(doc! { "stream_id": 1, "_id": 1 })
            .options(
                IndexOptions::builder()
                    .name("stream_id_1__id_1".to_owned())
                    .build(),
            )
            .build();
        self.bounded(self.chat.create_index(index))
            .await
            .map(|_| ())
    }

    async fn bounded<T>(
        &self,
        call: impl std::future::IntoFuture<Output = mongodb::error::Result<T>>,
    ) -> Result<T, StoreError> {
        crate::bounded(self.timeout, call)
            .await
            .map_err(unavailable)
    }

    async fn find_message(&self, id: ObjectId) -> Result<Option<ChatMessage>, StoreError> {
        let found = self
            .bounded(async { self.chat.find_one(doc! { "_id": id }).await })
            .await?;
        found.map(|d| from_document(&d)).transpose()
    }

    /// The message a repeated idempotency key points at, waiting briefly for a concurrent first
    /// request to finish its insert; [`Claimed::Abandoned`] when it has not appeared by then.
    async fn first_of(&self, claim: &str) -> Result<Claimed, StoreError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            let claimed = self
                .bounded(async { self.idempotency.find_one(doc! { "_id": claim }).await })
                .await?;
            let id = claimed.and_then(|c| c.get_object_id("message_id").ok());
            if let Some(id) = id {
                if let Some(message) = self.find_message(id).await? {
                    return Ok(Claimed::Message(message));
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(Claimed::Abandoned(id));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Points an abandoned claim at `id` (or makes it again, if it is gone), so this request
    /// stores the message. A claim is abandoned when its first request died or timed out after
    /// the claim was written but before the message was (a killed process, a claim whose answer
    /// was lost); without this, every retry with that key would fail for good.
    async fn take_over(
        &self,
        claim: &str,
        previous: Option<ObjectId>,
    ) -> Result<ObjectId, StoreError> {
        // A new id, taken now under the stream's lock, so the id order stays the commit order.
        let id = ObjectId::new();
        let taken = match previous {
            Some(previous) => {
                let update = self.idempotency.update_one(
                    doc! { "_id": claim, "message_id": previous },
                    doc! { "$set": { "message_id": id } },
                );
                self.bounded(async { update.await }).await?.matched_count == 1
            }
            None => {
                let insert = self
                    .idempotency
                    .insert_one(doc! { "_id": claim, "message_id": id });
                match crate::bounded(self.timeout, insert).await {
                    Ok(_) => true,
                    Err(CallError::Driver(error)) if is_duplicate_key(&error) => false,
                    Err(error) => return Err(unavailable(error)),
                }
            }
        };
        if taken {
            tracing::warn!(claim, "idempotency claim without its message taken over");
            Ok(id)
        } else {
            Err(StoreError::Unavailable(
                "another request with this idempotency key is storing it".into(),
            ))
        }
    }
}

/// What the claim of a repeated idempotency key points at.
enum Claimed {
    /// The stored message.
    Message(ChatMessage),
    /// Nothing stored within the timeout: the claim's message id, if the claim still exists.
    Abandoned(Option<ObjectId>),
}

fn to_document(message: &ChatMessage, id: ObjectId) -> Document {
    doc! {
        "_id": id,
        "content": &message.content,
        "created_at": BsonDateTime::from_millis(message.created_at.timestamp_millis()),
        "stream_id": &message.stream_id,
        "sender_id": &message.sender_id,
        "receiver_id": &message.receiver_id,
    }
}

fn from_document(document: &Document) -> Result<ChatMessage, StoreError> {
    let bad =
        |field: &str| StoreError::Backend(format!("chat document without a valid {field}").into());
    let text = |field: &str| {
        document
            .get_str(field)
            .map(str::to_owned)
            .map_err(|_| bad(field))
    };
    let created_at = document
        .get_datetime("created_at")
        .map_err(|_| bad("created_at"))?;
    Ok(ChatMessage {
        message_id: document
            .get_object_id("_id")
            .map_err(|_| bad("_id"))?
            .to_hex(),
        content: text("content")?,
        created_at: chrono::DateTime::from_timestamp_millis(created_at.timestamp_millis())
            .ok_or_else(|| bad("created_at"))?,
        stream_id: text("stream_id")?,
        sender_id: text("sender_id")?,
        receiver_id: text("receiver_id")?,
    })
}

fn cursor(field: &'static str, id: &str) -> Result<ObjectId, StoreError> {
    ObjectId::parse_str(id)
        .map_err(|_| StoreError::InvalidCursor(format!("{field} {id:?} is not a message id")))
}

/// The store's change feed: a change stream of the `chat` collection per consumer, resumed from
/// the consumer's checkpoint ([`MongoChangeStream`](crate::MongoChangeStream)).
#[async_trait]
impl chatcore::change::ChangeFeed for MongoMessageStore {
    async fn subscribe(
        &self,
        group: &str,
    ) -> Result<std::sync::Arc<dyn chatcore::change::ChangeSource>, chatcore::change::ChangeError>
    {
        let stream =
            crate::MongoChangeStream::open(&self.database, CHAT_COLLECTION, group, self.timeout)
                .await?;
        Ok(std::sync::Arc::new(stream))
    }
}

#[async_trait]
impl MessageStore for MongoMessageStore {
    async fn insert(
        &self,
        message: ValidMessage,
        idempotency_key: Option<&str>,
    ) -> Result<Inserted, StoreError> {
        let _ordered = self.stripe(message.stream_id()).lock().await;
        let mut id = ObjectId::new();
        let claim = idempotency_key.map(|key| format!("{}\u{1f}{key}", message.sender_id()));
        if let Some(claim) = &claim {
            // Claim the key before writing the message, so a repeat never produces a second
            // change event.
            let claimed = crate::bounded(
                self.timeout,
                self.idempotency
                    .insert_one(doc! { "_id": claim, "message_id": id }),
            )
            .await;
            match claimed {
                Ok(_) => {}
                Err(CallError::Driver(error)) if is_duplicate_key(&error) => {
                    match self.first_of(claim).await? {
                        Claimed::Message(message) => {
                            return Ok(Inserted {
                                message,
                                created: false,
                            })
                        }
                        Claimed::Abandoned(previous) => {
                            id = self.take_over(claim, previous).await?;
                        }
                    }
                }
                Err(error) => return Err(unavailable(error)),
            }
        }
        let stored = message.into_stored(id.to_hex(), chrono::Utc::now());
        let written = self
            .bounded(async { self.chat.insert_one(to_document(&stored, id)).await })
            .await;
        if let Err(error) = written {
            if let Some(claim) = &claim {
                // Best effort: let the client's retry claim the key again.
                let _ = self
                    .bounded(async { self.idempotency.delete_one(doc! { "_id": claim }).await })
                    .await;
            }
            return Err(error);
        }
        Ok(Inserted {
            message: stored,
            created: true,
        })
    }

    async fn history(&self, query: &HistoryQuery) -> Result<Vec<ChatMessage>, StoreError> {
        let mut range = Document::new();
        if let Some(since) = &query.since {
            range.insert("$gt", cursor("since", since)?);
        }
        if let Some(before) = &query.before {
            range.insert("$lt", cursor("before", before)?);
        }
        let mut filter = doc! { "stream_id": &query.stream_id };
        if !range.is_empty() {
            filter.insert("_id", range);
        }
        // `before` pages are the messages immediately preceding it: read them newest first.
        let newest_first = query.before.is_some();
        let order = if newest_first { -1 } else { 1 };
        let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
        let documents: Vec<Document> = self
            .bounded(async {
                self.chat
                    .find(filter)
                    .sort(doc! { "_id": order })
                    .limit(limit)
                    .await?
                    .try_collect()
                    .await
            })
            .await?;
        let mut messages = documents
            .iter()
            .map(from_document)
            .collect::<Result<Vec<_>, _>>()?;
        if newest_first {
            messages.reverse();
        }
        Ok(messages)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.bounded(self.database.run_command(doc! { "ping": 1 }))
            .await
            .map(|_| ())
    }
}
