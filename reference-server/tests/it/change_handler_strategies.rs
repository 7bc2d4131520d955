//! Role `change-handler` with `NOTIFICATION_STRATEGY=segregated` and commerce topics: chat keeps
//! flowing while the notification tier refuses connections, and Debezium records of the
//! `purchases` collection become purchase notifications on another node's sockets.

use crate::common;

use std::time::{Duration, Instant};

use chatcore::change::Op;
use chatcore::debezium::encode_change;
use chatcore::metrics::{DropReason, Outcome};
use chatcore::model::{ChatMessage, NewChatMessage};
use chatcore::store::MessageIdGenerator;
use common::{settings, TestServer, WAIT};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use reference_server::ChangeHandler;
use serde_json::{json, Value};

fn kafka() -> String {
    std::env::var("CHATCORE_TEST_KAFKA").expect("CHATCORE_TEST_KAFKA: run scripts/test.sh")
}

async fn topic(kafka: &str, name: &str) -> String {
    let unique = chatcore::dedup::ClaimToken::unique();
    let topic = format!("{name}-{}", unique.as_str());
    let publisher = chatcore_kafka::KafkaPublisher::new(kafka, "chat_db").expect("publisher");
    publisher.ensure_topic(&topic, 3).await.expect("topic");
    topic
}

async fn produce(producer: &FutureProducer, topic: &str, key: &str, collection: &str, doc: &Value) {
    let value =
        json!({ "payload": encode_change(Op::Create, "chat_db", collection, Some(doc), 0) })
            .to_string();
    producer
        .send(
            FutureRecord::to(topic).key(key).payload(&value),
            Duration::from_secs(20),
        )
        .await
        .expect("produced");
}

async fn until(what: &str, mut condition: impl FnMut() -> bool) {
    tokio::time::timeout(WAIT, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what} in time"));
}

#[tokio::test]
#[ignore = "needs kafka: run scripts/test.sh"]
async fn segregated_chat_flows_while_the_notification_tier_refuses() {
    let kafka = kafka();
    let tiers = TestServer::start().await;
    let mut chat = tiers.subscribe_chat("alice", "bob", None).await;
    let chat_topic = topic(&kafka, "segregated-chat").await;
    let group = format!("handler-{}", chatcore::dedup::ClaimToken::unique().as_str());
    let handler = ChangeHandler::start(&settings(&[
        "--kafka-bootstrap-servers",
        &kafka,
        "--kafka-topic",
        &chat_topic,
        "--kafka-group",
        &group,
        "--chat-ws-url",
        &tiers.base,
        // Nothing listens there: every notification is refused.
        "--notifications-ws-url",
        "http://127.0.0.1:1",
        "--notification-strategy",
        "segregated",
        "--message-retry-initial-interval",
        "3s",
        "--notifications-message-retry-max-retries",
        "0",
    ]))
    .await
    .expect("change handler starts");

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &kafka)
        .create()
        .expect("producer");
    let mut ids = MessageIdGenerator::default();
    let messages: Vec<ChatMessage> = (0..3)
        .map(|n| {
            NewChatMessage {
                content: format!("m{n}"),
                sender_id: "alice".into(),
                receiver_id: Some("bob".into()),
                stream_id: None,
            }
            .validate(65_536)
            .expect("valid")
            .into_stored(ids.next_id(), chrono::Utc::now())
        })
        .collect();
    // Keyed by stream: one partition, so a coupled retry would hold the later messages back.
    for message in &messages {
        let document = serde_json::to_value(message).expect("json");
        produce(
            &producer,
            &chat_topic,
            &message.stream_id,
            "chat",
            &document,
        )
        .await;
    }
    let mut first_at = None;
    for message in &messages {
        let frame = chat.next_json().await;
        first_at.get_or_insert_with(Instant::now);
        assert_eq!(
            serde_json::from_value::<ChatMessage>(frame).expect("chat"),
            *message
        );
    }
    let spread = first_at.expect("received").elapsed();
    assert!(
        spread < Duration::from_secs(2),
        "chat was held back by the failing notification tier: {spread:?}"
    );
    until("notifications logged and skipped", || {
        handler
            .metrics
            .event_count("notifications", Outcome::Failed)
            == 3
    })
    .await;
    until("chat events counted", || {
        handler.metrics.event_count("chat", Outcome::Success) == 3
    })
    .await;
    assert!(handler.shutdown(Duration::from_secs(10)).await);
    tiers.stop().await.expect("clean stop");
}

#[tokio::test]
#[ignore = "needs kafka: run scripts/test.sh"]
async fn purchases_on_their_kafka_topic_notify_shop_owner_and_buyer_through_http() {
    let kafka = kafka();
    let tiers = TestServer::start().await;
    let mut shop = tiers.subscribe_notifications("shop-7").await;
    let mut buyer = tiers.subscribe_notifications("buyer-7").await;
    let chat_topic = topic(&kafka, "commerce-chat").await;
    let purchases = topic(&kafka, "commerce-purchases").await;
    let group = format!("handler-{}", chatcore::dedup::ClaimToken::unique().as_str());
    let handler = ChangeHandler::start(&settings(&[
        "--kafka-bootstrap-servers",
        &kafka,
        "--kafka-topic",
        &chat_topic,
        "--kafka-group",
        &group,
        "--chat-ws-url",
        &tiers.base,
        "--notifications-ws-url",
        &tiers.base,
        "--commerce-purchases-kafka-topic",
        &purchases,
    ]))
    .await
    .expect("change handler starts");
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &kafka)
        .create()
        .expect("producer");
    produce(
        &producer,
        &purchases,
        "o-7",
        "purchases",
        &json!({"order_id": "o-0", "buyer_id": "buyer-7"}),
    )
    .await;
    let purchase = json!({"order_id": "o-7", "buyer_id": "buyer-7", "shop_owner_id": "shop-7",
        "product_name": "Desk", "amount": 120.0, "currency": "EUR", "status": "completed",
        "purchased_at": "2026-11-02T09:30:00.000Z"});
    produce(&producer, &purchases, "o-7", "purchases", &purchase).await;
    for socket in [&mut shop, &mut buyer] {
        let envelope = socket.next_json().await;
        assert_eq!(envelope["notification_type"], "purchase_notification");
        assert_eq!(envelope["payload"], purchase);
    }
    until("the bad purchase counted", || {
        handler
            .metrics
            .dropped_count("commerce-purchases", DropReason::InvalidFormat)
            == 1
    })
    .await;
    assert!(handler.shutdown(Duration::from_secs(10)).await);
    tiers.stop().await.expect("clean stop");
}
