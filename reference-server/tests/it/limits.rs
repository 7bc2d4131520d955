//! Abuse limits of the client surface: sockets per user, slow readers, and connections that
//! never send a request head.

use crate::common;

use std::time::Duration;

use common::{settings, TestServer, WAIT};
use futures::StreamExt;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

/// Tries a websocket handshake; `Err((status, body))` when the server refused it.
async fn try_subscribe(
    server: &TestServer,
    path_and_query: &str,
) -> Result<common::Ws, (u16, Value)> {
    let url = format!("{}{path_and_query}", server.ws_base);
    match tokio_tungstenite::connect_async(url).await {
        Ok((socket, _)) => Ok(common::Ws(socket)),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let status = response.status().as_u16();
            let body = response
                .body()
                .as_deref()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or(Value::Null);
            Err((status, body))
        }
        Err(other) => panic!("handshake failed: {other}"),
    }
}

fn chat_path(a: &str, b: &str) -> String {
    let stream = chatcore::stream_id::stream_id(a, b);
    format!("/chat/subscribe?stream_id={stream}&sender_id={a}&receiver_id={b}")
}

#[tokio::test]
async fn a_user_over_the_socket_cap_is_refused_with_429_until_a_socket_closes() {
    let server =
        TestServer::start_with(settings(&["--sockets-per-user", "2"]), |backends| backends).await;
    let first = try_subscribe(&server, &chat_path("alice", "bob"))
        .await
        .expect("first");
    let _second = try_subscribe(&server, "/notifications/subscribe?user_id=alice")
        .await
        .expect("second, on the other tier");
    let (status, body) = try_subscribe(&server, &chat_path("alice", "carol"))
        .await
        .err()
        .expect("third refused");
    assert_eq!(status, 429);
    assert!(
        body["error"].as_str().is_some_and(|e| e.contains("alice")),
        "{body}"
    );
    // Others are not affected.
    let _bob = try_subscribe(&server, &chat_path("bob", "alice"))
        .await
        .expect("bob has his own sockets");

    first.close().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match try_subscribe(&server, &chat_path("alice", "carol")).await {
            Ok(_) => break,
            Err((429, _)) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(refused) => panic!("the closed socket's slot never came back: {refused:?}"),
        }
    }
}

#[tokio::test]
async fn a_reader_too_slow_to_keep_up_is_closed_with_4001_and_the_others_get_everything() {
    let server = TestServer::start_with(
        // A long WRITE_WAIT: the blocked write to the slow client must not time out (and end
        // the session without a close frame) before the test reads, however loaded the machine.
        settings(&["--socket-queue-capacity", "8", "--write-wait", "120s"]),
        |backends| backends,
    )
    .await;
    let mut fast = server.subscribe_chat("alice", "bob", None).await;
    // A client that never reads: once the kernel buffers are full, the server cannot write to
    // it, its queue fills, and the next broadcast finds it full.
    let slow = server.subscribe_chat("bob", "alice", None).await;
    let content = "x".repeat(60_000);
    let count = 300; // 18 MB: more than loopback's socket buffers hold
                     // In lockstep with the fast reader, so it is never behind by more than one message.
    for n in 0..count {
        let stored = server.send(&content, "alice", "bob").await;
        let frame = fast.next_json().await;
        assert_eq!(frame["message_id"], stored["message_id"], "frame {n}");
    }

    // The slow client, reading at last, finds some messages and then the 4001 close.
    let mut slow = slow.0;
    let mut received = 0;
    let code = loop {
        match tokio::time::timeout(WAIT, slow.next())
            .await
            .expect("a frame")
        {
            Some(Ok(Message::Text(_))) => received += 1,
            Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => {}
            Some(Err(error)) => panic!("slow reader: {error}"),
            None => break None,
        }
    };
    assert_eq!(code, Some(4001), "after {received} messages");
    assert!(
        received < count,
        "the slow reader was cut off ({received} of {count})"
    );
    let metrics = server.metrics.render();
    assert!(
        metrics.contains(r#"chatcore_deliveries_total{tier="chat",result="slow_client_closed"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_connection_that_never_sends_a_request_head_is_closed() {
    let server =
        TestServer::start_with(settings(&["--header-read-timeout", "300ms"]), |backends| {
            backends
        })
        .await;
    let addr = server.base.trim_start_matches("http://").to_owned();
    for partial in [&b""[..], &b"GET /healthz HTTP/1.1\r\nHost: x\r\n"[..]] {
        let mut stream = TcpStream::connect(&addr).await.expect("connect");
        stream.write_all(partial).await.expect("write");
        let mut buffer = [0u8; 512];
        let read = tokio::time::timeout(WAIT, stream.read(&mut buffer))
            .await
            .expect("the server closes the connection in time");
        // Closed (0 bytes or a reset), possibly after a 408 answer.
        match read {
            Ok(0) | Err(_) => {}
            Ok(n) => {
                let text = String::from_utf8_lossy(&buffer[..n]);
                assert!(text.starts_with("HTTP/1.1 408"), "{text}");
            }
        }
    }
    // A prompt client is served as usual.
    let (status, _) = server.get_json("/healthz").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn each_authenticated_user_has_a_post_rate_limit_answered_429_with_retry_after() {
    use jsonwebtoken::{encode, get_current_timestamp, EncodingKey, Header};
    const SECRET: &str = "limits-test-secret-0123456789abcdef";
    let token = |sub: &str| {
        let now = get_current_timestamp();
        let claims = serde_json::json!({"sub": sub, "exp": now + 300});
        encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .expect("token")
    };
    let flags = [
        "--auth-mode",
        "jwt",
        "--auth-jwt-secret",
        SECRET,
        "--post-rate-limit-per-second",
        "1",
        "--post-rate-limit-burst",
        "3",
    ];
    let server = TestServer::start_with(settings(&flags), |backends| backends).await;
    let post = |sub: &'static str| {
        let request = server
            .http
            .post(format!("{}/chat/messages", server.base))
            .bearer_auth(token(sub))
            .json(&serde_json::json!({"content": "hi", "sender_id": sub, "receiver_id": "zoe"}));
        async move { request.send().await.expect("POST") }
    };
    for _ in 0..3 {
        assert_eq!(post("alice").await.status().as_u16(), 201);
    }
    let limited = post("alice").await;
    assert_eq!(limited.status().as_u16(), 429);
    let retry_after: u64 = limited
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After seconds");
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    let body: Value = limited.json().await.expect("JSON error");
    assert!(body["error"]
        .as_str()
        .is_some_and(|e| e.contains("rate limit")));
    // Bob is not slowed down by Alice, and reading history is not limited.
    assert_eq!(post("bob").await.status().as_u16(), 201);
    let stream = chatcore::stream_id::stream_id("alice", "zoe");
    let history = server
        .http
        .get(format!(
            "{}/chat/messages?stream_id={stream}&sender_id=alice&receiver_id=zoe",
            server.base
        ))
        .bearer_auth(token("alice"))
        .send()
        .await
        .expect("GET");
    assert_eq!(history.status().as_u16(), 200);
    let page: Value = history.json().await.expect("page");
    assert_eq!(
        page["messages"].as_array().map(Vec::len),
        Some(3),
        "the 429 stored nothing"
    );
}

#[tokio::test]
async fn a_session_past_its_max_age_is_closed_with_4002_and_resumes_with_since() {
    let server = TestServer::start_with(settings(&["--session-max-age", "400ms"]), |backends| {
        backends
    })
    .await;
    let mut socket = server.subscribe_chat("alice", "bob", None).await;
    let first = server.send("before expiry", "alice", "bob").await;
    assert_eq!(socket.next_json().await, first);
    assert_eq!(socket.next_close_code().await, Some(4002));
    // What was stored meanwhile comes back on the next session.
    let missed = server.send("while away", "alice", "bob").await;
    let since = first["message_id"].as_str().expect("id");
    let mut resumed = server.subscribe_chat("alice", "bob", Some(since)).await;
    assert_eq!(resumed.next_json().await, missed);
}
