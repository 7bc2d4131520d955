//! The commerce collections' Kafka topics.

/// Kafka topics of the commerce collections (flattened into [`super::Settings`] as
/// `commerce`).
#[derive(Debug, Clone, clap::Args)]
pub struct CommerceSettings {
    /// Kafka topic of the `purchases` collection's changes (Debezium); unset: purchases are read
    /// from MongoDB's change stream when `MONGO_URI` is set.
    #[arg(
        long = "commerce-purchases-kafka-topic",
        id = "commerce_purchases_kafka_topic",
        value_name = "COMMERCE_PURCHASES_KAFKA_TOPIC",
        global = true,
        env = "COMMERCE_PURCHASES_KAFKA_TOPIC"
    )]
    pub purchases_kafka_topic: Option<String>,
    /// Kafka topic of the `payments` collection's changes, as above.
    #[arg(
        long = "commerce-payments-kafka-topic",
        id = "commerce_payments_kafka_topic",
        value_name = "COMMERCE_PAYMENTS_KAFKA_TOPIC",
        global = true,
        env = "COMMERCE_PAYMENTS_KAFKA_TOPIC"
    )]
    pub payments_kafka_topic: Option<String>,
    /// Kafka topic of the `shipments` collection's changes, as above.
    #[arg(
        long = "commerce-shipments-kafka-topic",
        id = "commerce_shipments_kafka_topic",
        value_name = "COMMERCE_SHIPMENTS_KAFKA_TOPIC",
        global = true,
        env = "COMMERCE_SHIPMENTS_KAFKA_TOPIC"
    )]
    pub shipments_kafka_topic: Option<String>,
}
