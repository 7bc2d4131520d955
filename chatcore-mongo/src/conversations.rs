//! Groups, read markers and the conversation view on the `conversations`, `read_markers` and
//! `conversation_view` collections.

use std::future::IntoFuture;
use std::time::Duration;

use async_trait::async_trait;
use chatcore::conversation::{
    Activity, Conversation, ConversationError, ConversationKind, ConversationStore, MembersChanged,
    ReadMarker, ValidMembershipChange, CONVERSATIONS_COLLECTION, CONVERSATION_VIEW_COLLECTION,
    READ_MARKERS_COLLECTION,
};
use chatcore::model::ChatMessage;
use chrono::{DateTime, SubsecRound, Utc};
use futures::{StreamExt, TryStreamExt};
use mongodb::bson::{doc, Bson, DateTime as BsonDateTime, Document};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::IndexOptions;
use mongodb::{Collection, Database, IndexModel};

use crate::CallError;

/// MongoDB's duplicate-key error code.
const DUPLICATE_KEY: i32 = 11000;
/// Name of the index of groups by member.
const MEMBERS_INDEX: &str = "members_1";
/// Name of the unique index of read markers, one per conversation and user.
const READ_MARKERS_INDEX: &str = "stream_id_1_user_id_1";
/// Name of the unique index of view entries, one per user and conversation.
const VIEW_ENTRY_INDEX: &str = "user_id_1_stream_id_1";
/// Name of the index that lists a user's view entries latest first.
const VIEW_LIST_INDEX: &str = "user_id_1_created_at_-1_last_message_id_-1";
/// How many view entries of one message are written at once.
const VIEW_WRITES_AT_ONCE: usize = 16;

/// Groups, read markers and the conversation view on MongoDB, without transactions.
///
/// - `conversations`: one document per group, `{_id: stream_id, kind: "group", members: [sorted
///   ids], title: string | null, created_by: string | null, created_at: Date | null}`, with an
///   index on `members` (a user's groups). A membership change reads the group, computes the new
///   members ([`ValidMembershipChange::apply`]) and writes them with a filter on the members it
///   read, so a change made meanwhile by another caller makes the write match nothing and the
///   change is computed again on the new members (optimistic concurrency, bounded by the
///   timeout).
/// - `read_markers`: one document per conversation and user, `{stream_id, user_id, message_id,
///   read_at: Date}`, under a unique `{stream_id: 1, user_id: 1}` index. A marker moves with an
///   upsert guarded by `message_id < new`, so an older id never moves it back.
/// - `conversation_view`: one document per user and conversation, `{user_id, stream_id,
///   last_message_id, content, created_at: Date, sender_id, receiver_id?}` (the latest message;
///   no `receiver_id` for a group's), under a unique `{user_id: 1, stream_id: 1}` index, and
///   listed latest first on `{user_id: 1, created_at: -1, last_message_id: -1}`. An entry is
///   replaced with an upsert guarded by `last_message_id < new`, so a message delivered again
///   changes nothing.
///
/// Message ids are kept as the strings the message store hands out (24 lowercase hex
/// characters, whose byte-wise order, MongoDB's order of strings, is their ObjectIds' order), so
/// they compare exactly as in [`chatcore::conversation::InMemoryConversations`].
///
/// Call [`create_indexes`](Self::create_indexes) before the first write: without the unique
/// indexes, two concurrent first writes of a marker or a view entry could make two documents.
#[derive(Debug, Clone)]
pub struct MongoConversations {
    conversations: Collection<Document>,
    read_markers: Collection<Document>,
    view: Collection<Document>,
    database: Database,
    timeout: Duration,
}

fn unavailable(error: CallError) -> ConversationError {
    ConversationError::Unavailable(chatcore::error::Cause::new(error))
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

fn index(keys: Document, name: &str, unique: bool) -> IndexModel {
    IndexModel::builder()
        .keys(keys)
        .options(
            IndexOptions::builder()
                .name(name.to_owned())
                .unique(unique.then_some(true))
                .build(),
        )
        .build()
}

/// What a guarded upsert did.
enum Guarded {
    /// It wrote: the document was absent or held an older message.
    Written,
    /// The document holds this message or a newer one.
    Held,
}

impl MongoConversations {
    /// Conversations on `database` whose every call is bounded by `timeout`.
    pub fn new(database: Database, timeout: Duration) -> Self {
        Self {
            conversations: database.collection(CONVERSATIONS_COLLECTION),
            read_markers: database.collection(READ_MARKERS_COLLECTION),
            view: database.collection(CONVERSATION_VIEW_COLLECTION),
            database,
            timeout,
        }
    }

    /// Creates the `{members: 1}` index of groups, the unique `{stream_id: 1, user_id: 1}` index
    /// of read markers, and the unique `{user_id: 1, stream_id: 1}` and the
    /// `{user_id: 1, created_at: -1, last_message_id: -1}` indexes of the view (idempotent).
    pub async fn create_indexes(&self) -> Result<(), ConversationError> {
        self.bounded(self.conversations.create_index(index(
            doc! { "members": 1 },
            MEMBERS_INDEX,
            false,
        )))
        .await?;
        self.bounded(self.read_markers.create_index(index(
            doc! { "stream_id": 1, "user_id": 1 },
            READ_MARKERS_INDEX,
            true,
        )))
        .await?;
        let entry = index(
            doc! { "user_id": 1, "stream_id": 1 },
            VIEW_ENTRY_INDEX,
            true,
        );
        let list = index(
            doc! { "user_id": 1, "created_at": -1, "last_message_id": -1 },
            VIEW_LIST_INDEX,
            false,
        );
        self.bounded(self.view.create_indexes([entry, list]))
            .await
            .map(|_| ())
    }

    async fn bounded<T>(
        &self,
        call: impl std::future::IntoFuture<Output = mongodb::error::Result<T>>,
    ) -> Result<T, ConversationError> {
        crate::bounded(self.timeout, call)
            .await
            .map_err(unavailable)
    }

    /// Runs a write guarded by "the held message is older" twice at most: first as an upsert
    /// and, when that loses the race of two first writes (a duplicate key: the document appeared
    /// meanwhile), again without the upsert, now that the document exists (documents of these
    /// collections are never deleted), so the newer message of the two is the one kept.
    async fn guarded<F, Fut>(&self, write: F) -> Result<Guarded, ConversationError>
    where
        F: Fn(bool) -> Fut,
        Fut: std::future::Future<Output = mongodb::error::Result<mongodb::results::UpdateResult>>,
    {
        let wrote = |result: &mongodb::results::UpdateResult| {
            result.matched_count > 0 || result.upserted_id.is_some()
        };
        match crate::bounded(self.timeout, write(true)).await {
            Ok(result) if wrote(&result) => Ok(Guarded::Written),
            Ok(_) => Ok(Guarded::Held),
            Err(CallError::Driver(error)) if is_duplicate_key(&error) => {
                let result = self.bounded(write(false)).await?;
                Ok(if wrote(&result) {
                    Guarded::Written
                } else {
                    Guarded::Held
                })
            }
            Err(error) => Err(unavailable(error)),
        }
    }

    /// Records `message` in `user_id`'s view entry of its conversation, if it is newer.
    async fn record_one(
        &self,
        user_id: &str,
        message: &ChatMessage,
    ) -> Result<(), ConversationError> {
        let entry = view_document(user_id, message);
        let filter = doc! {
            "user_id": user_id,
            "stream_id": &message.stream_id,
            "last_message_id": { "$lt": &message.message_id },
        };
        self.guarded(|upsert| {
            self.view
                .replace_one(filter.clone(), entry.clone())
                .upsert(upsert)
                .into_future()
        })
        .await
        .map(|_| ())
    }
}

fn kind_name(kind: ConversationKind) -> &'static str {
    match kind {
        ConversationKind::Direct => "direct",
        ConversationKind::Group => "group",
    }
}

fn optional_text(value: Option<&String>) -> Bson {
    value.map_or(Bson::Null, |text| Bson::String(text.clone()))
}

fn group_document(group: &Conversation) -> Document {
    doc! {
        "_id": &group.stream_id,
        "kind": kind_name(group.kind),
        "members": &group.members,
        "title": optional_text(group.title.as_ref()),
        "created_by": optional_text(group.created_by.as_ref()),
        "created_at": group.created_at.as_ref().map_or(Bson::Null, |at| Bson::DateTime(date(at))),
    }
}

fn backend(what: String) -> ConversationError {
    ConversationError::Backend(what.into())
}

fn millis(value: BsonDateTime) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(value.timestamp_millis())
}

/// A field that is absent or null is `None`; a string is `Some`; anything else is refused.
fn optional_field<'a, T>(
    document: &'a Document,
    field: &str,
    read: impl Fn(&'a Bson) -> Option<T>,
) -> Result<Option<T>, ConversationError> {
    match document.get(field) {
        None | Some(Bson::Null) => Ok(None),
        Some(value) => read(value)
            .map(Some)
            .ok_or_else(|| backend(format!("document without a valid {field}: {document}"))),
    }
}

fn from_group_document(document: &Document) -> Result<Conversation, ConversationError> {
    let bad = |field: &str| backend(format!("conversation without a valid {field}"));
    let kind = match document.get_str("kind").map_err(|_| bad("kind"))? {
        "group" => ConversationKind::Group,
        "direct" => ConversationKind::Direct,
        _ => return Err(bad("kind")),
    };
    let members = document
        .get_array("members")
        .map_err(|_| bad("members"))?
        .iter()
        .map(|member| {
            member
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| bad("members"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Conversation {
        stream_id: document.get_str("_id").map_err(|_| bad("_id"))?.to_owned(),
        kind,
        members,
        title: optional_field(document, "title", |v| v.as_str().map(str::to_owned))?,
        created_by: optional_field(document, "created_by", |v| v.as_str().map(str::to_owned))?,
        created_at: optional_field(document, "created_at", |v| {
            v.as_datetime().copied().and_then(millis)
        })?,
    })
}

fn from_marker_document(document: &Document) -> Result<ReadMarker, ConversationError> {
    let bad = |field: &str| backend(format!("read marker without a valid {field}"));
    let text = |field: &str| {
        document
            .get_str(field)
            .map(str::to_owned)
            .map_err(|_| bad(field))
    };
    Ok(ReadMarker {
        stream_id: text("stream_id")?,
        user_id: text("user_id")?,
        message_id: text("message_id")?,
        read_at: document
            .get_datetime("read_at")
            .ok()
            .copied()
            .and_then(millis)
            .ok_or_else(|| bad("read_at"))?,
        moved: false,
    })
}

/// A group message has no `receiver_id` field.
fn view_document(user_id: &str, message: &ChatMessage) -> Document {
    let mut document = doc! {
        "user_id": user_id,
        "stream_id": &message.stream_id,
        "last_message_id": &message.message_id,
        "content": &message.content,
        "created_at": date(&message.created_at),
        "sender_id": &message.sender_id,
    };
    if let Some(receiver_id) = &message.receiver_id {
        document.insert("receiver_id", receiver_id);
    }
    document
}

fn from_view_document(document: &Document) -> Result<Activity, ConversationError> {
    let bad = |field: &str| backend(format!("view entry without a valid {field}"));
    let text = |field: &str| {
        document
            .get_str(field)
            .map(str::to_owned)
            .map_err(|_| bad(field))
    };
    let stream_id = text("stream_id")?;
    Ok(Activity {
        last_message: ChatMessage {
            message_id: text("last_message_id")?,
            content: text("content")?,
            created_at: document
                .get_datetime("created_at")
                .ok()
                .copied()
                .and_then(millis)
                .ok_or_else(|| bad("created_at"))?,
            stream_id: stream_id.clone(),
            sender_id: text("sender_id")?,
            receiver_id: optional_field(document, "receiver_id", |v| {
                v.as_str().map(str::to_owned)
            })?,
        },
        stream_id,
    })
}

#[async_trait]
impl ConversationStore for MongoConversations {
    /// Inserts the group. A group with this `stream_id` already stored is accepted when it is
    /// this very group (a repeated call), and refused as [`ConversationError::Backend`] when it
    /// is another (`stream_id`s are 64 random bits, so that is not expected to happen).
    async fn create_group(&self, group: Conversation) -> Result<Conversation, ConversationError> {
        let insert = self.conversations.insert_one(group_document(&group));
        match crate::bounded(self.timeout, insert).await {
            Ok(_) => Ok(group),
            Err(CallError::Driver(error)) if is_duplicate_key(&error) => {
                match self.group(&group.stream_id).await? {
                    Some(held) if held == group => Ok(group),
                    _ => Err(backend(format!(
                        "another group already has the stream_id {:?}",
                        group.stream_id
                    ))),
                }
            }
            Err(error) => Err(unavailable(error)),
        }
    }

    async fn group(&self, stream_id: &str) -> Result<Option<Conversation>, ConversationError> {
        let found = self
            .bounded(self.conversations.find_one(doc! { "_id": stream_id }))
            .await?;
        found.as_ref().map(from_group_document).transpose()
    }

    async fn change_members(
        &self,
        stream_id: &str,
        change: &ValidMembershipChange,
        max_members: usize,
    ) -> Result<MembersChanged, ConversationError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        for attempt in 0.. {
            let group = self
                .group(stream_id)
                .await?
                .ok_or_else(|| ConversationError::NotFound(stream_id.to_owned()))?;
            let changed = change.apply_to(&group, max_members)?;
            if changed.conversation.members == group.members {
                // Nothing to write: every added user is in, every removed one out.
                return Ok(changed);
            }
            // Matches only while the members are those read: an array equals an array.
            let filter = doc! { "_id": stream_id, "members": &group.members };
            let update = doc! { "$set": { "members": &changed.conversation.members } };
            let written = self
                .bounded(self.conversations.update_one(filter, update))
                .await?;
            if written.matched_count == 1 {
                return Ok(changed);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ConversationError::Unavailable(
                    format!("group {stream_id} kept changing for {attempt} attempts").into(),
                ));
            }
            tracing::debug!(stream_id, attempt, "the group's members changed meanwhile");
            tokio::time::sleep(crate::order::backoff(attempt)).await;
        }
        unreachable!("the loop returns")
    }

    /// The groups in `stream_id` order.
    async fn groups_of(&self, user_id: &str) -> Result<Vec<Conversation>, ConversationError> {
        let documents: Vec<Document> = self
            .bounded(async {
                self.conversations
                    .find(doc! { "members": user_id })
                    .sort(doc! { "_id": 1 })
                    .await?
                    .try_collect()
                    .await
            })
            .await?;
        documents.iter().map(from_group_document).collect()
    }

    async fn mark_read(
        &self,
        stream_id: &str,
        user_id: &str,
        message_id: &str,
    ) -> Result<ReadMarker, ConversationError> {
        let read_at = Utc::now().trunc_subsecs(3);
        let filter = doc! {
            "stream_id": stream_id,
            "user_id": user_id,
            "message_id": { "$lt": message_id },
        };
        let update = doc! { "$set": { "message_id": message_id, "read_at": date(&read_at) } };
        let written = self
            .guarded(|upsert| {
                self.read_markers
                    .update_one(filter.clone(), update.clone())
                    .upsert(upsert)
                    .into_future()
            })
            .await?;
        match written {
            Guarded::Written => Ok(ReadMarker {
                stream_id: stream_id.to_owned(),
                user_id: user_id.to_owned(),
                message_id: message_id.to_owned(),
                read_at,
                moved: true,
            }),
            Guarded::Held => self
                .read_marker(stream_id, user_id)
                .await?
                .ok_or_else(|| backend(format!("the read marker of {user_id:?} vanished"))),
        }
    }

    async fn read_marker(
        &self,
        stream_id: &str,
        user_id: &str,
    ) -> Result<Option<ReadMarker>, ConversationError> {
        let found = self
            .bounded(
                self.read_markers
                    .find_one(doc! { "stream_id": stream_id, "user_id": user_id }),
            )
            .await?;
        found.as_ref().map(from_marker_document).transpose()
    }

    /// One guarded upsert per member, several at once; the first failure is returned (the
    /// entries already written stay, and a retry of the whole call rewrites nothing twice).
    async fn record_activity(
        &self,
        members: &[String],
        message: &ChatMessage,
    ) -> Result<(), ConversationError> {
        let writes: Vec<_> = members
            .iter()
            .map(|member| self.record_one(member, message))
            .collect();
        futures::stream::iter(writes)
            .buffer_unordered(VIEW_WRITES_AT_ONCE)
            .try_collect::<()>()
            .await
    }

    async fn activity(
        &self,
        user_id: &str,
        limit: usize,
    ) -> Result<Vec<Activity>, ConversationError> {
        if limit == 0 {
            // A limit of 0 means "no limit" to MongoDB.
            return Ok(Vec::new());
        }
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let documents: Vec<Document> = self
            .bounded(async {
                self.view
                    .find(doc! { "user_id": user_id })
                    .sort(doc! { "created_at": -1, "last_message_id": -1 })
                    .limit(limit)
                    .await?
                    .try_collect()
                    .await
            })
            .await?;
        documents.iter().map(from_view_document).collect()
    }

    async fn activity_of(
        &self,
        user_id: &str,
        stream_id: &str,
    ) -> Result<Option<Activity>, ConversationError> {
        let found = self
            .bounded(
                self.view
                    .find_one(doc! { "user_id": user_id, "stream_id": stream_id }),
            )
            .await?;
        found.as_ref().map(from_view_document).transpose()
    }

    async fn ping(&self) -> Result<(), ConversationError> {
        self.bounded(self.database.run_command(doc! { "ping": 1 }))
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use mongodb::results::UpdateResult;

    use super::*;

    fn duplicate_key() -> mongodb::error::Error {
        let error: mongodb::error::WriteError = mongodb::bson::from_document(
            doc! { "code": DUPLICATE_KEY, "errmsg": "E11000 duplicate key error" },
        )
        .expect("a write error");
        ErrorKind::Write(WriteFailure::WriteError(error)).into()
    }

    fn matched(count: u64) -> UpdateResult {
        let mut result = UpdateResult::default();
        result.matched_count = count;
        result
    }

    async fn store() -> MongoConversations {
        // Never connected: the writes below are made up.
        let client = mongodb::Client::with_uri_str("mongodb://127.0.0.1:9/")
            .await
            .expect("client");
        MongoConversations::new(client.database("unused"), Duration::from_secs(1))
    }

    /// The race a single-threaded wire server never runs: two first upserts both find no
    /// document, the other one inserts first, and this one's insert hits the unique index. The
    /// document now exists, so the same guarded write again, without the upsert, moves it when
    /// this message is the newer one, and reports it held otherwise.
    #[tokio::test]
    async fn an_upsert_losing_the_race_of_two_first_writes_writes_again_without_upserting() {
        let store = store().await;
        for (second_matches, expected_written) in [(1, true), (0, false)] {
            let calls = Mutex::new(Vec::new());
            let outcome = store
                .guarded(|upsert| {
                    calls.lock().expect("calls").push(upsert);
                    std::future::ready(if upsert {
                        Err(duplicate_key())
                    } else {
                        Ok(matched(second_matches))
                    })
                })
                .await
                .expect("guarded");
            assert_eq!(*calls.lock().expect("calls"), [true, false]);
            assert_eq!(
                matches!(outcome, Guarded::Written),
                expected_written,
                "{second_matches}"
            );
        }
    }

    #[tokio::test]
    async fn a_guarded_upsert_that_writes_is_made_once() {
        let store = store().await;
        let upserted = || {
            let mut result = UpdateResult::default();
            result.upserted_id = Some(Bson::Int32(1));
            result
        };
        for (result, expected_written) in [(matched(1), true), (upserted(), true)] {
            let calls = Mutex::new(0);
            let outcome = store
                .guarded(|_| {
                    *calls.lock().expect("calls") += 1;
                    std::future::ready(Ok(result.clone()))
                })
                .await
                .expect("guarded");
            assert_eq!(*calls.lock().expect("calls"), 1);
            assert_eq!(matches!(outcome, Guarded::Written), expected_written);
        }
    }
}
