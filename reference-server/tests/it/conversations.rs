//! Conversations end to end (CONTRACT §13, §14's `message` and `read` frames) on a served
//! `chat-server`: groups and their members, the conversation list with unread counts, read
//! receipts and socket protocol 2. The backends are the environment's: in memory by default;
//! `scripts/test.sh` reruns this file on SQLite, Redis, Kafka, MongoDB and the production path
//! (MongoDB → relay → Kafka → Redis).

use crate::common;

use std::time::Duration;

use common::{settings, Event, TestServer, Ws, WAIT};
use serde_json::{json, Value};

/// Ids unique to one test run, so runs sharing a database never meet.
fn users(names: &[&str]) -> Vec<String> {
    let unique = chatcore::dedup::ClaimToken::unique();
    let tag = &unique.as_str()[..8];
    names.iter().map(|n| format!("{n}-{tag}")).collect()
}

async fn create_group(server: &TestServer, members: &[String]) -> String {
    let response = server
        .post_json(
            "/conversations",
            &json!({"created_by": members[0], "members": members, "title": "the group"}),
        )
        .await;
    assert_eq!(response.status(), 201, "group created");
    let group: Value = response.json().await.expect("json");
    assert_eq!(group["kind"], "group");
    assert_eq!(group["title"], "the group");
    let mut sorted = members.to_vec();
    sorted.sort();
    assert_eq!(group["members"], json!(sorted));
    assert!(group["created_at"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
    group["stream_id"].as_str().expect("stream_id").to_owned()
}

async fn post_to_group(server: &TestServer, group: &str, sender: &str, content: &str) -> Value {
    let response = server
        .post_json(
            "/chat/messages",
            &json!({"content": content, "sender_id": sender, "stream_id": group}),
        )
        .await;
    assert_eq!(response.status(), 201, "member's post stored");
    let message: Value = response.json().await.expect("json");
    assert!(message.get("receiver_id").is_none(), "{message}");
    message
}

async fn subscribe_group(server: &TestServer, group: &str, user: &str, protocol: u8) -> Ws {
    let path = format!("/chat/subscribe?stream_id={group}&user_id={user}&protocol={protocol}");
    server.try_connect(&path).await.expect("member subscribes")
}

async fn inbox_count(server: &TestServer, user: &str) -> usize {
    let (status, body) = server
        .get_json(&format!("/notifications?user_id={user}&limit=500"))
        .await;
    assert_eq!(status, 200, "{body}");
    body["notifications"].as_array().map_or(0, Vec::len)
}

/// Waits until `condition` holds of `user`'s inbox size, returning the size.
async fn await_inbox(server: &TestServer, user: &str, n: usize) {
    let deadline = tokio::time::Instant::now() + WAIT * 3;
    loop {
        let count = inbox_count(server, user).await;
        if count >= n || tokio::time::Instant::now() > deadline {
            assert_eq!(count, n, "{user}'s chat notifications");
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn list(server: &TestServer, user: &str) -> Vec<Value> {
    let (status, body) = server
        .get_json(&format!("/conversations?user_id={user}"))
        .await;
    assert_eq!(status, 200, "{body}");
    body["conversations"].as_array().cloned().expect("array")
}

/// Waits until `user`'s list satisfies `done` (the view is kept from the change feed).
async fn await_list(
    server: &TestServer,
    user: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + WAIT * 3;
    loop {
        let entries = list(server, user).await;
        if done(&entries) {
            return entries;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "list never settled: {entries:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn last_content(entry: &Value) -> &str {
    entry["last_message"]["content"]
        .as_str()
        .unwrap_or_default()
}

async fn read(server: &TestServer, stream: &str, user: &str, message_id: &str) -> (u16, Value) {
    let response = server
        .post_json(
            "/chat/read",
            &json!({"stream_id": stream, "user_id": user, "message_id": message_id}),
        )
        .await;
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_group_of_five_gets_every_message_once_in_order_and_notifies_the_other_four() {
    let server = TestServer::start().await;
    let members = users(&["g1", "g2", "g3", "g4", "g5"]);
    let group = create_group(&server, &members).await;
    let mut sockets = Vec::new();
    for (i, member) in members.iter().enumerate() {
        sockets
            .push(subscribe_group(&server, &group, member, if i % 2 == 0 { 1 } else { 2 }).await);
    }
    server.await_sessions(&server.chat_sockets, &group, 5).await;
    let mut posted = Vec::new();
    for i in 0..6 {
        let sender = &members[i % 5];
        posted.push(post_to_group(&server, &group, sender, &format!("hello {i}")).await);
    }
    let end = post_to_group(&server, &group, &members[0], "end").await;
    for (i, socket) in sockets.iter_mut().enumerate() {
        for (n, expected) in posted.iter().chain([&end]).enumerate() {
            let frame = socket.next_json().await;
            let message = match i % 2 {
                0 => frame.clone(),
                _ => {
                    assert_eq!(frame["type"], "message", "protocol 2: {frame}");
                    frame["message"].clone()
                }
            };
            assert_eq!(
                message, *expected,
                "member {i}, message {n}: once, in order"
            );
        }
    }
    // Every member but the sender: 4 chat notifications per message.
    for (i, member) in members.iter().enumerate() {
        let own = posted
            .iter()
            .chain([&end])
            .filter(|m| m["sender_id"] == *member)
            .count();
        await_inbox(&server, member, 7 - own).await;
        let _ = i;
    }
    let (status, history) = server
        .get_json(&format!(
            "/chat/messages?stream_id={group}&user_id={}",
            members[3]
        ))
        .await;
    assert_eq!(status, 200, "{history}");
    assert_eq!(history["messages"].as_array().map(Vec::len), Some(7));
    server.stop().await.expect("stops");
}

#[tokio::test]
async fn non_members_are_refused_and_bad_groups_are_400() {
    let server = TestServer::start().await;
    let [a, b, c, outsider] =
        <[String; 4]>::try_from(users(&["na", "nb", "nc", "out"])).expect("4");
    let group = create_group(&server, &[a.clone(), b.clone(), c.clone()]).await;
    let post = server
        .post_json(
            "/chat/messages",
            &json!({"content": "hi", "sender_id": outsider, "stream_id": group}),
        )
        .await;
    assert_eq!(post.status(), 403, "a non-member's post");
    let (status, _) = server
        .get_json(&format!(
            "/chat/messages?stream_id={group}&user_id={outsider}"
        ))
        .await;
    assert_eq!(status, 403, "a non-member's history");
    let (status, _) = server
        .get_json(&format!("/chat/messages?stream_id={group}"))
        .await;
    assert_eq!(status, 400, "a group's history names its reader");
    let refused = server
        .try_connect(&format!(
            "/chat/subscribe?stream_id={group}&user_id={outsider}"
        ))
        .await
        .err();
    assert_eq!(refused, Some(403), "a non-member's subscription");
    let (status, _) = server
        .get_json(&format!("/conversations/{group}?user_id={outsider}"))
        .await;
    assert_eq!(status, 403, "a non-member reads no group");
    let (status, body) = server
        .get_json(&format!("/conversations/{group}?user_id={b}"))
        .await;
    assert_eq!((status, body["kind"].as_str()), (200, Some("group")));

    let too_many: Vec<String> = (0..257).map(|i| format!("{a}-{i}")).collect();
    for (why, body) in [
        ("one member", json!({"created_by": a, "members": [a]})),
        ("duplicates", json!({"created_by": a, "members": [a, b, b]})),
        (
            "creator not a member",
            json!({"created_by": outsider, "members": [a, b]}),
        ),
        (
            "control character",
            json!({"created_by": a, "members": [a, "x\u{7}"]}),
        ),
        ("empty id", json!({"created_by": a, "members": [a, ""]})),
        (
            "over MAX_GROUP_MEMBERS",
            json!({"created_by": too_many[0], "members": too_many}),
        ),
        ("not JSON members", json!({"created_by": a, "members": "b"})),
    ] {
        let response = server.post_json("/conversations", &body).await;
        assert_eq!(response.status(), 400, "{why}");
        let error: Value = response.json().await.expect("json");
        assert!(
            error["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{why}: {error}"
        );
    }
    let unknown = server
        .post_json(
            "/chat/messages",
            &json!({"content": "hi", "sender_id": a, "stream_id": "0123456789abcdef"}),
        )
        .await;
    assert_eq!(unknown.status(), 404, "a message to an unknown group");
    let malformed = server
        .post_json(
            "/chat/messages",
            &json!({"content": "hi", "sender_id": a, "stream_id": "nope"}),
        )
        .await;
    assert_eq!(malformed.status(), 400);
    let by_outsider = server
        .post_json(
            &format!("/conversations/{group}/members"),
            &json!({"by": outsider, "add": [outsider]}),
        )
        .await;
    assert_eq!(by_outsider.status(), 403, "only members change members");
    let nothing = server
        .post_json(
            &format!("/conversations/{group}/members"),
            &json!({"by": a}),
        )
        .await;
    assert_eq!(nothing.status(), 400, "nothing to change");
    let (status, body) = server
        .get_json(&format!("/conversations/{group}?user_id={a}"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        body["members"].as_array().map(Vec::len),
        Some(3),
        "refusals changed nothing"
    );
    server.stop().await.expect("stops");
}

#[tokio::test]
async fn a_removed_member_stops_receiving_and_their_socket_is_closed_with_4003() {
    let server = TestServer::start().await;
    let [a, b, c] = <[String; 3]>::try_from(users(&["ra", "rb", "rc"])).expect("3");
    let group = create_group(&server, &[a.clone(), b.clone(), c.clone()]).await;
    let mut socket_a = subscribe_group(&server, &group, &a, 1).await;
    let mut socket_c = subscribe_group(&server, &group, &c, 1).await;
    server.await_sessions(&server.chat_sockets, &group, 2).await;
    let first = post_to_group(&server, &group, &b, "before").await;
    assert_eq!(socket_c.next_json().await, first);
    assert_eq!(socket_a.next_json().await, first);
    await_inbox(&server, &c, 1).await;

    let response = server
        .post_json(
            &format!("/conversations/{group}/members"),
            &json!({"by": a, "remove": [c]}),
        )
        .await;
    assert_eq!(response.status(), 200);
    let changed: Value = response.json().await.expect("json");
    assert_eq!(
        changed["members"],
        json!([&a, &b].iter().collect::<std::collections::BTreeSet<_>>())
    );
    assert_eq!(
        socket_c.next_close_code().await,
        Some(4003),
        "removed member's socket closed"
    );

    let after = post_to_group(&server, &group, &b, "after").await;
    assert_eq!(socket_a.next_json().await, after, "members still receive");
    await_inbox(&server, &a, 2).await;
    // Give the notification for `after` every chance to reach c, then check it did not.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        inbox_count(&server, &c).await,
        1,
        "no notification after removal"
    );
    let again = server
        .try_connect(&format!("/chat/subscribe?stream_id={group}&user_id={c}"))
        .await
        .err();
    assert_eq!(again, Some(403), "a removed member cannot subscribe again");
    let post = server
        .post_json(
            "/chat/messages",
            &json!({"content": "x", "sender_id": c, "stream_id": group}),
        )
        .await;
    assert_eq!(post.status(), 403, "nor post");
    server.stop().await.expect("stops");
}

#[tokio::test]
async fn the_conversation_list_orders_by_activity_and_counts_unread_with_monotonic_receipts() {
    let server = TestServer::start().await;
    let [a, b, c, d, e] =
        <[String; 5]>::try_from(users(&["la", "lb", "lc", "ld", "le"])).expect("5");
    let group = create_group(&server, &[d.clone(), a.clone(), e.clone()]).await;
    let from_b = server.send("from b", &b, &a).await;
    let in_group = post_to_group(&server, &group, &d, "from d").await;
    let from_c = server.send("from c", &c, &a).await;
    let entries = await_list(&server, &a, |l| {
        l.len() == 3 && l.iter().all(|e| !e["last_message"].is_null())
    })
    .await;
    let order: Vec<&str> = entries.iter().map(last_content).collect();
    assert_eq!(
        order,
        ["from c", "from d", "from b"],
        "latest activity first"
    );
    assert_eq!(entries[0]["kind"], "direct");
    assert_eq!(entries[1]["kind"], "group");
    assert_eq!(entries[1]["title"], "the group");
    for entry in &entries {
        assert_eq!(entry["unread"], 1, "{entry}");
        assert!(entry["last_read_message_id"].is_null());
    }
    assert_eq!(
        entries[0]["members"],
        json!([&a, &c].iter().collect::<std::collections::BTreeSet<_>>())
    );

    let group_id = in_group["message_id"].as_str().expect("id");
    let (status, state) = read(&server, &group, &a, group_id).await;
    assert_eq!(status, 200, "{state}");
    assert_eq!(
        (
            state["unread"].as_u64(),
            state["last_read_message_id"].as_str()
        ),
        (Some(0), Some(group_id))
    );
    let stream_b = from_b["stream_id"].as_str().expect("stream").to_owned();
    let second = server.send("b again", &b, &a).await;
    let third = server.send("b thrice", &b, &a).await;
    let third_id = third["message_id"].as_str().expect("id");
    let (_, state) = read(
        &server,
        &stream_b,
        &a,
        second["message_id"].as_str().expect("id"),
    )
    .await;
    assert_eq!(state["unread"], 1, "third still unread");
    let (_, state) = read(&server, &stream_b, &a, third_id).await;
    assert_eq!(
        (
            state["unread"].as_u64(),
            state["last_read_message_id"].as_str()
        ),
        (Some(0), Some(third_id))
    );
    let (status, state) = read(
        &server,
        &stream_b,
        &a,
        from_b["message_id"].as_str().expect("id"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        state["last_read_message_id"], third_id,
        "an older receipt does not move the marker back"
    );
    // The reader's own message is not unread for them, and is for the other side.
    server.send("a answers", &a, &b).await;
    let entries = await_list(&server, &a, |l| {
        l.first().is_some_and(|e| last_content(e) == "a answers")
    })
    .await;
    assert_eq!(entries[0]["unread"], 0, "{entries:#?}");
    assert_eq!(entries[0]["last_read_message_id"], third_id);
    let by_stream = |id: &str| {
        entries
            .iter()
            .find(|e| e["stream_id"] == id)
            .cloned()
            .expect("listed")
    };
    assert_eq!(by_stream(&group)["unread"], 0);
    assert_eq!(
        by_stream(from_c["stream_id"].as_str().expect("s"))["unread"],
        1
    );
    let b_list = await_list(&server, &b, |l| {
        l.first().is_some_and(|e| last_content(e) == "a answers")
    })
    .await;
    assert_eq!(b_list[0]["unread"], 1, "b has a's answer unread");
    // A receipt for a message that is not in the conversation, or by an outsider.
    let (status, _) = read(
        &server,
        &stream_b,
        &a,
        from_c["message_id"].as_str().expect("id"),
    )
    .await;
    assert_eq!(status, 404, "a message of another conversation");
    let (status, _) = read(&server, &group, &b, group_id).await;
    assert_eq!(status, 403, "b is not in the group");
    let (status, _) = read(&server, &stream_b, &a, "not-an-id").await;
    assert!(status == 400 || status == 404, "a malformed id: {status}");
    let limited = server
        .get_json(&format!("/conversations?user_id={a}&limit=1"))
        .await
        .1;
    assert_eq!(limited["conversations"].as_array().map(Vec::len), Some(1));
    server.stop().await.expect("stops");
}

#[tokio::test]
async fn read_frames_reach_protocol_2_sockets_and_protocol_1_sockets_keep_the_seed_frames() {
    let server = TestServer::start().await;
    let [a, b] = <[String; 2]>::try_from(users(&["pa", "pb"])).expect("2");
    let stream = chatcore::stream_id::stream_id(&a, &b);
    let mut a_bare = server
        .try_connect(&direct_path(&a, &b, ""))
        .await
        .expect("open");
    let mut a_typed = server
        .try_connect(&direct_path(&a, &b, "&protocol=2"))
        .await
        .expect("open");
    let mut b_typed = server
        .try_connect(&direct_path(&b, &a, "&protocol=2"))
        .await
        .expect("open");
    server
        .await_sessions(&server.chat_sockets, &stream, 3)
        .await;
    let bad = server
        .try_connect(&direct_path(&a, &b, "&protocol=3"))
        .await
        .err();
    assert_eq!(bad, Some(400), "unknown protocol");

    let message = server.send("hi", &a, &b).await;
    assert_eq!(
        a_bare.next_json().await,
        message,
        "protocol 1: the bare message"
    );
    assert_eq!(
        a_typed.next_json().await,
        json!({"type": "message", "message": message})
    );
    assert_eq!(
        b_typed.next_json().await,
        json!({"type": "message", "message": message})
    );
    let id = message["message_id"].as_str().expect("id");
    let (status, state) = read(&server, &stream, &b, id).await;
    assert_eq!((status, state["unread"].as_u64()), (200, Some(0)));
    let frame = a_typed.next_json().await;
    assert_eq!(frame["type"], "read");
    assert_eq!(
        (
            frame["stream_id"].as_str(),
            frame["user_id"].as_str(),
            frame["message_id"].as_str()
        ),
        (Some(stream.as_str()), Some(b.as_str()), Some(id))
    );
    assert!(
        frame["read_at"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{frame}"
    );
    // The same receipt again moves nothing and sends nothing; the next frame is the next message.
    let (status, _) = read(&server, &stream, &b, id).await;
    assert_eq!(status, 200);
    let next = server.send("next", &b, &a).await;
    assert_eq!(
        a_bare.next_json().await,
        next,
        "protocol 1 gets no read frame"
    );
    assert_eq!(
        a_typed.next_json().await["message"],
        next,
        "no second read frame"
    );
    match b_typed.next_event().await {
        Event::Json(frame) => assert_eq!(
            frame["type"], "read",
            "the reader's own sessions see it too"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(b_typed.next_json().await["message"], next);
    server.stop().await.expect("stops");
}

#[tokio::test]
async fn the_list_is_exact_after_the_node_restarts_mid_stream_on_sqlite() {
    // Not a `temp_data_dir()`: the first stop would remove it.
    let unique = chatcore::dedup::ClaimToken::unique();
    let data_dir = std::env::temp_dir().join(format!("chatcore-restart-{}", unique.as_str()));
    let dir = data_dir.to_string_lossy().into_owned();
    // One topic and group for both runs when the environment names Kafka.
    let topic = format!("e2e-restart-{}", unique.as_str());
    let flags = [
        "--store",
        "sqlite",
        "--data-dir",
        dir.as_str(),
        "--kafka-topic",
        topic.as_str(),
        "--kafka-group",
        topic.as_str(),
    ];
    // SQLite whatever the environment says of MongoDB.
    let sqlite = || {
        let mut settings = settings(&flags);
        settings.mongo.uri = None;
        settings
    };
    let [a, b] = <[String; 2]>::try_from(users(&["sa", "sb"])).expect("2");
    let server = TestServer::start_with(sqlite(), |builder| builder).await;
    let mut last = Value::Null;
    for i in 0..40 {
        last = server.send(&format!("m{i}"), &a, &b).await;
    }
    // Stopped without waiting for the view: its consumer resumes where it was, and events it
    // had applied but not yet acknowledged come again.
    server.stop().await.expect("stops");
    let server = TestServer::start_with(sqlite(), |builder| builder).await;
    for i in 40..50 {
        last = server.send(&format!("m{i}"), &a, &b).await;
    }
    let entries = await_list(&server, &b, |l| {
        l.first().is_some_and(|e| e["last_message"] == last)
    })
    .await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["unread"], 50, "counted once each");
    let (status, state) = read(
        &server,
        entries[0]["stream_id"].as_str().expect("s"),
        &b,
        last["message_id"].as_str().expect("id"),
    )
    .await;
    assert_eq!((status, state["unread"].as_u64()), (200, Some(0)));
    server.stop().await.expect("stops");
    let _ = std::fs::remove_dir_all(data_dir);
}

#[tokio::test]
async fn group_members_are_notified_by_the_notification_consumer_of_separate_and_segregated() {
    for strategy in ["separate", "segregated"] {
        let flags = [
            "--notification-strategy",
            strategy,
            "--notification-throttle-ttl",
            "1h",
        ];
        let server = TestServer::start_with(settings(&flags), |builder| builder).await;
        let members = users(&["sa", "sb", "sc"]);
        let group = create_group(&server, &members).await;
        let first = post_to_group(&server, &group, &members[0], "one").await;
        post_to_group(&server, &group, &members[0], "two").await;
        // Throttled per conversation and receiver: one notification each for the two others.
        for member in &members[1..] {
            await_inbox(&server, member, 1).await;
            let (_, body) = server
                .get_json(&format!("/notifications?user_id={member}"))
                .await;
            assert_eq!(body["notifications"][0]["payload"], first, "{strategy}");
        }
        assert_eq!(inbox_count(&server, &members[0]).await, 0, "not the sender");
        server.stop().await.expect("stops");
    }
}

#[tokio::test]
async fn typing_reaches_the_other_protocol_2_sockets_only_as_the_sessions_user_within_its_rate() {
    use futures::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let server = TestServer::start().await;
    let [a, b] = <[String; 2]>::try_from(users(&["ta", "tb"])).expect("2");
    let stream = chatcore::stream_id::stream_id(&a, &b);
    let mut a_typed = server
        .try_connect(&direct_path(&a, &b, "&protocol=2"))
        .await
        .expect("open");
    let mut b_typed = server
        .try_connect(&direct_path(&b, &a, "&protocol=2"))
        .await
        .expect("open");
    let mut b_bare = server
        .try_connect(&direct_path(&b, &a, ""))
        .await
        .expect("open");
    server
        .await_sessions(&server.chat_sockets, &stream, 3)
        .await;
    // Bad frames first: ignored, the session stays open, nothing reaches anyone.
    for bad in [
        "not json",
        r#"{"type":"typing","state":"maybe"}"#,
        r#"{"type":"message","content":"x"}"#,
    ] {
        send_text(&mut a_typed, bad).await;
    }
    a_typed
        .0
        .send(Message::Binary(vec![1, 2, 3].into()))
        .await
        .expect("send");
    // The client lies about who it is: the frame carries the session's user.
    send_text(
        &mut a_typed,
        r#"{"type":"typing","state":"start","user_id":"mallory"}"#,
    )
    .await;
    let frame = b_typed.next_json().await;
    assert_eq!(
        frame,
        json!({"type": "typing", "stream_id": stream, "user_id": a, "state": "start"})
    );
    // 20 more within a second: at most 2 pass (one already did).
    for _ in 0..20 {
        send_text(&mut a_typed, r#"{"type":"typing","state":"stop"}"#).await;
    }
    let message = server.send("after typing", &a, &b).await;
    let mut typing = 0;
    loop {
        let frame = b_typed.next_json().await;
        match frame["type"].as_str() {
            Some("typing") => typing += 1,
            Some("message") => {
                assert_eq!(frame["message"], message);
                break;
            }
            other => panic!("unexpected frame {other:?}: {frame}"),
        }
    }
    assert!(
        typing <= 1,
        "at most 2 typing frames per second, {} relayed",
        typing + 1
    );
    assert_eq!(
        b_bare.next_json().await,
        message,
        "protocol 1 gets no typing frame"
    );
    assert_eq!(
        a_typed.next_json().await["message"],
        message,
        "not its own typing, still open"
    );
    let relayed = server
        .metrics
        .client_frame_count(chatcore::metrics::ClientFrameOutcome::Relayed);
    let throttled = server
        .metrics
        .client_frame_count(chatcore::metrics::ClientFrameOutcome::Throttled);
    let ignored = server
        .metrics
        .client_frame_count(chatcore::metrics::ClientFrameOutcome::Ignored);
    assert_eq!((relayed as usize, ignored), (typing + 1, 4), "counted");
    assert_eq!(relayed + throttled, 21);
    server.stop().await.expect("stops");
}

/// The subscription of `user` to its direct conversation with `other`, with `protocol` (e.g.
/// `&protocol=2`, or empty).
fn direct_path(user: &str, other: &str, protocol: &str) -> String {
    let stream = chatcore::stream_id::stream_id(user, other);
    format!("/chat/subscribe?stream_id={stream}&sender_id={user}&receiver_id={other}{protocol}")
}

async fn send_text(ws: &mut Ws, text: &str) {
    use futures::SinkExt;
    let message = tokio_tungstenite::tungstenite::Message::Text(text.to_owned().into());
    ws.0.send(message).await.expect("send");
}
