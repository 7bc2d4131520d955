//! End-to-end tests of the all-in-one `chat-server` on its embedded backends, through real HTTP
//! and websocket clients. Every POST reaches the sockets through the store's change feed and the
//! pipeline, as in production.

use crate::common;

use chatcore::stream_id::stream_id;
use common::{settings, TestServer};
use futures::future::join_all;
use serde_json::{json, Value};

fn ids(messages: &[Value]) -> Vec<String> {
    messages
        .iter()
        .map(|m| m["message_id"].as_str().expect("message_id").to_owned())
        .collect()
}

#[tokio::test]
async fn participants_and_a_second_device_receive_each_message_once_in_order() {
    let server = TestServer::start().await;
    let mut alice = server.subscribe_chat("alice", "bob", None).await;
    let mut bob_phone = server.subscribe_chat("bob", "alice", None).await;
    let mut bob_laptop = server.subscribe_chat("alice", "bob", None).await;
    let mut bob_notifications = server.subscribe_notifications("bob").await;
    let mut alice_notifications = server.subscribe_notifications("alice").await;

    let mut sent = Vec::new();
    for i in 0..6 {
        let (from, to) = if i % 2 == 0 {
            ("alice", "bob")
        } else {
            ("bob", "alice")
        };
        sent.push(server.send(&format!("message {i}"), from, to).await);
    }
    let sentinel = server.send("sentinel", "alice", "bob").await;

    for socket in [&mut alice, &mut bob_phone, &mut bob_laptop] {
        for expected in &sent {
            assert_eq!(
                &socket.next_json().await,
                expected,
                "stored message, in order"
            );
        }
        assert_eq!(
            socket.next_json().await,
            sentinel,
            "no duplicate before the sentinel"
        );
    }
    for (socket, receiver) in [
        (&mut bob_notifications, "bob"),
        (&mut alice_notifications, "alice"),
    ] {
        let expected: Vec<&Value> = sent
            .iter()
            .chain([&sentinel])
            .filter(|m| m["receiver_id"] == receiver)
            .collect();
        for message in expected {
            let envelope = socket.next_json().await;
            assert_eq!(envelope["notification_type"], "chat_notification");
            assert_eq!(&envelope["payload"], message);
            assert!(envelope["timestamp"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z')));
        }
    }
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn every_invalid_post_gets_400_and_stores_nothing() {
    let server = TestServer::start().await;
    let mut socket = server.subscribe_chat("alice", "bob", None).await;
    let mismatched = json!({"content": "x", "sender_id": "alice", "receiver_id": "bob", "stream_id": stream_id("alice", "carol")});
    let cases = [
        json!({"content": "", "sender_id": "alice", "receiver_id": "bob"}),
        json!({"sender_id": "alice", "receiver_id": "bob"}),
        json!({"content": "x", "receiver_id": "bob"}),
        json!({"content": "x", "sender_id": "", "receiver_id": "bob"}),
        json!({"content": "x", "sender_id": "alice"}),
        json!({"content": "x", "sender_id": "alice", "receiver_id": ""}),
        json!({"content": 5, "sender_id": "alice", "receiver_id": "bob"}),
        json!({"content": "x", "sender_id": "al\u{0}ice", "receiver_id": "bob"}),
        json!({"content": "x", "sender_id": "a".repeat(257), "receiver_id": "bob"}),
        json!(["not", "an", "object"]),
        mismatched,
    ];
    for body in &cases {
        let response = server.post_json("/chat/messages", body).await;
        assert_eq!(response.status(), 400, "{body}");
        let error: Value = response.json().await.expect("JSON error");
        assert!(
            error["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{error}"
        );
    }
    for raw in ["{not json", "", "{\"content\": \"x\","] {
        let response = server
            .http
            .post(format!("{}/chat/messages", server.base))
            .header("content-type", "application/json")
            .body(raw)
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 400, "{raw:?}");
        let error: Value = response.json().await.expect("JSON error");
        assert!(error["error"].is_string());
    }
    assert!(
        server.history("alice", "bob").await.is_empty(),
        "nothing stored"
    );
    assert!(
        server.history("alice", "carol").await.is_empty(),
        "nothing stored"
    );
    let sentinel = server.send("sentinel", "alice", "bob").await;
    assert_eq!(
        socket.next_json().await,
        sentinel,
        "nothing was delivered before"
    );
}

#[tokio::test]
async fn ten_kb_unicode_and_whitespace_round_trip_exactly_and_oversize_is_413() {
    let server = TestServer::start().await;
    let mut socket = server.subscribe_chat("alice", "bob", None).await;
    let ten_kb: String = (0..10 * 1024)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let contents = [
        ten_kb,
        "héllo 👋 世界 \u{200d}\u{1F469}\u{200D}\u{1F4BB} \"quoted\" \\ \u{1}".to_owned(),
        "   \t\n  ".to_owned(),
        "x".repeat(65_536),
    ];
    for content in &contents {
        let stored = server.send(content, "alice", "bob").await;
        assert_eq!(stored["content"].as_str(), Some(content.as_str()));
        assert_eq!(socket.next_json().await, stored);
    }
    let history = server.history("alice", "bob").await;
    let stored: Vec<&str> = history
        .iter()
        .filter_map(|m| m["content"].as_str())
        .collect();
    assert_eq!(
        stored,
        contents.iter().map(String::as_str).collect::<Vec<_>>()
    );

    let over = json!({"content": "x".repeat(65_537), "sender_id": "alice", "receiver_id": "bob"});
    let response = server.post_json("/chat/messages", &over).await;
    assert_eq!(response.status(), 413);
    let huge =
        json!({"content": "x".repeat(2_000_000), "sender_id": "alice", "receiver_id": "bob"});
    let response = server.post_json("/chat/messages", &huge).await;
    assert_eq!(response.status(), 413);
    let error: Value = response.json().await.expect("JSON error");
    assert!(error["error"].is_string());
    assert_eq!(server.history("alice", "bob").await.len(), contents.len());
}

#[tokio::test]
async fn history_pages_with_since_before_and_limit() {
    let server = TestServer::start().await;
    let mut sent = Vec::new();
    for i in 0..7 {
        sent.push(server.send(&format!("m{i}"), "alice", "bob").await);
    }
    let id = |i: usize| sent[i]["message_id"].as_str().expect("id").to_owned();
    let stream = stream_id("alice", "bob");
    let page = |query: String| {
        let server = &server;
        let url = format!("/chat/messages?stream_id={stream}{query}");
        async move {
            let (status, body) = server.get_json(&url).await;
            assert_eq!(status, 200, "{url}: {body}");
            body["messages"].as_array().cloned().expect("messages")
        }
    };
    assert_eq!(page(String::new()).await, sent);
    assert_eq!(ids(&page("&limit=3".into()).await), [id(0), id(1), id(2)]);
    assert_eq!(
        ids(&page(format!("&since={}", id(2))).await),
        [id(3), id(4), id(5), id(6)]
    );
    assert_eq!(
        ids(&page(format!("&since={}&limit=2", id(2))).await),
        [id(3), id(4)]
    );
    assert_eq!(
        ids(&page(format!("&before={}&limit=2", id(5))).await),
        [id(3), id(4)]
    );
    assert_eq!(
        ids(&page(format!("&since={}&before={}", id(1), id(4))).await),
        [id(2), id(3)]
    );
    assert_eq!(
        page("&limit=1000".into()).await.len(),
        7,
        "limit is capped, not refused"
    );

    for bad in [
        "/chat/messages".to_owned(),
        "/chat/messages?stream_id=".to_owned(),
        "/chat/messages?stream_id=not-a-stream".to_owned(),
        format!("/chat/messages?stream_id={stream}&limit=0"),
        format!("/chat/messages?stream_id={stream}&limit=abc"),
    ] {
        let (status, body) = server.get_json(&bad).await;
        assert_eq!(status, 400, "{bad}");
        assert!(body["error"].is_string(), "{bad}: {body}");
    }
}

#[tokio::test]
async fn subscribing_with_since_replays_then_goes_live_without_gap_or_duplicate() {
    let server = TestServer::start().await;
    let mut early = Vec::new();
    for i in 0..5 {
        early.push(server.send(&format!("early {i}"), "alice", "bob").await);
    }
    let since = early[1]["message_id"].as_str().expect("id").to_owned();
    // Posts keep arriving while the client reconnects.
    let poster = {
        let base = server.base.clone();
        let http = server.http.clone();
        tokio::spawn(async move {
            for i in 0..40 {
                let response = http
                    .post(format!("{base}/chat/messages"))
                    .json(&json!({"content": format!("live {i}"), "sender_id": "bob", "receiver_id": "alice"}))
                    .send()
                    .await
                    .expect("request");
                assert_eq!(response.status(), 201);
            }
        })
    };
    let mut socket = server.subscribe_chat("bob", "alice", Some(&since)).await;
    poster.await.expect("poster");
    let sentinel = server.send("sentinel", "alice", "bob").await;

    let mut received = Vec::new();
    loop {
        let frame = socket.next_json().await;
        if frame == sentinel {
            break;
        }
        received.push(frame);
    }
    let history = server.history("alice", "bob").await;
    let position = history
        .iter()
        .position(|m| m["message_id"] == since.as_str())
        .expect("since in history");
    let expected = &history[position + 1..history.len() - 1];
    assert_eq!(
        ids(&received),
        ids(expected),
        "exactly the messages after `since`, in order"
    );
}

#[tokio::test]
async fn an_idempotency_key_stores_and_delivers_once() {
    let server = TestServer::start().await;
    let mut socket = server.subscribe_chat("alice", "bob", None).await;
    let post = |content: &'static str| {
        server
            .http
            .post(format!("{}/chat/messages", server.base))
            .header("Idempotency-Key", "client-retry-1")
            .json(&json!({"content": content, "sender_id": "alice", "receiver_id": "bob"}))
            .send()
    };
    let first = post("hello").await.expect("request");
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.expect("json");
    let repeat = post("hello").await.expect("request");
    assert_eq!(
        repeat.status(),
        200,
        "a repeat is answered, not stored again"
    );
    assert_eq!(repeat.json::<Value>().await.expect("json"), first);
    let sentinel = server.send("sentinel", "alice", "bob").await;
    assert_eq!(socket.next_json().await, first);
    assert_eq!(socket.next_json().await, sentinel, "delivered once");
    assert_eq!(
        ids(&server.history("alice", "bob").await),
        ids(&[first, sentinel])
    );
}

#[tokio::test]
async fn subscriptions_with_missing_or_mismatched_parameters_are_refused_before_the_upgrade() {
    let server = TestServer::start().await;
    let right = stream_id("alice", "bob");
    let wrong = stream_id("alice", "mallory");
    for query in [
        "/chat/subscribe?sender_id=alice&receiver_id=bob".to_owned(),
        format!("/chat/subscribe?stream_id={right}&receiver_id=bob"),
        format!("/chat/subscribe?stream_id={right}&sender_id=alice"),
        format!("/chat/subscribe?stream_id={wrong}&sender_id=alice&receiver_id=bob"),
        format!("/chat/subscribe-websocket?stream_id={wrong}&sender_id=alice&receiver_id=bob"),
        "/notifications/subscribe".to_owned(),
        "/notifications/subscribe?user_id=".to_owned(),
    ] {
        let url = format!("{}{query}", server.ws_base);
        match tokio_tungstenite::connect_async(url.as_str()).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 400, "{query}");
                let body = response.body().clone().unwrap_or_default();
                let error: Value = serde_json::from_slice(&body).expect("JSON error");
                assert!(error["error"].is_string(), "{query}");
            }
            other => panic!("{query}: expected a 400 refusal, got {other:?}"),
        }
    }
    let (status, body) = server
        .get_json(&format!(
            "/chat/subscribe?stream_id={right}&sender_id=alice&receiver_id=bob"
        ))
        .await;
    assert!(
        (400..500).contains(&status),
        "plain GET without upgrade: {status} {body}"
    );
    assert_eq!(server.chat_sockets_count(&right), 0);
}

#[tokio::test]
async fn two_hundred_concurrent_posts_arrive_complete_unduplicated_and_in_store_order() {
    let server = TestServer::start().await;
    let mut socket = server.subscribe_chat("alice", "bob", None).await;
    let posts = (0..200).map(|i| {
        let (from, to) = if i % 2 == 0 {
            ("alice", "bob")
        } else {
            ("bob", "alice")
        };
        let body =
            json!({"content": format!("concurrent {i}"), "sender_id": from, "receiver_id": to});
        let server = &server;
        async move { server.post_json("/chat/messages", &body).await }
    });
    let responses = join_all(posts).await;
    let mut posted = Vec::new();
    for response in responses {
        assert_eq!(response.status(), 201);
        posted.push(response.json::<Value>().await.expect("json"));
    }
    let mut received = Vec::new();
    for _ in 0..200 {
        received.push(socket.next_json().await);
    }
    let sentinel = server.send("sentinel", "alice", "bob").await;
    assert_eq!(socket.next_json().await, sentinel, "no extra frame");
    let history = server.history("alice", "bob").await;
    assert_eq!(ids(&received), ids(&history[..200]), "store order");
    let mut posted_ids = ids(&posted);
    posted_ids.sort();
    let mut received_ids = ids(&received);
    received_ids.sort();
    received_ids.dedup();
    assert_eq!(received_ids, posted_ids, "complete and unduplicated");
}

#[tokio::test]
async fn shutdown_closes_websockets_with_1001_and_returns() {
    let server = TestServer::start().await;
    let mut chat = server.subscribe_chat("alice", "bob", None).await;
    let mut notifications = server.subscribe_notifications("bob").await;
    let stopping = tokio::spawn(server.stop());
    assert_eq!(chat.next_close_code().await, Some(1001));
    assert_eq!(notifications.next_close_code().await, Some(1001));
    stopping.await.expect("join").expect("clean stop");
}

#[tokio::test]
async fn health_readiness_and_metrics_answer() {
    let server = TestServer::start().await;
    let mut socket = server.subscribe_chat("alice", "bob", None).await;
    assert_eq!(server.get_json("/healthz").await.0, 200);
    assert_eq!(
        server.get_json("/readyz").await,
        (200, json!({"status": "ready"}))
    );
    server.send("counted", "alice", "bob").await;
    socket.next_json().await;
    let metrics = server
        .http
        .get(format!("{}/metrics", server.base))
        .send()
        .await
        .expect("request")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("chatcore_messages_stored_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"chatcore_sockets{tier="chat"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"chatcore_deliveries_total{tier="chat",result="delivered"} 1"#),
        "{metrics}"
    );
    let (status, body) = server.get_json("/no/such/route").await;
    assert_eq!(status, 404);
    assert!(body["error"].is_string());
}

#[tokio::test]
async fn configuration_is_validated() {
    let bad = settings(&["--message-retry-multiplier", "0.5"]);
    assert!(reference_server::build_app(&bad).await.is_err());
}

#[tokio::test]
async fn the_server_pings_keeps_answering_clients_and_drops_silent_ones() {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;

    let server = TestServer::start_with(
        settings(&["--ping-interval", "100ms", "--pong-wait", "400ms"]),
        |backends| backends,
    )
    .await;
    let stream = stream_id("alice", "bob");
    let silent = server.subscribe_chat("alice", "bob", None).await;
    let mut lively = server.subscribe_chat("bob", "alice", None).await;
    server
        .await_sessions(&server.chat_sockets, &stream, 2)
        .await;

    // The lively client reads (and so answers pings) for well past PONG_WAIT.
    let mut pings = 0;
    let until = tokio::time::Instant::now() + std::time::Duration::from_millis(1200);
    while let Ok(Some(Ok(message))) = tokio::time::timeout_at(until, lively.0.next()).await {
        if matches!(message, Message::Ping(_)) {
            pings += 1;
        }
    }
    assert!(pings >= 3, "server pings every PING_INTERVAL, got {pings}");
    // The silent client never read, so never answered: it was dropped; the lively one stays.
    server
        .await_sessions(&server.chat_sockets, &stream, 1)
        .await;
    let message = server.send("still connected", "alice", "bob").await;
    assert_eq!(lively.next_json().await, message);
    drop(silent);
}

#[tokio::test]
async fn the_api_description_is_served_at_openapi_json_even_with_authentication_on() {
    let flags = [
        "--auth-mode",
        "jwt",
        "--auth-jwt-secret",
        "openapi-test-secret-0123456789abcdef",
    ];
    let server = TestServer::start_with(settings(&flags), |backends| backends).await;
    let (status, document) = server.get_json("/openapi.json").await;
    assert_eq!(status, 200);
    assert!(document["openapi"]
        .as_str()
        .is_some_and(|v| v.starts_with("3.")));
    assert!(document["paths"]["/chat/messages"]["post"].is_object());
    let (status, _) = server
        .get_json("/chat/messages?stream_id=0123456789abcdef")
        .await;
    assert_eq!(status, 401, "the API itself still needs a token");
}

#[tokio::test]
async fn a_post_accepts_its_conversation_as_the_routing_key_and_refuses_another() {
    let server = TestServer::start().await;
    let mut socket = server.subscribe_chat("alice", "bob", None).await;
    let body = json!({"content": "routed", "sender_id": "alice", "receiver_id": "bob"});
    let own = stream_id("alice", "bob");
    let other = stream_id("alice", "carol");
    let post = |query: String, header: Option<&str>| {
        let mut request = server
            .http
            .post(format!("{}/chat/messages{query}", server.base))
            .json(&body);
        if let Some(header) = header {
            request = request.header("x-routing-key", header);
        }
        request.send()
    };
    for (query, header) in [
        (format!("?stream_id={other}"), None),
        (String::new(), Some(other.as_str())),
        (format!("?stream_id={own}"), Some(other.as_str())),
    ] {
        let response = post(query, header).await.expect("request");
        assert_eq!(response.status(), 400);
        let error: Value = response.json().await.expect("json");
        assert!(
            error["error"]
                .as_str()
                .is_some_and(|e| e.contains("does not match")),
            "{error}"
        );
    }
    let routed = post(format!("?stream_id={own}"), Some(own.as_str()))
        .await
        .expect("request");
    assert_eq!(routed.status(), 201);
    let stored: Value = routed.json().await.expect("json");
    assert_eq!(
        socket.next_json().await,
        stored,
        "only the matching POST is stored"
    );
    assert_eq!(server.history("alice", "bob").await, [stored]);
    server.stop().await.expect("clean stop");
}
