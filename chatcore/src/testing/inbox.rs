//! Checks every [`InboxStore`] must pass, for the tests of each implementation (memory here,
//! MongoDB and SQLite in their crates). Each check panics with a message on failure and uses
//! users named after `prefix`, so several runs can share one database.
//!
//! ```no_run
//! # async fn demo() {
//! let inbox = chatcore::inbox::InMemoryInbox::new();
//! chatcore::testing::inbox::run_all(&inbox, "my-backend").await;
//! # }
//! ```

use chrono::{DateTime, SubsecRound, Utc};
use serde_json::json;

use crate::inbox::{is_notification_id, InboxError, InboxQuery, InboxStore, ReadSelection};
use crate::model::{Notification, NotificationType};

/// Runs every check of this module.
pub async fn run_all(inbox: &dyn InboxStore, prefix: &str) {
    writes_are_idempotent_per_source_key_and_recipient(inbox, prefix).await;
    pages_like_chat_history(inbox, prefix).await;
    read_state_and_unread_counts(inbox, prefix).await;
    malformed_ids_are_refused_and_change_nothing(inbox, prefix).await;
    inbox.ping().await.expect("ping");
}

/// A millisecond-aligned notification of a custom type carrying `n`.
fn numbered(n: usize, key: Option<&str>) -> Notification {
    let mut notification = Notification::new(
        NotificationType::custom("conformance"),
        &json!({"n": n, "text": "é ✓"}),
    );
    notification.timestamp = Utc::now().trunc_subsecs(3);
    notification.source_key = key.map(str::to_owned);
    notification
}

async fn fill(inbox: &dyn InboxStore, user: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let key = format!("{user}-event-{i}");
        let recorded = inbox
            .record(user, &numbered(i, Some(&key)))
            .await
            .expect("record");
        ids.push(recorded.entry.notification_id);
    }
    ids
}

fn numbers(page: &[crate::inbox::InboxEntry]) -> Vec<u64> {
    page.iter()
        .map(|e| e.payload["n"].as_u64().expect("n"))
        .collect()
}

/// One entry per (source key, recipient), whatever the repeats; none without a key.
pub async fn writes_are_idempotent_per_source_key_and_recipient(
    inbox: &dyn InboxStore,
    prefix: &str,
) {
    let (alice, bob) = (format!("{prefix}-idem-a"), format!("{prefix}-idem-b"));
    let first = numbered(1, Some("event-1"));
    let kept = inbox.record(&alice, &first).await.expect("record");
    assert!(kept.created, "the first write creates");
    assert!(
        is_notification_id(&kept.entry.notification_id),
        "{}",
        kept.entry.notification_id
    );
    assert_eq!(kept.entry.user_id, alice);
    assert_eq!(kept.entry.read_at, None);
    assert_eq!(kept.entry.timestamp, first.timestamp);
    assert_eq!(kept.entry.payload, first.payload);
    assert_eq!(kept.entry.notification_type, first.notification_type);
    for _ in 0..2 {
        // A redelivery may carry a fresh timestamp: the first entry stands.
        let again = inbox
            .record(&alice, &numbered(1, Some("event-1")))
            .await
            .expect("record");
        assert!(!again.created, "a repeated source key creates nothing");
        assert_eq!(again.entry, kept.entry);
    }
    let other = inbox.record(&bob, &first).await.expect("record");
    assert!(
        other.created,
        "another recipient of the same event has its own entry"
    );
    assert_ne!(other.entry.notification_id, kept.entry.notification_id);
    for _ in 0..2 {
        assert!(
            inbox
                .record(&alice, &numbered(2, None))
                .await
                .expect("record")
                .created
        );
    }
    let all = inbox.list(&InboxQuery::user(&alice)).await.expect("list");
    assert_eq!(numbers(&all), [1, 2, 2]);
    assert_eq!(inbox.unread_count(&alice).await.expect("count"), 3);
    assert_eq!(inbox.unread_count(&bob).await.expect("count"), 1);
}

/// `since`/`before`/`limit` select like `GET /chat/messages`, ascending, per user.
pub async fn pages_like_chat_history(inbox: &dyn InboxStore, prefix: &str) {
    let user = format!("{prefix}-pages");
    let ids = fill(inbox, &user, 10).await;
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(sorted, ids, "ids sort in the order entries were kept");
    let page = |query: InboxQuery| async move { numbers(&inbox.list(&query).await.expect("list")) };
    assert_eq!(page(InboxQuery::user(&user).limit(3)).await, [0, 1, 2]);
    assert_eq!(
        page(InboxQuery::user(&user).since(&ids[6])).await,
        [7, 8, 9]
    );
    assert_eq!(
        page(InboxQuery::user(&user).before(&ids[5]).limit(2)).await,
        [3, 4]
    );
    assert_eq!(
        page(InboxQuery::user(&user).since(&ids[1]).before(&ids[4])).await,
        [2, 3]
    );
    assert_eq!(
        page(InboxQuery::user(&user).since(&ids[9])).await,
        [] as [u64; 0]
    );
    assert_eq!(
        page(InboxQuery::user(format!("{prefix}-nobody"))).await,
        [] as [u64; 0]
    );
    let all = inbox.list(&InboxQuery::user(&user)).await.expect("list");
    assert!(all.iter().all(|e| e.user_id == user));
    assert_eq!(
        all.iter()
            .map(|e| e.notification_id.clone())
            .collect::<Vec<_>>(),
        ids
    );
}

/// Marking read by ids or up to an id, idempotently; unknown ids ignored; `unread` filter.
pub async fn read_state_and_unread_counts(inbox: &dyn InboxStore, prefix: &str) {
    let user = format!("{prefix}-read");
    let ids = fill(inbox, &user, 6).await;
    assert_eq!(inbox.unread_count(&user).await.expect("count"), 6);
    let at: DateTime<Utc> = Utc::now().trunc_subsecs(3);
    let unknown = "000000000000000000000000".to_owned();
    let selection = ReadSelection::Ids(vec![ids[1].clone(), ids[3].clone(), unknown]);
    assert_eq!(
        inbox.mark_read(&user, &selection, at).await.expect("mark"),
        4
    );
    let later = at + chrono::Duration::seconds(5);
    assert_eq!(
        inbox
            .mark_read(&user, &selection, later)
            .await
            .expect("mark"),
        4,
        "marking again changes nothing"
    );
    let all = inbox.list(&InboxQuery::user(&user)).await.expect("list");
    let read: Vec<_> = all.iter().map(|e| e.read_at).collect();
    assert_eq!(read, [None, Some(at), None, Some(at), None, None]);
    let unread = inbox
        .list(&InboxQuery::user(&user).unread())
        .await
        .expect("list");
    assert_eq!(numbers(&unread), [0, 2, 4, 5]);
    let unread_page = inbox
        .list(&InboxQuery::user(&user).unread().since(&ids[0]).limit(2))
        .await
        .expect("list");
    assert_eq!(numbers(&unread_page), [2, 4]);
    let up_to = ReadSelection::UpTo(ids[2].clone());
    assert_eq!(
        inbox.mark_read(&user, &up_to, later).await.expect("mark"),
        2
    );
    let all = inbox.list(&InboxQuery::user(&user)).await.expect("list");
    assert_eq!(
        all[1].read_at,
        Some(at),
        "a read entry keeps its first time"
    );
    assert_eq!(all[0].read_at, Some(later));
    assert_eq!(all[4].read_at, None);
    let other = format!("{prefix}-read-other");
    fill(inbox, &other, 1).await;
    let theirs = ReadSelection::UpTo("ffffffffffffffffffffffff".to_owned());
    assert_eq!(
        inbox.mark_read(&user, &theirs, later).await.expect("mark"),
        0
    );
    assert_eq!(
        inbox.unread_count(&other).await.expect("count"),
        1,
        "marking one user's inbox leaves another's alone"
    );
}

/// Ids that are not notification ids are an [`InboxError::InvalidId`], and nothing changes.
pub async fn malformed_ids_are_refused_and_change_nothing(inbox: &dyn InboxStore, prefix: &str) {
    let user = format!("{prefix}-malformed");
    fill(inbox, &user, 2).await;
    for bad in [
        "",
        "xyz",
        "65F1C0A2B3C4D5E6F7A8B9C0",
        "65f1c0a2b3c4d5e6f7a8b9c0ff",
    ] {
        let listed = inbox.list(&InboxQuery::user(&user).since(bad)).await;
        assert!(
            matches!(listed, Err(InboxError::InvalidId(_))),
            "since {bad:?}: {listed:?}"
        );
        let listed = inbox.list(&InboxQuery::user(&user).before(bad)).await;
        assert!(
            matches!(listed, Err(InboxError::InvalidId(_))),
            "before {bad:?}: {listed:?}"
        );
        let marked = inbox
            .mark_read(&user, &ReadSelection::UpTo(bad.to_owned()), Utc::now())
            .await;
        assert!(
            matches!(marked, Err(InboxError::InvalidId(_))),
            "up_to {bad:?}: {marked:?}"
        );
    }
    let all = inbox.list(&InboxQuery::user(&user)).await.expect("list");
    let mixed = ReadSelection::Ids(vec![all[0].notification_id.clone(), "bad".to_owned()]);
    let marked = inbox.mark_read(&user, &mixed, Utc::now()).await;
    assert!(
        matches!(marked, Err(InboxError::InvalidId(_))),
        "{marked:?}"
    );
    assert_eq!(
        inbox.unread_count(&user).await.expect("count"),
        2,
        "a refused request marks nothing"
    );
}
