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

use crate::order::{self, Head, Heads, PREVIOUS, PREVIOUS_INDEX};
use crate::CallError;

/// Collection of idempotency claims: `{_id: "<sender_id>\u{1f}<key>", message_id: ObjectId}`.
pub const IDEMPOTENCY_COLLECTION: &str = "chat_idempotency";

/// MongoDB's duplicate-key error code.
const DUPLICATE_KEY: i32 = 11000;

/// The chat message store. Documents are
/// `{_id: ObjectId, content, created_at: Date, stream_id, sender_id, receiver_id?, previous}` (a
/// group message has no `receiver_id`); the
/// `message_id` on the wire is the ObjectId's hex, and `previous` links the document to its
/// predecessor in its stream.
///
/// Within a stream, ids sort in commit order (history paging and `since=` rely on it), even with
/// several persistence processes writing one stream: each document names its stream's newest
/// message as `previous`, under a unique index, and its id sorts after that message's; an insert
/// that loses the race for a predecessor reads the new newest message and links to it. Inserts of
/// one stream in one process also take a per-stream lock (striped), which remembers each stream's
/// newest message, so the usual insert is one write. Call [`create_indexes`](Self::create_indexes)
/// before the first insert: without the unique index, concurrent writers are not ordered.
#[derive(Debug, Clone)]
pub struct MongoMessageStore {
    chat: Collection<Document>,
    idempotency: Collection<Document>,
    database: Database,
    timeout: Duration,
    stripes: Arc<[tokio::sync::Mutex<Heads>]>,
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

/// Whether a duplicate key is on the `previous` index: another writer linked to the same message
/// first. (Otherwise it is on `_id`.)
fn is_lost_link(error: &mongodb::error::Error) -> bool {
    matches!(
        error.kind.as_ref(),
        ErrorKind::Write(WriteFailure::WriteError(e)) if e.message.contains(PREVIOUS_INDEX)
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
            stripes: (0..STRIPES)
                .map(|_| tokio::sync::Mutex::new(Heads::default()))
                .collect(),
        }
    }

    fn stripe(&self, stream_id: &str) -> &tokio::sync::Mutex<Heads> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        stream_id.hash(&mut hasher);
        &self.stripes[(hasher.finish() % self.stripes.len() as u64) as usize]
    }

    /// Creates the `{stream_id: 1, _id: 1}` history index and the unique, sparse index on
    /// `previous` that orders concurrent writers of one stream (idempotent).
    pub async fn create_indexes(&self) -> Result<(), StoreError> {
        let history = IndexModel::builder()
            .keys(doc! { "stream_id": 1, "_id": 1 })
            .options(
                IndexOptions::builder()
                    .name("stream_id_1__id_1".to_owned())
                    .build(),
            )
            .build();
        let links = IndexModel::builder()
            .keys(doc! { PREVIOUS: 1 })
            .options(
                IndexOptions::builder()
                    .name(PREVIOUS_INDEX.to_owned())
                    .unique(true)
                    .sparse(true)
                    .build(),
            )
            .build();
        self.bounded(self.chat.create_indexes([history, links]))
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
        id: ObjectId,
    ) -> Result<(), StoreError> {
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
            Ok(())
        } else {
            Err(claim_lost())
        }
    }

    /// The stream's newest message, read from the store.
    async fn read_head(&self, stream_id: &str) -> Result<Head, StoreError> {
        let newest = self
            .bounded(async {
                self.chat
                    .find_one(doc! { "stream_id": stream_id })
                    .sort(doc! { "_id": -1 })
                    .projection(doc! { "_id": 1 })
                    .await
            })
            .await?;
        Ok(newest.and_then(|d| d.get_object_id("_id").ok()))
    }

    /// Points this request's claim from `from` to `to`, the id it now stores the message under.
    async fn repoint(&self, claim: &str, from: ObjectId, to: ObjectId) -> Result<(), StoreError> {
        let update = self.idempotency.update_one(
            doc! { "_id": claim, "message_id": from },
            doc! { "$set": { "message_id": to } },
        );
        if self.bounded(async { update.await }).await?.matched_count == 1 {
            Ok(())
        } else {
            Err(claim_lost())
        }
    }

    /// Best effort: drops this request's claim after its message could not be written, so the
    /// client's retry claims the key again.
    async fn release(&self, claim: &str, id: ObjectId) {
        let _ = self
            .bounded(async {
                self.idempotency
                    .delete_one(doc! { "_id": claim, "message_id": id })
                    .await
            })
            .await;
    }

    /// Claims `claim` for `id`: `Some` with the first message when the key was used before.
    async fn claim(&self, claim: &str, id: ObjectId) -> Result<Option<ChatMessage>, StoreError> {
        // Claimed before the message is written, so a repeat never produces a second change
        // event.
        let claimed = crate::bounded(
            self.timeout,
            self.idempotency
                .insert_one(doc! { "_id": claim, "message_id": id }),
        )
        .await;
        match claimed {
            Ok(_) => Ok(None),
            Err(CallError::Driver(error)) if is_duplicate_key(&error) => {
                match self.first_of(claim).await? {
                    Claimed::Message(message) => Ok(Some(message)),
                    Claimed::Abandoned(previous) => {
                        self.take_over(claim, previous, id).await?;
                        Ok(None)
                    }
                }
            }
            Err(error) => Err(unavailable(error)),
        }
    }

    /// Writes `stored` after the stream's newest message, linking to it; on losing the race for
    /// that message, reads the new newest one and tries again under a new id (the claim follows).
    async fn link_and_write(
        &self,
        heads: &mut Heads,
        mut head: Head,
        mut stored: ChatMessage,
        mut id: ObjectId,
        claim: Option<&str>,
    ) -> Result<ChatMessage, NotWritten> {
        let stream_id = stored.stream_id.clone();
        let definitely = |error, id| NotWritten {
            error,
            id,
            maybe_written: false,
        };
        let deadline = tokio::time::Instant::now() + self.timeout;
        for attempt in 0.. {
            let document = to_document(&stored, id, order::link(&stream_id, head));
            let error = match crate::bounded(self.timeout, self.chat.insert_one(document)).await {
                Ok(_) => {
                    heads.remember(&stream_id, Some(id));
                    return Ok(stored);
                }
                Err(CallError::Driver(error)) if is_duplicate_key(&error) => error,
                // A timeout or a broken connection: the write may still commit.
                Err(error) => {
                    return Err(NotWritten {
                        error: unavailable(error),
                        id,
                        maybe_written: true,
                    })
                }
            };
            if !is_lost_link(&error) {
                let found = self.find_message(id).await.map_err(|e| definitely(e, id))?;
                if found.as_ref() == Some(&stored) {
                    // Our own write, committed by an earlier attempt of the driver.
                    heads.remember(&stream_id, Some(id));
                    return Ok(stored);
                }
            }
            if tokio::time::Instant::now() >= deadline {
                let error = StoreError::Unavailable(
                    format!("stream {stream_id} kept moving for {attempt} attempts").into(),
                );
                return Err(definitely(error, id));
            }
            tracing::debug!(
                stream_id,
                attempt,
                "another writer took this stream's newest message"
            );
            tokio::time::sleep(order::backoff(attempt)).await;
            head = self
                .read_head(&stream_id)
                .await
                .map_err(|e| definitely(e, id))?;
            let next = order::next_id(head);
            if let Some(claim) = claim {
                self.repoint(claim, id, next)
                    .await
                    .map_err(|e| definitely(e, id))?;
            }
            id = next;
            stored.message_id = id.to_hex();
        }
        unreachable!("the loop returns")
    }
}

/// Why [`MongoMessageStore::link_and_write`] gave up, and under which id it last tried.
struct NotWritten {
    error: StoreError,
    id: ObjectId,
    /// The last write's outcome is unknown: it may commit yet, so its claim must stay (a retry
    /// with the key waits for it, and takes the claim over only if it never appears).
    maybe_written: bool,
}

fn claim_lost() -> StoreError {
    StoreError::Unavailable("another request with this idempotency key is storing it".into())
}

/// What the claim of a repeated idempotency key points at.
enum Claimed {
    /// The stored message.
    Message(ChatMessage),
    /// Nothing stored within the timeout: the claim's message id, if the claim still exists.
    Abandoned(Option<ObjectId>),
}

/// A group message has no `receiver_id` field.
fn to_document(message: &ChatMessage, id: ObjectId, previous: mongodb::bson::Bson) -> Document {
    let mut document = doc! {
        "_id": id,
        "content": &message.content,
        "created_at": BsonDateTime::from_millis(message.created_at.timestamp_millis()),
        "stream_id": &message.stream_id,
        "sender_id": &message.sender_id,
    };
    if let Some(receiver_id) = &message.receiver_id {
        document.insert("receiver_id", receiver_id);
    }
    document.insert(PREVIOUS, previous);
    document
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
        receiver_id: match document.get("receiver_id") {
            None | Some(mongodb::bson::Bson::Null) => None,
            Some(_) => Some(text("receiver_id")?),
        },
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
        let mut heads = self.stripe(message.stream_id()).lock().await;
        let head = match heads.get(message.stream_id()) {
            Some(head) => head,
            None => self.read_head(message.stream_id()).await?,
        };
        let id = order::next_id(head);
        let claim = idempotency_key.map(|key| format!("{}\u{1f}{key}", message.sender_id()));
        if let Some(claim) = &claim {
            if let Some(first) = self.claim(claim, id).await? {
                return Ok(Inserted {
                    message: first,
                    created: false,
                });
            }
        }
        let stream_id = message.stream_id().to_owned();
        let stored = message.into_stored(id.to_hex(), chrono::Utc::now());
        let written = self
            .link_and_write(&mut heads, head, stored, id, claim.as_deref())
            .await;
        match written {
            Ok(message) => Ok(Inserted {
                message,
                created: true,
            }),
            Err(failed) => {
                heads.forget(&stream_id);
                if let (Some(claim), false) = (&claim, failed.maybe_written) {
                    self.release(claim, failed.id).await;
                }
                Err(failed.error)
            }
        }
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

    /// One `find_one` of `{_id, stream_id}`. An id that is not an ObjectId is
    /// [`StoreError::InvalidCursor`] (as a history cursor is); an ObjectId written otherwise than
    /// this store hands ids out (24 lowercase hex characters, say in upper case) names no message
    /// (`None`), as in the provided implementation.
    async fn find(
        &self,
        stream_id: &str,
        message_id: &str,
    ) -> Result<Option<ChatMessage>, StoreError> {
        let id = cursor("message_id", message_id)?;
        if id.to_hex() != message_id {
            return Ok(None);
        }
        let found = self
            .bounded(async {
                self.chat
                    .find_one(doc! { "_id": id, "stream_id": stream_id })
                    .await
            })
            .await?;
        found.map(|d| from_document(&d)).transpose()
    }

    /// One `count_documents` of `{stream_id, _id: {$gt: after}, sender_id: {$ne: reader}}`, on
    /// the `{stream_id: 1, _id: 1}` index. An `after` that is not an ObjectId is
    /// [`StoreError::InvalidCursor`].
    async fn count_unread(
        &self,
        stream_id: &str,
        after: Option<&str>,
        reader: &str,
    ) -> Result<u64, StoreError> {
        let mut filter = doc! { "stream_id": stream_id };
        if let Some(after) = after {
            filter.insert("_id", doc! { "$gt": cursor("after", after)? });
        }
        filter.insert("sender_id", doc! { "$ne": reader });
        self.bounded(async { self.chat.count_documents(filter).await })
            .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.bounded(self.database.run_command(doc! { "ping": 1 }))
            .await
            .map(|_| ())
    }
}
