//! The Kafka change feed: brokers, topic, consumer group.

use clap::ArgAction;

/// The Kafka change feed (flattened into [`super::Settings`] as `kafka`).
#[derive(Debug, Clone, clap::Args)]
pub struct KafkaSettings {
    /// Kafka bootstrap servers of the change feed. In role `all` the store's changes are relayed
    /// to the topic and consumed back from it; role `change-handler` requires it.
    #[arg(
        long = "kafka-bootstrap-servers",
        id = "kafka_bootstrap_servers",
        value_name = "KAFKA_BOOTSTRAP_SERVERS",
        global = true,
        env = "CHAT_PERSISTENCE_CHANGE_KAFKA_BOOTSTRAP_SERVERS"
    )]
    pub bootstrap_servers: Option<String>,
    /// Topic of the chat change events (Debezium's topic for the `chat` collection).
    #[arg(
        long = "kafka-topic",
        id = "kafka_topic",
        value_name = "KAFKA_TOPIC",
        global = true,
        env = "CHAT_PERSISTENCE_CHANGE_KAFKA_CONSUMER_INFO_TOPIC_NAME",
        default_value = "chat.changes"
    )]
    pub topic: String,
    /// Consumer group of the change handler.
    #[arg(
        long = "kafka-group",
        id = "kafka_group",
        value_name = "KAFKA_GROUP",
        global = true,
        env = "CHAT_PERSISTENCE_CHANGE_KAFKA_CONSUMER_INFO_CONSUMER_NAME",
        default_value = "chat-change-handler"
    )]
    pub group: String,
    /// A new consumer group starts at the end of the topic instead of its beginning.
    #[arg(
        long = "ignore-old-message",
        id = "ignore_old_message",
        value_name = "IGNORE_OLD_MESSAGE",
        global = true,
        env = "IGNORE_OLD_MESSAGE",
        default_value_t = false,
        action = ArgAction::Set
    )]
    pub ignore_old_message: bool,
    /// Partitions of the topic when role `all` creates it for its relay.
    #[arg(
        long = "kafka-topic-partitions",
        id = "kafka_topic_partitions",
        value_name = "KAFKA_TOPIC_PARTITIONS",
        global = true,
        env = "KAFKA_TOPIC_PARTITIONS",
        default_value_t = 3
    )]
    pub topic_partitions: i32,
}
