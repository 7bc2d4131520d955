//! The seed's production path with the real Debezium connector: `chat-server persistence` stores
//! messages in MongoDB (the wire server of `scripts/services.sh`), the Debezium MongoDB connector
//! 3.6.1 in a standalone Kafka Connect 4.3.1 worker, started by `scripts/services.sh connect-run`
//! with the SHIPPED `deploy/debezium/chat.json` and `worker-standalone.properties`, writes them
//! to a Kafka topic of three partitions, `chat-server change-handler` (deduplicating in Redis)
//! forwards them to `chat-ws` and `notifications-ws`, and websocket clients receive them.
//!
//! Several conversations are written interleaved; every chat socket must receive exactly its
//! conversation's messages, each once, in the order they were stored, every receiver must be
//! notified of each, and the topic must hold each conversation on one partition, keyed by its
//! `stream_id` (what the shipped configuration's `ValueToKey`/`ExtractField$Key` do; Debezium's
//! own `_id` key spreads a conversation over partitions and reorders it).

use crate::clients;
use crate::processes;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clients::Device;
use processes::{await_http_ok, free_port, Process, START_WAIT};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, TopicPartitionList};
use serde_json::{json, Value};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const CONVERSATIONS: usize = 4;
const PER_CONVERSATION: usize = 8;
const PARTITIONS: i32 = 3;
const TOKEN: &str = "debezium-internal-token";
/// The connector's JVM start and its first poll.
const CONNECTOR_WAIT: Duration = Duration::from_secs(180);
/// Upper bound of the wait for every socket to hold every message.
const DELIVERY_WAIT: Duration = Duration::from_secs(90);

fn required_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: run scripts/test.sh"))
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("repository root")
}

fn pairs(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The wire server's address as a replica-set connection string, the form Debezium requires.
fn replica_set_uri(test_uri: &str) -> String {
    let hosts = test_uri
        .trim_start_matches("mongodb://")
        .split(['/', '?'])
        .next()
        .unwrap_or_default();
    format!("mongodb://{hosts}/?replicaSet=rs0")
}

/// Every process of the path, killed when dropped.
struct Running {
    processes: Vec<Process>,
}

impl Running {
    fn tails(&self) -> String {
        self.processes
            .iter()
            .map(|p| format!("--- {} ---\n{}\n", p.name, p.tail(20)))
            .collect()
    }

    fn assert_running(&mut self) {
        for process in &mut self.processes {
            process.assert_running();
        }
    }
}

fn role(
    name: &str,
    role: &str,
    extra: &[(&str, &str)],
    common: &[(String, String)],
    dir: &Path,
) -> Process {
    let mut vars = common.to_vec();
    vars.extend(pairs(extra));
    let binary = Path::new(env!("CARGO_BIN_EXE_chat-server"));
    Process::spawn(name, binary, &[role.to_owned()], &vars, dir)
}

/// The shipped worker file with this run's broker, offsets file and REST listener.
fn worker_properties(dir: &Path, kafka: &str, port: u16) -> PathBuf {
    let shipped =
        std::fs::read_to_string(repo().join("deploy/debezium/worker-standalone.properties"))
            .expect("deploy/debezium/worker-standalone.properties");
    let mut lines: Vec<String> = shipped
        .lines()
        .filter(|line| {
            ![
                "bootstrap.servers=",
                "offset.storage.file.filename=",
                "listeners=",
                "plugin.path=",
            ]
            .iter()
            .any(|key| line.starts_with(key))
        })
        .map(str::to_owned)
        .collect();
    lines.push(format!("bootstrap.servers={kafka}"));
    lines.push(format!(
        "offset.storage.file.filename={}/offsets",
        dir.display()
    ));
    lines.push(format!("listeners=http://127.0.0.1:{port}"));
    let path = dir.join("worker.properties");
    std::fs::write(&path, lines.join("\n") + "\n").expect("worker.properties");
    path
}

/// Waits until the connector's task runs, failing with the worker's log.
async fn await_connector(http: &reqwest::Client, port: u16, worker: &mut Process) {
    let url = format!("http://127.0.0.1:{port}/connectors/chatcore-chat/status");
    let deadline = Instant::now() + CONNECTOR_WAIT;
    loop {
        worker.assert_running();
        if let Ok(response) = http.get(&url).send().await {
            if let Ok(status) = response.json::<Value>().await {
                let task = &status["tasks"][0]["state"];
                assert_ne!(
                    task,
                    "FAILED",
                    "the connector failed: {status}\n{}",
                    worker.tail(40)
                );
                if status["connector"]["state"] == "RUNNING" && task == "RUNNING" {
                    return;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "the connector did not run within {CONNECTOR_WAIT:?}:\n{}",
            worker.tail(40)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn post(
    http: &reqwest::Client,
    persistence: &str,
    sender: &str,
    receiver: &str,
    content: &str,
) -> String {
    let body = json!({"content": content, "sender_id": sender, "receiver_id": receiver});
    let response = http
        .post(format!("{persistence}/chat/messages"))
        .json(&body)
        .send()
        .await
        .expect("POST /chat/messages");
    assert_eq!(response.status().as_u16(), 201, "POST {body}");
    let stored: Value = response.json().await.expect("the stored message");
    stored["message_id"]
        .as_str()
        .expect("message_id")
        .to_owned()
}

fn received(device: &Device) -> Vec<String> {
    device.log.lock().expect("log").ids()
}

/// Waits until `device` holds at least `count` messages.
async fn await_count(device: &Device, count: usize, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while received(device).len() < count {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    true
}

/// One record of the topic.
struct TopicRecord {
    partition: i32,
    key: String,
    stream_id: String,
    message_id: String,
}

/// The first `expected` records of the topic (fewer if they do not come within 30 s).
fn topic_records(kafka: &str, topic: &str, expected: usize) -> Vec<TopicRecord> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka)
        .set("group.id", format!("{topic}-inspect"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    for partition in 0..PARTITIONS {
        assignment
            .add_partition_offset(topic, partition, rdkafka::Offset::Beginning)
            .expect("partition");
    }
    consumer.assign(&assignment).expect("assign");
    let mut records = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while records.len() < expected && std::time::Instant::now() < deadline {
        let Some(polled) = consumer.poll(Duration::from_millis(500)) else {
            continue;
        };
        let message = polled.expect("a record");
        let key = chatcore::debezium::decode_key(message.key().unwrap_or_default()).expect("key");
        let value: Value =
            serde_json::from_slice(message.payload().unwrap_or_default()).expect("value");
        let text = |field: &str| value[field].as_str().unwrap_or_default().to_owned();
        records.push(TopicRecord {
            partition: message.partition(),
            key,
            stream_id: text("stream_id"),
            message_id: text("_id"),
        });
    }
    records
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka, MongoDB, Redis and Kafka Connect with Debezium: run scripts/test.sh"]
async fn the_real_connector_with_the_shipped_config_delivers_every_message_once_in_order() {
    let kafka = required_env("CHATCORE_TEST_KAFKA");
    let mongo = required_env("CHATCORE_TEST_MONGO_URI");
    let redis = required_env("CHATCORE_TEST_REDIS");
    required_env("CHATCORE_TEST_CONNECT_HOME"); // services.sh fetched Connect and Debezium
    let unique = chatcore::dedup::ClaimToken::unique()
        .as_str()
        .replace('-', "_");
    let dir = std::env::temp_dir().join(format!("chatcore-debezium-{unique}"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let database = format!("debezium_{unique}");
    let prefix = format!("debezium-{unique}");
    let topic = format!("{prefix}.{database}.chat");
    // An operator creates the topic with the partitions the deployment needs.
    chatcore_kafka::KafkaPublisher::new(&kafka, &database)
        .expect("admin")
        .ensure_topic(&topic, PARTITIONS)
        .await
        .expect("topic");

    let common = pairs(&[
        ("MONGO_URI", &mongo),
        ("MONGO_DATABASE", &database),
        ("CHAT_PERSISTENCE_CHANGE_KAFKA_BOOTSTRAP_SERVERS", &kafka),
        (
            "CHAT_PERSISTENCE_CHANGE_KAFKA_CONSUMER_INFO_TOPIC_NAME",
            &topic,
        ),
        (
            "CHAT_PERSISTENCE_CHANGE_KAFKA_CONSUMER_INFO_CONSUMER_NAME",
            &format!("{prefix}-group"),
        ),
        ("INTERNAL_TOKEN", TOKEN),
        ("SHUTDOWN_TIMEOUT", "5s"),
        ("LOG_LEVEL", "info"),
    ]);
    let http = reqwest::Client::new();
    let (chat_public, chat_internal) = (free_port(), free_port());
    let (notify_public, notify_internal) = (free_port(), free_port());
    let (persistence_port, handler_port, connect_port) = (free_port(), free_port(), free_port());
    let address = |port: u16| format!("127.0.0.1:{port}");
    let mut chat_ws = role(
        "chat-ws",
        "chat-ws",
        &[
            ("LISTEN_ADDR", &address(chat_public)),
            ("INTERNAL_LISTEN_ADDR", &address(chat_internal)),
            ("NODE_ID", "chat-ws-0"),
        ],
        &common,
        &dir,
    );
    let mut notifications_ws = role(
        "notifications-ws",
        "notifications-ws",
        &[
            ("LISTEN_ADDR", &address(notify_public)),
            ("INTERNAL_LISTEN_ADDR", &address(notify_internal)),
            ("NODE_ID", "notifications-ws-0"),
        ],
        &common,
        &dir,
    );
    let mut persistence = role(
        "persistence",
        "persistence",
        &[
            ("LISTEN_ADDR", &address(persistence_port)),
            ("NODE_ID", "persistence-0"),
        ],
        &common,
        &dir,
    );
    let worker_file = worker_properties(&dir, &kafka, connect_port);
    let mut worker_env = pairs(&[
        ("CHATCORE_DEBEZIUM_MONGODB_URI", &replica_set_uri(&mongo)),
        ("CHATCORE_DEBEZIUM_DATABASE", &database),
        ("CHATCORE_DEBEZIUM_TOPIC_PREFIX", &prefix),
    ]);
    for name in ["HOME", "CHATCORE_CACHE_DIR", "JAVA_HOME"] {
        if let Ok(value) = std::env::var(name) {
            worker_env.push((name.to_owned(), value));
        }
    }
    let mut worker = Process::spawn(
        "connect",
        Path::new("bash"),
        &[
            repo().join("scripts/services.sh").display().to_string(),
            "connect-run".to_owned(),
            worker_file.display().to_string(),
            repo()
                .join("deploy/debezium/chat.json")
                .display()
                .to_string(),
        ],
        &worker_env,
        &dir,
    );
    let mut handler = role(
        "change-handler",
        "change-handler",
        &[
            ("LISTEN_ADDR", &address(handler_port)),
            ("REDIS_ADDR", &redis),
            (
                "CHAT_MESSAGE_SOCKET_TRANSFER_OUTGOING_CONFIG_CLIENT_HOST",
                &format!("http://{}", address(chat_internal)),
            ),
            (
                "GENERAL_NOTIFICATION_OUTGOING_CONFIG_CLIENT_HOST",
                &format!("http://{}", address(notify_internal)),
            ),
            ("MESSAGE_RETRY_INITIAL_INTERVAL", "50ms"),
            ("MESSAGE_RETRY_MAX_INTERVAL", "1s"),
        ],
        &common,
        &dir,
    );
    let persistence_url = format!("http://{}", address(persistence_port));
    await_http_ok(
        &http,
        &format!("http://{}/readyz", address(chat_internal)),
        &mut chat_ws,
    )
    .await;
    await_http_ok(
        &http,
        &format!("http://{}/readyz", address(notify_internal)),
        &mut notifications_ws,
    )
    .await;
    await_http_ok(
        &http,
        &format!("{persistence_url}/chat/messages?stream_id=0000000000000000"),
        &mut persistence,
    )
    .await;
    await_http_ok(
        &http,
        &format!("http://{}/healthz", address(handler_port)),
        &mut handler,
    )
    .await;
    await_connector(&http, connect_port, &mut worker).await;
    let mut path = Running {
        processes: vec![chat_ws, notifications_ws, persistence, worker, handler],
    };

    let stop = CancellationToken::new();
    let chat_base = format!("ws://{}", address(chat_public));
    let notify_base = format!("ws://{}", address(notify_public));

    // The connector streams from where it started; a probe conversation shows the whole path is
    // live (one message at a time until one arrives) before the messages under test are written.
    let probe = Device::chat(&chat_base, "probe-a", "probe-b", stop.clone());
    let probe_started = Instant::now();
    let mut probes = 0;
    loop {
        probes += 1;
        post(
            &http,
            &persistence_url,
            "probe-a",
            "probe-b",
            &format!("probe {probes}"),
        )
        .await;
        if await_count(&probe, 1, Duration::from_secs(3)).await {
            break;
        }
        path.assert_running();
        assert!(
            probe_started.elapsed() < START_WAIT * 2,
            "no probe came through:\n{}",
            path.tails()
        );
    }

    let users: Vec<(String, String)> = (0..CONVERSATIONS)
        .map(|c| (format!("dbz-{unique}-s{c}"), format!("dbz-{unique}-r{c}")))
        .collect();
    let chats: Vec<Device> = users
        .iter()
        .map(|(sender, receiver)| Device::chat(&chat_base, sender, receiver, stop.clone()))
        .collect();
    let notified: Vec<Device> = users
        .iter()
        .map(|(_, receiver)| Device::notifications(&notify_base, receiver, stop.clone()))
        .collect();
    for device in chats.iter().chain(&notified) {
        let deadline = Instant::now() + START_WAIT;
        while device.connections() == 0 {
            assert!(
                Instant::now() < deadline,
                "{} did not connect",
                device.label
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // Interleaved: message n of every conversation before message n + 1 of any.
    let mut posted: Vec<Vec<String>> = vec![Vec::new(); CONVERSATIONS];
    for n in 0..PER_CONVERSATION {
        for (c, (sender, receiver)) in users.iter().enumerate() {
            let content = format!("conversation {c} message {n}");
            posted[c].push(post(&http, &persistence_url, sender, receiver, &content).await);
        }
    }
    // One more per conversation, sent last: once it is in, a duplicate of an earlier one would
    // have come before it on the conversation's partition.
    for (c, (sender, receiver)) in users.iter().enumerate() {
        posted[c].push(post(&http, &persistence_url, sender, receiver, "fence").await);
    }
    for (c, device) in chats.iter().chain(&notified).enumerate() {
        let expected = posted[c % CONVERSATIONS].len();
        assert!(
            await_count(device, expected, DELIVERY_WAIT).await,
            "{} holds {} of {expected} messages:\n{}",
            device.label,
            received(device).len(),
            path.tails()
        );
    }
    for (c, device) in chats.iter().enumerate() {
        assert_eq!(
            received(device),
            posted[c],
            "{}: each once, in order",
            device.label
        );
        assert_eq!(
            device.connections(),
            1,
            "{}: all live, no replay",
            device.label
        );
    }
    for (c, device) in notified.iter().enumerate() {
        let got = received(device);
        assert_eq!(got.len(), posted[c].len(), "{}: each once", device.label);
        assert_eq!(
            got.iter().collect::<BTreeSet<_>>(),
            posted[c].iter().collect::<BTreeSet<_>>(),
            "{}",
            device.label
        );
    }

    // On the topic: every message once, keyed by its conversation, each conversation on one
    // partition. (The probes before the connector's stream was open are not there.)
    let tested: usize = posted.iter().map(Vec::len).sum();
    let records = topic_records(&kafka, &topic, tested + 1);
    let probe_stream = chatcore::stream_id::stream_id("probe-a", "probe-b");
    let mut partitions: BTreeMap<&str, BTreeSet<i32>> = BTreeMap::new();
    let mut ids = Vec::new();
    for record in &records {
        assert_eq!(record.key, record.stream_id, "keyed by stream_id");
        partitions
            .entry(&record.stream_id)
            .or_default()
            .insert(record.partition);
        if record.stream_id != probe_stream {
            ids.push(record.message_id.clone());
        }
    }
    for (stream, on) in &partitions {
        assert_eq!(on.len(), 1, "{stream} is on one partition, not {on:?}");
    }
    ids.sort();
    let mut expected_ids: Vec<String> = posted.concat();
    expected_ids.sort();
    assert_eq!(
        ids, expected_ids,
        "the topic holds each stored message once"
    );

    path.assert_running();
    stop.cancel();
    for process in &mut path.processes {
        process.terminate(Duration::from_secs(30)).await;
    }
    let _ = std::fs::remove_dir_all(&dir);
}
