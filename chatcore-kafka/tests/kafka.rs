//! The Kafka change source, relay and dead letters against a real single-node KRaft broker on
//! loopback, started by `scripts/services.sh` (`CHATCORE_TEST_KAFKA`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chatcore::change::{ChangeSource, Op};
use chatcore::debezium::encode_change;
use chatcore::dedup::{ClaimToken, DedupConfig, Deduplicator, InMemoryEventStore};
use chatcore::forward::{
    Delivery, DeliveryReport, ForwardError, Forwarder, InProcessForwarder, StreamCloser,
};
use chatcore::metrics::{DropReason, Metrics, Outcome};
use chatcore::model::{ChatMessage, NewChatMessage};
use chatcore::pipeline::{ChatHandler, Pipeline, PipelineConfig, RetryPolicy};
use chatcore::sockets::{session_channel, LocalSocketRegistry, SessionReceiver, SocketRegistry};
use chatcore::store::{InMemoryMessageStore, MessageIdGenerator, MessageStore};
use chatcore::tier::Tier;
use chatcore_kafka::{
    headers, relay, DeadLetter, KafkaChangeSource, KafkaPublisher, KafkaSourceConfig,
};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::Headers;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(60);

fn bootstrap() -> String {
    std::env::var("CHATCORE_TEST_KAFKA").expect("CHATCORE_TEST_KAFKA: run scripts/test.sh")
}

fn unique(name: &str) -> String {
    format!("{name}-{}", ClaimToken::unique().as_str())
}

async fn topic(partitions: i32) -> String {
    let name = unique("chat-changes");
    KafkaPublisher::new(&bootstrap(), "chat_db")
        .expect("publisher")
        .ensure_topic(&name, partitions)
        .await
        .expect("topic created");
    name
}

fn producer() -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("acks", "all")
        .create()
        .expect("producer")
}

async fn produce(producer: &FutureProducer, topic: &str, key: &str, value: &str) {
    producer
        .send(
            FutureRecord::to(topic).key(key).payload(value),
            Duration::from_secs(20),
        )
        .await
        .expect("produced");
}

fn message(
    ids: &mut MessageIdGenerator,
    sender: &str,
    receiver: &str,
    content: &str,
) -> ChatMessage {
    NewChatMessage {
        content: content.into(),
        sender_id: sender.into(),
        receiver_id: Some(receiver.into()),
        stream_id: None,
    }
    .validate(65_536)
    .expect("valid")
    .into_stored(ids.next_id(), chrono::Utc::now())
}

/// A Debezium record value for a stored chat message.
fn debezium_value(message: &ChatMessage) -> String {
    let document = serde_json::to_value(message).expect("json");
    encode_change(Op::Create, "chat_db", "chat", Some(&document), 0).to_string()
}

fn source(topic: &str, group: &str) -> Arc<KafkaChangeSource> {
    Arc::new(
        KafkaChangeSource::new(KafkaSourceConfig::new(bootstrap(), topic, group)).expect("source"),
    )
}

/// A pipeline over a Kafka source delivering to local registries.
struct Harness {
    metrics: Arc<Metrics>,
    chat: Arc<LocalSocketRegistry>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Harness {
    fn start(
        source: Arc<KafkaChangeSource>,
        tiers: Option<Arc<AlwaysFails>>,
        retry: RetryPolicy,
    ) -> Self {
        let metrics = Arc::new(Metrics::new());
        let chat = Arc::new(LocalSocketRegistry::new(Tier::Chat, metrics.clone()));
        let notifications = Arc::new(LocalSocketRegistry::new(
            Tier::Notifications,
            metrics.clone(),
        ));
        let local = Arc::new(InProcessForwarder::new(chat.clone(), notifications));
        let (forwarder, closer): (Arc<dyn Forwarder>, Arc<dyn StreamCloser>) = match tiers {
            Some(tiers) => (tiers.clone(), tiers),
            None => (local.clone(), local),
        };
        let dedup = Deduplicator::new(
            Arc::new(InMemoryEventStore::new()),
            DedupConfig::default(),
            metrics.clone(),
        );
        let pipeline = Pipeline::new(
            source,
            Arc::new(ChatHandler::default()),
            dedup,
            forwarder,
            PipelineConfig {
                retry,
                ..PipelineConfig::default()
            },
            metrics.clone(),
        )
        .with_stream_closer(closer);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(pipeline.run(shutdown.clone()));
        Self {
            metrics,
            chat,
            shutdown,
            task,
        }
    }

    fn subscribe(&self, stream_id: &str) -> SessionReceiver {
        let (handle, receiver) = session_channel(4096);
        assert!(self.chat.register(stream_id, handle));
        receiver
    }

    async fn await_events(&self, outcome: Outcome, n: u64) {
        timeout(WAIT, async {
            while self.metrics.event_count("chat", outcome) < n {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{n} events with outcome {outcome:?} in time"));
    }

    async fn stop(self) {
        self.shutdown.cancel();
        timeout(WAIT, self.task)
            .await
            .expect("pipeline stops")
            .expect("join");
    }
}

fn drain(receiver: &mut SessionReceiver) -> Vec<ChatMessage> {
    let mut out = Vec::new();
    while let Ok(frame) = receiver.outbound.try_recv() {
        out.push(serde_json::from_str(&frame.text).expect("a chat message frame"));
    }
    out
}

/// The committed offset of `partition` for `group`.
fn committed(topic: &str, group: &str, partition: i32) -> Option<i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", group)
        .create()
        .expect("consumer");
    let mut wanted = TopicPartitionList::new();
    wanted.add_partition(topic, partition);
    let offsets = consumer
        .committed_offsets(wanted, Duration::from_secs(10))
        .expect("committed offsets");
    offsets.elements().first().and_then(|e| match e.offset() {
        Offset::Offset(n) => Some(n),
        _ => None,
    })
}

#[tokio::test]
#[ignore = "needs kafka: run scripts/test.sh"]
async fn debezium_events_on_three_partitions_reach_the_right_sockets_once_and_in_stream_order() {
    let topic = topic(3).await;
    let producer = producer();
    let mut ids = MessageIdGenerator::default();
    let streams: Vec<(String, String)> =
        (0..6).map(|i| (format!("u{i}"), format!("v{i}"))).collect();
    let mut sent: Vec<Vec<ChatMessage>> = vec![Vec::new(); streams.len()];
    for n in 0..20 {
        for (i, (a, b)) in streams.iter().enumerate() {
            let message = message(&mut ids, a, b, &format!("{i}-{n}"));
            produce(
                &producer,
                &topic,
                &message.stream_id,
                &debezium_value(&message),
            )
            .await;
            sent[i].push(message);
        }
    }
    let harness = Harness::start(
        source(&topic, &unique("group")),
        None,
        RetryPolicy::default(),
    );
    let mut receivers: Vec<SessionReceiver> = sent
        .iter()
        .map(|s| harness.subscribe(&s[0].stream_id))
        .collect();
    harness.await_events(Outcome::Success, 120).await;
    for (i, receiver) in receivers.iter_mut().enumerate() {
        assert_eq!(
            drain(receiver),
            sent[i],
            "stream {i}: every message once, in order"
        );
    }
    harness.stop().await;
}

#[tokio::test]
#[ignore = "needs kafka: run scripts/test.sh"]
async fn a_duplicate_record_is_suppressed_by_the_event_store() {
    let topic = topic(3).await;
    let producer = producer();
    let message = message(&mut MessageIdGenerator::default(), "alice", "bob", "once");
    let harness = Harness::start(
        source(&topic, &unique("group")),
        None,
        RetryPolicy::default(),
    );
    let mut receiver = harness.subscribe(&message.stream_id);
    for _ in 0..2 {
        produce(
            &producer,
            &topic,
            &message.stream_id,
            &debezium_value(&message),
        )
        .await;
    }
    timeout(WAIT, async {
        while harness.metrics.dropped_count("chat", DropReason::Duplicate) < 1 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the duplicate is seen");
    assert_eq!(harness.metrics.event_count("chat", Outcome::Success), 1);
    assert_eq!(drain(&mut receiver), vec![message]);
    harness.stop().await;
}

#[tokio::test]
#[ignore = "needs kafka: run scripts/test.sh"]
async fn a_consumer_dropped_without_commit_is_replaced_and_nothing_is_lost() {
    let topic = topic(3).await;
    let group = unique("group");
    let producer = producer();
    let mut ids = MessageIdGenerator::default();
    let sent: Vec<ChatMessage> = (0..10)
        .map(|n| message(&mut ids, "alice", "bob", &format!("m{n}")))
        .collect();
    for message in &sent {
        produce(
            &producer,
            &topic,
            &message.stream_id,
            &debezium_value(message),
        )
        .await;
    }
    {
        let first = source(&topic, &group);
        for _ in 0..5 {
            let event = timeout(WAIT, first.next())
                .await
                .expect("in time")
                .expect("ok");
            assert!(event.is_some());
        }
        // Crashes here: nothing was reported done, so nothing was committed.
    }
    let harness = Harness::start(source(&topic, &group), None, RetryPolicy::default());
    let mut receiver = harness.subscribe(&sent[0].stream_id);
    harness.await_events(Outcome::Success, 10).await;
    assert_eq!(drain(&mut receiver), sent, "all ten, in order");
    harness.stop().await;
}

#[tokio::test]
#[ignore = "needs kafka: run scripts/test.sh"]
async fn a_poison_record_is_dropped_and_its_partition_moves_on() {
    let topic = topic(1).await;
    let group = unique("group");
    let producer = producer();
    let mut ids = MessageIdGenerator::default();
    let before = message(&mut ids, "alice", "bob", "before");
    let after = message(&mut ids, "alice", "bob", "after");
    produce(
        &producer,
        &topic,
        &before.stream_id,
        &debezium_value(&before),
    )
    .await;
    produce(
        &producer,
        &topic,
        &before.stream_id,
        "{this is not a change event",
    )
    .await;
    produce(
        &producer,
        &topic,
        &before.stream_id,
        &debezium_value(&after),
    )
    .await;
    let harness = Harness::start(source(&topic, &group), None, RetryPolicy::default());
    let mut receiver = harness.subscribe(&before.stream_id);
    harness.await_events(Outcome::Success, 2).await;
    assert_eq!(
        harness
            .metrics
            .dropped_count("chat", DropReason::InvalidFormat),
        1
    );
    assert_eq!(drain(&mut receiver), vec![before, after]);
    harness.stop().await;
    assert_eq!(
        committed(&topic, &group, 0),
        Some(3),
        "committed past the poison record"
    );
}

/// Fails every chat delivery and records close-stream calls.
#[derive(Default)]
struct AlwaysFails {
    closed: Mutex<Vec<String>>,
}

#[async_trait]
impl Forwarder for AlwaysFails {
    async fn forward(&self, delivery: &Delivery) -> Result<DeliveryReport, ForwardError> {
        match delivery {
            Delivery::Chat(_) => Err(ForwardError::Transport("chat tier down".into())),
            _ => Ok(DeliveryReport::default()),
        }
    }
}

#[async_trait]
impl StreamCloser for AlwaysFails {
    async fn close_stream(&self, stream_id: &str, _: &str) -> Result<usize, ForwardError> {
        self.closed.lock().expect("lock").push(stream_id.to_owned());
        Ok(0)
    }

    async fn close_member(&self, _: &str, _: &str) -> Result<usize, ForwardError> {
        Err(ForwardError::Transport("chat tier down".into()))
    }
}

#[tokio::test]
#[ignore = "needs kafka: run scripts/test.sh"]
async fn exhausted_retries_run_the_failure_policy_and_then_commit() {
    let topic = topic(1).await;
    let group = unique("group");
    let message = message(&mut MessageIdGenerator::default(), "alice", "bob", "doomed");
    produce(
        &producer(),
        &topic,
        &message.stream_id,
        &debezium_value(&message),
    )
    .await;
    let forwarder = Arc::new(AlwaysFails::default());
    let retry = RetryPolicy {
        max_retries: 2,
        initial_interval: Duration::from_millis(10),
        ..RetryPolicy::default()
    };
    let harness = Harness::start(source(&topic, &group), Some(forwarder.clone()), retry);
    harness.await_events(Outcome::Failed, 1).await;
    assert_eq!(
        forwarder.closed.lock().expect("lock").as_slice(),
        std::slice::from_ref(&message.stream_id)
    );
    harness.stop().await;
    assert_eq!(
        committed(&topic, &group, 0),
        Some(1),
        "committed once the policy ran"
    );
}

#[tokio::test]
#[ignore = "needs kafka: run scripts/test.sh"]
async fn the_relays_records_decode_back_to_the_stored_messages() {
    let topic = topic(3).await;
    let store = InMemoryMessageStore::new();
    let relay_source = Arc::new(store.change_source("relay"));
    let shutdown = CancellationToken::new();
    let publisher = KafkaPublisher::new(&bootstrap(), "chat_db").expect("publisher");
    let relay_task = tokio::spawn(relay(
        relay_source,
        publisher,
        topic.clone(),
        shutdown.clone(),
    ));
    let mut stored = Vec::new();
    for n in 0..5 {
        let valid = NewChatMessage {
            content: format!("relayed {n} ✓"),
            sender_id: "alice".into(),
            receiver_id: Some("bob".into()),
            stream_id: None,
        }
        .validate(65_536)
        .expect("valid");
        stored.push(store.insert(valid, None).await.expect("insert").message);
    }
    let consumer = source(&topic, &unique("group"));
    let handler = ChatHandler::default();
    let mut decoded = Vec::new();
    while decoded.len() < stored.len() {
        let event = timeout(WAIT, consumer.next())
            .await
            .expect("in time")
            .expect("ok")
            .expect("event");
        assert_eq!(event.key, stored[0].stream_id, "keyed by stream_id");
        decoded.push(handler.decode(&event).expect("decodes"));
        consumer.done(&event.position).await.expect("done");
    }
    assert_eq!(decoded, stored);
    timeout(WAIT, async {
        while store.feed().committed("relay") != Some(5) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the relay acknowledged what Kafka has");
    shutdown.cancel();
    relay_task.await.expect("relay stops");
}

#[tokio::test]
#[ignore = "needs kafka: run scripts/test.sh"]
async fn dead_letters_carry_their_origin_error_and_attempts_as_headers() {
    let source_topic = topic(1).await;
    let dead_letters = topic(1).await;
    let message = message(
        &mut MessageIdGenerator::default(),
        "alice",
        "bob",
        "undeliverable",
    );
    produce(
        &producer(),
        &source_topic,
        &message.stream_id,
        &debezium_value(&message),
    )
    .await;
    let original = source(&source_topic, &unique("group"));
    let event = timeout(WAIT, original.next())
        .await
        .expect("in time")
        .expect("ok")
        .expect("event");
    let publisher = KafkaPublisher::new(&bootstrap(), "chat_db").expect("publisher");
    publisher
        .dead_letter(
            &dead_letters,
            &DeadLetter {
                event: &event,
                source_topic: &source_topic,
                error: "smtp: connection refused",
                attempts: 11,
            },
        )
        .await
        .expect("published");

    let reader: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", unique("dlq-reader"))
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    reader.subscribe(&[&dead_letters]).expect("subscribe");
    let record = timeout(WAIT, reader.recv())
        .await
        .expect("in time")
        .expect("record");
    let found: std::collections::HashMap<String, String> = record
        .headers()
        .expect("headers")
        .iter()
        .map(|h| {
            (
                h.key.to_owned(),
                String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
            )
        })
        .collect();
    assert_eq!(found[headers::ORIGINAL_TOPIC], source_topic);
    assert_eq!(found[headers::ORIGINAL_PARTITION], "0");
    assert_eq!(found[headers::ORIGINAL_OFFSET], "0");
    assert_eq!(found[headers::ERROR], "smtp: connection refused");
    assert_eq!(found[headers::ATTEMPTS], "11");
    let value = chatcore::debezium::decode_value(record.payload()).expect("decodes");
    let chatcore::debezium::RecordValue::Change {
        document: Some(document),
        ..
    } = value
    else {
        panic!("a change with its document");
    };
    assert_eq!(
        serde_json::from_value::<ChatMessage>(document).expect("message"),
        message
    );
}
