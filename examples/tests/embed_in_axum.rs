//! The `embed_in_axum` example, served for real: the team's own route answers, a websocket
//! subscriber gets the exact stored message, and the auditing forwarder saw the delivery.

#[path = "../embed_in_axum.rs"]
#[allow(dead_code)]
mod example;

use std::future::Future;
use std::time::Duration;

use chatcore::app::AppConfig;
use chatcore::sockets::SocketRegistry;
use futures::StreamExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

/// Upper bound for every awaited condition.
const WAIT: Duration = Duration::from_secs(10);

async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, future)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next text or close frame, skipping pings and pongs.
async fn next_frame(socket: &mut Socket) -> Message {
    within("a websocket frame", async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(message)) => return message,
                Some(Err(error)) => panic!("websocket error: {error}"),
                None => panic!("websocket ended without a close frame"),
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_is_served_inside_the_team_app_and_audited() {
    let service = example::build_service(AppConfig::default())
        .await
        .expect("service");
    let audit = service.audit.clone();
    let chat_sockets = service.chat.chat_sockets().clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(example::serve(service, listener, async {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::new();

    // The team's own route lives next to chatcore's.
    let hello = within(
        "GET /team/hello",
        http.get(format!("http://{addr}/team/hello")).send(),
    )
    .await
    .expect("GET /team/hello");
    assert_eq!(hello.status(), 200);
    let hello: Value = hello.json().await.expect("hello JSON");
    assert_eq!(hello["service"], "team");
    // ... and the team's own JSON fallback answers unknown paths: chatcore's routes have none.
    let missing = within(
        "GET /nowhere",
        http.get(format!("http://{addr}/nowhere")).send(),
    )
    .await
    .expect("GET /nowhere");
    assert_eq!(missing.status(), 404);

    // Subscribe to the conversation of alice and bob.
    let stream_id = chatcore::stream_id::stream_id("alice", "bob");
    let url =
        format!("ws://{addr}/chat/subscribe?stream_id={stream_id}&sender_id=alice&receiver_id=bob");
    let (mut socket, _) = within(
        "the websocket handshake",
        tokio_tungstenite::connect_async(url),
    )
    .await
    .expect("websocket connects");
    // Sessions are registered before the handshake completes, so nothing posted now is missed.
    assert_eq!(chat_sockets.sessions(&stream_id), 1);

    // Post a message; it is stored and answered with its id.
    let posted = within(
        "POST /chat/messages",
        http.post(format!("http://{addr}/chat/messages"))
            .json(&json!({
                "content": "hello from the team app",
                "sender_id": "alice",
                "receiver_id": "bob",
                "stream_id": stream_id,
            }))
            .send(),
    )
    .await
    .expect("POST /chat/messages");
    assert_eq!(posted.status(), 201);
    let stored: Value = posted.json().await.expect("stored message JSON");
    let message_id = stored["message_id"]
        .as_str()
        .expect("message_id is a string")
        .to_owned();
    assert_eq!(stored["stream_id"], stream_id.as_str());

    // The subscriber receives exactly the stored message.
    let frame = match next_frame(&mut socket).await {
        Message::Text(text) => text,
        other => panic!("expected a text frame, got {other:?}"),
    };
    let delivered: Value = serde_json::from_str(frame.as_str()).expect("frame is JSON");
    assert_eq!(delivered, stored);
    assert_eq!(delivered["message_id"], message_id.as_str());

    // The custom forwarder saw the chat delivery (and the receiver's notification).
    let mut counts = audit.subscribe();
    within(
        "the audit to record the delivery",
        counts.wait_for(|c| {
            c.last_chat_message_id.as_deref() == Some(message_id.as_str())
                && c.notification_deliveries >= 1
        }),
    )
    .await
    .expect("audit channel open");
    let snapshot = audit.snapshot();
    assert_eq!(snapshot.chat_deliveries, 1);
    assert_eq!(snapshot.notification_deliveries, 1);
    assert_eq!(
        snapshot.sessions_reached, 1,
        "one chat socket, no notification socket"
    );
    assert_eq!(snapshot.sessions_failed, 0);
    assert_eq!(snapshot.errors, 0);

    // The team's audit route reports the same.
    let report: Value = within("GET /team/audit", async {
        http.get(format!("http://{addr}/team/audit"))
            .send()
            .await
            .expect("GET /team/audit")
            .json()
            .await
            .expect("audit JSON")
    })
    .await;
    assert_eq!(report["chat_deliveries"], 1);
    assert_eq!(report["last_chat_message_id"], message_id.as_str());

    // Shutdown closes the socket with 1001 and the server stops.
    stop.send(()).expect("server still running");
    match next_frame(&mut socket).await {
        Message::Close(Some(close)) => assert_eq!(u16::from(close.code), 1001),
        other => panic!("expected a close frame, got {other:?}"),
    }
    drop(socket);
    within("the server to stop", server)
        .await
        .expect("server task")
        .expect("server ran cleanly");
}
