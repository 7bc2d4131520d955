//! The websocket settings and the batched write path, end to end on the embedded server: large
//! frames and bursts arrive whole and in order with the small default buffers, and a client
//! message over `WS_MAX_MESSAGE_SIZE` closes the socket with 1009.

use crate::common;

use chatcore::sockets::MESSAGE_TOO_BIG_CLOSE_CODE;
use common::{settings, TestServer};
use futures::SinkExt;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn a_burst_of_64_kib_messages_arrives_whole_and_in_order() {
    let server = TestServer::start().await;
    let mut socket = server.subscribe_chat("alice", "bob", None).await;
    let mut sent = Vec::new();
    for i in 0..12 {
        // 64 KiB, the default MAX_CONTENT_BYTES, with a multi-byte character and escapes.
        let mut content = format!("{i:04} é \"quoted\" ");
        content.push_str(&"x".repeat(65_536 - content.len()));
        sent.push(server.send(&content, "alice", "bob").await);
    }
    for small in 0..40 {
        sent.push(server.send(&format!("small {small}"), "bob", "alice").await);
    }
    for expected in &sent {
        assert_eq!(&socket.next_json().await, expected, "whole, in store order");
    }
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn a_client_message_over_the_limit_closes_with_1009() {
    let settings = settings(&["--ws-max-message-size", "1024"]);
    let server = TestServer::start_with(settings, |backends| backends).await;
    let mut socket = server.subscribe_chat("alice", "bob", None).await;
    socket
        .0
        .send(Message::text("x".repeat(1000)))
        .await
        .expect("send a message under the limit");
    let message = server.send("still open", "alice", "bob").await;
    assert_eq!(socket.next_json().await, message, "under the limit: served");
    socket
        .0
        .send(Message::text("x".repeat(2048)))
        .await
        .expect("send a message over the limit");
    assert_eq!(
        socket.next_close_code().await,
        Some(MESSAGE_TOO_BIG_CLOSE_CODE)
    );
    server.stop().await.expect("clean stop");
}
