//! E-mail: the internal routes and role `email` against the real SMTP sink (aiosmtpd writing a
//! Maildir), MongoDB's `user_email` directory, Kafka and Redis, all started by
//! `scripts/services.sh`. Each test finds its mail by a recipient address of its own.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use chatcore::change::{ChangeEvent, Op, SourcePosition};
use chatcore::dedup::ClaimToken;
use chatcore::email::{
    email_router, EmailService, EmailState, SmtpConfig, SmtpEmailSender, SmtpTls, UserEmail,
};
use chatcore::metrics::Metrics;
use chatcore::model::ChatMessage;
use chatcore::sockets::{session_channel, LocalSocketRegistry, SocketRegistry};
use chatcore::stream_id::stream_id;
use chatcore::tier::Tier;
use chatcore_mongo::{MongoConfig, MongoUserDirectory};
use common::settings;
use reference_server::{Listeners, ServerError};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// Upper bound of a wait that involves a Kafka consumer group joining.
const SLOW_WAIT: Duration = Duration::from_secs(60);

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name}: run scripts/test.sh"))
}

fn unique() -> String {
    ClaimToken::unique().as_str().to_owned()
}

/// The SMTP sink's host and port.
fn smtp() -> (String, u16) {
    let addr = env("CHATCORE_TEST_SMTP");
    let (host, port) = addr.rsplit_once(':').expect("host:port");
    (host.to_owned(), port.parse().expect("port"))
}

fn sink_config(port: u16) -> SmtpConfig {
    SmtpConfig {
        port: Some(port),
        tls: SmtpTls::None,
        timeout: Duration::from_secs(5),
        from_name: Some("Chat".into()),
        ..SmtpConfig::new(smtp().0, "noreply@chatcore.test")
    }
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// A mail read back from the Maildir.
#[derive(Debug, Clone)]
struct Mail {
    headers: String,
    body: String,
}

impl Mail {
    fn header(&self, name: &str) -> Option<String> {
        let prefix = format!("{}:", name.to_ascii_lowercase());
        self.headers
            .lines()
            .find(|line| line.to_ascii_lowercase().starts_with(&prefix))
            .map(|line| line[prefix.len()..].trim().to_owned())
    }
}

/// Every mail in the sink addressed to `address`.
fn mails_to(address: &str) -> Vec<Mail> {
    let root = std::path::PathBuf::from(env("CHATCORE_TEST_SMTP_MAILDIR"));
    let mut mails = Vec::new();
    for dir in ["new", "cur"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(text) = std::fs::read_to_string(entry.path()) else {
                continue;
            };
            let text = text.replace("\r\n", "\n");
            let (headers, body) = text.split_once("\n\n").unwrap_or((&text, ""));
            let mail = Mail {
                headers: headers.to_owned(),
                body: body.to_owned(),
            };
            if mail.header("To").is_some_and(|to| to.contains(address)) {
                mails.push(mail);
            }
        }
    }
    mails
}

/// Waits until `address` has `count` mails (or more), then returns them.
async fn wait_for_mails(address: &str, count: usize, deadline: Duration) -> Vec<Mail> {
    let until = tokio::time::Instant::now() + deadline;
    loop {
        let mails = mails_to(address);
        if mails.len() >= count {
            return mails;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "{address}: {} of {count} mails after {deadline:?}",
            mails.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A fresh MongoDB database holding `users` in `user_email`.
async fn directory(users: &[UserEmail]) -> (MongoUserDirectory, String) {
    let uri = env("CHATCORE_TEST_MONGO_URI");
    let name = format!("email_{}", unique().replace('-', "_"));
    let database = chatcore_mongo::connect(&MongoConfig::new(&uri, &name))
        .await
        .expect("mongo");
    let directory = MongoUserDirectory::new(&database, Duration::from_secs(5));
    directory.create_indexes().await.expect("index");
    for user in users {
        directory.upsert(user).await.expect("upsert");
    }
    (directory, name)
}

fn user(id: &str, email: &str, name: &str) -> UserEmail {
    UserEmail {
        user_id: id.into(),
        email: email.into(),
        name: name.into(),
    }
}

fn message(id: &str, sender: &str, receiver: &str, content: &str) -> ChatMessage {
    ChatMessage {
        message_id: id.into(),
        content: content.into(),
        created_at: chrono::Utc::now(),
        stream_id: stream_id(sender, receiver),
        sender_id: sender.into(),
        receiver_id: Some(receiver.into()),
    }
}

/// Serves `router` on an ephemeral port; returns its base URL.
async fn serve(router: axum::Router) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{addr}")
}

async fn post(base: &str, path: &str, body: &Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .json(body)
        .send()
        .await
        .expect("POST");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
#[ignore = "needs smtp and mongodb: run scripts/test.sh"]
async fn the_email_routes_send_through_smtp_and_answer_201_404_and_502() {
    let id = unique();
    let bob_address = format!("bob-{id}@chatcore.test");
    let owner_address = format!("owner-{id}@chatcore.test");
    let (directory, _) = directory(&[
        user("alice", "alice@chatcore.test", "Alice"),
        user(&format!("bob-{id}"), &bob_address, "Bob"),
        user(&format!("shop-{id}"), &owner_address, "Owner"),
    ])
    .await;
    let directory = Arc::new(directory);
    let sender = SmtpEmailSender::new(&sink_config(smtp().1)).expect("sender");
    let base = serve(email_router(EmailState {
        service: EmailService::new(directory.clone(), Arc::new(sender)),
        limits: Default::default(),
    }))
    .await;

    // Success: 201, and the mail is in the sink with its recipient, subject and body.
    let chat = message("m-1", "alice", &format!("bob-{id}"), "see you at five");
    let (status, body) = post(&base, "/email/chat", &json!(chat)).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["subject"], "New message from Alice");
    let mails = wait_for_mails(&bob_address, 1, common::WAIT).await;
    assert_eq!(mails.len(), 1);
    let mail = &mails[0];
    assert_eq!(
        mail.header("To").as_deref(),
        Some(format!("Bob <{bob_address}>").as_str())
    );
    assert_eq!(
        mail.header("Subject").as_deref(),
        Some("New message from Alice")
    );
    assert_eq!(
        mail.header("From").as_deref(),
        Some("Chat <noreply@chatcore.test>")
    );
    assert!(mail.body.contains("Hello Bob,"), "{}", mail.body);
    assert!(mail.body.contains("see you at five"), "{}", mail.body);

    let purchase = json!({
        "order_id": format!("o-{id}"), "buyer_id": "carol", "shop_owner_id": format!("shop-{id}"),
        "product_name": "lamp", "amount": 12.5, "currency": "EUR", "status": "paid",
        "purchased_at": "2026-11-26T10:00:00Z"
    });
    let (status, body) = post(&base, "/email/purchased", &purchase).await;
    assert_eq!(status, 201, "{body}");
    let mails = wait_for_mails(&owner_address, 1, common::WAIT).await;
    assert_eq!(
        mails[0].header("Subject"),
        Some(format!("New order o-{id}: lamp"))
    );
    assert!(
        mails[0].body.contains("Amount: 12.50 EUR"),
        "{}",
        mails[0].body
    );

    // Unknown recipient: 404, nothing sent.
    let stranger = message("m-2", "alice", &format!("nobody-{id}"), "hello?");
    let (status, body) = post(&base, "/email/chat", &json!(stranger)).await;
    assert_eq!(status, 404, "{body}");
    assert!(body["error"].is_string());

    // SMTP failure: the mail server's port is closed → 502.
    let down = SmtpEmailSender::new(&sink_config(closed_port())).expect("sender");
    let failing = serve(email_router(EmailState {
        service: EmailService::new(directory, Arc::new(down)),
        limits: Default::default(),
    }))
    .await;
    let (status, body) = post(&failing, "/email/chat", &json!(chat)).await;
    assert_eq!(status, 502, "{body}");
    assert!(body["error"].is_string());
    assert_eq!(mails_to(&bob_address).len(), 1, "no second mail");
}

/// Role `email` served in-process on two ephemeral listeners.
struct EmailRole {
    public: String,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), ServerError>>,
}

impl EmailRole {
    async fn start(flags: &[&str]) -> Self {
        let public = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let internal = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = public.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let settings = settings(flags);
        let task = tokio::spawn(reference_server::serve_email(
            settings,
            Listeners {
                public,
                internal: Some(internal),
            },
            async move {
                let _ = stopped.await;
            },
        ));
        Self {
            public: format!("http://{addr}"),
            stop: Some(stop),
            task,
        }
    }

    async fn metric(&self, line: &str) -> u64 {
        let Ok(response) = reqwest::get(format!("{}/metrics", self.public)).await else {
            return 0;
        };
        let text = response.text().await.unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix(line))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    async fn wait_metric(&self, line: &str, value: u64) {
        let until = tokio::time::Instant::now() + SLOW_WAIT;
        while self.metric(line).await < value {
            assert!(
                !self.task.is_finished(),
                "the email role stopped early: {line}"
            );
            assert!(
                tokio::time::Instant::now() < until,
                "{line} never reached {value}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(SLOW_WAIT, self.task)
            .await
            .expect("stops in time")
            .expect("task")
            .expect("graceful stop");
    }
}

fn chat_event(message: &ChatMessage) -> ChangeEvent {
    ChangeEvent {
        op: Op::Create,
        collection: "chat".into(),
        key: message.stream_id.clone(),
        document: Some(json!(message)),
        position: SourcePosition {
            partition: 0,
            offset: 0,
            token: None,
        },
        malformed: None,
    }
}

#[tokio::test]
#[ignore = "needs smtp, kafka, mongodb and redis: run scripts/test.sh"]
async fn the_email_role_mails_offline_receivers_once_online_ones_never_and_shop_owners() {
    let kafka = env("CHATCORE_TEST_KAFKA");
    let id = unique();
    let offline = format!("off-{id}");
    let online = format!("on-{id}");
    let offline_address = format!("{offline}@chatcore.test");
    let online_address = format!("{online}@chatcore.test");
    let owner = format!("owner-{id}");
    let owner_address = format!("{owner}@chatcore.test");
    let (_, database) = directory(&[
        user("alice", "alice@chatcore.test", "Alice"),
        user(&offline, &offline_address, "Offline"),
        user(&online, &online_address, "Online"),
        user(&owner, &owner_address, "Owner"),
    ])
    .await;

    // The notification tier's presence route, with one session for the online user.
    let sockets = Arc::new(LocalSocketRegistry::new(
        Tier::Notifications,
        Arc::new(Metrics::new()),
    ));
    let (session, _receiver) = session_channel(8);
    assert!(sockets.register(&online, session));
    let presence = serve(chatcore::presence::presence_router(sockets)).await;

    let topic = format!("email-chat-{id}");
    let publisher = chatcore_kafka::KafkaPublisher::new(&kafka, &database).expect("publisher");
    publisher.ensure_topic(&topic, 3).await.expect("topic");
    let purchases = format!("email-purchases-{id}");
    publisher.ensure_topic(&purchases, 1).await.expect("topic");
    let (host, port) = smtp();
    let port = port.to_string();
    let role = EmailRole::start(&[
        "--kafka-bootstrap-servers",
        &kafka,
        "--kafka-topic",
        &topic,
        "--commerce-purchases-kafka-topic",
        &purchases,
        "--email-kafka-group",
        &format!("email-{id}"),
        "--mongo-uri",
        &env("CHATCORE_TEST_MONGO_URI"),
        "--mongo-database",
        &database,
        "--redis-addr",
        &env("CHATCORE_TEST_REDIS"),
        "--event-store-key-prefix",
        &format!("email-test-{id}"),
        "--smtp-host",
        &host,
        "--smtp-port",
        &port,
        "--smtp-tls",
        "none",
        "--email-from-address",
        "noreply@chatcore.test",
        "--notifications-ws-url",
        &presence,
    ])
    .await;

    let first = message("m-1", "alice", &offline, "first message");
    publisher
        .publish(&topic, &chat_event(&first))
        .await
        .expect("publish");
    let mails = wait_for_mails(&offline_address, 1, SLOW_WAIT).await;
    assert_eq!(mails.len(), 1);
    assert_eq!(
        mails[0].header("Subject").as_deref(),
        Some("New message from Alice")
    );
    assert!(mails[0].body.contains("first message"), "{}", mails[0].body);

    // A redelivery of the same event, then a new message to the same receiver (the same lane,
    // so processed after it): exactly one more mail, the new one.
    publisher
        .publish(&topic, &chat_event(&first))
        .await
        .expect("publish");
    let second = message("m-2", "alice", &offline, "second message");
    publisher
        .publish(&topic, &chat_event(&second))
        .await
        .expect("publish");
    role.wait_metric(
        "chatcore_events_dropped_total{consumer=\"email\",reason=\"duplicate\"}",
        1,
    )
    .await;
    let mails = wait_for_mails(&offline_address, 2, SLOW_WAIT).await;
    assert_eq!(mails.len(), 2, "the redelivery sent nothing");
    assert!(mails.iter().any(|m| m.body.contains("second message")));

    // The online receiver gets none.
    let to_online = message("m-3", "alice", &online, "you are here");
    publisher
        .publish(&topic, &chat_event(&to_online))
        .await
        .expect("publish");
    role.wait_metric("chatcore_emails_total{result=\"receiver_online\"}", 1)
        .await;
    assert!(mails_to(&online_address).is_empty());

    // A new purchase on its Debezium topic e-mails the shop owner.
    let purchase = ChangeEvent {
        collection: "purchases".into(),
        key: format!("o-{id}"),
        document: Some(json!({
            "order_id": format!("o-{id}"), "buyer_id": "carol", "shop_owner_id": owner,
            "product_name": "lamp", "amount": 12.5, "currency": "EUR", "status": "paid",
            "purchased_at": "2026-11-26T10:00:00Z"
        })),
        ..chat_event(&first)
    };
    publisher
        .publish(&purchases, &purchase)
        .await
        .expect("publish");
    let mails = wait_for_mails(&owner_address, 1, SLOW_WAIT).await;
    assert_eq!(
        mails[0].header("Subject"),
        Some(format!("New order o-{id}: lamp"))
    );
    role.stop().await;
}

#[tokio::test]
#[ignore = "needs kafka, mongodb and redis: run scripts/test.sh"]
async fn an_smtp_failure_is_retried_then_dead_lettered_with_its_headers() {
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::message::Headers;
    use rdkafka::Message;

    let kafka = env("CHATCORE_TEST_KAFKA");
    let id = unique();
    let receiver = format!("dlq-{id}");
    let (_, database) =
        directory(&[user(&receiver, &format!("{receiver}@chatcore.test"), "D")]).await;
    let topic = format!("email-fail-{id}");
    let dead_letters = format!("{topic}.email-dlq");
    let publisher = chatcore_kafka::KafkaPublisher::new(&kafka, &database).expect("publisher");
    publisher.ensure_topic(&topic, 1).await.expect("topic");
    let closed = closed_port().to_string();
    let role = EmailRole::start(&[
        "--kafka-bootstrap-servers",
        &kafka,
        "--kafka-topic",
        &topic,
        "--email-kafka-group",
        &format!("email-{id}"),
        "--mongo-uri",
        &env("CHATCORE_TEST_MONGO_URI"),
        "--mongo-database",
        &database,
        "--redis-addr",
        &env("CHATCORE_TEST_REDIS"),
        "--event-store-key-prefix",
        &format!("email-test-{id}"),
        "--smtp-host",
        "127.0.0.1",
        "--smtp-port",
        &closed,
        "--smtp-tls",
        "none",
        "--smtp-timeout",
        "2s",
        "--email-from-address",
        "noreply@chatcore.test",
        "--email-retry-max-retries",
        "2",
        "--message-retry-initial-interval",
        "10ms",
        "--message-retry-max-interval",
        "50ms",
    ])
    .await;
    let failing = message("m-1", "alice", &receiver, "never delivered");
    publisher
        .publish(&topic, &chat_event(&failing))
        .await
        .expect("publish");

    let consumer: StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &kafka)
        .set("group.id", format!("dlq-reader-{id}"))
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    consumer.subscribe(&[&dead_letters]).expect("subscribe");
    let record = tokio::time::timeout(SLOW_WAIT, consumer.recv())
        .await
        .expect("a dead letter in time")
        .expect("record");
    let headers: std::collections::HashMap<String, String> = record
        .headers()
        .map(|h| {
            h.iter()
                .map(|h| {
                    (
                        h.key.to_owned(),
                        String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(headers.get("x-original-topic"), Some(&topic));
    assert_eq!(
        headers.get("x-original-partition").map(String::as_str),
        Some("0")
    );
    assert_eq!(
        headers.get("x-original-offset").map(String::as_str),
        Some("0")
    );
    assert_eq!(headers.get("x-attempts").map(String::as_str), Some("3"));
    assert!(
        headers.get("x-error").is_some_and(|e| !e.is_empty()),
        "{headers:?}"
    );
    let value: Value =
        serde_json::from_slice(record.payload().expect("payload")).expect("Debezium JSON");
    let after = value["after"].as_str().expect("after");
    assert!(after.contains("never delivered"), "{after}");
    role.wait_metric("chatcore_emails_total{result=\"failed\"}", 3)
        .await;
    role.wait_metric("chatcore_failovers_total{consumer=\"email\"}", 1)
        .await;
    role.stop().await;
}

#[tokio::test]
async fn notifications_ws_answers_presence_on_its_internal_listener_with_the_token() {
    let public = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let internal = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let public_addr = public.local_addr().expect("addr");
    let internal_addr = internal.local_addr().expect("addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(reference_server::serve_notifications_ws(
        settings(&["--internal-token", "presence-token"]),
        Listeners {
            public,
            internal: Some(internal),
        },
        async move {
            let _ = stopped.await;
        },
    ));
    let (_socket, _) = tokio_tungstenite::connect_async(format!(
        "ws://{public_addr}/notifications/subscribe?user_id=dave"
    ))
    .await
    .expect("websocket");
    let http = reqwest::Client::new();
    let ask = |user: &'static str, token: Option<&'static str>, addr: std::net::SocketAddr| {
        let mut request = http.get(format!(
            "http://{addr}/notifications/presence?user_id={user}"
        ));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move {
            let response = request.send().await.expect("GET");
            let status = response.status().as_u16();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    // The session registers just after the upgrade: wait for it.
    let until = tokio::time::Instant::now() + common::WAIT;
    loop {
        let (status, body) = ask("dave", Some("presence-token"), internal_addr).await;
        assert_eq!(status, 200, "{body}");
        if body["online"] == true {
            assert_eq!(body["sessions"], 1);
            break;
        }
        assert!(tokio::time::Instant::now() < until, "dave never online");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, body) = ask("erin", Some("presence-token"), internal_addr).await;
    assert_eq!((status, body["online"].clone()), (200, json!(false)));
    assert_eq!(ask("dave", None, internal_addr).await.0, 401);
    assert_eq!(
        ask("dave", Some("presence-token"), public_addr).await.0,
        404,
        "not on the public listener"
    );
    let presence = chatcore::presence::HttpPresence::new(
        format!("http://{internal_addr}"),
        Some("presence-token".into()),
        Duration::from_secs(5),
    );
    use chatcore::presence::Presence;
    assert!(presence.is_online("dave").await.expect("answer"));
    assert!(!presence.is_online("erin").await.expect("answer"));
    let _ = stop.send(());
    tokio::time::timeout(SLOW_WAIT, task)
        .await
        .expect("stops")
        .expect("task")
        .expect("graceful");
}
