//! The inbox keeps one entry per change event and recipient however often the event is
//! delivered: here the same chat message is processed by three consumer runs that each lost
//! their idempotency claims (a restart on an in-memory event store), all delivering through the
//! notification tier's inbox layer.

use std::sync::Arc;
use std::time::Duration;

use chatcore::change::{InMemoryChangeFeed, Op};
use chatcore::dedup::{DedupConfig, Deduplicator, InMemoryEventStore};
use chatcore::forward::{InProcessForwarder, InboxForwarder};
use chatcore::inbox::{InMemoryInbox, InboxQuery, InboxStore};
use chatcore::metrics::Metrics;
use chatcore::model::{NewChatMessage, NotificationType};
use chatcore::pipeline::{ChatHandler, Pipeline, PipelineConfig};
use chatcore::sockets::{session_channel, LocalSocketRegistry, SocketRegistry};
use chatcore::store::{InMemoryMessageStore, MessageStore, CHAT_COLLECTION};
use chatcore::tier::Tier;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn the_same_change_event_delivered_three_times_makes_one_entry_and_one_frame_id() {
    let store = InMemoryMessageStore::new();
    let message = NewChatMessage {
        content: "hello".into(),
        sender_id: "alice".into(),
        receiver_id: Some("bob".into()),
        stream_id: None,
    }
    .validate(1024)
    .expect("valid");
    let stored = store.insert(message, None).await.expect("insert").message;
    // The change event, as the feed carries it, on a feed of its own.
    let feed = Arc::new(InMemoryChangeFeed::default());
    let document = serde_json::to_value(&stored).expect("json");
    feed.append(
        Op::Create,
        CHAT_COLLECTION,
        &stored.stream_id,
        Some(document),
    );

    let metrics = Arc::new(Metrics::new());
    let chat = Arc::new(LocalSocketRegistry::new(Tier::Chat, metrics.clone()));
    let notifications = Arc::new(LocalSocketRegistry::new(
        Tier::Notifications,
        metrics.clone(),
    ));
    let (session, mut frames) = session_channel(16);
    assert!(notifications.register("bob", session));
    let inbox = Arc::new(InMemoryInbox::new());
    let forwarder = Arc::new(InboxForwarder::new(
        Arc::new(InProcessForwarder::new(chat, notifications)),
        inbox.clone(),
        metrics.clone(),
    ));

    // Consumers that start over: each a position of its own (joined now, so the feed keeps the
    // event for all of them) and an empty event store.
    let groups: Vec<String> = (0..3).map(|run| format!("restarted-{run}")).collect();
    let sources: Vec<_> = groups.iter().map(|g| Arc::new(feed.subscribe(g))).collect();
    for (group, source) in groups.iter().zip(sources) {
        let pipeline = Pipeline::new(
            source,
            Arc::new(ChatHandler::default()),
            Deduplicator::new(
                Arc::new(InMemoryEventStore::new()),
                DedupConfig::default(),
                metrics.clone(),
            ),
            forwarder.clone(),
            PipelineConfig::default(),
            metrics.clone(),
        );
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(pipeline.run(shutdown.clone()));
        tokio::time::timeout(WAIT, async {
            while feed.committed(group) != Some(1) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the event is processed");
        shutdown.cancel();
        task.await.expect("pipeline");
    }

    let kept = inbox.list(&InboxQuery::user("bob")).await.expect("list");
    assert_eq!(kept.len(), 1, "{kept:?}");
    let entry = &kept[0];
    assert_eq!(entry.notification_type, NotificationType::ChatNotification);
    assert_eq!(entry.payload["message_id"], stored.message_id.as_str());
    assert_eq!(inbox.unread_count("bob").await.expect("count"), 1);
    assert_eq!(metrics.inbox_written_count(), 1);
    // Each delivery was pushed, always as the same entry: a session sends its id once.
    for _ in 0..3 {
        let frame = frames.outbound.try_recv().expect("a pushed frame");
        assert_eq!(
            frame.dedup_id.as_ref().map(|id| id.as_str()),
            Some(entry.notification_id.as_str())
        );
        let envelope: serde_json::Value = serde_json::from_str(&frame.text).expect("json");
        assert_eq!(envelope["notification_id"], entry.notification_id.as_str());
        assert_eq!(envelope["notification_type"], "chat_notification");
        assert_eq!(envelope["payload"]["content"], "hello");
    }
    assert!(frames.outbound.try_recv().is_err(), "nothing else");
}
