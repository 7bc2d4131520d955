//! # chatcore-kafka
//!
//! The Kafka backend of chatcore:
//!
//! - [`KafkaChangeSource`]: a [`ChangeSource`] over a consumer group reading Debezium MongoDB
//!   change events (decoded by [`chatcore::debezium`]). Offsets are *stored* only when the
//!   pipeline reports an event done and only up to the first unfinished event of each partition
//!   ([`OffsetTracker`]); librdkafka commits stored offsets asynchronously every second, and
//!   synchronously when partitions are revoked and when the source closes. An undecodable record
//!   becomes a malformed event (dropped as `invalid_format`, then committed) and is logged at WARN
//!   with its topic, partition, offset and the reason, rate-limited by [`drop_log`]; a tombstone
//!   a delete. Keys may be Debezium's `{"id": ...}` or, with the shipped `deploy/debezium`
//!   configuration, the `stream_id` as a JSON string (bare or in a schema wrapper).
//! - [`KafkaPublisher`]: the relay turning any change source into Debezium-shaped records keyed by
//!   `stream_id`, and [`KafkaPublisher::dead_letter`] for consumers whose failure policy is a
//!   dead-letter topic.

#![warn(missing_docs)]
#![deny(unreachable_pub)]

pub mod drop_log;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use chatcore::change::{ChangeError, ChangeEvent, ChangeSource, OffsetTracker, Op, SourcePosition};
use chatcore::debezium::{decode_key, decode_value, encode_change, RecordValue};
use futures::stream::{FuturesOrdered, StreamExt};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

/// A Kafka client could not be created or used.
#[derive(Debug, thiserror::Error)]
pub enum KafkaBackendError {
    /// librdkafka refused the configuration.
    #[error("kafka configuration: {0}")]
    Config(String),
    /// Producing failed or timed out.
    #[error("kafka produce to {topic}: {reason}")]
    Produce {
        /// The topic.
        topic: String,
        /// The cause.
        reason: String,
    },
}

/// Settings of a [`KafkaChangeSource`] (the `CHAT_PERSISTENCE_CHANGE_KAFKA_*` variables of the reference server).
#[derive(Debug, Clone)]
pub struct KafkaSourceConfig {
    /// `..._BOOTSTRAP_SERVERS`.
    pub bootstrap_servers: String,
    /// `..._CONSUMER_INFO_TOPIC_NAME`.
    pub topic: String,
    /// `..._CONSUMER_INFO_CONSUMER_NAME`: the consumer group.
    pub group_id: String,
    /// `IGNORE_OLD_MESSAGE`: a new group starts at the end of the topic instead of the beginning.
    pub ignore_old_messages: bool,
    /// The collection events belong to when a record does not say (Debezium names one topic per
    /// collection).
    pub collection: String,
    /// Extra librdkafka settings, applied last.
    pub overrides: Vec<(String, String)>,
}

impl KafkaSourceConfig {
    /// A source on `topic` for group `group_id` reading the `chat` collection.
    pub fn new(
        bootstrap_servers: impl Into<String>,
        topic: impl Into<String>,
        group_id: impl Into<String>,
    ) -> Self {
        Self {
            bootstrap_servers: bootstrap_servers.into(),
            topic: topic.into(),
            group_id: group_id.into(),
            ignore_old_messages: false,
            collection: chatcore::store::CHAT_COLLECTION.to_owned(),
            overrides: Vec::new(),
        }
    }
}

/// Commits stored offsets before partitions are taken away and forgets their in-flight work.
struct GroupContext {
    tracker: Arc<Mutex<OffsetTracker>>,
}

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(partitions) = rebalance {
            if let Err(error) = consumer.commit_consumer_state(CommitMode::Sync) {
                tracing::debug!(%error, "commit on revoke (nothing stored, or already committed)");
            }
            let mut tracker = lock(&self.tracker);
            for element in partitions.elements() {
                tracker.forget(element.partition());
            }
            tracing::info!(partitions = partitions.count(), "partitions revoked");
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(partitions) = rebalance {
            tracing::info!(partitions = partitions.count(), "partitions assigned");
        }
    }
}

fn lock(tracker: &Mutex<OffsetTracker>) -> MutexGuard<'_, OffsetTracker> {
    tracker.lock().unwrap_or_else(|e| e.into_inner())
}

/// A Kafka topic as the change feed of a store written to it by CDC (Debezium, or the relay):
/// each consumer group opened is a [`KafkaChangeSource`] with `config`'s settings and that group.
#[derive(Debug, Clone)]
pub struct KafkaChangeFeed {
    config: KafkaSourceConfig,
}

impl KafkaChangeFeed {
    /// Groups opened on `config`'s topic; its `group_id` is replaced by each group's name.
    pub fn new(config: KafkaSourceConfig) -> Self {
        Self { config }
    }
}

#[async_trait]
impl chatcore::change::ChangeFeed for KafkaChangeFeed {
    async fn subscribe(&self, group: &str) -> Result<Arc<dyn ChangeSource>, ChangeError> {
        let config = KafkaSourceConfig {
            group_id: group.to_owned(),
            ..self.config.clone()
        };
        let source = KafkaChangeSource::new(config)
            .map_err(|e| ChangeError::Unavailable(chatcore::error::Cause::new(e)))?;
        Ok(Arc::new(source))
    }
}

/// A change source over a Kafka consumer group.
pub struct KafkaChangeSource {
    consumer: StreamConsumer<GroupContext>,
    tracker: Arc<Mutex<OffsetTracker>>,
    config: KafkaSourceConfig,
    drops: drop_log::DropLog,
}

impl std::fmt::Debug for KafkaChangeSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaChangeSource")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl KafkaChangeSource {
    /// Joins the consumer group and subscribes to the topic.
    pub fn new(config: KafkaSourceConfig) -> Result<Self, KafkaBackendError> {
        let tracker = Arc::new(Mutex::new(OffsetTracker::default()));
        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", &config.bootstrap_servers)
            .set("group.id", &config.group_id)
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "1000")
            .set("enable.auto.offset.store", "false")
            .set(
                "auto.offset.reset",
                if config.ignore_old_messages {
                    "latest"
                } else {
                    "earliest"
                },
            )
            .set("session.timeout.ms", "10000")
            .set("enable.partition.eof", "false");
        for (name, value) in &config.overrides {
            client.set(name, value);
        }
        let consumer: StreamConsumer<GroupContext> = client
            .create_with_context(GroupContext {
                tracker: Arc::clone(&tracker),
            })
            .map_err(|e| KafkaBackendError::Config(e.to_string()))?;
        consumer
            .subscribe(&[&config.topic])
            .map_err(|e| KafkaBackendError::Config(e.to_string()))?;
        Ok(Self {
            consumer,
            tracker,
            config,
            drops: drop_log::DropLog::default(),
        })
    }

    /// Commits every stored offset now (also done on revoke and by [`ChangeSource::close`]).
    pub fn commit_now(&self) -> Result<(), ChangeError> {
        self.consumer
            .commit_consumer_state(CommitMode::Sync)
            .map_err(|e| ChangeError::Unavailable(chatcore::error::Cause::new(e)))
    }

    /// One WARN line per [`drop_log::DROP_LOG_INTERVAL`] at most about undecodable records.
    fn log_drop(&self, topic: &str, position: &SourcePosition, reason: &str) {
        if let Some(unlogged) = self.drops.admit(std::time::Instant::now()) {
            tracing::warn!(
                topic,
                partition = position.partition,
                offset = position.offset,
                %reason,
                dropped_unlogged_since_last_warning = unlogged,
                "undecodable record dropped as invalid_format (counted in \
                 chatcore_events_dropped_total); is the connector configured as deploy/debezium is?"
            );
        }
    }

    fn event(
        &self,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        position: SourcePosition,
    ) -> ChangeEvent {
        let key = match key.map(decode_key).transpose() {
            Ok(key) => key.unwrap_or_default(),
            Err(error) => {
                return ChangeEvent::malformed(String::new(), position, error.to_string())
            }
        };
        match decode_value(value) {
            Ok(RecordValue::Tombstone) => ChangeEvent {
                op: Op::Delete,
                collection: self.config.collection.clone(),
                key,
                document: None,
                position,
                malformed: None,
            },
            Ok(RecordValue::Change {
                op,
                collection,
                document,
            }) => ChangeEvent {
                op,
                collection: collection.unwrap_or_else(|| self.config.collection.clone()),
                key,
                document,
                position,
                malformed: None,
            },
            Ok(_) => ChangeEvent::malformed(
                key,
                position,
                "a record of a kind this consumer does not know",
            ),
            Err(error) => ChangeEvent::malformed(key, position, error.to_string()),
        }
    }
}

#[async_trait]
impl ChangeSource for KafkaChangeSource {
    async fn next(&self) -> Result<Option<ChangeEvent>, ChangeError> {
        let message = self
            .consumer
            .recv()
            .await
            .map_err(|e| ChangeError::Unavailable(chatcore::error::Cause::new(e)))?;
        let position = SourcePosition {
            partition: message.partition(),
            offset: message.offset(),
            token: None,
        };
        lock(&self.tracker).delivered(position.partition, position.offset);
        let event = self.event(message.key(), message.payload(), position);
        if let Some(reason) = &event.malformed {
            self.log_drop(message.topic(), &event.position, reason);
        }
        Ok(Some(event))
    }

    async fn done(&self, position: &SourcePosition) -> Result<(), ChangeError> {
        let Some(commit) = lock(&self.tracker).finished(position.partition, position.offset) else {
            return Ok(());
        };
        let mut offsets = TopicPartitionList::new();
        offsets
            .add_partition_offset(
                &self.config.topic,
                position.partition,
                Offset::Offset(commit),
            )
            .map_err(|e| ChangeError::Unavailable(chatcore::error::Cause::new(e)))?;
        self.consumer.store_offsets(&offsets).map_err(|e| {
            // The partition was revoked meanwhile: its new owner delivers the event again.
            ChangeError::Unavailable(
                format!("store offset {}:{commit}: {e}", position.partition).into(),
            )
        })
    }

    async fn close(&self) {
        if let Err(error) = self.commit_now() {
            tracing::debug!(%error, "final commit");
        }
    }
}

/// Produces Debezium-shaped records: the relay's output and dead letters.
#[derive(Clone)]
pub struct KafkaPublisher {
    producer: FutureProducer,
    bootstrap_servers: String,
    database: String,
    timeout: Duration,
}

impl std::fmt::Debug for KafkaPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaPublisher")
            .field("database", &self.database)
            .finish_non_exhaustive()
    }
}

/// A record that exhausted its retries, with what the dead-letter headers say about it.
#[derive(Debug, Clone)]
pub struct DeadLetter<'a> {
    /// The event that failed.
    pub event: &'a ChangeEvent,
    /// The topic it was read from.
    pub source_topic: &'a str,
    /// The last error.
    pub error: &'a str,
    /// How many attempts were made.
    pub attempts: u32,
}

/// The dead-letter sink of a pipeline whose failure policy is
/// [`chatcore::pipeline::FailurePolicy::DeadLetter`]: each failed event is published to `topic`
/// by [`KafkaPublisher::dead_letter`], with the original topic, partition, offset, last error and
/// attempts as headers ([`headers`]).
#[derive(Debug, Clone)]
pub struct KafkaDeadLetters {
    publisher: KafkaPublisher,
    topic: String,
    source_topic: String,
}

impl KafkaDeadLetters {
    /// Dead letters of events read from `source_topic`, published to `topic`.
    pub fn new(
        publisher: KafkaPublisher,
        topic: impl Into<String>,
        source_topic: impl Into<String>,
    ) -> Self {
        Self {
            publisher,
            topic: topic.into(),
            source_topic: source_topic.into(),
        }
    }

    /// The dead-letter topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }
}

#[async_trait]
impl chatcore::dead_letter::DeadLetterSink for KafkaDeadLetters {
    async fn dead_letter(
        &self,
        failed: &chatcore::dead_letter::FailedEvent<'_>,
    ) -> Result<(), chatcore::dead_letter::DeadLetterError> {
        let letter = DeadLetter {
            event: failed.event,
            source_topic: &self.source_topic,
            error: failed.error,
            attempts: failed.attempts,
        };
        self.publisher
            .dead_letter(&self.topic, &letter)
            .await
            .map(|_| ())
            .map_err(|e| chatcore::dead_letter::DeadLetterError(chatcore::error::Cause::new(e)))
    }
}

/// Header names of dead letters.
pub mod headers {
    /// Topic the record was read from.
    pub const ORIGINAL_TOPIC: &str = "x-original-topic";
    /// Its partition.
    pub const ORIGINAL_PARTITION: &str = "x-original-partition";
    /// Its offset.
    pub const ORIGINAL_OFFSET: &str = "x-original-offset";
    /// The last error.
    pub const ERROR: &str = "x-error";
    /// Attempts made.
    pub const ATTEMPTS: &str = "x-attempts";
}

impl KafkaPublisher {
    /// An idempotent producer (`acks=all`) on `bootstrap_servers`; `database` names the source
    /// database in the records' `source` block.
    pub fn new(bootstrap_servers: &str, database: &str) -> Result<Self, KafkaBackendError> {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap_servers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("message.timeout.ms", "30000")
            .create()
            .map_err(|e| KafkaBackendError::Config(e.to_string()))?;
        Ok(Self {
            producer,
            bootstrap_servers: bootstrap_servers.to_owned(),
            database: database.to_owned(),
            timeout: Duration::from_secs(30),
        })
    }

    /// Creates `topic` with `partitions` partitions (replication 1 is not assumed: the broker's
    /// default applies) unless it exists.
    pub async fn ensure_topic(
        &self,
        topic: &str,
        partitions: i32,
    ) -> Result<(), KafkaBackendError> {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap_servers)
            .create()
            .map_err(|e| KafkaBackendError::Config(e.to_string()))?;
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(20)));
        let results = admin
            .create_topics(
                &[NewTopic::new(
                    topic,
                    partitions,
                    TopicReplication::Fixed(-1),
                )],
                &options,
            )
            .await
            .map_err(|e| KafkaBackendError::Config(format!("create topic {topic}: {e}")))?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    return Err(KafkaBackendError::Config(format!(
                        "create topic {name}: {code}"
                    )))
                }
            }
        }
        Ok(())
    }

    /// Publishes one change to `topic` as a Debezium record keyed by the document's `stream_id`
    /// (the event key when it has none). Returns the partition and offset written.
    pub async fn publish(
        &self,
        topic: &str,
        event: &ChangeEvent,
    ) -> Result<(i32, i64), KafkaBackendError> {
        let key = partition_key(event);
        let value = encode_change(
            event.op,
            &self.database,
            &event.collection,
            event.document.as_ref(),
            chrono_now_millis(),
        )
        .to_string();
        self.send(topic, FutureRecord::to(topic).key(&key).payload(&value))
            .await
    }

    /// Publishes a dead letter to `topic`: the event in Debezium shape, with the original topic,
    /// partition, offset, error and attempt count as headers.
    pub async fn dead_letter(
        &self,
        topic: &str,
        letter: &DeadLetter<'_>,
    ) -> Result<(i32, i64), KafkaBackendError> {
        let key = partition_key(letter.event);
        let value = encode_change(
            letter.event.op,
            &self.database,
            &letter.event.collection,
            letter.event.document.as_ref(),
            chrono_now_millis(),
        )
        .to_string();
        let partition = letter.event.position.partition.to_string();
        let offset = letter.event.position.offset.to_string();
        let attempts = letter.attempts.to_string();
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: headers::ORIGINAL_TOPIC,
                value: Some(letter.source_topic),
            })
            .insert(Header {
                key: headers::ORIGINAL_PARTITION,
                value: Some(&partition),
            })
            .insert(Header {
                key: headers::ORIGINAL_OFFSET,
                value: Some(&offset),
            })
            .insert(Header {
                key: headers::ERROR,
                value: Some(letter.error),
            })
            .insert(Header {
                key: headers::ATTEMPTS,
                value: Some(&attempts),
            });
        let record = FutureRecord::to(topic)
            .key(&key)
            .payload(&value)
            .headers(headers);
        self.send(topic, record).await
    }

    async fn send(
        &self,
        topic: &str,
        record: FutureRecord<'_, String, String>,
    ) -> Result<(i32, i64), KafkaBackendError> {
        self.producer
            .send(record, self.timeout)
            .await
            .map(|delivery| (delivery.partition, delivery.offset))
            .map_err(|(error, _)| KafkaBackendError::Produce {
                topic: topic.to_owned(),
                reason: error.to_string(),
            })
    }
}

fn partition_key(event: &ChangeEvent) -> String {
    event
        .document
        .as_ref()
        .and_then(|d| d.get("stream_id"))
        .and_then(|s| s.as_str())
        .map_or_else(|| event.key.clone(), str::to_owned)
}

fn chrono_now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Records the relay may have sent but not yet seen acknowledged.
pub const RELAY_WINDOW: usize = 256;

/// Relays a change source to `topic` until the source ends or `shutdown` is cancelled.
///
/// Up to [`RELAY_WINDOW`] records are in flight at once (the idempotent producer keeps each
/// partition in order); each event is acknowledged to the source, in order, only after Kafka has
/// its record, so a relay restart republishes at most the unacknowledged tail, which the
/// consumers' event store deduplicates. A record Kafka refuses is retried with backoff until it is
/// accepted or the relay stops.
pub async fn relay(
    source: Arc<dyn ChangeSource>,
    publisher: KafkaPublisher,
    topic: String,
    shutdown: CancellationToken,
) {
    let mut in_flight = FuturesOrdered::new();
    let mut source_failures = 0u32;
    let mut ended = false;
    loop {
        if ended && in_flight.is_empty() {
            break;
        }
        let reading = !ended && in_flight.len() < RELAY_WINDOW;
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            Some(sent) = in_flight.next(), if !in_flight.is_empty() => {
                let Some(position) = sent else { break };
                if let Err(error) = source.done(&position).await {
                    tracing::warn!(%error, "relay could not acknowledge an event");
                }
            }
            next = source.next(), if reading => match next {
                Ok(Some(event)) => {
                    source_failures = 0;
                    in_flight.push_back(publish_until_sent(
                        publisher.clone(),
                        topic.clone(),
                        event,
                        shutdown.clone(),
                    ));
                }
                Ok(None) => ended = true,
                Err(error) => {
                    source_failures += 1;
                    tracing::warn!(%error, "relay source failed; retrying");
                    backoff(source_failures, &shutdown).await;
                }
            },
        }
    }
    source.close().await;
}

/// Publishes one event, retrying until Kafka has it; `None` when the relay stops first.
async fn publish_until_sent(
    publisher: KafkaPublisher,
    topic: String,
    event: ChangeEvent,
    shutdown: CancellationToken,
) -> Option<SourcePosition> {
    let mut failures = 0u32;
    loop {
        match publisher.publish(&topic, &event).await {
            Ok(_) => return Some(event.position),
            Err(error) => {
                failures += 1;
                tracing::warn!(%error, "relay could not publish; retrying");
                if !backoff(failures, &shutdown).await {
                    return None;
                }
            }
        }
    }
}

/// Waits before the next attempt; false when shutting down.
async fn backoff(failures: u32, shutdown: &CancellationToken) -> bool {
    let wait = Duration::from_millis(100 * 2u64.pow(failures.min(8)));
    tokio::select! {
        () = shutdown.cancelled() => false,
        () = tokio::time::sleep(wait) => true,
    }
}
