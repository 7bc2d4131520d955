//! The notification inbox end to end (CONTRACT §12) on a served `chat-server`: what reaches the
//! notification tier while a user is offline is kept, paged, counted, marked read, and replayed
//! on a socket opened with `since=`. The backends are the environment's: in memory by default,
//! and `scripts/test.sh` reruns this file on Redis, Kafka, MongoDB and the production path
//! (MongoDB → relay → Kafka → Redis), where commerce notifications come from documents inserted
//! into MongoDB's `purchases`, `payments` and `shipments` collections.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chatcore::forward::{Delivery, DeliveryReport, ForwardError, Forwarder};
use common::{settings, TestServer, Ws, WAIT};
use futures::StreamExt;
use jsonwebtoken::{encode, get_current_timestamp, EncodingKey, Header};
use mongodb::bson::{doc, DateTime as BsonDateTime, Document};
use reference_server::Settings;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

async fn inbox(server: &TestServer, user: &str, query: &str) -> Vec<Value> {
    let limit = if query.contains("limit=") {
        ""
    } else {
        "&limit=500"
    };
    let (status, body) = server
        .get_json(&format!("/notifications?user_id={user}{limit}{query}"))
        .await;
    assert_eq!(status, 200, "{body}");
    body["notifications"].as_array().cloned().expect("array")
}

/// Waits until `user`'s inbox holds `n` entries and returns them.
async fn await_inbox(server: &TestServer, user: &str, n: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + WAIT * 3;
    loop {
        let entries = inbox(server, user, "").await;
        if entries.len() >= n || tokio::time::Instant::now() > deadline {
            assert_eq!(entries.len(), n, "{entries:#?}");
            return entries;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn unread(server: &TestServer, user: &str) -> u64 {
    let (status, body) = server
        .get_json(&format!("/notifications/unread-count?user_id={user}"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user_id"], user);
    body["unread"].as_u64().expect("count")
}

async fn push(
    server: &TestServer,
    route: &str,
    user: &str,
    body: &Value,
    key: Option<&str>,
) -> u16 {
    let mut request = server
        .http
        .post(format!(
            "{}/notifications/{route}?user_id={user}",
            server.base
        ))
        .json(body);
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    request.send().await.expect("push").status().as_u16()
}

fn purchase(buyer: &str, product: &str) -> Value {
    json!({"order_id": "o-1", "buyer_id": buyer, "shop_owner_id": "shop-1",
           "product_name": product, "amount": 25.5, "currency": "EUR", "status": "completed",
           "purchased_at": "2026-11-01T10:00:00.000Z"})
}

fn payment() -> Value {
    json!({"order_id": "o-2", "amount": 10.0, "currency": "EUR",
           "due_date": "2026-11-20T00:00:00.000Z", "days_overdue": 7, "message": "please pay"})
}

fn shipment() -> Value {
    json!({"order_id": "o-3", "tracking_number": "TRK1", "status": "in_transit",
           "location": "Lyon", "estimated_delivery": "2026-11-30T12:00:00.000Z",
           "updated_at": "2026-11-27T08:00:00.000Z"})
}

/// The MongoDB database of a server started with `settings`, when MONGO_URI is configured.
async fn mongo_database(settings: &Settings) -> Option<mongodb::Database> {
    let uri = Settings::present(&settings.mongo.uri)?;
    let client = mongodb::Client::with_uri_str(uri).await.expect("client");
    Some(client.database(&settings.mongo.database))
}

fn date(text: &str) -> BsonDateTime {
    BsonDateTime::parse_rfc3339_str(text).expect("date")
}

/// Sends `user` a purchase, a payment reminder and a shipping update: as commerce documents in
/// MongoDB when the server reads its collections, else through the tier's push routes.
async fn commerce_for(server: &TestServer, database: Option<&mongodb::Database>, user: &str) {
    let Some(database) = database else {
        assert_eq!(
            push(
                server,
                "purchase",
                user,
                &purchase(user, "Lamp"),
                Some("p-1")
            )
            .await,
            200
        );
        assert_eq!(
            push(server, "payment-reminder", user, &payment(), None).await,
            200
        );
        assert_eq!(push(server, "shipping", user, &shipment(), None).await, 200);
        return;
    };
    database
        .collection::<Document>("purchases")
        .insert_one(doc! {
            "order_id": "o-1", "buyer_id": user, "shop_owner_id": "shop-1",
            "product_name": "Lamp", "amount": 25.5, "currency": "EUR", "status": "completed",
            "purchased_at": date("2026-11-01T10:00:00Z"),
        })
        .await
        .expect("purchase");
    // One at a time: each commerce collection has its own consumer, so the inbox order is the
    // order they arrive in.
    await_inbox(server, user, 1).await;
    database
        .collection::<Document>("payments")
        .insert_one(doc! {
            "user_id": user, "order_id": "o-2", "amount": 10.0, "currency": "EUR",
            "due_date": "2026-11-20T00:00:00Z", "days_overdue": 7, "message": "please pay",
        })
        .await
        .expect("payment");
    await_inbox(server, user, 2).await;
    database
        .collection::<Document>("shipments")
        .insert_one(doc! {
            "user_id": user, "order_id": "o-3", "tracking_number": "TRK1",
            "status": "in_transit", "location": "Lyon",
            "estimated_delivery": "2026-11-30T12:00:00Z", "updated_at": "2026-11-27T08:00:00Z",
        })
        .await
        .expect("shipment");
    await_inbox(server, user, 3).await;
}

async fn mark_read(server: &TestServer, body: &Value) -> (u16, Value) {
    let response = server.post_json("/notifications/read", body).await;
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn subscribe_since(server: &TestServer, user: &str, since: &str) -> Ws {
    let url = format!(
        "{}/notifications/subscribe?user_id={user}&since={since}",
        server.ws_base
    );
    let (stream, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
        .await
        .expect("connect in time")
        .expect("handshake");
    Ws(stream)
}

fn ids(entries: &[Value]) -> Vec<String> {
    entries
        .iter()
        .map(|e| e["notification_id"].as_str().expect("id").to_owned())
        .collect()
}

#[tokio::test]
async fn an_offline_user_finds_six_notifications_marks_two_read_and_resumes_after_the_second() {
    let settings = settings(&[]);
    let database = mongo_database(&settings).await;
    let server = TestServer::start_with(settings, |backends| backends).await;
    let user = "carol-offline";
    commerce_for(&server, database.as_ref(), user).await;
    let mut sent = Vec::new();
    for n in 0..3 {
        sent.push(server.send(&format!("chat {n}"), "alice", user).await);
    }
    let entries = await_inbox(&server, user, 6).await;
    let types: Vec<&str> = entries
        .iter()
        .map(|e| e["notification_type"].as_str().expect("type"))
        .collect();
    assert_eq!(
        types,
        [
            "purchase_notification",
            "payment_reminder_notification",
            "shipping_update_notification",
            "chat_notification",
            "chat_notification",
            "chat_notification"
        ]
    );
    assert_eq!(entries[0]["payload"], purchase(user, "Lamp"));
    assert_eq!(entries[1]["payload"], payment());
    assert_eq!(entries[2]["payload"], shipment());
    for (entry, message) in entries[3..].iter().zip(&sent) {
        assert_eq!(
            &entry["payload"], message,
            "the chat notification carries the message"
        );
    }
    let all = ids(&entries);
    let mut sorted = all.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, all, "ids are unique and ascending");
    for entry in &entries {
        assert_eq!(entry["user_id"], user);
        assert!(entry["read_at"].is_null(), "{entry}");
        assert!(entry["timestamp"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')));
    }
    assert_eq!(unread(&server, user).await, 6);
    // Paging like chat history.
    let page = inbox(&server, user, &format!("&before={}&limit=2", all[3])).await;
    assert_eq!(ids(&page), &all[1..3]);

    let (status, body) = mark_read(
        &server,
        &json!({"user_id": user, "notification_ids": [all[0], all[1]]}),
    )
    .await;
    assert_eq!(
        (status, &body),
        (200, &json!({"user_id": user, "unread": 4}))
    );
    let (status, body) = mark_read(
        &server,
        &json!({"user_id": user, "notification_ids": [all[1]]}),
    )
    .await;
    assert_eq!(
        (status, body["unread"].as_u64()),
        (200, Some(4)),
        "idempotent"
    );
    assert_eq!(unread(&server, user).await, 4);
    assert_eq!(ids(&inbox(&server, user, "&unread=true").await), &all[2..]);
    let read = inbox(&server, user, "").await;
    assert!(read[0]["read_at"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));

    // A socket resuming after the second replays exactly the four after it, then live ones.
    let mut socket = subscribe_since(&server, user, &all[1]).await;
    for (n, expected) in entries[2..].iter().enumerate() {
        let mut frame = socket.next_json().await;
        assert_eq!(
            frame["notification_id"], expected["notification_id"],
            "replay {n}"
        );
        assert_eq!(frame["payload"], expected["payload"]);
        frame
            .as_object_mut()
            .expect("object")
            .remove("notification_id");
        let mut keys: Vec<&String> = frame.as_object().expect("object").keys().collect();
        keys.sort();
        assert_eq!(
            keys,
            ["notification_type", "payload", "timestamp"],
            "the seed's shape"
        );
    }
    let live = server.send("live", "alice", user).await;
    let frame = socket.next_json().await;
    assert_eq!(frame["notification_type"], "chat_notification");
    assert_eq!(frame["payload"], live);
    let newest = frame["notification_id"].as_str().expect("id").to_owned();
    assert!(newest > all[5], "live after the replay");
    assert_eq!(ids(&await_inbox(&server, user, 7).await)[6], newest);
    assert_eq!(unread(&server, user).await, 5);
    // Up to an id, inclusive.
    let (status, body) = mark_read(&server, &json!({"user_id": user, "up_to": all[4]})).await;
    assert_eq!((status, body["unread"].as_u64()), (200, Some(2)));
    let metrics = server.metrics.render();
    // From MongoDB's purchases the shop owner is notified too.
    let written = if database.is_some() { 8 } else { 7 };
    let line = format!("chatcore_inbox_entries_written_total {written}\n");
    assert!(metrics.contains(&line), "{metrics}");
    assert!(
        metrics.contains("chatcore_inbox_entries_read_total"),
        "{metrics}"
    );
}

/// Forwards every delivery three times, as redeliveries and forward retries would.
struct Thrice(Arc<dyn Forwarder>);

#[async_trait]
impl Forwarder for Thrice {
    async fn forward(&self, delivery: &Delivery) -> Result<DeliveryReport, ForwardError> {
        self.0.forward(delivery).await?;
        self.0.forward(delivery).await?;
        self.0.forward(delivery).await
    }
}

#[tokio::test]
async fn one_event_delivered_three_times_and_one_push_repeated_are_one_entry_each() {
    let server = TestServer::start_with(settings(&[]), |backends| {
        backends.layer_forwarder(|inner| Arc::new(Thrice(inner)))
    })
    .await;
    let user = "dave-thrice";
    let mut socket = server.subscribe_notifications(user).await;
    server
        .await_sessions(&server.notification_sockets, user, 1)
        .await;
    let first = server.send("once", "alice", user).await;
    let second = server.send("twice", "alice", user).await;
    // The second message's forwards follow all three of the first's (one conversation, in order).
    let entries = await_inbox(&server, user, 2).await;
    assert_eq!(entries[0]["payload"], first);
    assert_eq!(entries[1]["payload"], second);
    for entry in &entries {
        let frame = socket.next_json().await;
        assert_eq!(frame["notification_id"], entry["notification_id"]);
    }
    for _ in 0..3 {
        assert_eq!(
            push(
                &server,
                "purchase",
                user,
                &purchase(user, "Vase"),
                Some("order-9")
            )
            .await,
            200
        );
    }
    let entries = await_inbox(&server, user, 3).await;
    assert_eq!(entries[2]["payload"]["product_name"], "Vase");
    let frame = socket.next_json().await;
    assert_eq!(frame["notification_id"], entries[2]["notification_id"]);
    // Nothing else arrives: a marker sent now is the very next frame.
    assert_eq!(
        push(&server, "shipping", user, &shipment(), None).await,
        200
    );
    let marker = socket.next_json().await;
    assert_eq!(marker["notification_type"], "shipping_update_notification");
    assert_eq!(unread(&server, user).await, 4);
}

#[tokio::test]
async fn a_notification_socket_closed_as_slow_resumes_with_since_and_misses_nothing() {
    let server = TestServer::start_with(
        // A long WRITE_WAIT: the blocked write must not end the session before the 4001.
        settings(&["--socket-queue-capacity", "8", "--write-wait", "120s"]),
        |backends| backends,
    )
    .await;
    let user = "erin-slow";
    let slow = server.subscribe_notifications(user).await;
    server
        .await_sessions(&server.notification_sockets, user, 1)
        .await;
    let product = "x".repeat(60_000);
    let count = 300; // 18 MB: more than loopback's socket buffers hold
    for n in 0..count {
        let status = push(
            &server,
            "purchase",
            user,
            &purchase(user, &format!("{n} {product}")),
            None,
        )
        .await;
        // 500 once the slow session was cut off: kept all the same.
        assert!(status == 200 || status == 500, "push {n}: {status}");
    }
    let kept = ids(&await_inbox(&server, user, count).await);

    let mut slow = slow.0;
    let mut received = Vec::new();
    let code = loop {
        match tokio::time::timeout(WAIT, slow.next())
            .await
            .expect("a frame")
        {
            Some(Ok(Message::Text(text))) => {
                let frame: Value = serde_json::from_str(&text).expect("json");
                received.push(frame["notification_id"].as_str().expect("id").to_owned());
            }
            Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => {}
            Some(Err(error)) => panic!("slow reader: {error}"),
            None => break None,
        }
    };
    assert_eq!(code, Some(4001), "after {} frames", received.len());
    assert!(received.len() < count, "cut off");
    assert_eq!(received, kept[..received.len()], "in order, no gap");
    let last = received.last().cloned().unwrap_or_else(|| "0".repeat(24));
    let mut resumed = subscribe_since(&server, user, &last).await;
    for expected in &kept[received.len()..] {
        let frame = resumed.next_json().await;
        assert_eq!(frame["notification_id"], expected.as_str());
    }
    assert_eq!(
        push(&server, "shipping", user, &shipment(), None).await,
        200
    );
    let live = resumed.next_json().await;
    assert_eq!(live["notification_type"], "shipping_update_notification");
}

const SECRET: &str = "inbox-test-secret-0123456789abcdef";

fn token(sub: &str) -> String {
    let now = get_current_timestamp();
    let claims = json!({"sub": sub, "iat": now, "exp": now + 300});
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("token")
}

#[tokio::test]
async fn another_users_inbox_is_403_and_malformed_ids_are_400_changing_nothing() {
    let flags = ["--auth-mode", "jwt", "--auth-jwt-secret", SECRET];
    let server = TestServer::start_with(settings(&flags), |backends| backends).await;
    let (frank, grace) = ("frank-auth", "grace-auth");
    for user in [frank, grace] {
        assert_eq!(
            push(&server, "payment-reminder", user, &payment(), None).await,
            200
        );
    }
    let as_user = |method: reqwest::Method, path: String, sub: &str| {
        server
            .http
            .request(method, format!("{}{path}", server.base))
            .bearer_auth(token(sub))
    };
    let answer = |request: reqwest::RequestBuilder| async move {
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        (
            status,
            response.json::<Value>().await.unwrap_or(Value::Null),
        )
    };
    let (status, body) = answer(as_user(
        reqwest::Method::GET,
        format!("/notifications?user_id={frank}"),
        frank,
    ))
    .await;
    assert_eq!(status, 200, "{body}");
    let own = ids(body["notifications"].as_array().expect("array"));
    assert_eq!(own.len(), 1);

    let get = reqwest::Method::GET;
    let post = reqwest::Method::POST;
    for path in [
        format!("/notifications?user_id={grace}"),
        format!("/notifications/unread-count?user_id={grace}"),
    ] {
        let (status, body) = answer(as_user(get.clone(), path.clone(), frank)).await;
        assert_eq!(status, 403, "{path}: {body}");
        assert!(body["error"].is_string());
    }
    let (status, _) = answer(as_user(
        get.clone(),
        format!("/notifications?user_id={frank}"),
        "",
    ))
    .await;
    assert_eq!(status, 401, "an invalid token");
    let (status, _) = answer(
        server
            .http
            .get(format!("{}/notifications?user_id={frank}", server.base)),
    )
    .await;
    assert_eq!(status, 401, "no token");
    let mark_grace = json!({"user_id": grace, "up_to": "ffffffffffffffffffffffff"});
    let (status, body) =
        answer(as_user(post.clone(), "/notifications/read".into(), frank).json(&mark_grace)).await;
    assert_eq!(status, 403, "{body}");

    for bad in ["nope", "65F1C0A2B3C4D5E6F7A8B9C0", "%00"] {
        let (status, body) = answer(as_user(
            get.clone(),
            format!("/notifications?user_id={frank}&since={bad}"),
            frank,
        ))
        .await;
        assert_eq!(status, 400, "since={bad}: {body}");
        let (status, _) = answer(as_user(
            get.clone(),
            format!("/notifications?user_id={frank}&before={bad}"),
            frank,
        ))
        .await;
        assert_eq!(status, 400, "before={bad}");
    }
    for body in [
        json!({"user_id": frank, "notification_ids": [own[0], "bad"]}),
        json!({"user_id": frank, "up_to": "bad"}),
        json!({"user_id": frank}),
        json!({"user_id": frank, "up_to": own[0], "notification_ids": [own[0]]}),
        json!({"user_id": "", "up_to": own[0]}),
        json!({"user_id": frank, "notification_ids": "not a list"}),
    ] {
        let (status, answer_body) =
            answer(as_user(post.clone(), "/notifications/read".into(), frank).json(&body)).await;
        assert_eq!(status, 400, "{body}: {answer_body}");
        assert!(answer_body["error"].is_string());
    }
    let too_many: Vec<String> = (0..501).map(|_| own[0].clone()).collect();
    let (status, _) = answer(
        as_user(post.clone(), "/notifications/read".into(), frank)
            .json(&json!({"user_id": frank, "notification_ids": too_many})),
    )
    .await;
    assert_eq!(status, 413);
    let (status, _) = answer(as_user(
        get.clone(),
        format!("/notifications?user_id={frank}&limit=0"),
        frank,
    ))
    .await;
    assert_eq!(status, 400, "limit=0");
    // Nothing was marked: both still have their one unread notification.
    for user in [frank, grace] {
        let (status, body) = answer(as_user(
            get.clone(),
            format!("/notifications/unread-count?user_id={user}"),
            user,
        ))
        .await;
        assert_eq!((status, body["unread"].as_u64()), (200, Some(1)), "{user}");
    }
    // The owner may mark it.
    let (status, body) = answer(
        as_user(post.clone(), "/notifications/read".into(), frank)
            .json(&json!({"user_id": frank, "notification_ids": own})),
    )
    .await;
    assert_eq!((status, body["unread"].as_u64()), (200, Some(0)));
    // A socket with a malformed since is refused before the upgrade.
    let url = format!(
        "{}/notifications/subscribe?user_id={frank}&since=bad&access_token={}",
        server.ws_base,
        token(frank)
    );
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status().as_u16(), 400)
        }
        other => panic!("expected a 400 refusal, got {:?}", other.map(|_| ())),
    }
}
