//! `HttpForwarder` against a running node's internal routes: the change handler's view of a
//! remote websocket tier.

use crate::common;

use std::time::Duration;

use chatcore::forward::{
    Delivery, DeliveryReport, ForwardError, Forwarder, HttpForwarder, StreamCloser, TierEndpoint,
};
use chatcore::model::{ChatMessage, Notification, NotificationType};
use chatcore::sockets::{session_channel, Frame, SocketRegistry};
use chatcore::stream_id::stream_id;
use common::TestServer;
use serde_json::json;

fn forwarder(base: &str, timeout: Duration) -> HttpForwarder {
    let endpoint = TierEndpoint {
        base_url: base.to_owned(),
        timeout,
    };
    HttpForwarder::new(endpoint.clone(), endpoint, None)
}

fn message(id: &str) -> ChatMessage {
    ChatMessage {
        message_id: id.into(),
        content: format!("over http {id}"),
        created_at: "2026-11-26T12:00:00.000Z".parse().expect("time"),
        stream_id: stream_id("alice", "bob"),
        sender_id: "alice".into(),
        receiver_id: Some("bob".into()),
    }
}

#[tokio::test]
async fn reports_deliveries_partial_failures_notifications_and_closes() {
    let server = TestServer::start().await;
    let http = forwarder(&server.base, Duration::from_secs(5));
    let mut socket = server.subscribe_chat("alice", "bob", None).await;
    let mut bob = server.subscribe_notifications("bob").await;

    let report = http
        .forward(&Delivery::Chat(message("h1")))
        .await
        .expect("delivered");
    assert_eq!(
        report,
        DeliveryReport {
            delivered: 1,
            failed: 0
        }
    );
    assert_eq!(
        socket.next_json().await,
        serde_json::to_value(message("h1")).expect("json")
    );

    let stream = stream_id("alice", "bob");
    let (stuck, _never_drained) = session_channel(1);
    assert!(server.chat_sockets.register(&stream, stuck));
    let _ = server
        .chat_sockets
        .broadcast(&stream, &Frame::new(r#"{"filler":true}"#.into()));
    assert_eq!(socket.next_json().await, json!({"filler": true}));
    let report = http
        .forward(&Delivery::Chat(message("h2")))
        .await
        .expect("a report");
    assert_eq!(
        report,
        DeliveryReport {
            delivered: 1,
            failed: 1
        },
        "206 is a partial report"
    );

    let purchase = json!({"order_id": "o1", "buyer_id": "alice", "shop_owner_id": "bob", "product_name": "lamp",
        "amount": 3.5, "currency": "EUR", "status": "completed", "purchased_at": "2026-11-26T10:00:00.000Z"});
    let notification = Notification {
        notification_type: NotificationType::PurchaseNotification,
        timestamp: chrono::Utc::now(),
        payload: purchase.clone(),
        notification_id: None,
        source_key: Some("purchases:o1:test".into()),
    };
    let delivery = Delivery::Notify {
        user_id: "bob".into(),
        notification,
    };
    let report = http.forward(&delivery).await.expect("delivered");
    assert_eq!(report.delivered, 1);
    let envelope = bob.next_json().await;
    assert_eq!(
        (
            envelope["notification_type"].clone(),
            envelope["payload"].clone()
        ),
        (json!("purchase_notification"), purchase)
    );
    // The tier kept it before pushing; a retried forward (its source key travels as
    // Idempotency-Key) is the same entry.
    let id = envelope["notification_id"]
        .as_str()
        .expect("kept")
        .to_owned();
    assert_eq!(http.forward(&delivery).await.expect("again").delivered, 1);
    let (status, inbox) = server.get_json("/notifications?user_id=bob").await;
    assert_eq!(status, 200);
    assert_eq!(
        inbox["notifications"].as_array().map(Vec::len),
        Some(1),
        "{inbox}"
    );
    assert_eq!(inbox["notifications"][0]["notification_id"], id.as_str());

    // The stuck session was already closed as too slow (SLOW_CLIENT_POLICY=close): one left.
    assert_eq!(
        http.close_stream(&stream, "gave up").await.expect("closed"),
        1
    );
    assert_eq!(socket.next_json().await["message_id"], "h2");
    assert_eq!(socket.next_close_code().await, Some(4000));
}

#[tokio::test]
async fn an_unreachable_or_silent_tier_is_an_error_within_the_timeout() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let closed_addr = closed.local_addr().expect("addr");
    drop(closed);
    let result = forwarder(&format!("http://{closed_addr}"), Duration::from_secs(2))
        .forward(&Delivery::Chat(message("x")))
        .await;
    assert!(
        matches!(result, Err(ForwardError::Transport(_))),
        "{result:?}"
    );

    // Accepts connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let silent_addr = silent.local_addr().expect("addr");
    let _holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
        }
    });
    let started = std::time::Instant::now();
    let result = forwarder(&format!("http://{silent_addr}"), Duration::from_millis(300))
        .forward(&Delivery::Chat(message("y")))
        .await;
    assert!(
        matches!(result, Err(ForwardError::Timeout(_))),
        "{result:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));

    let server = TestServer::start().await;
    let result = forwarder(&format!("{}/nowhere", server.base), Duration::from_secs(2))
        .forward(&Delivery::Chat(message("z")))
        .await;
    assert!(
        matches!(result, Err(ForwardError::Status { status: 404, .. })),
        "{result:?}"
    );
}
