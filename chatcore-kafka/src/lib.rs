//! # chatcore-kafka
//!
//! The Kafka backend of chatcore (not implemented yet; it arrives with its own issue):
//!
//! - `KafkaChangeSource`: a [`chatcore::change::ChangeSource`] over a consumer group reading
//!   Debezium MongoDB change events, each partition in order, offsets committed only once the
//!   pipeline is done with an event (see [`chatcore::change::OffsetTracker`]);
//! - `KafkaPublisher`: a relay turning any change source into Debezium-shaped records keyed by
//!   `stream_id`, and the dead-letter publisher used by the email consumer.
//!
//! Until then, `chat-server` refuses `CHAT_PERSISTENCE_CHANGE_KAFKA_BOOTSTRAP_SERVERS` with a clear
//! message and runs on the embedded change feed.

#![warn(missing_docs)]
