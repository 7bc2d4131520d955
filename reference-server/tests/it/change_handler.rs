//! Role `change-handler`: Debezium records on Kafka are delivered through HTTP to the tiers of
//! another node, the seed's chatpersistencechangehandler → chatwebsocketshandler path.

use crate::common;

use std::time::Duration;

use chatcore::change::Op;
use chatcore::debezium::encode_change;
use chatcore::metrics::Outcome;
use chatcore::model::{ChatMessage, NewChatMessage};
use chatcore::store::MessageIdGenerator;
use common::{settings, TestServer, WAIT};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use reference_server::{ChangeHandler, ConfigError};

fn stored(ids: &mut MessageIdGenerator, content: &str) -> ChatMessage {
    NewChatMessage {
        content: content.into(),
        sender_id: "alice".into(),
        receiver_id: Some("bob".into()),
        stream_id: None,
    }
    .validate(65_536)
    .expect("valid")
    .into_stored(ids.next_id(), chrono::Utc::now())
}

#[tokio::test]
#[ignore = "needs kafka: run scripts/test.sh"]
async fn debezium_records_reach_a_remote_nodes_sockets_through_http() {
    let kafka =
        std::env::var("CHATCORE_TEST_KAFKA").expect("CHATCORE_TEST_KAFKA: run scripts/test.sh");
    let tiers = TestServer::start_with(settings(&[]), |backends| backends).await;
    let mut chat = tiers.subscribe_chat("alice", "bob", None).await;
    let mut bob = tiers.subscribe_notifications("bob").await;

    let unique = chatcore::dedup::ClaimToken::unique();
    let topic = format!("debezium-chat-{}", unique.as_str());
    let publisher = chatcore_kafka::KafkaPublisher::new(&kafka, "chat_db").expect("publisher");
    publisher.ensure_topic(&topic, 3).await.expect("topic");
    let handler = ChangeHandler::start(&settings(&[
        "--kafka-bootstrap-servers",
        &kafka,
        "--kafka-topic",
        &topic,
        "--kafka-group",
        &format!("handler-{}", unique.as_str()),
        "--chat-ws-url",
        &tiers.base,
        "--notifications-ws-url",
        &tiers.base,
    ]))
    .await
    .expect("change handler starts");

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &kafka)
        .create()
        .expect("producer");
    let mut ids = MessageIdGenerator::default();
    let messages: Vec<ChatMessage> = (0..5)
        .map(|n| stored(&mut ids, &format!("via kafka {n}")))
        .collect();
    for message in &messages {
        // What Debezium's MongoDB connector publishes: key {"id": <extended JSON of _id>}.
        let key = serde_json::json!({ "id": format!("{{\"$oid\": \"{}\"}}", message.message_id) })
            .to_string();
        let document = serde_json::to_value(message).expect("json");
        let value = serde_json::json!({
            "schema": {"type": "struct", "optional": false},
            "payload": encode_change(Op::Create, "chat_db", "chat", Some(&document), 0),
        })
        .to_string();
        producer
            .send(
                FutureRecord::to(&topic).key(&key).payload(&value),
                Duration::from_secs(20),
            )
            .await
            .expect("produced");
    }
    // Debezium keys by _id, so records of one stream may sit on different partitions; each one
    // still reaches the stream's sockets exactly once.
    let mut received = Vec::new();
    for _ in 0..messages.len() {
        let frame = chat.next_json().await;
        received.push(serde_json::from_value::<ChatMessage>(frame).expect("chat message"));
        let envelope = bob.next_json().await;
        assert_eq!(envelope["notification_type"], "chat_notification");
    }
    received.sort_by(|a, b| a.message_id.cmp(&b.message_id));
    assert_eq!(received, messages);
    tokio::time::timeout(WAIT, async {
        while handler.metrics.event_count("chat", Outcome::Success) < 5 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("counted");
    assert!(
        handler.shutdown(Duration::from_secs(10)).await,
        "stops cleanly"
    );
}

#[tokio::test]
async fn the_change_handler_names_the_variable_it_is_missing() {
    let missing = ChangeHandler::start(&settings(&["--chat-ws-url", "http://127.0.0.1:1"])).await;
    let error = missing.err().expect("refused");
    let text = error.to_string();
    assert!(matches!(error, ConfigError::Missing { .. }), "{text}");
    assert!(
        text.contains("CHAT_PERSISTENCE_CHANGE_KAFKA_BOOTSTRAP_SERVERS")
            || text.contains("GENERAL_NOTIFICATION_OUTGOING_CONFIG_CLIENT_HOST"),
        "{text}"
    );
}
