//! A change source over a MongoDB change stream, with resume-token checkpoints.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use chatcore::change::{ChangeError, ChangeEvent, ChangeSource, OffsetTracker, Op, SourcePosition};
use futures::StreamExt;
use mongodb::bson::{doc, Bson, DateTime as BsonDateTime, Document};
use mongodb::change_stream::event::{ChangeStreamEvent, OperationType, ResumeToken};
use mongodb::change_stream::ChangeStream;
use mongodb::options::FullDocumentType;
use mongodb::{Collection, Database};

use crate::bounded;

/// Collection of consumers' checkpoints: `{_id: <consumer>, token: <resume token>, at: Date}`.
pub const CHECKPOINT_COLLECTION: &str = "change_checkpoints";

/// A [`ChangeSource`] over the change stream of one collection.
///
/// Events get consecutive offsets as they are read; when the pipeline reports events done, the
/// resume token of the last event before the first unfinished one is written to
/// [`CHECKPOINT_COLLECTION`] under the consumer's name. A new `MongoChangeStream` for the same
/// consumer resumes after that token, so events written while it was down, and events it had read
/// but not finished, are delivered.
pub struct MongoChangeStream {
    collection: Collection<Document>,
    checkpoints: Collection<Document>,
    consumer: String,
    timeout: Duration,
    reader: tokio::sync::Mutex<Reader>,
    pending: Mutex<Pending>,
}

impl std::fmt::Debug for MongoChangeStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MongoChangeStream")
            .field("consumer", &self.consumer)
            .finish_non_exhaustive()
    }
}

struct Reader {
    stream: Option<ChangeStream<ChangeStreamEvent<Document>>>,
    /// Where to reopen the stream: the last event read.
    resume: Option<ResumeToken>,
    next_offset: i64,
}

#[derive(Default)]
struct Pending {
    tracker: OffsetTracker,
    tokens: BTreeMap<i64, ResumeToken>,
}

fn unavailable(error: impl std::fmt::Display) -> ChangeError {
    ChangeError::Unavailable(error.to_string().into())
}

impl MongoChangeStream {
    /// Watches `collection` of `database` for `consumer`, resuming after its checkpoint if it has
    /// one (otherwise from now). The stream is open when this returns.
    pub async fn open(
        database: &Database,
        collection: &str,
        consumer: &str,
        timeout: Duration,
    ) -> Result<Self, ChangeError> {
        let checkpoints: Collection<Document> = database.collection(CHECKPOINT_COLLECTION);
        let saved = bounded(timeout, checkpoints.find_one(doc! { "_id": consumer }))
            .await
            .map_err(unavailable)?;
        let resume = saved
            .and_then(|d| d.get("token").cloned())
            .map(mongodb::bson::from_bson::<ResumeToken>)
            .transpose()
            .map_err(|e| unavailable(format!("unreadable checkpoint of {consumer}: {e}")))?;
        let source = Self {
            collection: database.collection(collection),
            checkpoints,
            consumer: consumer.to_owned(),
            timeout,
            reader: tokio::sync::Mutex::new(Reader {
                stream: None,
                resume,
                next_offset: 0,
            }),
            pending: Mutex::new(Pending::default()),
        };
        // Opened now, so every change from this point on is seen even before the first read.
        source.reopen(&mut *source.reader.lock().await).await?;
        Ok(source)
    }

    fn pending(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn reopen(&self, reader: &mut Reader) -> Result<(), ChangeError> {
        let watch = self
            .collection
            .watch()
            .full_document(FullDocumentType::UpdateLookup)
            .resume_after(reader.resume.clone());
        let stream = bounded(self.timeout, watch).await.map_err(unavailable)?;
        reader.stream = Some(stream);
        Ok(())
    }

    fn to_change(&self, event: ChangeStreamEvent<Document>, offset: i64) -> Option<ChangeEvent> {
        let op = match event.operation_type {
            OperationType::Insert => Op::Create,
            OperationType::Update | OperationType::Replace => Op::Update,
            OperationType::Delete => Op::Delete,
            other => {
                tracing::info!(consumer = %self.consumer, ?other, "change stream event skipped");
                return None;
            }
        };
        let position = SourcePosition {
            partition: 0,
            offset,
            token: mongodb::bson::to_bson(&event.id)
                .ok()
                .map(|t| t.into_relaxed_extjson().to_string()),
        };
        let key = event
            .document_key
            .as_ref()
            .and_then(|k| k.get("_id"))
            .map(|id| match id {
                Bson::ObjectId(oid) => oid.to_hex(),
                other => other.to_string(),
            })
            .unwrap_or_default();
        let collection = event
            .ns
            .as_ref()
            .and_then(|ns| ns.coll.clone())
            .unwrap_or_else(|| self.collection.name().to_owned());
        let document = match event
            .full_document
            .map(|d| chatcore::debezium::document(Bson::Document(d).into_relaxed_extjson()))
        {
            None => None,
            Some(Ok(document)) => Some(document),
            Some(Err(error)) => {
                return Some(ChangeEvent::malformed(key, position, error.to_string()))
            }
        };
        Some(ChangeEvent {
            op,
            collection,
            key,
            document,
            position,
            malformed: None,
        })
    }

    async fn checkpoint(&self, token: &ResumeToken) -> Result<(), ChangeError> {
        let token = mongodb::bson::to_bson(token).map_err(unavailable)?;
        let write = self
            .checkpoints
            .update_one(
                doc! { "_id": &self.consumer },
                doc! { "$set": { "token": token, "at": BsonDateTime::now() } },
            )
            .upsert(true);
        bounded(self.timeout, write)
            .await
            .map(|_| ())
            .map_err(unavailable)
    }
}

#[async_trait]
impl ChangeSource for MongoChangeStream {
    async fn next(&self) -> Result<Option<ChangeEvent>, ChangeError> {
        let mut reader = self.reader.lock().await;
        loop {
            if reader.stream.is_none() {
                self.reopen(&mut reader).await?;
            }
            let Some(stream) = reader.stream.as_mut() else {
                continue;
            };
            match stream.next().await {
                Some(Ok(event)) => {
                    reader.resume = Some(event.id.clone());
                    let offset = reader.next_offset;
                    let token = event.id.clone();
                    let Some(change) = self.to_change(event, offset) else {
                        continue;
                    };
                    reader.next_offset += 1;
                    let mut pending = self.pending();
                    pending.tracker.delivered(0, offset);
                    pending.tokens.insert(offset, token);
                    return Ok(Some(change));
                }
                Some(Err(error)) => {
                    reader.stream = None;
                    return Err(unavailable(error));
                }
                None => {
                    reader.stream = None;
                    return Err(unavailable("the change stream ended; reopening"));
                }
            }
        }
    }

    async fn done(&self, position: &SourcePosition) -> Result<(), ChangeError> {
        let token = {
            let mut pending = self.pending();
            let Some(commit) = pending.tracker.finished(0, position.offset) else {
                return Ok(());
            };
            let token = pending.tokens.get(&(commit - 1)).cloned();
            pending.tokens = pending.tokens.split_off(&commit);
            token
        };
        match token {
            Some(token) => self.checkpoint(&token).await,
            None => Ok(()),
        }
    }
}
