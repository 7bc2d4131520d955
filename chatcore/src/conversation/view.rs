//! The conversation list's view, kept by a consumer of its own on the change feed.
//!
//! The consumer reads the chat messages of the feed like the chat consumer does (same
//! handler, no notifications) and hands each to [`ActivityRecorder`], a forwarder that records
//! it as the latest activity of its conversation for every member. Recording is idempotent (a
//! message older than or equal to the one held changes nothing), so events delivered again after
//! a restart never count twice.

use std::sync::Arc;

use async_trait::async_trait;

use super::{ConversationError, ConversationStore};
use crate::forward::{Delivery, DeliveryReport, ForwardError, Forwarder};
use crate::model::ChatMessage;

/// The members of `message`'s conversation: its two participants, or the group's current
/// members (`None` when the group is unknown).
pub async fn members_of(
    conversations: &dyn ConversationStore,
    message: &ChatMessage,
) -> Result<Option<Vec<String>>, ConversationError> {
    match &message.receiver_id {
        Some(receiver) => Ok(Some(vec![message.sender_id.clone(), receiver.clone()])),
        None => Ok(conversations
            .group(&message.stream_id)
            .await?
            .map(|group| group.members)),
    }
}

/// A forwarder that records chat messages in the conversation view instead of sending them.
#[derive(Clone)]
pub struct ActivityRecorder {
    conversations: Arc<dyn ConversationStore>,
}

impl std::fmt::Debug for ActivityRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActivityRecorder").finish_non_exhaustive()
    }
}

impl ActivityRecorder {
    /// Records into `conversations`.
    pub fn new(conversations: Arc<dyn ConversationStore>) -> Self {
        Self { conversations }
    }
}

#[async_trait]
impl Forwarder for ActivityRecorder {
    async fn forward(&self, delivery: &Delivery) -> Result<DeliveryReport, ForwardError> {
        let Delivery::Chat(message) = delivery else {
            return Ok(DeliveryReport::default());
        };
        let unavailable = |e: ConversationError| ForwardError::Transport(e.to_string());
        let Some(members) = members_of(self.conversations.as_ref(), message)
            .await
            .map_err(unavailable)?
        else {
            tracing::warn!(stream_id = %message.stream_id, message_id = %message.message_id, "message of an unknown group: not in the conversation list");
            return Ok(DeliveryReport::default());
        };
        self.conversations
            .record_activity(&members, message)
            .await
            .map_err(unavailable)?;
        Ok(DeliveryReport {
            delivered: members.len(),
            failed: 0,
        })
    }
}
