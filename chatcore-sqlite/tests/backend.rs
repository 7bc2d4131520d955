//! chatcore-sqlite on a real file in a fresh directory: the store, the change feed and its
//! durable positions across reopening, trimming, idempotency under concurrency, the directory,
//! the data-directory lock and the online backup.

use std::path::{Path, PathBuf};

use chatcore::change::{ChangeSource, Op};
use chatcore::email::{UserDirectory, UserEmail};
use chatcore::model::{ChatMessage, NewChatMessage, ValidMessage};
use chatcore::store::{HistoryQuery, MessageStore, CHAT_COLLECTION};
use chatcore_sqlite::{SqliteBackend, SqliteConfig, SqliteError};
use futures::future::join_all;

/// A directory under the system's temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let unique = chatcore::dedup::ClaimToken::unique();
        let path = std::env::temp_dir().join(format!("chatcore-sqlite-{}", unique.as_str()));
        Self(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn open(dir: &TempDir) -> SqliteBackend {
    SqliteBackend::open(SqliteConfig::new(dir.path()))
        .await
        .expect("open")
}

fn valid(content: &str, sender: &str, receiver: &str) -> ValidMessage {
    NewChatMessage {
        content: content.into(),
        sender_id: sender.into(),
        receiver_id: Some(receiver.into()),
        stream_id: None,
    }
    .validate(1024)
    .expect("valid")
}

async fn fill(store: &impl MessageStore, n: usize) -> Vec<ChatMessage> {
    let mut out = Vec::new();
    for i in 0..n {
        let inserted = store
            .insert(valid(&format!("m{i}"), "alice", "bob"), None)
            .await
            .expect("insert");
        out.push(inserted.message);
    }
    out
}

fn contents(messages: Vec<ChatMessage>) -> Vec<String> {
    messages.into_iter().map(|m| m.content).collect()
}

#[tokio::test]
async fn history_pages_with_since_before_and_limit_and_survives_reopening() {
    let dir = TempDir::new();
    let backend = open(&dir).await;
    let store = backend.store();
    let all = fill(&store, 10).await;
    let stream = all[0].stream_id.clone();
    let page = |q: HistoryQuery| {
        let store = store.clone();
        async move { contents(store.history(&q).await.expect("history")) }
    };
    assert_eq!(
        page(HistoryQuery::stream(&stream).limit(3)).await,
        ["m0", "m1", "m2"]
    );
    assert_eq!(
        page(HistoryQuery::stream(&stream).since(&all[6].message_id)).await,
        ["m7", "m8", "m9"]
    );
    assert_eq!(
        page(
            HistoryQuery::stream(&stream)
                .before(&all[5].message_id)
                .limit(2)
        )
        .await,
        ["m3", "m4"]
    );
    assert_eq!(
        page(
            HistoryQuery::stream(&stream)
                .since(&all[1].message_id)
                .before(&all[4].message_id)
        )
        .await,
        ["m2", "m3"]
    );
    assert!(page(HistoryQuery::stream("0000000000000000"))
        .await
        .is_empty());
    let ids: Vec<&String> = all.iter().map(|m| &m.message_id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids sort in order");
    drop((store, backend));

    let reopened = open(&dir).await;
    let store = reopened.store();
    let history = store
        .history(&HistoryQuery::stream(&stream).limit(100))
        .await
        .expect("history");
    assert_eq!(history, all, "every message, exactly as answered");
    let later = fill(&store, 1).await.remove(0);
    assert!(
        later.message_id > all[9].message_id,
        "ids after a restart sort after the stored ones"
    );
}

#[tokio::test]
async fn concurrent_repeats_of_an_idempotency_key_store_once_per_sender() {
    let dir = TempDir::new();
    let backend = open(&dir).await;
    let store = backend.store();
    let attempts = (0..40).map(|i| {
        let store = store.clone();
        let sender = if i % 2 == 0 { "alice" } else { "carol" };
        async move {
            store
                .insert(valid(&format!("try {i}"), sender, "bob"), Some("key-1"))
                .await
                .expect("insert")
        }
    });
    let results = join_all(attempts).await;
    for sender in ["alice", "carol"] {
        let of_sender: Vec<_> = results
            .iter()
            .filter(|r| r.message.sender_id == sender)
            .collect();
        assert_eq!(of_sender.len(), 20);
        assert_eq!(
            of_sender.iter().filter(|r| r.created).count(),
            1,
            "{sender}: one insert created"
        );
        assert!(
            of_sender.iter().all(|r| r.message == of_sender[0].message),
            "{sender}: every repeat answers the first message"
        );
        let stream = &of_sender[0].message.stream_id;
        let history = store
            .history(&HistoryQuery::stream(stream))
            .await
            .expect("history");
        assert_eq!(history, [of_sender[0].message.clone()]);
    }
    assert_eq!(backend.retained().await.expect("count"), 2, "two events");
}

#[tokio::test]
async fn every_insert_reaches_the_feed_and_a_group_resumes_at_its_first_unfinished_event() {
    let dir = TempDir::new();
    let backend = open(&dir).await;
    let store = backend.store();
    let source = backend.subscribe("g").await.expect("join");
    let stored = fill(&store, 4).await;
    let mut events = Vec::new();
    for _ in 0..4 {
        events.push(source.next().await.expect("ok").expect("event"));
    }
    for (event, message) in events.iter().zip(&stored) {
        assert_eq!(event.op, Op::Create);
        assert_eq!(event.collection, CHAT_COLLECTION);
        assert_eq!(event.key, message.stream_id);
        let decoded: ChatMessage =
            serde_json::from_value(event.document.clone().expect("document")).expect("decodes");
        assert_eq!(&decoded, message);
    }
    // Finished out of order: 1 and 3, then 0. 2 stays unfinished.
    for i in [1, 3, 0] {
        source.done(&events[i].position).await.expect("done");
    }
    source.close().await;
    let first = events[0].position.offset;
    assert_eq!(
        backend.committed("g").await.expect("read"),
        Some(first + 2),
        "the position stops at the first unfinished event"
    );
    drop((source, store, backend));

    let reopened = open(&dir).await;
    let resumed = reopened.subscribe("g").await.expect("join");
    let again = resumed.next().await.expect("ok").expect("event");
    assert_eq!(
        again.position, events[2].position,
        "unfinished: delivered again"
    );
    let next = resumed.next().await.expect("ok").expect("event");
    assert_eq!(
        next.position, events[3].position,
        "redelivered after a crash"
    );
    let late = fill(&reopened.store(), 1).await.remove(0);
    let live = resumed.next().await.expect("ok").expect("event");
    let decoded: ChatMessage =
        serde_json::from_value(live.document.expect("document")).expect("decodes");
    assert_eq!(decoded, late, "then new events, live");
}

#[tokio::test]
async fn events_are_trimmed_once_every_group_is_past_them() {
    let dir = TempDir::new();
    let backend = open(&dir).await;
    let fast = backend.subscribe("fast").await.expect("join");
    let slow = backend.subscribe("slow").await.expect("join");
    fill(&backend.store(), 3).await;
    for _ in 0..3 {
        let event = fast.next().await.expect("ok").expect("event");
        fast.done(&event.position).await.expect("done");
    }
    backend.flush().await.expect("flush");
    assert_eq!(
        backend.retained().await.expect("count"),
        3,
        "slow needs all"
    );
    let event = slow.next().await.expect("ok").expect("event");
    slow.done(&event.position).await.expect("done");
    backend.flush().await.expect("flush");
    // Trimming runs with the next commit.
    fill(&backend.store(), 1).await;
    assert_eq!(
        backend.retained().await.expect("count"),
        3,
        "two left for slow, one new"
    );

    let newcomer = backend.subscribe("newcomer").await.expect("join");
    let oldest = newcomer.next().await.expect("ok").expect("event");
    assert_eq!(
        oldest.position.offset,
        event.position.offset + 1,
        "a new group starts at the oldest retained event"
    );
}

#[tokio::test]
async fn without_consumers_the_feed_is_bounded() {
    let dir = TempDir::new();
    let config = SqliteConfig {
        retain_without_consumers: 2,
        ..SqliteConfig::new(dir.path())
    };
    let backend = SqliteBackend::open(config).await.expect("open");
    fill(&backend.store(), 5).await;
    assert_eq!(backend.retained().await.expect("count"), 2);
}

#[tokio::test]
async fn done_on_an_unknown_position_is_an_error_and_a_takeover_redelivers() {
    let dir = TempDir::new();
    let backend = open(&dir).await;
    let first = backend.subscribe("g").await.expect("join");
    fill(&backend.store(), 2).await;
    let a = first.next().await.expect("ok").expect("a");
    let mut bogus = a.position.clone();
    bogus.offset += 100;
    assert!(first.done(&bogus).await.is_err());
    first.done(&a.position).await.expect("done");
    let _b = first.next().await.expect("ok").expect("b");
    let second = backend.subscribe("g").await.expect("join");
    let again = second.next().await.expect("ok").expect("b again");
    assert_eq!(again.position.offset, a.position.offset + 1);
}

#[tokio::test]
async fn next_waits_for_a_commit() {
    let dir = TempDir::new();
    let backend = open(&dir).await;
    let source = backend.subscribe("g").await.expect("join");
    let waiter = tokio::spawn(async move { source.next().await });
    tokio::task::yield_now().await;
    let stored = fill(&backend.store(), 1).await.remove(0);
    let event = waiter.await.expect("join").expect("ok").expect("event");
    assert_eq!(event.key, stored.stream_id);
}

#[tokio::test]
async fn a_second_open_of_the_same_directory_is_refused() {
    let dir = TempDir::new();
    let backend = open(&dir).await;
    let second = SqliteBackend::open(SqliteConfig::new(dir.path())).await;
    assert!(matches!(second, Err(SqliteError::Locked(_))), "{second:?}");
    drop(backend);
    open(&dir).await;
}

#[tokio::test]
async fn the_directory_finds_upserted_users() {
    let dir = TempDir::new();
    let backend = open(&dir).await;
    let directory = backend.directory();
    assert_eq!(directory.lookup("bob").await.expect("lookup"), None);
    let mut bob = UserEmail {
        user_id: "bob".into(),
        email: "bob@example.com".into(),
        name: "Bob".into(),
    };
    directory.upsert(&bob).await.expect("upsert");
    bob.email = "robert@example.com".into();
    directory.upsert(&bob).await.expect("upsert");
    assert_eq!(directory.lookup("bob").await.expect("lookup"), Some(bob));
}

#[tokio::test]
async fn a_backup_taken_while_serving_holds_every_committed_message() {
    let dir = TempDir::new();
    let backend = open(&dir).await;
    let stored = fill(&backend.store(), 3).await;
    let copy = TempDir::new();
    std::fs::create_dir_all(copy.path()).expect("mkdir");
    backend
        .backup_to(copy.path().join(chatcore_sqlite::DATABASE_FILE))
        .await
        .expect("backup");
    let restored = open(&copy).await;
    let history = restored
        .store()
        .history(&HistoryQuery::stream(&stored[0].stream_id))
        .await
        .expect("history");
    assert_eq!(history, stored);
}

#[tokio::test]
async fn the_inbox_passes_the_conformance_suite_and_survives_reopening() {
    use chatcore::inbox::{InboxQuery, InboxStore};
    use chatcore::model::{Notification, NotificationType};
    use std::time::Duration;

    let dir = TempDir::new();
    let backend = open(&dir).await;
    let inbox = backend
        .inbox(Duration::from_secs(3600))
        .await
        .expect("inbox");
    chatcore::testing::inbox::run_all(&inbox, "sqlite").await;
    let kept = inbox
        .record(
            "reopen",
            &Notification::new(
                NotificationType::custom("review_request"),
                &serde_json::json!({"n": 1}),
            )
            .with_source_key("event-1"),
        )
        .await
        .expect("record");
    drop(inbox);
    drop(backend);

    let backend = open(&dir).await;
    let inbox = backend
        .inbox(Duration::from_secs(3600))
        .await
        .expect("inbox");
    let listed = inbox.list(&InboxQuery::user("reopen")).await.expect("list");
    assert_eq!(listed, vec![kept.entry.clone()], "kept across reopening");
    let again = inbox
        .record(
            "reopen",
            &Notification::new(
                NotificationType::custom("review_request"),
                &serde_json::json!({"n": 1}),
            )
            .with_source_key("event-1"),
        )
        .await
        .expect("record again");
    assert!(
        !again.created,
        "the source key is still known after reopening"
    );
    let next = inbox
        .record(
            "reopen",
            &Notification::new(
                NotificationType::custom("review_request"),
                &serde_json::json!({"n": 2}),
            ),
        )
        .await
        .expect("record next");
    assert!(
        next.entry.notification_id > kept.entry.notification_id,
        "ids keep growing after reopening"
    );
}

#[tokio::test]
async fn inbox_entries_past_the_retention_are_gone() {
    use chatcore::inbox::{InboxQuery, InboxStore};
    use chatcore::model::{Notification, NotificationType};
    use std::time::Duration;

    let dir = TempDir::new();
    let backend = open(&dir).await;
    let inbox = backend
        .inbox(Duration::from_millis(50))
        .await
        .expect("inbox");
    let notification = Notification::new(
        NotificationType::custom("review_request"),
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
    assert!(
        inbox
            .record("u", &notification)
            .await
            .expect("again")
            .created
    );
}

#[tokio::test]
async fn the_conversations_pass_the_conformance_suite_and_survive_reopening() {
    use chatcore::conversation::{ConversationStore, NewGroup};

    let dir = TempDir::new();
    let backend = open(&dir).await;
    let store = backend.store();
    let conversations = backend.conversations().await.expect("conversations");
    chatcore::testing::conversations::run_all(&store, &conversations, "sqlite").await;

    let group = NewGroup {
        created_by: "ann".into(),
        members: vec!["cy".into(), "ann".into(), "bob".into()],
        title: Some("reopen".into()),
    }
    .validate(256)
    .expect("valid")
    .into_conversation();
    let group = conversations
        .create_group(group)
        .await
        .expect("create_group");
    let posted = store
        .insert(valid("kept", "ann", "bob"), None)
        .await
        .expect("insert")
        .message;
    let marker = conversations
        .mark_read(&posted.stream_id, "bob", &posted.message_id)
        .await
        .expect("mark_read");
    let members = ["ann".to_owned(), "bob".to_owned()];
    conversations
        .record_activity(&members, &posted)
        .await
        .expect("record_activity");
    drop((conversations, store, backend));

    let backend = open(&dir).await;
    let conversations = backend.conversations().await.expect("conversations");
    assert_eq!(
        conversations.group(&group.stream_id).await.expect("group"),
        Some(group.clone()),
        "the group is kept across reopening"
    );
    assert_eq!(
        conversations.groups_of("cy").await.expect("groups_of"),
        [group]
    );
    assert_eq!(
        conversations
            .read_marker(&posted.stream_id, "bob")
            .await
            .expect("read_marker"),
        Some(chatcore::conversation::ReadMarker {
            moved: false,
            ..marker
        }),
        "the read marker is kept across reopening"
    );
    let entry = conversations
        .activity_of("ann", &posted.stream_id)
        .await
        .expect("activity_of")
        .expect("a view entry");
    assert_eq!(
        entry.last_message, posted,
        "the view is kept across reopening"
    );
    assert_eq!(
        backend
            .store()
            .count_unread(&posted.stream_id, Some(&posted.message_id), "bob")
            .await
            .expect("count_unread"),
        0
    );
}

/// The provided `count_unread`, paging through `history`, on the same store.
struct Paging<'a>(&'a chatcore_sqlite::SqliteMessageStore);

#[async_trait::async_trait]
impl MessageStore for Paging<'_> {
    async fn insert(
        &self,
        message: ValidMessage,
        idempotency_key: Option<&str>,
    ) -> Result<chatcore::store::Inserted, chatcore::store::StoreError> {
        self.0.insert(message, idempotency_key).await
    }

    async fn history(
        &self,
        query: &HistoryQuery,
    ) -> Result<Vec<ChatMessage>, chatcore::store::StoreError> {
        self.0.history(query).await
    }

    async fn ping(&self) -> Result<(), chatcore::store::StoreError> {
        self.0.ping().await
    }
}

#[tokio::test]
async fn the_native_unread_count_agrees_with_paging_through_history() {
    let dir = TempDir::new();
    let backend = open(&dir).await;
    let store = backend.store();
    let inserts = (0..1200).map(|i| {
        let store = store.clone();
        let (from, to) = if i % 3 == 0 {
            ("bob", "alice")
        } else {
            ("alice", "bob")
        };
        async move {
            store
                .insert(valid(&format!("m{i}"), from, to), None)
                .await
                .expect("insert")
                .message
        }
    });
    let mut all = join_all(inserts).await;
    all.sort_by(|a, b| a.message_id.cmp(&b.message_id));
    // Another stream's messages never count.
    for (from, to) in [("carol", "bob"), ("alice", "carol")] {
        store
            .insert(valid("elsewhere", from, to), None)
            .await
            .expect("insert");
    }
    let stream = all[0].stream_id.clone();
    let paging = Paging(&store);
    let afters = [
        None,
        Some(0),
        Some(499),
        Some(500),
        Some(777),
        Some(1198),
        Some(1199),
    ];
    for after in afters {
        let after_id = after.map(|i: usize| all[i].message_id.as_str());
        let rest = &all[after.map_or(0, |i| i + 1)..];
        for reader in ["alice", "bob", "nobody"] {
            let expected = rest.iter().filter(|m| m.sender_id != reader).count() as u64;
            let native = store
                .count_unread(&stream, after_id, reader)
                .await
                .expect("native count");
            let paged = paging
                .count_unread(&stream, after_id, reader)
                .await
                .expect("paged count");
            assert_eq!(native, expected, "native, after {after:?}, reader {reader}");
            assert_eq!(paged, expected, "paged, after {after:?}, reader {reader}");
        }
    }
    assert_eq!(
        store
            .count_unread("0000000000000000", None, "bob")
            .await
            .expect("count"),
        0,
        "an unknown stream"
    );
    let found = store
        .find(&stream, &all[600].message_id)
        .await
        .expect("find");
    assert_eq!(found.as_ref(), Some(&all[600]));
    let provided = Paging(&store)
        .find(&stream, &all[600].message_id)
        .await
        .expect("find");
    assert_eq!(
        provided, found,
        "find agrees with the provided implementation"
    );
}
