//! The distributed topology end to end, as users run it when one machine is not enough: separate
//! `persistence` (two instances, each conversation's POSTs hashed onto one by its `stream_id`),
//! `relay`, `change-handler` (Kafka + Redis), three `chat-ws` and one
//! `notifications-ws` processes behind a real nginx with the shipped `deploy/nginx` config, on
//! MongoDB (wire server) and Kafka.
//!
//! Fifty conversations, each with both participants and a second device of the first one
//! connected through nginx, plus every participant's notification socket. Messages are sent in
//! four rounds; between them one `chat-ws` is killed (its clients reconnect through nginx with
//! `since=`), the change handler is killed and restarted, and Redis is stopped (fail-open). In the
//! end every device must hold exactly its conversation's messages, in order, each once; the
//! store must hold them too; each conversation's sockets must have shared one `chat-ws` at every
//! moment; and every receiver must have been notified of every message.
//!
//! Beside them a group of five, whose members' protocol-2 sockets must all sit on one `chat-ws`:
//! every member gets every group message once, in order, and a chat notification of every
//! message but their own; a read receipt posted to persistence reaches every member's socket
//! through nginx's internal server; a member removed at the end has its socket closed with 4003
//! and gets nothing after.

use crate::clients;
#[path = "topology/cluster.rs"]
mod cluster;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use clients::{Device, DeviceLog};
use cluster::{Cluster, STOP_WAIT};
use serde_json::{json, Value};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const CONVERSATIONS: usize = 50;
const GROUP_MEMBERS: usize = 5;
const PER_ROUND: usize = 4;
/// Upper bound of the wait for every device to hold every message.
const DELIVERY_WAIT: Duration = Duration::from_secs(120);

/// One conversation: its participants and what was stored for it, in store order.
struct Conversation {
    alice: String,
    bob: String,
    stream_id: String,
    devices: Vec<Device>,
    sent: Mutex<Vec<(String, Instant, String)>>, // (message_id, stored at, receiver)
    /// NODE_ID of the persistence instance that stored its messages.
    writer: Mutex<Option<String>>,
}

impl Conversation {
    fn new(i: usize) -> Self {
        let (alice, bob) = (format!("alice-{i}"), format!("bob-{i}"));
        let stream_id = chatcore::stream_id::stream_id(&alice, &bob);
        Self {
            alice,
            bob,
            stream_id,
            devices: Vec::new(),
            sent: Mutex::new(Vec::new()),
            writer: Mutex::new(None),
        }
    }

    fn sent_ids(&self) -> Vec<String> {
        let sent = self.sent.lock().expect("sent");
        sent.iter().map(|(id, _, _)| id.clone()).collect()
    }
}

/// The group: its members (one protocol-2 device each) and what was stored for it.
struct Group {
    stream_id: String,
    members: Vec<String>,
    devices: Vec<Device>,
    /// (message_id, sender), in store order.
    sent: Mutex<Vec<(String, String)>>,
    /// The member removed at the end, and how many messages were stored before.
    removed: Mutex<Option<(usize, usize)>>,
}

impl Group {
    async fn create(http: &reqwest::Client, public: &str) -> Self {
        let members: Vec<String> = (0..GROUP_MEMBERS).map(|i| format!("member-{i}")).collect();
        let response = http
            .post(format!("{public}/conversations"))
            .json(&json!({"created_by": members[0], "members": members, "title": "topology"}))
            .send()
            .await
            .expect("POST /conversations through nginx");
        assert_eq!(response.status().as_u16(), 201);
        let group: Value = response.json().await.expect("group");
        Self {
            stream_id: group["stream_id"].as_str().expect("stream_id").to_owned(),
            members,
            devices: Vec::new(),
            sent: Mutex::new(Vec::new()),
            removed: Mutex::new(None),
        }
    }

    /// Posts `PER_ROUND` messages, the senders taking turns.
    async fn send_round(&self, http: &reqwest::Client, public: &str, round: usize) {
        for n in 0..PER_ROUND {
            let sender = self.sender(round * PER_ROUND + n);
            let body = json!({"content": format!("group round {round} message {n}"),
                "sender_id": sender, "stream_id": self.stream_id});
            let response = http
                .post(format!(
                    "{public}/chat/messages?stream_id={}",
                    self.stream_id
                ))
                .json(&body)
                .send()
                .await
                .expect("POST through nginx");
            assert_eq!(response.status().as_u16(), 201, "group POST {body}");
            let stored: Value = response.json().await.expect("stored");
            let id = stored["message_id"].as_str().expect("id").to_owned();
            self.sent
                .lock()
                .expect("sent")
                .push((id, sender.to_owned()));
        }
    }

    /// A member still in the group.
    fn sender(&self, turn: usize) -> &str {
        let removed = self.removed.lock().expect("removed").map(|(m, _)| m);
        let current: Vec<&String> = (0..GROUP_MEMBERS)
            .filter(|m| Some(*m) != removed)
            .map(|m| &self.members[m])
            .collect();
        current[turn % current.len()]
    }

    /// The message ids member `m` must get: all, or those before its removal.
    fn expected(&self, m: usize) -> Vec<String> {
        let sent = self.sent.lock().expect("sent");
        let upto = match *self.removed.lock().expect("removed") {
            Some((removed, before)) if removed == m => before,
            _ => sent.len(),
        };
        sent[..upto].iter().map(|(id, _)| id.clone()).collect()
    }

    fn missing(&self, notified: &HashMap<String, Device>) -> Vec<String> {
        let mut missing = Vec::new();
        let sent = self.sent.lock().expect("sent").clone();
        for (m, device) in self.devices.iter().enumerate() {
            let got: HashSet<String> = device.log.lock().expect("log").ids().into_iter().collect();
            let notifications: HashSet<String> = notified[&self.members[m]]
                .log
                .lock()
                .expect("log")
                .ids()
                .into_iter()
                .collect();
            let expected: HashSet<String> = self.expected(m).into_iter().collect();
            for (id, sender) in &sent {
                if expected.contains(id) && !got.contains(id) {
                    missing.push(format!("{}: {id}", device.label));
                }
                if expected.contains(id)
                    && *sender != self.members[m]
                    && !notifications.contains(id)
                {
                    missing.push(format!("notifications of {}: {id}", self.members[m]));
                }
            }
        }
        missing
    }

    /// The one chat-ws every member's socket sits on.
    fn placement(&self) -> String {
        let nodes: HashSet<String> = self
            .devices
            .iter()
            .map(|device| {
                let log = device.log.lock().expect("log");
                log.connections.last().expect("connected").node.clone()
            })
            .collect();
        assert_eq!(nodes.len(), 1, "the group's sockets are on {nodes:?}");
        nodes.into_iter().next().expect("one node")
    }
}

/// Posts `PER_ROUND` messages in every conversation (conversations concurrently, each one's in
/// order) through nginx; counts them in `posted`.
async fn send_round(
    http: &reqwest::Client,
    public: &str,
    conversations: &[Conversation],
    round: usize,
    posted: &std::sync::atomic::AtomicUsize,
) {
    let sends = conversations.iter().map(|conversation| async move {
        for n in 0..PER_ROUND {
            let (sender, receiver) = if n % 2 == 0 {
                (&conversation.alice, &conversation.bob)
            } else {
                (&conversation.bob, &conversation.alice)
            };
            let body = json!({
                "content": format!("round {round} message {n} from {sender}"),
                "sender_id": sender,
                "receiver_id": receiver,
            });
            // The conversation is the routing key: nginx hashes it onto one of the two
            // persistence instances.
            let response = http
                .post(format!(
                    "{public}/chat/messages?stream_id={}",
                    conversation.stream_id
                ))
                .json(&body)
                .send()
                .await
                .expect("POST through nginx");
            assert_eq!(response.status().as_u16(), 201, "POST {body}");
            let node = response
                .headers()
                .get("x-chatcore-node")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            {
                let mut writer = conversation.writer.lock().expect("writer");
                assert!(
                    writer.as_ref().is_none_or(|w| *w == node),
                    "one conversation's POSTs on one persistence instance: {writer:?} then {node}"
                );
                *writer = Some(node);
            }
            let stored: Value = response.json().await.expect("stored message");
            let id = stored["message_id"]
                .as_str()
                .expect("message_id")
                .to_owned();
            conversation
                .sent
                .lock()
                .expect("sent")
                .push((id, Instant::now(), receiver.clone()));
            posted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    });
    futures::future::join_all(sends).await;
}

/// Waits until every chat device holds its conversation's messages and every notification
/// socket its user's, or fails with what is missing and the processes' logs.
async fn await_delivery(
    cluster: &mut Cluster,
    conversations: &[Conversation],
    group: &Group,
    notified: &HashMap<String, Device>,
    phase: &str,
) {
    let deadline = Instant::now() + DELIVERY_WAIT;
    loop {
        cluster.assert_running();
        let mut missing = missing(conversations, notified);
        missing.extend(group.missing(notified));
        if missing.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "{phase}: still missing after {DELIVERY_WAIT:?}: {} (first: {:?})\n{}",
                missing.len(),
                &missing[..missing.len().min(5)],
                cluster.tails()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn missing(conversations: &[Conversation], notified: &HashMap<String, Device>) -> Vec<String> {
    let mut missing = Vec::new();
    for conversation in conversations {
        let sent = conversation.sent.lock().expect("sent").clone();
        for device in &conversation.devices {
            let got: HashSet<String> = device.log.lock().expect("log").ids().into_iter().collect();
            for (id, _, _) in &sent {
                if !got.contains(id) {
                    missing.push(format!("{}: {id}", device.label));
                }
            }
        }
        for (id, _, receiver) in &sent {
            let device = &notified[receiver];
            if !device.log.lock().expect("log").ids().contains(id) {
                missing.push(format!("{}: {id}", device.label));
            }
        }
    }
    missing
}

/// The node each conversation's newest connections sit on; fails if its devices are split.
fn placement(conversations: &[Conversation]) -> BTreeMap<String, Vec<usize>> {
    let mut by_node: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, conversation) in conversations.iter().enumerate() {
        let nodes: HashSet<String> = conversation
            .devices
            .iter()
            .map(|device| {
                let log = device.log.lock().expect("log");
                log.connections.last().expect("connected").node.clone()
            })
            .collect();
        assert_eq!(
            nodes.len(),
            1,
            "conversation {i} ({}) has sockets on {nodes:?}",
            conversation.stream_id
        );
        let node = nodes.into_iter().next().expect("one node");
        assert!(
            node.starts_with("chat-ws-"),
            "x-chatcore-node through nginx: {node}"
        );
        by_node.entry(node).or_default().push(i);
    }
    by_node
}

async fn await_connections(devices: impl Iterator<Item = &Device>, at_least: usize) {
    let devices: Vec<&Device> = devices.collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while devices.iter().any(|d| d.connections() < at_least) {
        assert!(Instant::now() < deadline, "devices did not (re)connect");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn counter(metrics: &str, prefix: &str) -> f64 {
    metrics
        .lines()
        .filter(|line| line.starts_with(prefix))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs nginx, kafka, mongo and redis: run scripts/test.sh"]
async fn fifty_conversations_survive_a_killed_chat_ws_a_restarted_change_handler_and_a_stopped_redis(
) {
    let http = reqwest::Client::new();
    let started = Instant::now();
    let mut cluster = Cluster::start(http.clone()).await;
    println!(
        "topology up in {:?}: logs in {}",
        started.elapsed(),
        cluster.dir.display()
    );

    assert_internal_routes_are_guarded(&http, &cluster).await;

    let stop = CancellationToken::new();
    let mut conversations: Vec<Conversation> = (0..CONVERSATIONS).map(Conversation::new).collect();
    let mut notified = HashMap::new();
    for conversation in &mut conversations {
        let ws = &cluster.ws_public;
        let (alice, bob) = (conversation.alice.clone(), conversation.bob.clone());
        conversation.devices = vec![
            Device::chat(ws, &alice, &bob, stop.clone()),
            Device::chat(ws, &alice, &bob, stop.clone()), // alice's second device
            Device::chat(ws, &bob, &alice, stop.clone()),
        ];
        for user in [alice, bob] {
            notified.insert(user.clone(), Device::notifications(ws, &user, stop.clone()));
        }
    }
    let mut group = Group::create(&http, &cluster.public).await;
    for member in group.members.clone() {
        let ws = &cluster.ws_public;
        group
            .devices
            .push(Device::group(ws, &group.stream_id, &member, stop.clone()));
        notified.insert(
            member.clone(),
            Device::notifications(ws, &member, stop.clone()),
        );
    }
    let all_chat = || {
        conversations
            .iter()
            .flat_map(|c| c.devices.iter())
            .chain(group.devices.iter())
    };
    await_connections(all_chat().chain(notified.values()), 1).await;
    println!("the group's sockets are on {}", group.placement());
    let initial = placement(&conversations);
    let spread: Vec<(String, usize)> = initial.iter().map(|(n, c)| (n.clone(), c.len())).collect();
    println!("conversations per chat-ws: {spread:?}");
    assert_eq!(
        initial.len(),
        3,
        "consistent hashing spreads 50 streams over all three: {spread:?}"
    );

    let posted = std::sync::atomic::AtomicUsize::new(0);

    // Round 1: everything up.
    futures::join!(
        send_round(&http, &cluster.public, &conversations, 1, &posted),
        group.send_round(&http, &cluster.public, 1)
    );
    await_delivery(&mut cluster, &conversations, &group, &notified, "round 1").await;
    assert_read_frames_reach_the_group(&http, &cluster, &group).await;

    // The failover call the change handler makes after exhausted retries, through the balancer's
    // internal server: it reaches the instance holding the stream, whose three sockets close with
    // 4000 and reconnect with since=.
    let failed_over = &conversations[1];
    let response = http
        .post(format!(
            "{}/chat/close-stream?stream_id={}",
            cluster.internal, failed_over.stream_id
        ))
        .bearer_auth(cluster::TOKEN)
        .json(&json!({"stream_id": failed_over.stream_id, "reason": "topology failover"}))
        .send()
        .await
        .expect("close-stream through nginx");
    assert_eq!(response.status().as_u16(), 200);
    let closed: Value = response.json().await.expect("closed report");
    assert_eq!(
        closed["closed"], 3,
        "all of the stream's sockets sit where its forwards go"
    );
    await_connections(failed_over.devices.iter(), 2).await;
    for device in &failed_over.devices {
        let log = device.log.lock().expect("log");
        assert_eq!(log.connections.len(), 2, "{}", device.label);
        assert_eq!(
            log.last_close,
            Some(4000),
            "{}: failover close code",
            device.label
        );
        assert_eq!(
            log.connections[0].node, log.connections[1].node,
            "{}",
            device.label
        );
    }

    // Round 2: the chat-ws holding conversation 0 is killed mid-round; its clients reconnect.
    let victim_node = initial
        .iter()
        .find(|(_, convs)| convs.contains(&0))
        .map(|(node, _)| node.clone())
        .expect("conversation 0 is placed");
    let victim = cluster
        .chat_ws
        .iter_mut()
        .find(|i| i.node == victim_node)
        .expect("victim instance");
    let moved = &initial[&victim_node];
    let moved_devices_count = moved.len() * 3;
    let half = posted.load(std::sync::atomic::Ordering::Relaxed) + CONVERSATIONS * PER_ROUND / 2;
    let round2 = async {
        futures::join!(
            send_round(&http, &cluster.public, &conversations, 2, &posted),
            group.send_round(&http, &cluster.public, 2)
        )
    };
    let killer = async {
        while posted.load(std::sync::atomic::Ordering::Relaxed) < half {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        victim.process.kill().await;
    };
    futures::join!(round2, killer);
    let moved_devices = moved.iter().flat_map(|&i| conversations[i].devices.iter());
    await_connections(moved_devices, 2).await;
    cluster.chat_ws.retain(|i| i.node != victim_node);
    await_connections(group.devices.iter(), 1).await;
    await_delivery(
        &mut cluster,
        &conversations,
        &group,
        &notified,
        "round 2 (chat-ws killed)",
    )
    .await;
    group.placement();
    let after_kill = placement(&conversations);
    assert!(
        !after_kill.contains_key(&victim_node),
        "nobody stays on the killed node"
    );
    for (node, convs) in &initial {
        if node != &victim_node {
            for conv in convs {
                assert!(
                    after_kill[node].contains(conv),
                    "conversation {conv} moved off {node}"
                );
            }
        }
    }

    // Round 3: the change handler is killed mid-round and restarted.
    let half = posted.load(std::sync::atomic::Ordering::Relaxed) + CONVERSATIONS * PER_ROUND / 2;
    let public = cluster.public.clone();
    let round3 = async {
        futures::join!(
            send_round(&http, &public, &conversations, 3, &posted),
            group.send_round(&http, &public, 3)
        )
    };
    let killer = async {
        while posted.load(std::sync::atomic::Ordering::Relaxed) < half {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        cluster.kill_change_handler().await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        cluster.start_change_handler().await;
    };
    futures::join!(round3, killer);
    await_delivery(
        &mut cluster,
        &conversations,
        &group,
        &notified,
        "round 3 (change handler restarted)",
    )
    .await;

    // Round 4: Redis stopped; the change handler fails open and delivery goes on.
    cluster.stop_redis().await;
    futures::join!(
        send_round(&http, &cluster.public, &conversations, 4, &posted),
        group.send_round(&http, &cluster.public, 4)
    );
    await_delivery(
        &mut cluster,
        &conversations,
        &group,
        &notified,
        "round 4 (Redis stopped)",
    )
    .await;

    // The last member is removed: its socket closes with 4003 through nginx's internal server,
    // and the next round reaches the four others only.
    remove_last_member(&http, &cluster, &group).await;
    group.send_round(&http, &cluster.public, 5).await;
    await_delivery(
        &mut cluster,
        &conversations,
        &group,
        &notified,
        "round 5 (a member removed)",
    )
    .await;
    let metrics = cluster.change_handler_metrics().await;
    let store_errors = counter(&metrics, "chatcore_event_store_errors_total");
    assert!(
        store_errors > 0.0,
        "the handler noticed Redis was gone:\n{metrics}"
    );

    let mut histories = Vec::new();
    for conversation in &conversations {
        histories.push(history(&http, &cluster.public, &conversation.stream_id).await);
    }
    let reader = format!("{}&user_id={}", group.stream_id, group.members[0]);
    let group_history = history(&http, &cluster.public, &reader).await;

    // Shutdown: every remaining service stops gracefully; websockets get 1001.
    stop.cancel();
    for instance in &mut cluster.chat_ws {
        let status = instance.process.terminate(STOP_WAIT).await;
        assert!(status.success(), "{} exit: {status}", instance.node);
    }
    let status = cluster.notifications_ws.process.terminate(STOP_WAIT).await;
    assert!(status.success(), "notifications-ws exit: {status}");
    let writers: HashSet<String> = conversations
        .iter()
        .filter_map(|c| c.writer.lock().expect("writer").clone())
        .collect();
    assert_eq!(
        writers.len(),
        2,
        "both persistence instances stored conversations: {writers:?}"
    );
    for process in cluster
        .persistence
        .iter_mut()
        .chain([&mut cluster.relay, &mut cluster.nginx])
    {
        let status = process.terminate(STOP_WAIT).await;
        assert!(status.success(), "{} exit: {status}", process.name);
    }
    if let Some(handler) = cluster.change_handler.as_mut() {
        let status = handler.terminate(STOP_WAIT).await;
        assert!(status.success(), "change handler exit: {status}");
    }

    // Every device: exactly the stored messages, in order, each once.
    let (mut delivered, mut recovered, mut reconnected) = (0, 0, 0);
    for (i, conversation) in conversations.into_iter().enumerate() {
        let expected = conversation.sent_ids();
        let stored_at: HashMap<String, Instant> = conversation
            .sent
            .lock()
            .expect("sent")
            .iter()
            .map(|(id, at, _)| (id.clone(), *at))
            .collect();
        assert_eq!(
            histories[i], expected,
            "conversation {i}: the store holds what was sent"
        );
        for device in conversation.devices {
            let label = device.label.clone();
            let log = device.finish(STOP_WAIT).await;
            assert_eq!(log.ids(), expected, "{label}: every message once, in order");
            assert_eq!(log.last_close, Some(1001), "{label}: closed for shutdown");
            delivered += log.received.len();
            recovered += recovered_after_reconnect(&log, &stored_at);
            reconnected += log.connections.len() - 1;
        }
    }
    let group_sent: Vec<String> = group
        .sent
        .lock()
        .expect("sent")
        .iter()
        .map(|(id, _)| id.clone())
        .collect();
    assert_eq!(
        group_history, group_sent,
        "the store holds the group's messages"
    );
    let removed = group.removed.lock().expect("removed").map(|(m, _)| m);
    let expected: Vec<Vec<String>> = (0..GROUP_MEMBERS).map(|m| group.expected(m)).collect();
    for (m, device) in group.devices.into_iter().enumerate() {
        let label = device.label.clone();
        let log = device.finish(STOP_WAIT).await;
        assert_eq!(
            log.ids(),
            expected[m],
            "{label}: every group message once, in order"
        );
        let close = if Some(m) == removed { 4003 } else { 1001 };
        assert_eq!(log.last_close, Some(close), "{label}");
    }
    // Every member but the sender was notified of each group message it was a member for.
    let (mut notifications, mut group_notifications) = (0, 0);
    for (user, device) in notified {
        let log = device.finish(STOP_WAIT).await;
        assert_eq!(
            log.last_close,
            Some(1001),
            "notifications of {user}: closed for shutdown"
        );
        match group.members.contains(&user) {
            true => group_notifications += log.received.len(),
            false => notifications += log.received.len(),
        }
    }
    let sent = posted.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(sent, CONVERSATIONS * PER_ROUND * 4);
    println!(
        "topology: sent {sent} messages; delivered {delivered} chat frames to {} devices \
         ({reconnected} reconnections, {recovered} frames recovered after reconnecting); \
         {notifications} chat notifications for {sent} messages \
         (at least once: {} repeated after the handler restart); \
         event-store errors while Redis was down: {store_errors}; group of {GROUP_MEMBERS}: \
         {} messages, {group_notifications} chat notifications; total {:?}",
        CONVERSATIONS * 3,
        notifications.saturating_sub(sent),
        group_sent.len(),
        started.elapsed()
    );
    assert!(
        reconnected >= moved_devices_count,
        "{moved_devices_count} devices lost their chat-ws, {reconnected} reconnections"
    );
    assert!(
        recovered > 0,
        "messages stored while clients were away came back with since="
    );
    let _ = std::fs::remove_dir_all(&cluster.dir);
}

/// A read receipt posted through nginx to persistence reaches every member's protocol-2 socket
/// (the reader's own included) on the chat-ws holding the group, through nginx's internal server.
async fn assert_read_frames_reach_the_group(
    http: &reqwest::Client,
    cluster: &Cluster,
    group: &Group,
) {
    let (last, _) = group
        .sent
        .lock()
        .expect("sent")
        .last()
        .cloned()
        .expect("a group message");
    let reader = &group.members[1];
    let response = http
        .post(format!("{}/chat/read", cluster.public))
        .json(&json!({"stream_id": group.stream_id, "user_id": reader, "message_id": last}))
        .send()
        .await
        .expect("POST /chat/read through nginx");
    assert_eq!(response.status().as_u16(), 200);
    let state: Value = response.json().await.expect("read state");
    assert_eq!(state["unread"], 0, "{state}");
    let deadline = Instant::now() + Duration::from_secs(30);
    for device in &group.devices {
        while !device
            .log
            .lock()
            .expect("log")
            .reads
            .contains(&(reader.clone(), last.clone()))
        {
            assert!(
                Instant::now() < deadline,
                "{}: no read frame\n{}",
                device.label,
                cluster.tails()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Removes the last member (by the first); waits for its socket's 4003.
async fn remove_last_member(http: &reqwest::Client, cluster: &Cluster, group: &Group) {
    let last = GROUP_MEMBERS - 1;
    let response = http
        .post(format!(
            "{}/conversations/{}/members",
            cluster.public, group.stream_id
        ))
        .json(&json!({"by": group.members[0], "remove": [group.members[last]]}))
        .send()
        .await
        .expect("POST members through nginx");
    assert_eq!(response.status().as_u16(), 200);
    let before = group.sent.lock().expect("sent").len();
    *group.removed.lock().expect("removed") = Some((last, before));
    let device = &group.devices[last];
    let deadline = Instant::now() + Duration::from_secs(30);
    while device.log.lock().expect("log").last_close != Some(4003) {
        assert!(
            Instant::now() < deadline,
            "the removed member's socket was not closed with 4003\n{}",
            cluster.tails()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The public listeners of the tiers and nginx's public server never serve the internal routes;
/// the internal listeners refuse them without the token.
async fn assert_internal_routes_are_guarded(http: &reqwest::Client, cluster: &Cluster) {
    let message = json!({
        "message_id": "0", "content": "forged", "created_at": "2026-01-01T00:00:00Z",
        "stream_id": chatcore::stream_id::stream_id("a", "b"), "sender_id": "a", "receiver_id": "b",
    });
    let status = |url: String, token: Option<&'static str>| {
        let mut request = http.post(url).json(&message);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move { request.send().await.expect("POST").status().as_u16() }
    };
    for instance in &cluster.chat_ws {
        let public = format!("{}/chat/forward-to-websocket", instance.public);
        assert_eq!(
            status(public, Some(cluster::TOKEN)).await,
            404,
            "{}",
            instance.node
        );
        let internal = format!("{}/chat/forward-to-websocket", instance.internal);
        assert_eq!(
            status(internal.clone(), None).await,
            401,
            "{}",
            instance.node
        );
        assert_eq!(
            status(internal, Some("wrong")).await,
            401,
            "{}",
            instance.node
        );
    }
    let public = format!("{}/chat/forward-to-websocket", cluster.public);
    assert_eq!(
        status(public, Some(cluster::TOKEN)).await,
        404,
        "nginx public server"
    );
    let notify = format!(
        "{}/notifications/chat?user_id=b",
        cluster.notifications_ws.public
    );
    assert_eq!(
        status(notify, Some(cluster::TOKEN)).await,
        404,
        "notifications-ws public"
    );
}

/// Frames a device got on a later connection although they were stored before it opened: what
/// the `since=` replay brought back.
fn recovered_after_reconnect(log: &DeviceLog, stored_at: &HashMap<String, Instant>) -> usize {
    log.received
        .iter()
        .filter(|(id, connection)| {
            *connection > 0 && stored_at[id] < log.connections[*connection].opened
        })
        .count()
}

/// The whole stored history of a stream, through nginx, in pages.
async fn history(http: &reqwest::Client, public: &str, stream_id: &str) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    loop {
        let mut url = format!("{public}/chat/messages?stream_id={stream_id}&limit=500");
        if let Some(last) = ids.last() {
            url.push_str(&format!("&since={last}"));
        }
        let page: Value = http
            .get(url)
            .send()
            .await
            .expect("GET history")
            .json()
            .await
            .expect("history JSON");
        let messages = page["messages"].as_array().expect("messages").clone();
        if messages.is_empty() {
            return ids;
        }
        ids.extend(
            messages
                .iter()
                .map(|m| m["message_id"].as_str().expect("id").to_owned()),
        );
    }
}
