//! The conversation list of a user: the view's entries and the user's groups, latest activity
//! first, each with its unread count and read marker.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::memory::latest_first;
use super::{Activity, Conversation, ConversationError, ConversationKind, ConversationStore};
use crate::model::ChatMessage;
use crate::store::{MessageStore, StoreError};

/// One entry of `GET /conversations?user_id=`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConversationSummary {
    /// 16 lowercase hex characters.
    pub stream_id: String,
    /// Direct or group.
    pub kind: ConversationKind,
    /// The members, sorted.
    pub members: Vec<String>,
    /// The group's title, or null.
    pub title: Option<String>,
    /// The latest message, or null for a group without messages yet.
    pub last_message: Option<ChatMessage>,
    /// Messages after the user's read marker that the user did not send.
    pub unread: u64,
    /// The user's read marker, or null.
    pub last_read_message_id: Option<String>,
}

/// Why the list could not be made.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ListError {
    /// The conversation store failed.
    #[error(transparent)]
    Conversations(#[from] ConversationError),
    /// The message store failed while counting unread messages.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// An entry before its read state is looked up.
struct Entry {
    conversation: Conversation,
    last_message: Option<ChatMessage>,
}

impl Entry {
    fn active_at(&self) -> Option<DateTime<Utc>> {
        self.last_message
            .as_ref()
            .map(|m| m.created_at)
            .or(self.conversation.created_at)
    }
}

/// `user_id`'s conversations, latest activity first, at most `limit`: the direct ones the view
/// has seen a message of, and every group the user is a member of (a group the user left is
/// not listed, even where the view still holds it).
pub async fn conversation_list(
    messages: &dyn MessageStore,
    conversations: &dyn ConversationStore,
    user_id: &str,
    limit: usize,
) -> Result<Vec<ConversationSummary>, ListError> {
    let mut groups: HashMap<String, Conversation> = conversations
        .groups_of(user_id)
        .await?
        .into_iter()
        .map(|group| (group.stream_id.clone(), group))
        .collect();
    let activity = conversations
        .activity(user_id, limit.saturating_add(groups.len()))
        .await?;
    let mut entries = Vec::with_capacity(activity.len() + groups.len());
    for Activity {
        stream_id,
        last_message,
    } in activity
    {
        let conversation = match &last_message.receiver_id {
            Some(receiver) => Conversation::direct(&last_message.sender_id, receiver),
            None => match groups.remove(&stream_id) {
                Some(group) => group,
                None => continue,
            },
        };
        entries.push(Entry {
            conversation,
            last_message: Some(last_message),
        });
    }
    entries.extend(groups.into_values().map(|conversation| Entry {
        conversation,
        last_message: None,
    }));
    entries.sort_by(|a, b| match (&a.last_message, &b.last_message) {
        (Some(x), Some(y)) => latest_first(x, y),
        _ => b.active_at().cmp(&a.active_at()),
    });
    entries.truncate(limit);
    let mut list = Vec::with_capacity(entries.len());
    for entry in entries {
        list.push(summarize(messages, conversations, user_id, entry).await?);
    }
    Ok(list)
}

async fn summarize(
    messages: &dyn MessageStore,
    conversations: &dyn ConversationStore,
    user_id: &str,
    entry: Entry,
) -> Result<ConversationSummary, ListError> {
    let stream_id = entry.conversation.stream_id;
    let marker = conversations.read_marker(&stream_id, user_id).await?;
    let last_read = marker.map(|m| m.message_id);
    let unread = match &entry.last_message {
        Some(_) => {
            messages
                .count_unread(&stream_id, last_read.as_deref(), user_id)
                .await?
        }
        None => 0,
    };
    Ok(ConversationSummary {
        stream_id,
        kind: entry.conversation.kind,
        members: entry.conversation.members,
        title: entry.conversation.title,
        last_message: entry.last_message,
        unread,
        last_read_message_id: last_read,
    })
}

/// The conversation `stream_id` for `user_id`: the group with that id (the caller checks
/// membership), or a direct conversation of `user_id`'s the view has seen; `Ok(None)` otherwise.
pub async fn conversation_of(
    conversations: &dyn ConversationStore,
    user_id: &str,
    stream_id: &str,
) -> Result<Option<Conversation>, ConversationError> {
    if let Some(group) = conversations.group(stream_id).await? {
        return Ok(Some(group));
    }
    let seen = conversations.activity_of(user_id, stream_id).await?;
    Ok(seen.and_then(|activity| {
        let message = activity.last_message;
        let receiver = message.receiver_id.as_deref()?;
        Some(Conversation::direct(&message.sender_id, receiver))
    }))
}
