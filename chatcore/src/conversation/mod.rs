//! Conversations: groups and their members, read markers, and the conversation list.
//!
//! A direct conversation needs no creation: its `stream_id` is the hash of its two participants
//! ([`crate::stream_id`]). A group is created once ([`ConversationStore::create_group`]) with
//! 2 to [`DEFAULT_MAX_GROUP_MEMBERS`] members and gets a `stream_id` made by the server; its
//! messages have no `receiver_id` and notify every member but the sender.
//!
//! Each user has a read marker per conversation ([`ConversationStore::mark_read`], monotonic:
//! an older message never moves it back). The conversation list ([`list::conversation_list`]) is
//! a view kept by a consumer of its own on the change feed ([`view::ActivityRecorder`]), never a
//! second write of the POST, with the unread count of each entry counted from the store.
//!
//! [`ConversationStore`] is the trait a backend implements; [`InMemoryConversations`] is the
//! embedded one, and `chatcore::testing::conversations` (feature `test-util`) holds the checks
//! every implementation must pass.

pub mod list;
mod memory;
mod model;
pub mod view;

use async_trait::async_trait;

use crate::error::Cause;
use crate::model::ChatMessage;

pub use memory::InMemoryConversations;
pub use model::{
    new_group_stream_id, Conversation, ConversationKind, MembersChanged, MembershipChange,
    NewGroup, ReadMarker, ValidGroup, ValidMembershipChange, MAX_TITLE_BYTES,
};

/// Name of the MongoDB collection (and SQLite table) holding groups.
pub const CONVERSATIONS_COLLECTION: &str = "conversations";
/// Name of the MongoDB collection (and SQLite table) holding read markers.
pub const READ_MARKERS_COLLECTION: &str = "read_markers";
/// Name of the MongoDB collection (and SQLite table) holding the conversation list's view.
pub const CONVERSATION_VIEW_COLLECTION: &str = "conversation_view";
/// Largest group by default (`MAX_GROUP_MEMBERS`).
pub const DEFAULT_MAX_GROUP_MEMBERS: usize = 256;
/// The name of the conversation list's view consumer (in metrics and logs), and the suffix of
/// its consumer group on the change feed (`<chat group>-conversation-view`).
pub const VIEW_CONSUMER_GROUP: &str = "conversation-view";

/// A conversation store operation failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ConversationError {
    /// The backend cannot be reached or timed out (503).
    #[error("conversation store unavailable: {0}")]
    Unavailable(#[source] Cause),
    /// The backend answered with something this code cannot interpret (500).
    #[error("conversation store error: {0}")]
    Backend(#[source] Cause),
    /// No group has this `stream_id` (404).
    #[error("no conversation {0:?}")]
    NotFound(String),
    /// The acting user is not a member (403).
    #[error("{0:?} is not a member of this conversation")]
    NotAMember(String),
    /// The change would leave the group outside its size limits (400).
    #[error("{0}")]
    Limit(String),
}

/// One entry of the conversation view: a user's conversation and its latest message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activity {
    /// The conversation.
    pub stream_id: String,
    /// Its latest message the view has seen.
    pub last_message: ChatMessage,
}

/// Groups, read markers and the conversation view, kept in the message store's backend.
///
/// Every write is atomic and idempotent: a membership change applies as a whole or not at all, a
/// read marker only moves forward, and the view only takes a message newer than the one it holds
/// (so a consumer redelivering events after a restart never counts twice).
#[async_trait]
pub trait ConversationStore: Send + Sync {
    /// Stores a new group (its `stream_id` already made, see [`new_group_stream_id`]).
    async fn create_group(&self, group: Conversation) -> Result<Conversation, ConversationError>;

    /// The group with this `stream_id`, if any.
    async fn group(&self, stream_id: &str) -> Result<Option<Conversation>, ConversationError>;

    /// Applies `change` atomically: `change.by` must be a member
    /// ([`ConversationError::NotAMember`]), the result must keep 1 to `max_members` members
    /// ([`ConversationError::Limit`]). Adding a member already in, or removing one not in, is a
    /// no-op.
    async fn change_members(
        &self,
        stream_id: &str,
        change: &ValidMembershipChange,
        max_members: usize,
    ) -> Result<MembersChanged, ConversationError>;

    /// The groups `user_id` is a member of.
    async fn groups_of(&self, user_id: &str) -> Result<Vec<Conversation>, ConversationError>;

    /// Moves `user_id`'s read marker of `stream_id` to `message_id` when that is newer than the
    /// marker (message ids sort in store order); returns the marker after the call.
    async fn mark_read(
        &self,
        stream_id: &str,
        user_id: &str,
        message_id: &str,
    ) -> Result<ReadMarker, ConversationError>;

    /// `user_id`'s read marker of `stream_id`, if any.
    async fn read_marker(
        &self,
        stream_id: &str,
        user_id: &str,
    ) -> Result<Option<ReadMarker>, ConversationError>;

    /// Records `message` as the latest activity of its conversation for each of `members`,
    /// where it is newer than what the view holds for them.
    async fn record_activity(
        &self,
        members: &[String],
        message: &ChatMessage,
    ) -> Result<(), ConversationError>;

    /// `user_id`'s view entries, latest activity first, at most `limit`.
    async fn activity(
        &self,
        user_id: &str,
        limit: usize,
    ) -> Result<Vec<Activity>, ConversationError>;

    /// `user_id`'s view entry of `stream_id`, if the view has one.
    async fn activity_of(
        &self,
        user_id: &str,
        stream_id: &str,
    ) -> Result<Option<Activity>, ConversationError>;

    /// Checks that the backend answers (readiness).
    async fn ping(&self) -> Result<(), ConversationError>;
}
