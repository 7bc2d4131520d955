//! Checks every [`ConversationStore`] must pass together with the [`MessageStore`] of the same
//! backend (unread counts and message lookups are the store's), for the tests of each
//! implementation (memory here, MongoDB and SQLite in their crates). Each check panics with a
//! message on failure and uses users named after `prefix`, so several runs can share a database.
//!
//! ```no_run
//! # async fn demo() {
//! let messages = chatcore::store::InMemoryMessageStore::new();
//! let conversations = chatcore::conversation::InMemoryConversations::new();
//! chatcore::testing::conversations::run_all(&messages, &conversations, "my-backend").await;
//! # }
//! ```

use crate::conversation::{
    ConversationError, ConversationStore, MembershipChange, NewGroup, ValidMembershipChange,
};
use crate::model::{ChatMessage, NewChatMessage};
use crate::store::MessageStore;

/// Runs every check of this module.
pub async fn run_all(
    messages: &dyn MessageStore,
    conversations: &dyn ConversationStore,
    prefix: &str,
) {
    groups_and_membership_changes(conversations, prefix).await;
    read_markers_only_move_forward(conversations, prefix).await;
    the_view_keeps_the_latest_message_per_user(messages, conversations, prefix).await;
    unread_counts_and_lookups_of_the_message_store(messages, conversations, prefix).await;
    conversations.ping().await.expect("ping");
}

fn users(prefix: &str, names: &[&str]) -> Vec<String> {
    names.iter().map(|n| format!("{prefix}-{n}")).collect()
}

fn change(by: &str, add: &[&String], remove: &[&String]) -> ValidMembershipChange {
    MembershipChange {
        by: by.to_owned(),
        add: add.iter().map(|u| (*u).clone()).collect(),
        remove: remove.iter().map(|u| (*u).clone()).collect(),
    }
    .validate(256)
    .expect("valid change")
}

async fn new_group(
    conversations: &dyn ConversationStore,
    members: &[String],
) -> crate::conversation::Conversation {
    let group = NewGroup {
        created_by: members[0].clone(),
        members: members.to_vec(),
        title: Some("conformance ✓".to_owned()),
    }
    .validate(256)
    .expect("valid group")
    .into_conversation();
    let created = conversations
        .create_group(group.clone())
        .await
        .expect("create");
    assert_eq!(created, group, "create_group returns the group as given");
    created
}

/// Groups are stored as given, found by id and by member, and changed atomically within limits.
pub async fn groups_and_membership_changes(conversations: &dyn ConversationStore, prefix: &str) {
    let [a, b, c, d] =
        <[String; 4]>::try_from(users(prefix, &["ga", "gb", "gc", "gd"])).expect("4");
    let group = new_group(conversations, &[a.clone(), b.clone(), c.clone()]).await;
    let found = conversations.group(&group.stream_id).await.expect("group");
    assert_eq!(
        found.as_ref(),
        Some(&group),
        "a group reads back exactly as stored"
    );
    assert_eq!(
        conversations
            .group("0123456789abcdef")
            .await
            .expect("group"),
        None,
        "an unknown group is None"
    );
    let of_b = conversations.groups_of(&b).await.expect("groups_of");
    assert_eq!(
        of_b,
        std::slice::from_ref(&group),
        "groups_of lists a member's groups"
    );
    assert!(conversations
        .groups_of(&d)
        .await
        .expect("groups_of")
        .is_empty());

    let changed = conversations
        .change_members(&group.stream_id, &change(&a, &[&d], &[&b]), 256)
        .await
        .expect("change");
    assert_eq!(
        changed.conversation.members,
        [a.clone(), c.clone(), d.clone()]
    );
    assert_eq!(
        changed.removed,
        std::slice::from_ref(&b),
        "the removed member is reported"
    );
    assert_eq!(changed.conversation.title, group.title, "the title stays");
    assert!(
        conversations
            .groups_of(&b)
            .await
            .expect("groups_of")
            .is_empty(),
        "b left"
    );
    assert_eq!(
        conversations.groups_of(&d).await.expect("groups_of").len(),
        1,
        "d joined"
    );
    let stored = conversations.group(&group.stream_id).await.expect("group");
    assert_eq!(
        stored,
        Some(changed.conversation.clone()),
        "the change is stored"
    );

    let outsider = conversations
        .change_members(&group.stream_id, &change(&b, &[&b], &[]), 256)
        .await;
    assert!(
        matches!(outsider, Err(ConversationError::NotAMember(_))),
        "{outsider:?}"
    );
    let too_many = conversations
        .change_members(&group.stream_id, &change(&a, &[&b], &[]), 3)
        .await;
    assert!(
        matches!(too_many, Err(ConversationError::Limit(_))),
        "{too_many:?}"
    );
    let unknown = conversations
        .change_members("0123456789abcdef", &change(&a, &[&b], &[]), 256)
        .await;
    assert!(
        matches!(unknown, Err(ConversationError::NotFound(_))),
        "{unknown:?}"
    );
    let after = conversations.group(&group.stream_id).await.expect("group");
    assert_eq!(
        after,
        Some(changed.conversation),
        "refused changes change nothing"
    );
}

/// A read marker moves to a newer message only, and says whether it moved.
pub async fn read_markers_only_move_forward(conversations: &dyn ConversationStore, prefix: &str) {
    let user = format!("{prefix}-reader");
    let stream = crate::stream_id::stream_id(&user, "someone");
    assert_eq!(
        conversations
            .read_marker(&stream, &user)
            .await
            .expect("marker"),
        None
    );
    let (older, newer) = ("6560000000000000000000a1", "6560000000000000000000b2");
    let first = conversations
        .mark_read(&stream, &user, newer)
        .await
        .expect("mark");
    assert!(first.moved, "a first marker moves");
    assert_eq!(
        (
            first.stream_id.as_str(),
            first.user_id.as_str(),
            first.message_id.as_str()
        ),
        (stream.as_str(), user.as_str(), newer)
    );
    let back = conversations
        .mark_read(&stream, &user, older)
        .await
        .expect("mark");
    assert!(!back.moved, "an older message does not move the marker");
    assert_eq!(
        back.message_id, newer,
        "the marker stays at the newer message"
    );
    let again = conversations
        .mark_read(&stream, &user, newer)
        .await
        .expect("mark");
    assert!(!again.moved, "the same message again is a no-op");
    let stored = conversations
        .read_marker(&stream, &user)
        .await
        .expect("marker")
        .expect("some");
    assert_eq!(stored.message_id, newer);
    assert_eq!(
        stored.read_at, first.read_at,
        "read_at is when the marker last moved"
    );
    let other = conversations
        .read_marker(&stream, &format!("{prefix}-other"))
        .await
        .expect("marker");
    assert_eq!(other, None, "markers are per user");
}

async fn post(messages: &dyn MessageStore, from: &str, to: &str, text: &str) -> ChatMessage {
    let message = NewChatMessage {
        content: text.to_owned(),
        sender_id: from.to_owned(),
        receiver_id: Some(to.to_owned()),
        stream_id: None,
    }
    .validate(1024)
    .expect("valid");
    messages
        .insert(message, None)
        .await
        .expect("insert")
        .message
}

/// The view takes a message newer than the one it holds for a user, never an older one, and
/// lists a user's conversations latest first.
pub async fn the_view_keeps_the_latest_message_per_user(
    messages: &dyn MessageStore,
    conversations: &dyn ConversationStore,
    prefix: &str,
) {
    let [a, b, c] = <[String; 3]>::try_from(users(prefix, &["va", "vb", "vc"])).expect("3");
    let ab1 = post(messages, &a, &b, "ab 1").await;
    let ac1 = post(messages, &a, &c, "ac 1").await;
    let ab2 = post(messages, &b, &a, "ab 2").await;
    let members = |x: &str, y: &str| vec![x.to_owned(), y.to_owned()];
    conversations
        .record_activity(&members(&a, &b), &ab1)
        .await
        .expect("record");
    conversations
        .record_activity(&members(&a, &c), &ac1)
        .await
        .expect("record");
    conversations
        .record_activity(&members(&a, &b), &ab2)
        .await
        .expect("record");
    // Delivered again after a restart: older than what the view holds, so nothing changes.
    conversations
        .record_activity(&members(&a, &b), &ab1)
        .await
        .expect("record");
    let listed = conversations.activity(&a, 10).await.expect("activity");
    let latest: Vec<_> = listed
        .iter()
        .map(|e| e.last_message.content.as_str())
        .collect();
    assert_eq!(
        latest,
        ["ab 2", "ac 1"],
        "latest first, one entry per conversation"
    );
    assert_eq!(listed[0].stream_id, ab2.stream_id);
    assert_eq!(
        listed[0].last_message, ab2,
        "the message reads back exactly"
    );
    let limited = conversations.activity(&a, 1).await.expect("activity");
    assert_eq!(limited.len(), 1, "limit");
    let of_c = conversations.activity(&c, 10).await.expect("activity");
    assert_eq!(of_c.len(), 1);
    let seen = conversations
        .activity_of(&b, &ab1.stream_id)
        .await
        .expect("activity_of");
    assert_eq!(seen.map(|e| e.last_message), Some(ab2));
    let unseen = conversations
        .activity_of(&c, &ab1.stream_id)
        .await
        .expect("activity_of");
    assert_eq!(unseen, None, "c is not in a and b's conversation");
}

/// The message store counts unread messages after a marker (not the reader's own) and finds a
/// message of a stream by id.
pub async fn unread_counts_and_lookups_of_the_message_store(
    messages: &dyn MessageStore,
    conversations: &dyn ConversationStore,
    prefix: &str,
) {
    let [a, b] = <[String; 2]>::try_from(users(prefix, &["ua", "ub"])).expect("2");
    let m1 = post(messages, &a, &b, "1").await;
    let _m2 = post(messages, &b, &a, "2").await;
    let m3 = post(messages, &a, &b, "3").await;
    let m4 = post(messages, &a, &b, "4").await;
    let stream = &m1.stream_id;
    assert_eq!(
        messages
            .count_unread(stream, None, &b)
            .await
            .expect("count"),
        3,
        "a's three"
    );
    assert_eq!(
        messages
            .count_unread(stream, None, &a)
            .await
            .expect("count"),
        1,
        "b's one"
    );
    assert_eq!(
        messages
            .count_unread(stream, Some(&m1.message_id), &b)
            .await
            .expect("count"),
        2
    );
    assert_eq!(
        messages
            .count_unread(stream, Some(&m4.message_id), &b)
            .await
            .expect("count"),
        0
    );
    let found = messages.find(stream, &m3.message_id).await.expect("find");
    assert_eq!(found, Some(m3.clone()), "found exactly");
    let elsewhere = crate::stream_id::stream_id(&a, &format!("{prefix}-nobody"));
    assert_eq!(
        messages
            .find(&elsewhere, &m3.message_id)
            .await
            .expect("find"),
        None,
        "another stream"
    );
    // A group message has no receiver_id and reads back without one.
    let group = new_group(conversations, &[a.clone(), b.clone()]).await;
    let message = NewChatMessage {
        content: "to the group".to_owned(),
        sender_id: a.clone(),
        receiver_id: None,
        stream_id: Some(group.stream_id.clone()),
    }
    .validate_for_group(1024, &group)
    .expect("valid");
    let stored = messages
        .insert(message, None)
        .await
        .expect("insert")
        .message;
    assert_eq!(stored.receiver_id, None);
    let history = messages
        .history(&crate::store::HistoryQuery::stream(&group.stream_id))
        .await
        .expect("history");
    assert_eq!(
        history,
        std::slice::from_ref(&stored),
        "a group message reads back exactly, without receiver_id"
    );
    assert_eq!(
        messages
            .count_unread(&group.stream_id, None, &b)
            .await
            .expect("count"),
        1
    );
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn the_memory_implementations_pass() {
        let messages = crate::store::InMemoryMessageStore::new();
        let conversations = crate::conversation::InMemoryConversations::new();
        super::run_all(&messages, &conversations, "memory").await;
    }
}
