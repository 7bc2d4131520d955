//! [`InMemoryConversations`]: the embedded conversation store.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use chrono::{SubsecRound, Utc};

use super::{
    Activity, Conversation, ConversationError, ConversationStore, MembersChanged, ReadMarker,
    ValidMembershipChange,
};
use crate::model::ChatMessage;

/// Groups, read markers and the conversation view in this process's memory.
///
/// ```
/// use chatcore::conversation::{ConversationStore, InMemoryConversations, NewGroup};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let store = InMemoryConversations::new();
/// let group = NewGroup {
///     created_by: "ann".into(),
///     members: vec!["ann".into(), "bob".into()],
///     title: None,
/// };
/// let group = store
///     .create_group(group.validate(256).unwrap().into_conversation())
///     .await
///     .unwrap();
/// assert_eq!(store.groups_of("bob").await.unwrap(), [group]);
/// # }
/// ```
#[derive(Debug, Default)]
pub struct InMemoryConversations {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    groups: HashMap<String, Conversation>,
    groups_of: HashMap<String, BTreeSet<String>>,
    reads: HashMap<(String, String), ReadMarker>,
    /// user → stream → latest message.
    view: HashMap<String, HashMap<String, ChatMessage>>,
}

impl InMemoryConversations {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    fn index(&mut self, stream_id: &str, members: &[String], join: bool) {
        for member in members {
            let groups = self.groups_of.entry(member.clone()).or_default();
            match join {
                true => groups.insert(stream_id.to_owned()),
                false => groups.remove(stream_id),
            };
        }
    }
}

/// Latest first: by the message's time, then its id.
pub(super) fn latest_first(a: &ChatMessage, b: &ChatMessage) -> std::cmp::Ordering {
    (b.created_at, &b.message_id).cmp(&(a.created_at, &a.message_id))
}

#[async_trait]
impl ConversationStore for InMemoryConversations {
    async fn create_group(&self, group: Conversation) -> Result<Conversation, ConversationError> {
        let mut state = self.lock();
        state.index(&group.stream_id, &group.members, true);
        state.groups.insert(group.stream_id.clone(), group.clone());
        Ok(group)
    }

    async fn group(&self, stream_id: &str) -> Result<Option<Conversation>, ConversationError> {
        Ok(self.lock().groups.get(stream_id).cloned())
    }

    async fn change_members(
        &self,
        stream_id: &str,
        change: &ValidMembershipChange,
        max_members: usize,
    ) -> Result<MembersChanged, ConversationError> {
        let mut state = self.lock();
        let group = state
            .groups
            .get(stream_id)
            .ok_or_else(|| ConversationError::NotFound(stream_id.to_owned()))?;
        let changed = change.apply_to(group, max_members)?;
        state.index(stream_id, &changed.removed, false);
        state.index(stream_id, &changed.conversation.members, true);
        state
            .groups
            .insert(stream_id.to_owned(), changed.conversation.clone());
        Ok(changed)
    }

    async fn groups_of(&self, user_id: &str) -> Result<Vec<Conversation>, ConversationError> {
        let state = self.lock();
        let ids = state.groups_of.get(user_id).into_iter().flatten();
        Ok(ids.filter_map(|id| state.groups.get(id).cloned()).collect())
    }

    async fn mark_read(
        &self,
        stream_id: &str,
        user_id: &str,
        message_id: &str,
    ) -> Result<ReadMarker, ConversationError> {
        let mut state = self.lock();
        let key = (stream_id.to_owned(), user_id.to_owned());
        if let Some(marker) = state.reads.get(&key) {
            if marker.message_id.as_str() >= message_id {
                return Ok(ReadMarker {
                    moved: false,
                    ..marker.clone()
                });
            }
        }
        let marker = ReadMarker {
            stream_id: stream_id.to_owned(),
            user_id: user_id.to_owned(),
            message_id: message_id.to_owned(),
            read_at: Utc::now().trunc_subsecs(3),
            moved: true,
        };
        state.reads.insert(key, marker.clone());
        Ok(marker)
    }

    async fn read_marker(
        &self,
        stream_id: &str,
        user_id: &str,
    ) -> Result<Option<ReadMarker>, ConversationError> {
        let key = (stream_id.to_owned(), user_id.to_owned());
        Ok(self.lock().reads.get(&key).map(|marker| ReadMarker {
            moved: false,
            ..marker.clone()
        }))
    }

    async fn record_activity(
        &self,
        members: &[String],
        message: &ChatMessage,
    ) -> Result<(), ConversationError> {
        let mut state = self.lock();
        for member in members {
            let entries = state.view.entry(member.clone()).or_default();
            let newer = entries
                .get(&message.stream_id)
                .is_none_or(|held| held.message_id < message.message_id);
            if newer {
                entries.insert(message.stream_id.clone(), message.clone());
            }
        }
        Ok(())
    }

    async fn activity(
        &self,
        user_id: &str,
        limit: usize,
    ) -> Result<Vec<Activity>, ConversationError> {
        let state = self.lock();
        let mut entries: Vec<&ChatMessage> = state
            .view
            .get(user_id)
            .map(|entries| entries.values().collect())
            .unwrap_or_default();
        entries.sort_by(|a, b| latest_first(a, b));
        Ok(entries
            .into_iter()
            .take(limit)
            .map(|message| Activity {
                stream_id: message.stream_id.clone(),
                last_message: message.clone(),
            })
            .collect())
    }

    async fn activity_of(
        &self,
        user_id: &str,
        stream_id: &str,
    ) -> Result<Option<Activity>, ConversationError> {
        let state = self.lock();
        let message = state.view.get(user_id).and_then(|e| e.get(stream_id));
        Ok(message.map(|message| Activity {
            stream_id: stream_id.to_owned(),
            last_message: message.clone(),
        }))
    }

    async fn ping(&self) -> Result<(), ConversationError> {
        Ok(())
    }
}
