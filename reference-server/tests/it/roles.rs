//! The split roles: which listener serves which routes, the internal token, the node header,
//! graceful shutdown, and the one-line configuration errors of the `chat-server` binary.

use crate::common;

use std::future::Future;
use std::process::Command;

use chatcore::stream_id::stream_id;
use common::{settings, Ws, WAIT};
use reference_server::{Listeners, ServerError};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const TOKEN: &str = "role-test-token";

/// A role served in-process on two ephemeral listeners.
struct Served {
    public: String,
    internal: String,
    http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ServerError>>,
}

impl Served {
    async fn start<F, Fut>(serve: F, flags: &[&str]) -> Self
    where
        F: FnOnce(reference_server::Settings, Listeners, oneshot::Receiver<()>) -> Fut,
        Fut: Future<Output = Result<(), ServerError>> + Send + 'static,
    {
        let public = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let internal = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let (public_addr, internal_addr) = (
            public.local_addr().expect("addr"),
            internal.local_addr().expect("addr"),
        );
        let mut all_flags = vec!["--internal-token", TOKEN, "--node-id", "node-7"];
        all_flags.extend_from_slice(flags);
        let (stop, stopped) = oneshot::channel();
        let listeners = Listeners {
            public,
            internal: Some(internal),
        };
        let task = tokio::spawn(serve(settings(&all_flags), listeners, stopped));
        Self {
            public: format!("127.0.0.1:{}", public_addr.port()),
            internal: format!("127.0.0.1:{}", internal_addr.port()),
            http: reqwest::Client::new(),
            stop: Some(stop),
            task,
        }
    }

    async fn post(&self, addr: &str, path: &str, body: &Value, token: Option<&str>) -> u16 {
        let mut request = self.http.post(format!("http://{addr}{path}")).json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.expect("POST").status().as_u16()
    }

    async fn ws(&self, addr: &str, path_and_query: &str) -> (Ws, String) {
        let (socket, response) =
            tokio_tungstenite::connect_async(format!("ws://{addr}{path_and_query}"))
                .await
                .expect("websocket");
        let node = response
            .headers()
            .get(chatcore::http::NODE_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        (Ws(socket), node)
    }

    async fn stop(mut self) -> Result<(), ServerError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(WAIT * 3, self.task)
            .await
            .expect("stops in time")
            .expect("task")
    }
}

fn purchase() -> Value {
    json!({
        "order_id": "o-1", "buyer_id": "carol", "shop_owner_id": "dave",
        "product_name": "lamp", "amount": 12.5, "currency": "EUR", "status": "paid",
        "purchased_at": "2026-11-26T10:00:00Z"
    })
}

#[tokio::test]
async fn notifications_ws_takes_deliveries_only_on_the_internal_listener_with_the_token() {
    let served = Served::start(
        |settings, listeners, stopped| {
            reference_server::serve_notifications_ws(settings, listeners, async {
                let _ = stopped.await;
            })
        },
        &[],
    )
    .await;
    let (mut on_public, node) = served
        .ws(&served.public, "/notifications/subscribe?user_id=carol")
        .await;
    assert_eq!(node, "node-7", "the 101 carries NODE_ID");
    let (mut on_internal, _) = served
        .ws(&served.internal, "/notifications/subscribe?user_id=carol")
        .await;
    let path = "/notifications/purchase?user_id=carol";

    assert_eq!(
        served
            .post(&served.public, path, &purchase(), Some(TOKEN))
            .await,
        404
    );
    assert_eq!(
        served.post(&served.internal, path, &purchase(), None).await,
        401
    );
    assert_eq!(
        served
            .post(&served.internal, path, &purchase(), Some("nope"))
            .await,
        401
    );
    // Nothing above reached a socket: the first frame is the authorized delivery.
    assert_eq!(
        served
            .post(&served.internal, path, &purchase(), Some(TOKEN))
            .await,
        200
    );
    for socket in [&mut on_public, &mut on_internal] {
        let frame = socket.next_json().await;
        assert_eq!(frame["notification_type"], "purchase_notification");
        assert_eq!(frame["payload"]["order_id"], "o-1");
    }
    // The chat routes are not this role's.
    let chat = format!(
        "/chat/forward-to-websocket?stream_id={}",
        stream_id("a", "b")
    );
    assert_eq!(
        served
            .post(&served.internal, &chat, &json!({}), Some(TOKEN))
            .await,
        404
    );

    let stopping = tokio::spawn(served.stop());
    assert_eq!(on_public.next_close_code().await, Some(1001));
    assert_eq!(on_internal.next_close_code().await, Some(1001));
    stopping.await.expect("join").expect("graceful stop");
}

#[tokio::test]
async fn role_all_with_an_internal_listener_keeps_internal_routes_off_the_public_one() {
    let served = Served::start(
        |settings, listeners, stopped| async move {
            reference_server::serve(settings, listeners, async {
                let _ = stopped.await;
            })
            .await
        },
        &[],
    )
    .await;
    let (mut socket, _) = served
        .ws(
            &served.public,
            &format!(
                "/chat/subscribe?stream_id={}&sender_id=alice&receiver_id=bob",
                stream_id("alice", "bob")
            ),
        )
        .await;
    let message = json!({"content": "hi", "sender_id": "alice", "receiver_id": "bob"});
    assert_eq!(
        served
            .post(&served.public, "/chat/messages", &message, None)
            .await,
        201
    );
    let delivered = socket.next_json().await;
    assert_eq!(delivered["content"], "hi");

    let close = json!({"stream_id": stream_id("alice", "bob"), "reason": "test"});
    assert_eq!(
        served
            .post(&served.public, "/chat/close-stream", &close, Some(TOKEN))
            .await,
        404
    );
    assert_eq!(
        served
            .post(&served.internal, "/chat/close-stream", &close, None)
            .await,
        401
    );
    assert_eq!(
        served
            .post(&served.internal, "/chat/close-stream", &close, Some(TOKEN))
            .await,
        200
    );
    assert_eq!(socket.next_close_code().await, Some(4000));
    served.stop().await.expect("graceful stop");
}

#[tokio::test]
#[ignore = "needs mongo: run scripts/test.sh"]
async fn chat_ws_replays_from_mongodb_and_delivers_forwards_from_the_internal_listener() {
    let uri = std::env::var("CHATCORE_TEST_MONGO_URI").expect("CHATCORE_TEST_MONGO_URI");
    // The messages are written by a persistence role on the same database.
    let persistence = Served::start(
        |settings, listeners, stopped| {
            reference_server::serve_persistence(settings, listeners, async {
                let _ = stopped.await;
            })
        },
        &["--mongo-uri", &uri, "--mongo-database", "roles_chat_ws"],
    )
    .await;
    let chat_ws = Served::start(
        |settings, listeners, stopped| {
            reference_server::serve_chat_ws(settings, listeners, async {
                let _ = stopped.await;
            })
        },
        &["--mongo-uri", &uri, "--mongo-database", "roles_chat_ws"],
    )
    .await;
    let (a, b) = (
        format!("ann-{}", chatcore::dedup::ClaimToken::unique().as_str()),
        "ben",
    );
    let mut stored = Vec::new();
    for n in 0..3 {
        let body = json!({"content": format!("m{n}"), "sender_id": a, "receiver_id": b});
        let response = persistence
            .http
            .post(format!("http://{}/chat/messages", persistence.public))
            .json(&body)
            .send()
            .await
            .expect("POST");
        assert_eq!(response.status().as_u16(), 201);
        stored.push(response.json::<Value>().await.expect("message"));
    }
    let since = stored[0]["message_id"].as_str().expect("id");
    let stream = stream_id(&a, b);
    let (mut socket, _) = chat_ws
        .ws(
            &chat_ws.public,
            &format!(
                "/chat/subscribe?stream_id={stream}&sender_id={a}&receiver_id={b}&since={since}"
            ),
        )
        .await;
    assert_eq!(socket.next_json().await, stored[1]);
    assert_eq!(socket.next_json().await, stored[2]);

    let forward = format!("/chat/forward-to-websocket?stream_id={stream}");
    assert_eq!(
        chat_ws
            .post(&chat_ws.public, &forward, &stored[2], Some(TOKEN))
            .await,
        404
    );
    let mut live = stored[2].clone();
    live["message_id"] = json!("ffffffffffffffffffffffff");
    live["content"] = json!("live");
    assert_eq!(
        chat_ws
            .post(&chat_ws.internal, &forward, &live, Some(TOKEN))
            .await,
        200
    );
    assert_eq!(socket.next_json().await, live);

    let stopping = tokio::spawn(chat_ws.stop());
    assert_eq!(socket.next_close_code().await, Some(1001));
    stopping.await.expect("join").expect("graceful stop");
    persistence.stop().await.expect("graceful stop");
}

/// Runs the binary with only `vars` in its environment.
fn chat_server(args: &[&str], vars: &[(&str, &str)]) -> (Option<i32>, String) {
    // A DATA_DIR of its own, in case the role gets as far as opening the default SQLite store.
    let data_dir = common::temp_data_dir();
    let output = Command::new(env!("CARGO_BIN_EXE_chat-server"))
        .args(args)
        .env_clear()
        .env("DATA_DIR", &data_dir)
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .envs(vars.iter().copied())
        .output()
        .expect("run chat-server");
    let _ = std::fs::remove_dir_all(&data_dir);
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Arguments, environment, and the expected error.
type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);

#[test]
fn each_role_names_the_setting_it_misses_in_one_line() {
    let internal = ("INTERNAL_LISTEN_ADDR", "127.0.0.1:0");
    let cases: &[Case] = &[
        (&["chat-ws"], &[], "INTERNAL_LISTEN_ADDR is required by role chat-ws"),
        (&["chat-ws"], &[internal], "MONGO_URI is required by role chat-ws"),
        (
            &["notifications-ws"],
            &[],
            "INTERNAL_LISTEN_ADDR is required by role notifications-ws",
        ),
        (&["persistence"], &[], "MONGO_URI is required by role persistence"),
        (&["relay"], &[], "MONGO_URI is required by role relay"),
        (
            &["change-handler"],
            &[],
            "CHAT_PERSISTENCE_CHANGE_KAFKA_BOOTSTRAP_SERVERS is required by role change-handler",
        ),
        (
            &["change-handler"],
            &[("CHAT_PERSISTENCE_CHANGE_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")],
            "CHAT_MESSAGE_SOCKET_TRANSFER_OUTGOING_CONFIG_CLIENT_HOST is required by role change-handler",
        ),
        (
            &["email"],
            &[],
            "CHAT_PERSISTENCE_CHANGE_KAFKA_BOOTSTRAP_SERVERS is required by role email",
        ),
        (
            &["email"],
            &[("CHAT_PERSISTENCE_CHANGE_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")],
            "MONGO_URI is required by role email",
        ),
        (
            &["email"],
            &[
                ("CHAT_PERSISTENCE_CHANGE_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1"),
                ("MONGO_URI", "mongodb://127.0.0.1:1"),
            ],
            "SMTP_HOST is required by role email",
        ),
        (
            &["email"],
            &[
                ("CHAT_PERSISTENCE_CHANGE_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1"),
                ("MONGO_URI", "mongodb://127.0.0.1:1"),
                ("SMTP_HOST", "mail.example.com"),
                ("EMAIL_FROM_ADDRESS", "not-an-address"),
            ],
            "EMAIL_FROM_ADDRESS: ",
        ),
        (
            &["persistence"],
            &[("MONGO_URI", "mongodb://127.0.0.1:1"), ("MAX_CONTENT_BYTES", "0")],
            "MAX_CONTENT_BYTES must be at least 1",
        ),
        // A MongoDB that never answers: retried until STARTUP_TIMEOUT, then one line.
        (
            &["relay"],
            &[
                ("MONGO_URI", "mongodb://127.0.0.1:1"),
                ("MONGO_TIMEOUT", "200ms"),
                ("STARTUP_TIMEOUT", "1s"),
                ("CHAT_PERSISTENCE_CHANGE_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1"),
            ],
            "MONGO_URI: ",
        ),
    ];
    for (args, vars, expected) in cases {
        let (code, stderr) = chat_server(args, vars);
        assert_eq!(code, Some(1), "{args:?} {vars:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(
            stderr.starts_with("chat-server: ") && stderr.contains(expected),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn a_malformed_variable_is_named_in_one_line_and_help_exits_zero() {
    let (code, stderr) = chat_server(&["chat-ws"], &[("PING_INTERVAL", "soon")]);
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("chat-server: PING_INTERVAL (--ping-interval): invalid value \"soon\""),
        "{stderr}"
    );
    let output = Command::new(env!("CARGO_BIN_EXE_chat-server"))
        .args(["notifications-ws", "--help"])
        .output()
        .expect("help");
    assert_eq!(output.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&output.stdout).contains("[env: INTERNAL_LISTEN_ADDR"));
}

#[test]
fn the_example_environment_files_name_only_real_settings_with_valid_values() {
    use clap::{CommandFactory, Parser};
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/env");
    let command = reference_server::Cli::command();
    let mut checked = 0;
    for role in [
        "all",
        "persistence",
        "relay",
        "change-handler",
        "chat-ws",
        "notifications-ws",
        "email",
    ] {
        let mut args = vec!["chat-server".to_owned(), role.to_owned()];
        let own = format!("{role}.env");
        // Role `all` runs on its own embedded store, without the split deployment's services.
        let files: Vec<&str> = match role {
            "all" => vec![&own],
            _ => vec!["common.env", &own],
        };
        for file in files {
            let text = std::fs::read_to_string(dir.join(file)).expect("env file");
            for line in text.lines().map(str::trim) {
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let (name, value) = line.split_once('=').expect("NAME=value");
                let arg = command
                    .get_arguments()
                    .find(|arg| arg.get_env().is_some_and(|env| env == name))
                    .unwrap_or_else(|| panic!("{file}: {name} is not a chat-server setting"));
                if !value.is_empty() {
                    args.push(format!("--{}={value}", arg.get_long().expect("long flag")));
                }
                checked += 1;
            }
        }
        let cli = reference_server::Cli::try_parse_from(&args).unwrap_or_else(|e| {
            panic!("{role}: {}", reference_server::config::parse_error_line(&e))
        });
        cli.settings.app_config().expect("valid settings");
    }
    assert!(checked > 30, "{checked} settings checked");
}

#[tokio::test]
#[ignore = "needs mongo: run scripts/test.sh"]
async fn notifications_ws_keeps_forwarded_notifications_in_the_mongodb_inbox_and_serves_it_publicly(
) {
    let uri = std::env::var("CHATCORE_TEST_MONGO_URI").expect("CHATCORE_TEST_MONGO_URI");
    let served = Served::start(
        |settings, listeners, stopped| {
            reference_server::serve_notifications_ws(settings, listeners, async {
                let _ = stopped.await;
            })
        },
        &["--mongo-uri", &uri],
    )
    .await;
    let path = "/notifications/purchase?user_id=carol";
    // The change handler's forward and its retry: one entry.
    for _ in 0..2 {
        let status = served
            .http
            .post(format!("http://{}{path}", served.internal))
            .bearer_auth(TOKEN)
            .header("Idempotency-Key", "purchases:o-1:abc")
            .json(&purchase())
            .send()
            .await
            .expect("POST")
            .status();
        assert_eq!(status, 200);
    }
    let inbox = |query: &'static str| {
        let url = format!(
            "http://{}/notifications?user_id=carol{query}",
            served.public
        );
        let http = served.http.clone();
        async move {
            let response = http.get(url).send().await.expect("GET");
            assert_eq!(response.status(), 200);
            let body: Value = response.json().await.expect("json");
            body["notifications"].as_array().cloned().expect("array")
        }
    };
    let kept = inbox("").await;
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(kept[0]["notification_type"], "purchase_notification");
    assert_eq!(kept[0]["payload"]["order_id"], "o-1");
    // A socket resuming from before it gets it from MongoDB.
    let (mut socket, _) = served
        .ws(
            &served.public,
            "/notifications/subscribe?user_id=carol&since=000000000000000000000000",
        )
        .await;
    let frame = socket.next_json().await;
    assert_eq!(frame["notification_id"], kept[0]["notification_id"]);
    let stopping = tokio::spawn(served.stop());
    assert_eq!(socket.next_close_code().await, Some(1001));
    stopping.await.expect("join").expect("graceful stop");
}

/// A MongoDB wire server of this test's own on `port` (in memory), once it accepts connections.
async fn own_mongo(classpath: &str, port: u16) -> tokio::process::Child {
    let child = tokio::process::Command::new("java")
        .args(["-Xmx256m", "-XX:TieredStopAtLevel=1", "-cp", classpath])
        .args(["MongoLauncher", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start the MongoDB emulator");
    tokio::time::timeout(WAIT * 3, async {
        while TcpListener::bind(("127.0.0.1", port)).await.is_ok() {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the emulator listens");
    child
}

/// A node started before its MongoDB (as after a host reboot, or in the soak when a role is
/// restarted while the database restarts) waits for it, retrying, instead of exiting on the
/// first attempt that timed out; once MongoDB answers it serves, and a message goes the whole
/// production path (store, change stream, relay to Kafka, consumer) to a socket.
#[tokio::test]
#[ignore = "needs mongo and kafka: run scripts/test.sh"]
async fn a_node_started_before_its_mongodb_waits_for_it_and_then_delivers() {
    let Ok(classpath) = std::env::var("CHATCORE_TEST_MONGO_CLASSPATH") else {
        eprintln!("CHATCORE_TEST_MONGO_URI names an external server: this test needs the emulator");
        return;
    };
    let kafka = std::env::var("CHATCORE_TEST_KAFKA").expect("CHATCORE_TEST_KAFKA");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let uri = format!("mongodb://127.0.0.1:{port}/?directConnection=true");
    let flags = [
        "--mongo-uri",
        &uri,
        "--mongo-timeout",
        "500ms",
        "--kafka-bootstrap-servers",
        &kafka,
        "--startup-timeout",
        "60s",
    ];
    let starting = tokio::spawn(common::TestServer::start_with(settings(&flags), |b| b));
    // Several attempts time out meanwhile (each within MONGO_TIMEOUT); the node must still be
    // waiting, not failed.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert!(
        !starting.is_finished(),
        "the node gave up instead of waiting for MongoDB"
    );
    let _mongo = own_mongo(&classpath, port).await;
    let server = tokio::time::timeout(WAIT * 6, starting)
        .await
        .expect("starts once MongoDB answers")
        .expect("join");
    let mut socket = server.subscribe_chat("alice", "bob", None).await;
    let sent = server.send("after the wait", "alice", "bob").await;
    let frame = socket.next_json().await;
    assert_eq!(frame["id"], sent["id"], "{frame}");
    assert_eq!(frame["content"], "after the wait");
    server.stop().await.expect("stops");
}
