//! The MongoDB backend against a MongoDB wire-protocol server on loopback, started by
//! `scripts/services.sh` (`CHATCORE_TEST_MONGO_URI`; point it at a real MongoDB 6+ replica set to
//! run the same tests there).

mod common;

use std::sync::Arc;
use std::time::Duration;

use chatcore::change::ChangeSource;
use chatcore::dedup::{ClaimToken, DedupConfig, Deduplicator, InMemoryEventStore};
use chatcore::email::{UserDirectory, UserEmail};
use chatcore::forward::InProcessForwarder;
use chatcore::metrics::{Metrics, Outcome};
use chatcore::model::{ChatMessage, NewChatMessage};
use chatcore::pipeline::{ChatHandler, Pipeline, PipelineConfig};
use chatcore::sockets::{session_channel, LocalSocketRegistry, SocketRegistry};
use chatcore::store::{HistoryQuery, MessageStore, StoreError, CHAT_COLLECTION};
use chatcore::tier::Tier;
use chatcore_mongo::{
    connect, MongoChangeStream, MongoConfig, MongoMessageStore, MongoUserDirectory,
};
use futures::TryStreamExt;
use mongodb::bson::doc;
use mongodb::Database;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(20);
const CALL: Duration = Duration::from_secs(3);

fn uri() -> String {
    std::env::var("CHATCORE_TEST_MONGO_URI").expect("CHATCORE_TEST_MONGO_URI: run scripts/test.sh")
}

/// A database of this test's own.
async fn database() -> Database {
    let name = format!("t_{}", ClaimToken::unique().as_str().replace('-', "_"));
    connect(&MongoConfig::new(uri(), name))
        .await
        .expect("client")
}

async fn store(database: &Database) -> MongoMessageStore {
    let store = MongoMessageStore::new(database.clone(), CALL);
    store.create_indexes().await.expect("indexes");
    store
}

fn valid(content: &str, sender: &str, receiver: &str) -> chatcore::model::ValidMessage {
    NewChatMessage {
        content: content.into(),
        sender_id: sender.into(),
        receiver_id: Some(receiver.into()),
        stream_id: None,
    }
    .validate(65_536)
    .expect("valid")
}

fn contents(messages: &[ChatMessage]) -> Vec<&str> {
    messages.iter().map(|m| m.content.as_str()).collect()
}

#[tokio::test]
#[ignore = "needs mongo: run scripts/test.sh"]
async fn inserts_and_history_round_trip_with_since_before_and_limit() {
    let database = database().await;
    let store = store(&database).await;
    let ten_kb = "x".repeat(10 * 1024);
    let bodies = [
        "first",
        "héllo 👋 世界",
        "   ",
        ten_kb.as_str(),
        "m4",
        "m5",
        "m6",
    ];
    let mut stored = Vec::new();
    for body in bodies {
        let inserted = store
            .insert(valid(body, "alice", "bob"), None)
            .await
            .expect("insert");
        assert!(inserted.created);
        assert_eq!(inserted.message.message_id.len(), 24, "an ObjectId");
        stored.push(inserted.message);
    }
    store
        .insert(valid("other stream", "alice", "carol"), None)
        .await
        .expect("insert");
    let stream = stored[0].stream_id.clone();
    let all = store
        .history(&HistoryQuery::stream(&stream).limit(500))
        .await
        .expect("history");
    assert_eq!(
        all, stored,
        "exact round trip, in order, other streams excluded"
    );
    let id = |i: usize| stored[i].message_id.clone();
    let store = &store;
    let page = |q: HistoryQuery| async move { store.history(&q).await.expect("history") };
    assert_eq!(
        contents(&page(HistoryQuery::stream(&stream).limit(2)).await),
        ["first", "héllo 👋 世界"]
    );
    assert_eq!(
        contents(&page(HistoryQuery::stream(&stream).since(id(4))).await),
        ["m5", "m6"]
    );
    assert_eq!(
        contents(&page(HistoryQuery::stream(&stream).before(id(5)).limit(2)).await),
        [ten_kb.as_str(), "m4"]
    );
    assert_eq!(
        contents(&page(HistoryQuery::stream(&stream).since(id(0)).before(id(3))).await),
        ["héllo 👋 世界", "   "]
    );
    assert!(matches!(
        store
            .history(&HistoryQuery::stream(&stream).since("not-an-object-id"))
            .await,
        Err(StoreError::InvalidCursor(_))
    ));
}

#[tokio::test]
#[ignore = "needs mongo: run scripts/test.sh"]
async fn a_repeated_idempotency_key_stores_one_document() {
    let database = database().await;
    let store = Arc::new(store(&database).await);
    let first = store
        .insert(valid("once", "alice", "bob"), Some("retry-1"))
        .await
        .expect("insert");
    let mut repeats = Vec::new();
    for _ in 0..8 {
        let store = Arc::clone(&store);
        repeats.push(tokio::spawn(async move {
            store
                .insert(valid("once", "alice", "bob"), Some("retry-1"))
                .await
        }));
    }
    for repeat in repeats {
        let repeat = repeat.await.expect("join").expect("insert");
        assert!(!repeat.created);
        assert_eq!(repeat.message, first.message);
    }
    let other_sender = store
        .insert(valid("mine", "bob", "alice"), Some("retry-1"))
        .await
        .expect("insert");
    assert!(other_sender.created, "keys are per sender");
    let count = database
        .collection::<mongodb::bson::Document>(CHAT_COLLECTION)
        .count_documents(doc! { "sender_id": "alice" })
        .await
        .expect("count");
    assert_eq!(count, 1);
}

/// Found by the soak (scripts/soak.sh): a first request whose claim was written but whose
/// message never was (its process was killed in between, or the claim's answer timed out under
/// load) left the key claimed for good, and every retry of the client answered 503.
#[tokio::test]
#[ignore = "needs mongo: run scripts/test.sh"]
async fn a_claim_whose_first_request_died_is_taken_over_by_the_retry() {
    let database = database().await;
    let store = store(&database).await;
    let dangling = mongodb::bson::oid::ObjectId::new();
    database
        .collection::<mongodb::bson::Document>("chat_idempotency")
        .insert_one(doc! { "_id": "alice\u{1f}died-after-claim", "message_id": dangling })
        .await
        .expect("dangling claim");
    {
        let key = "died-after-claim";
        let retry = store
            .insert(valid(key, "alice", "bob"), Some(key))
            .await
            .expect("the retry stores the message");
        assert!(retry.created, "{key}");
        let again = store
            .insert(valid(key, "alice", "bob"), Some(key))
            .await
            .expect("a further repeat");
        assert!(!again.created, "{key}");
        assert_eq!(again.message, retry.message, "{key}");
    }
    let count = database
        .collection::<mongodb::bson::Document>(CHAT_COLLECTION)
        .count_documents(doc! { "sender_id": "alice" })
        .await
        .expect("count");
    assert_eq!(count, 1);
}

/// Found by the soak (scripts/soak.sh): after a persistence process was killed, a conversation's
/// next messages were written by the other instance, and ObjectIds made by two processes in one
/// second sort by their random process bytes, so a later message could sort before an earlier
/// one and a client resuming with `since=` skipped it. Here the other process's message has an id
/// an hour ahead (a clock ahead, or simply larger process bytes): the next message still sorts
/// after it.
#[tokio::test]
#[ignore = "needs mongo: run scripts/test.sh"]
async fn a_message_written_after_another_processes_sorts_after_it_even_when_its_id_is_ahead() {
    let database = database().await;
    let store = store(&database).await;
    let first = store
        .insert(valid("first, here", "alice", "bob"), None)
        .await
        .expect("insert")
        .message;
    let mut ahead = mongodb::bson::oid::ObjectId::new().bytes();
    let hour_later = u32::from_be_bytes([ahead[0], ahead[1], ahead[2], ahead[3]]) + 3600;
    ahead[..4].copy_from_slice(&hour_later.to_be_bytes());
    let ahead = mongodb::bson::oid::ObjectId::from_bytes(ahead);
    let first_id = mongodb::bson::oid::ObjectId::parse_str(&first.message_id).expect("oid");
    // What another chatcore persistence process writes after `first`.
    database
        .collection::<mongodb::bson::Document>(CHAT_COLLECTION)
        .insert_one(doc! {
            "_id": ahead,
            "content": "second, elsewhere",
            "created_at": mongodb::bson::DateTime::now(),
            "stream_id": &first.stream_id,
            "sender_id": "bob",
            "receiver_id": "alice",
            "previous": first_id,
        })
        .await
        .expect("the other process's write");
    let third = store
        .insert(valid("third, here again", "alice", "bob"), Some("third"))
        .await
        .expect("insert")
        .message;
    assert!(
        third.message_id > ahead.to_hex(),
        "{} after {ahead}",
        third.message_id
    );
    let history = store
        .history(&HistoryQuery::stream(&first.stream_id))
        .await
        .expect("history");
    assert_eq!(
        contents(&history),
        ["first, here", "second, elsewhere", "third, here again"]
    );
    let resumed = store
        .history(&HistoryQuery::stream(&first.stream_id).since(ahead.to_hex()))
        .await
        .expect("history");
    assert_eq!(
        resumed,
        std::slice::from_ref(&third),
        "a client resuming after the second gets the third"
    );
    let repeat = store
        .insert(valid("third, here again", "alice", "bob"), Some("third"))
        .await
        .expect("repeat");
    assert!(!repeat.created);
    assert_eq!(
        repeat.message, third,
        "the key follows the id the message was stored under"
    );
}

/// Two persistence processes (two clients, two stores) writing one stream at once, with a
/// client polling `since=` its last message all along: it sees every message, and history, the
/// `previous` links and the ids agree on one order.
#[tokio::test]
#[ignore = "needs mongo: run scripts/test.sh"]
async fn two_processes_writing_one_stream_at_once_never_make_a_resuming_client_skip() {
    const WRITERS_PER_STORE: usize = 4;
    const EACH: usize = 40;
    let database = database().await;
    let name = database.name().to_owned();
    let mut stores = Vec::new();
    for _ in 0..2 {
        let own_client = connect(&MongoConfig::new(uri(), &name))
            .await
            .expect("client");
        stores.push(Arc::new(store(&own_client).await));
    }
    let stream = chatcore::stream_id::stream_id("alice", "bob");
    let mut writers = Vec::new();
    for (s, store) in stores.iter().enumerate() {
        for w in 0..WRITERS_PER_STORE {
            let store = Arc::clone(store);
            writers.push(tokio::spawn(async move {
                for n in 0..EACH {
                    let content = format!("store {s} writer {w} message {n}");
                    // As a client does: a 503 is retried with the same key.
                    let mut attempts = 0;
                    while let Err(error) = store
                        .insert(valid(&content, "alice", "bob"), Some(&content))
                        .await
                    {
                        attempts += 1;
                        assert!(attempts < 10, "{content}: {error}");
                    }
                }
            }));
        }
    }
    let total = 2 * WRITERS_PER_STORE * EACH;
    let reader = Arc::clone(&stores[0]);
    let poll_stream = stream.clone();
    let polled = tokio::spawn(async move {
        let mut seen: Vec<ChatMessage> = Vec::new();
        while seen.len() < total {
            let mut query = HistoryQuery::stream(&poll_stream).limit(1000);
            if let Some(last) = seen.last() {
                query = query.since(last.message_id.clone());
            }
            let page = reader.history(&query).await.expect("poll");
            if page.is_empty() {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            seen.extend(page);
        }
        seen
    });
    for writer in writers {
        writer.await.expect("writer");
    }
    let polled = timeout(WAIT, polled)
        .await
        .expect("the poller saw everything (a skipped message never shows up)")
        .expect("poller");
    let history = stores[1]
        .history(&HistoryQuery::stream(&stream).limit(1000))
        .await
        .expect("history");
    assert_eq!(history.len(), total);
    assert_eq!(polled, history, "the resuming client missed nothing");
    let documents: Vec<mongodb::bson::Document> = database
        .collection(CHAT_COLLECTION)
        .find(doc! { "stream_id": &stream })
        .sort(doc! { "_id": 1 })
        .await
        .expect("find")
        .try_collect()
        .await
        .expect("documents");
    let mut previous = mongodb::bson::Bson::String(stream.clone());
    for document in &documents {
        assert_eq!(document.get("previous"), Some(&previous), "{document}");
        previous = document.get("_id").cloned().expect("_id");
    }
}

/// A persistence process whose idea of a stream's newest message is stale (another process
/// wrote since) loses the race for the link and stores its message under a new id: a socket fed
/// by the change stream receives exactly what history holds, never the refused attempt (a
/// server logs no change for an insert it refused with a duplicate key).
#[tokio::test]
#[ignore = "needs mongo: run scripts/test.sh"]
async fn an_insert_refused_for_a_stale_link_never_reaches_a_socket() {
    let database = database().await;
    let here = store(&database).await;
    let other_client = connect(&MongoConfig::new(uri(), database.name()))
        .await
        .expect("client");
    let elsewhere = store(&other_client).await;
    let source = Arc::new(
        MongoChangeStream::open(&database, CHAT_COLLECTION, "stale-link", CALL)
            .await
            .expect("open"),
    );
    let stream = chatcore::stream_id::stream_id("alice", "bob");
    let reader = {
        let stream = stream.clone();
        tokio::spawn(async move { deliver(source, &stream, 3).await })
    };
    for (store, content) in [(&here, "first"), (&elsewhere, "second"), (&here, "third")] {
        store
            .insert(valid(content, "alice", "bob"), None)
            .await
            .expect("insert");
    }
    let delivered = timeout(WAIT, reader).await.expect("in time").expect("join");
    let history = here
        .history(&HistoryQuery::stream(&stream))
        .await
        .expect("history");
    assert_eq!(contents(&history), ["first", "second", "third"]);
    assert_eq!(
        delivered, history,
        "the socket got what history holds, under the same ids"
    );
}

#[tokio::test]
#[ignore = "needs mongo: run scripts/test.sh"]
async fn an_unreachable_server_is_unavailable_within_the_timeout() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let config = MongoConfig {
        timeout: Duration::from_millis(500),
        ..MongoConfig::new(
            format!("mongodb://127.0.0.1:{port}/?directConnection=true"),
            "down",
        )
    };
    let store =
        MongoMessageStore::new(connect(&config).await.expect("lazy client"), config.timeout);
    let started = std::time::Instant::now();
    assert!(matches!(
        store.insert(valid("x", "alice", "bob"), None).await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        store.ping().await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "bounded: {:?}",
        started.elapsed()
    );
}

/// A pipeline on a change stream, delivering to one registered session per stream.
async fn deliver(
    source: Arc<MongoChangeStream>,
    stream_id: &str,
    expected: usize,
) -> Vec<ChatMessage> {
    let metrics = Arc::new(Metrics::new());
    let chat = Arc::new(LocalSocketRegistry::new(Tier::Chat, metrics.clone()));
    let notifications = Arc::new(LocalSocketRegistry::new(
        Tier::Notifications,
        metrics.clone(),
    ));
    let (session, mut receiver) = session_channel(1024);
    assert!(chat.register(stream_id, session));
    let pipeline = Pipeline::new(
        source,
        Arc::new(ChatHandler::default()),
        Deduplicator::new(
            Arc::new(InMemoryEventStore::new()),
            DedupConfig::default(),
            metrics.clone(),
        ),
        Arc::new(InProcessForwarder::new(chat, notifications)),
        PipelineConfig::default(),
        metrics.clone(),
    );
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(pipeline.run(shutdown.clone()));
    let mut received = Vec::new();
    while received.len() < expected {
        let frame = timeout(WAIT, receiver.outbound.recv())
            .await
            .expect("a frame in time")
            .expect("open");
        received.push(serde_json::from_str(&frame.text).expect("chat message"));
    }
    timeout(WAIT, async {
        while metrics.event_count("chat", Outcome::Success) < expected as u64 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("counted");
    shutdown.cancel();
    timeout(WAIT, task).await.expect("stops").expect("join");
    received
}

#[tokio::test]
#[ignore = "needs mongo: run scripts/test.sh"]
async fn the_change_stream_delivers_inserts_and_a_restart_resumes_from_its_checkpoint() {
    let database = database().await;
    let store = store(&database).await;
    let source = Arc::new(
        MongoChangeStream::open(&database, CHAT_COLLECTION, "handler", CALL)
            .await
            .expect("open"),
    );
    let reader = {
        let source = Arc::clone(&source);
        tokio::spawn(async move {
            deliver(source, &chatcore::stream_id::stream_id("alice", "bob"), 3).await
        })
    };
    let mut first = Vec::new();
    for n in 0..3 {
        first.push(
            store
                .insert(valid(&format!("live {n}"), "alice", "bob"), None)
                .await
                .expect("insert")
                .message,
        );
    }
    assert_eq!(
        timeout(WAIT, reader).await.expect("in time").expect("join"),
        first
    );
    drop(source);

    // Written while the change handler is down.
    let mut while_down = Vec::new();
    for n in 0..3 {
        while_down.push(
            store
                .insert(valid(&format!("missed {n}"), "alice", "bob"), None)
                .await
                .expect("insert")
                .message,
        );
    }
    let restarted = Arc::new(
        MongoChangeStream::open(&database, CHAT_COLLECTION, "handler", CALL)
            .await
            .expect("reopen"),
    );
    let resumed = deliver(restarted, &first[0].stream_id, 3).await;
    assert_eq!(
        resumed, while_down,
        "resumed after the last completed event: nothing lost, nothing repeated"
    );
}

#[tokio::test]
#[ignore = "needs mongo: run scripts/test.sh"]
async fn the_user_directory_finds_known_users_only() {
    let database = database().await;
    let directory = MongoUserDirectory::new(&database, CALL);
    directory.create_indexes().await.expect("indexes");
    let bob = UserEmail {
        user_id: "bob".into(),
        email: "bob@example.com".into(),
        name: "Bob".into(),
    };
    directory.upsert(&bob).await.expect("upsert");
    directory
        .upsert(&UserEmail {
            name: "Robert".into(),
            ..bob.clone()
        })
        .await
        .expect("upsert");
    assert_eq!(
        directory
            .lookup("bob")
            .await
            .expect("lookup")
            .map(|u| u.name),
        Some("Robert".to_owned())
    );
    assert_eq!(directory.lookup("nobody").await.expect("lookup"), None);
}

#[tokio::test]
#[ignore = "needs mongo and kafka: run scripts/test.sh"]
async fn the_relay_puts_decodable_debezium_records_on_kafka() {
    let kafka =
        std::env::var("CHATCORE_TEST_KAFKA").expect("CHATCORE_TEST_KAFKA: run scripts/test.sh");
    let database = database().await;
    let store = store(&database).await;
    let topic = format!("relay-{}", ClaimToken::unique().as_str());
    let publisher = chatcore_kafka::KafkaPublisher::new(&kafka, "chat_db").expect("publisher");
    publisher.ensure_topic(&topic, 3).await.expect("topic");
    let feed = Arc::new(
        MongoChangeStream::open(&database, CHAT_COLLECTION, "kafka-relay", CALL)
            .await
            .expect("open"),
    );
    let shutdown = CancellationToken::new();
    let relay = tokio::spawn(chatcore_kafka::relay(
        feed,
        publisher,
        topic.clone(),
        shutdown.clone(),
    ));
    let consumer = chatcore_kafka::KafkaChangeSource::new(chatcore_kafka::KafkaSourceConfig::new(
        &kafka,
        &topic,
        format!("g-{}", ClaimToken::unique().as_str()),
    ))
    .expect("consumer");
    let mut stored = Vec::new();
    for n in 0..4 {
        stored.push(
            store
                .insert(valid(&format!("relayed {n}"), "alice", "bob"), None)
                .await
                .expect("insert")
                .message,
        );
    }
    let handler = ChatHandler::default();
    let mut decoded = Vec::new();
    while decoded.len() < stored.len() {
        let event = timeout(WAIT, consumer.next())
            .await
            .expect("in time")
            .expect("ok")
            .expect("event");
        decoded.push(handler.decode(&event).expect("decodes"));
        consumer.done(&event.position).await.expect("done");
    }
    assert_eq!(decoded, stored);
    shutdown.cancel();
    timeout(WAIT, relay)
        .await
        .expect("relay stops")
        .expect("join");
}

#[tokio::test]
#[ignore = "needs mongo: run scripts/test.sh"]
async fn a_stopped_server_is_unavailable_within_the_timeout_and_the_store_recovers() {
    let Ok(classpath) = std::env::var("CHATCORE_TEST_MONGO_CLASSPATH") else {
        eprintln!("CHATCORE_TEST_MONGO_URI names an external server: the stop/start test needs the emulator");
        return;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let mut server = common::wire_server(&classpath, port, None).await;
    let config = MongoConfig {
        timeout: Duration::from_secs(1),
        ..MongoConfig::new(
            format!("mongodb://127.0.0.1:{port}/?directConnection=true"),
            "restart",
        )
    };
    let store = MongoMessageStore::new(connect(&config).await.expect("client"), config.timeout);
    timeout(WAIT, async {
        while store
            .insert(valid("before", "alice", "bob"), None)
            .await
            .is_err()
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("writes while up");
    server.kill().await.expect("stop");
    let started = std::time::Instant::now();
    assert!(matches!(
        store.insert(valid("during", "alice", "bob"), None).await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "answered within the timeout: {:?}",
        started.elapsed()
    );
    let _server = common::wire_server(&classpath, port, None).await;
    let recovered = timeout(WAIT, async {
        loop {
            if let Ok(inserted) = store.insert(valid("after", "alice", "bob"), None).await {
                return inserted;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the store recovers by itself");
    assert!(recovered.created);
}

#[tokio::test]
#[ignore = "needs mongo: run scripts/test.sh"]
async fn the_mongo_inbox_passes_the_conformance_suite_with_its_indexes() {
    let database = database().await;
    let inbox =
        chatcore_mongo::MongoInbox::new(database.clone(), CALL, chatcore::inbox::DEFAULT_RETENTION);
    inbox.create_indexes().await.expect("indexes");
    chatcore::testing::inbox::run_all(&inbox, "mongo").await;
    // Created again with another retention: the TTL index follows.
    let shorter =
        chatcore_mongo::MongoInbox::new(database.clone(), CALL, Duration::from_secs(3600));
    shorter.create_indexes().await.expect("indexes again");
    let indexes: Vec<mongodb::bson::Document> = database
        .collection::<mongodb::bson::Document>(chatcore::inbox::NOTIFICATIONS_COLLECTION)
        .list_indexes()
        .await
        .expect("indexes")
        .map_ok(|index| mongodb::bson::to_document(&index).expect("document"))
        .try_collect()
        .await
        .expect("list");
    let history = indexes
        .iter()
        .find(|i| i.get_document("key").ok() == Some(&doc! {"user_id": 1, "notification_id": 1}))
        .expect("the {user_id, notification_id} index");
    assert!(history.get_str("name").is_ok());
    let ttl = indexes
        .iter()
        .find(|i| i.get_document("key").ok() == Some(&doc! {"kept_at": 1}))
        .expect("the TTL index");
    let expiry = ttl
        .get("expireAfterSeconds")
        .and_then(mongodb::bson::Bson::as_i64)
        .or_else(|| ttl.get_i32("expireAfterSeconds").ok().map(i64::from));
    assert_eq!(expiry, Some(3600), "{ttl}");
}

async fn conversations(database: &Database) -> chatcore_mongo::MongoConversations {
    let conversations = chatcore_mongo::MongoConversations::new(database.clone(), CALL);
    conversations.create_indexes().await.expect("indexes");
    conversations
}

/// The indexes of `collection`, as documents (`key`, `name`, `unique`...).
async fn indexes_of(database: &Database, collection: &str) -> Vec<mongodb::bson::Document> {
    database
        .collection::<mongodb::bson::Document>(collection)
        .list_indexes()
        .await
        .expect("indexes")
        .map_ok(|index| mongodb::bson::to_document(&index).expect("document"))
        .try_collect()
        .await
        .expect("list")
}

/// The index of `collection` on exactly `key`, and whether it is unique.
async fn index_on(
    database: &Database,
    collection: &str,
    key: mongodb::bson::Document,
) -> (mongodb::bson::Document, bool) {
    let indexes = indexes_of(database, collection).await;
    let index = indexes
        .into_iter()
        .find(|i| i.get_document("key").ok() == Some(&key))
        .unwrap_or_else(|| panic!("no index {key} on {collection}"));
    let unique = index.get_bool("unique").unwrap_or(false);
    (index, unique)
}

fn group(members: &[&str]) -> chatcore::conversation::Conversation {
    chatcore::conversation::NewGroup {
        created_by: members[0].to_owned(),
        members: members.iter().map(|m| (*m).to_owned()).collect(),
        title: None,
    }
    .validate(256)
    .expect("valid group")
    .into_conversation()
}

fn adding(by: &str, user: &str) -> chatcore::conversation::ValidMembershipChange {
    chatcore::conversation::MembershipChange {
        by: by.to_owned(),
        add: vec![user.to_owned()],
        remove: Vec::new(),
    }
    .validate(256)
    .expect("valid change")
}

#[tokio::test]
#[ignore = "needs mongo: run scripts/test.sh"]
async fn the_mongo_conversations_pass_the_conformance_suite_with_their_indexes() {
    use chatcore::conversation::{
        CONVERSATIONS_COLLECTION, CONVERSATION_VIEW_COLLECTION, READ_MARKERS_COLLECTION,
    };
    let database = database().await;
    let messages = store(&database).await;
    let conversations = conversations(&database).await;
    chatcore::testing::conversations::run_all(&messages, &conversations, "mongo").await;
    // Idempotent.
    conversations.create_indexes().await.expect("indexes again");
    let (_, unique) = index_on(&database, CONVERSATIONS_COLLECTION, doc! {"members": 1}).await;
    assert!(!unique, "many groups share a member");
    let (_, unique) = index_on(
        &database,
        READ_MARKERS_COLLECTION,
        doc! {"stream_id": 1, "user_id": 1},
    )
    .await;
    assert!(unique, "one read marker per conversation and user");
    let (_, unique) = index_on(
        &database,
        CONVERSATION_VIEW_COLLECTION,
        doc! {"user_id": 1, "stream_id": 1},
    )
    .await;
    assert!(unique, "one view entry per user and conversation");
    index_on(
        &database,
        CONVERSATION_VIEW_COLLECTION,
        doc! {"user_id": 1, "created_at": -1, "last_message_id": -1},
    )
    .await;
    // The documents are as documented: a group, with its members sorted.
    let stored = database
        .collection::<mongodb::bson::Document>(CONVERSATIONS_COLLECTION)
        .find_one(doc! { "members": "mongo-ua" })
        .await
        .expect("find")
        .expect("the unread check's group");
    assert_eq!(stored.get_str("kind"), Ok("group"), "{stored}");
    assert!(stored.get_datetime("created_at").is_ok(), "{stored}");
    // The message store's lookups refuse what is not a message id.
    assert!(matches!(
        messages
            .find(stored.get_str("_id").expect("id"), "nope")
            .await,
        Err(StoreError::InvalidCursor(_))
    ));
    assert!(matches!(
        messages
            .count_unread("0123456789abcdef", Some("nope"), "x")
            .await,
        Err(StoreError::InvalidCursor(_))
    ));
}

/// Membership changes are atomic without transactions: two changes of one group at once (from
/// two processes) both apply, the one whose write finds the members changed since it read them
/// computing its change again.
#[tokio::test]
#[ignore = "needs mongo: run scripts/test.sh"]
async fn two_concurrent_membership_changes_of_one_group_both_apply() {
    use chatcore::conversation::ConversationStore;
    let database = database().await;
    let here = conversations(&database).await;
    let other_client = connect(&MongoConfig::new(uri(), database.name()))
        .await
        .expect("client");
    let elsewhere = chatcore_mongo::MongoConversations::new(other_client, CALL);
    let created = here
        .create_group(group(&["ann", "bob"]))
        .await
        .expect("create");
    let mut expected = created.members.clone();
    for round in 0..8 {
        let (x, y) = (format!("x{round}"), format!("y{round}"));
        let (add_x, add_y) = (adding("ann", &x), adding("bob", &y));
        let (first, second) = tokio::join!(
            here.change_members(&created.stream_id, &add_x, 256),
            elsewhere.change_members(&created.stream_id, &add_y, 256),
        );
        let (first, second) = (first.expect("first"), second.expect("second"));
        assert!(first.conversation.has_member(&x), "{first:?}");
        assert!(second.conversation.has_member(&y), "{second:?}");
        assert!(first.removed.is_empty() && second.removed.is_empty());
        expected.extend([x, y]);
        expected.sort();
        let stored = here
            .group(&created.stream_id)
            .await
            .expect("group")
            .expect("some");
        assert_eq!(
            stored.members, expected,
            "round {round}: both changes applied"
        );
    }
}

/// First writes of one read marker, or of one view entry, at once (from two processes): the
/// newest message is the one kept, whichever upsert wins the race for the unique index (a loser
/// holding a newer message writes again over the winner's).
#[tokio::test]
#[ignore = "needs mongo: run scripts/test.sh"]
async fn concurrent_first_writes_of_a_marker_and_a_view_entry_keep_the_newest_message() {
    use chatcore::conversation::ConversationStore;
    const AT_ONCE: usize = 4;
    let database = database().await;
    let here = conversations(&database).await;
    let other_client = connect(&MongoConfig::new(uri(), database.name()))
        .await
        .expect("client");
    let elsewhere = conversations(&other_client).await;
    let stores = [&here, &elsewhere];
    let messages = store(&database).await;
    for round in 0..16 {
        let reader = format!("reader{round}");
        let stream = chatcore::stream_id::stream_id(&reader, "writer");
        let mut posted = Vec::new();
        for n in 0..AT_ONCE {
            posted.push(
                messages
                    .insert(valid(&format!("m{n}"), "writer", &reader), None)
                    .await
                    .expect("insert")
                    .message,
            );
        }
        let newest = posted.last().cloned().expect("posted");
        // Oldest first in even rounds, newest first in odd ones, alternating the processes.
        let mut order: Vec<usize> = (0..AT_ONCE).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        let marks = order
            .iter()
            .map(|&n| stores[(n + round) % 2].mark_read(&stream, &reader, &posted[n].message_id));
        let marked = futures::future::join_all(marks).await;
        let moved_to_newest = marked
            .into_iter()
            .map(|marker| marker.expect("mark"))
            .filter(|marker| marker.moved && marker.message_id == newest.message_id)
            .count();
        assert_eq!(
            moved_to_newest, 1,
            "round {round}: the newest moves it once"
        );
        let marker = here
            .read_marker(&stream, &reader)
            .await
            .expect("marker")
            .expect("some");
        assert_eq!(marker.message_id, newest.message_id, "round {round}");

        let members = vec![reader.clone(), "writer".to_owned()];
        let records = order
            .iter()
            .map(|&n| stores[(n + round) % 2].record_activity(&members, &posted[n]));
        for recorded in futures::future::join_all(records).await {
            recorded.expect("record");
        }
        for member in &members {
            let entry = here
                .activity_of(member, &stream)
                .await
                .expect("activity_of")
                .expect("some");
            assert_eq!(entry.last_message, newest, "round {round}, {member}");
        }
    }
}
