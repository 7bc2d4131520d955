//! [`InMemoryInbox`]: the embedded inbox, kept in process memory.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{
    check_query, check_selection, InboxEntry, InboxError, InboxQuery, InboxStore, ReadSelection,
    Recorded, DEFAULT_RETENTION,
};
use crate::model::Notification;
use crate::store::MessageIdGenerator;

/// The inbox in memory: per user, entries in id order; a map of (user, source key) to id makes
/// writes idempotent. Entries older than the retention are dropped as the user's inbox is
/// touched.
#[derive(Debug)]
pub struct InMemoryInbox {
    state: Mutex<State>,
    retention: Duration,
}

#[derive(Debug, Default)]
struct State {
    users: HashMap<String, Vec<Kept>>,
    keys: HashMap<(String, String), String>,
    ids: MessageIdGenerator,
}

#[derive(Debug)]
struct Kept {
    at: DateTime<Utc>,
    source_key: Option<String>,
    entry: InboxEntry,
}

impl Default for InMemoryInbox {
    fn default() -> Self {
        Self::new()
    }
}

impl InMemoryInbox {
    /// An empty inbox keeping entries for [`DEFAULT_RETENTION`].
    pub fn new() -> Self {
        Self::with_retention(DEFAULT_RETENTION)
    }

    /// An empty inbox keeping entries for `retention` (`NOTIFICATION_RETENTION`).
    pub fn with_retention(retention: Duration) -> Self {
        Self {
            state: Mutex::new(State::default()),
            retention,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The user's entries after dropping the expired ones.
    fn entries<'a>(&self, state: &'a mut State, user_id: &str) -> Option<&'a mut Vec<Kept>> {
        let retention = chrono::Duration::from_std(self.retention).unwrap_or(chrono::Duration::MAX);
        let oldest = Utc::now().checked_sub_signed(retention);
        let State { users, keys, .. } = state;
        let entries = users.get_mut(user_id)?;
        if let Some(oldest) = oldest {
            let expired = entries.partition_point(|kept| kept.at < oldest);
            for kept in entries.drain(..expired) {
                if let Some(key) = kept.source_key {
                    keys.remove(&(user_id.to_owned(), key));
                }
            }
        }
        Some(entries)
    }
}

/// The entry a (user, source key) pair was kept as.
fn find(state: &State, user_id: &str, scoped: &(String, String)) -> Option<InboxEntry> {
    let id = state.keys.get(scoped)?;
    let entries = state.users.get(user_id)?;
    let index = entries
        .binary_search_by(|k| k.entry.notification_id.as_str().cmp(id))
        .ok()?;
    Some(entries[index].entry.clone())
}

fn unread(entries: &[Kept]) -> u64 {
    entries.iter().filter(|k| k.entry.read_at.is_none()).count() as u64
}

#[async_trait]
impl InboxStore for InMemoryInbox {
    async fn record(
        &self,
        user_id: &str,
        notification: &Notification,
    ) -> Result<Recorded, InboxError> {
        let mut state = self.lock();
        self.entries(&mut state, user_id);
        let scoped = notification
            .source_key
            .as_ref()
            .map(|key| (user_id.to_owned(), key.clone()));
        if let Some(first) = scoped.as_ref().and_then(|key| find(&state, user_id, key)) {
            return Ok(Recorded {
                entry: first,
                created: false,
            });
        }
        let entry = InboxEntry::new(state.ids.next_id(), user_id, notification);
        if let Some(scoped) = scoped {
            state.keys.insert(scoped, entry.notification_id.clone());
        }
        state
            .users
            .entry(user_id.to_owned())
            .or_default()
            .push(Kept {
                at: Utc::now(),
                source_key: notification.source_key.clone(),
                entry: entry.clone(),
            });
        Ok(Recorded {
            entry,
            created: true,
        })
    }

    async fn list(&self, query: &InboxQuery) -> Result<Vec<InboxEntry>, InboxError> {
        check_query(query)?;
        let mut state = self.lock();
        let Some(entries) = self.entries(&mut state, &query.user_id) else {
            return Ok(Vec::new());
        };
        let start = query.since.as_deref().map_or(0, |since| {
            entries.partition_point(|k| k.entry.notification_id.as_str() <= since)
        });
        let end = query.before.as_deref().map_or(entries.len(), |before| {
            entries.partition_point(|k| k.entry.notification_id.as_str() < before)
        });
        if start >= end {
            return Ok(Vec::new());
        }
        let matching = entries[start..end]
            .iter()
            .filter(|k| !query.unread_only || k.entry.read_at.is_none())
            .map(|k| &k.entry);
        let page: Vec<InboxEntry> = if query.before.is_some() {
            let all: Vec<&InboxEntry> = matching.collect();
            all[all.len().saturating_sub(query.limit)..]
                .iter()
                .map(|e| (*e).clone())
                .collect()
        } else {
            matching.take(query.limit).cloned().collect()
        };
        Ok(page)
    }

    async fn unread_count(&self, user_id: &str) -> Result<u64, InboxError> {
        let mut state = self.lock();
        Ok(self.entries(&mut state, user_id).map_or(0, |e| unread(e)))
    }

    async fn mark_read(
        &self,
        user_id: &str,
        selection: &ReadSelection,
        at: DateTime<Utc>,
    ) -> Result<u64, InboxError> {
        check_selection(selection)?;
        let mut state = self.lock();
        let Some(entries) = self.entries(&mut state, user_id) else {
            return Ok(0);
        };
        let selected = |id: &str| match selection {
            ReadSelection::Ids(ids) => ids.iter().any(|wanted| wanted == id),
            ReadSelection::UpTo(up_to) => id <= up_to.as_str(),
        };
        for kept in entries.iter_mut() {
            if kept.entry.read_at.is_none() && selected(&kept.entry.notification_id) {
                kept.entry.read_at = Some(at);
            }
        }
        Ok(unread(entries))
    }

    async fn ping(&self) -> Result<(), InboxError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::inbox as conformance;

    #[tokio::test]
    async fn the_memory_inbox_passes_the_conformance_suite() {
        conformance::run_all(&InMemoryInbox::new(), "memory").await;
    }

    #[tokio::test]
    async fn entries_past_the_retention_are_gone() {
        let inbox = InMemoryInbox::with_retention(Duration::from_millis(50));
        let notification = Notification::new(
            crate::model::NotificationType::custom("review_request"),
            &serde_json::json!({"n": 1}),
        )
        .with_source_key("k");
        inbox.record("u", &notification).await.expect("record");
        assert_eq!(inbox.unread_count("u").await.expect("count"), 1);
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert_eq!(inbox.unread_count("u").await.expect("count"), 0);
        assert!(inbox
            .list(&InboxQuery::user("u"))
            .await
            .expect("list")
            .is_empty());
        let again = inbox.record("u", &notification).await.expect("record");
        assert!(again.created, "an expired source key may be kept again");
    }
}
