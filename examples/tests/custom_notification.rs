//! The `custom_notification` example, served for real: a review request posted to the team's
//! route reaches the reviewer's notification socket as a `review_request` envelope, and a bad
//! review document is dropped and counted without stopping the consumer.

#[path = "../custom_notification.rs"]
#[allow(dead_code)]
mod example;

use std::time::Duration;

use chatcore::app::AppConfig;
use chatcore::metrics::DropReason;
use chatcore::sockets::SocketRegistry;
use futures::StreamExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(10);

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn next_json(socket: &mut Socket) -> Value {
    tokio::time::timeout(WAIT, async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Text(text))) => {
                    return serde_json::from_str(&text).expect("JSON frame")
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    })
    .await
    .expect("a frame in time")
}

#[tokio::test]
async fn a_review_request_reaches_the_reviewer_as_a_custom_notification() {
    let service = example::build_service(AppConfig::default())
        .await
        .expect("service");
    let metrics = service.chat.metrics().clone();
    let sockets = service.chat.notification_sockets().clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let router = service.router();
    tokio::spawn(async move { axum::serve(listener, router).await });

    let (mut rita, _) = tokio_tungstenite::connect_async(format!(
        "ws://{addr}/notifications/subscribe?user_id=rita"
    ))
    .await
    .expect("subscribe");
    tokio::time::timeout(WAIT, async {
        while sockets.sessions("rita") != 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("registered");

    let http = reqwest::Client::new();
    let post = |body: Value| {
        let http = http.clone();
        async move {
            http.post(format!("http://{addr}/team/reviews"))
                .json(&body)
                .send()
                .await
                .expect("POST")
                .status()
                .as_u16()
        }
    };
    // No reviewer: dropped as invalid_format, and the consumer goes on.
    assert_eq!(post(json!({"review_id": "r0", "title": "?"})).await, 202);
    let review = json!({"review_id": "r1", "reviewer_id": "rita", "author_id": "alex", "title": "Fix login"});
    assert_eq!(post(review.clone()).await, 202);

    let envelope = next_json(&mut rita).await;
    assert_eq!(envelope["notification_type"], "review_request");
    assert_eq!(envelope["payload"], review);
    assert!(envelope["timestamp"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
    assert_eq!(
        metrics.dropped_count("reviews", DropReason::InvalidFormat),
        1
    );
    service.chat.shutdown(Duration::from_secs(5)).await;
}
