//! A soak under faults: the split topology behind nginx (two `persistence`, two
//! `change-handler` in one consumer group, three `chat-ws`, two `notifications-ws`, the `relay`)
//! on a Kafka broker, a MongoDB server (H2 backend: it keeps its data and oplog) and a Redis of
//! its own, under steady paced load, while a fault injector SIGKILLs a component every
//! `SOAK_FAULT_EVERY` and restarts it on the same port, or reloads nginx with a chat-ws removed
//! and re-added. In the end every acknowledged message must be stored, and every chat socket
//! must hold every stored message of its conversation, once and in store order.
//!
//! Run it with `scripts/soak.sh [minutes]`. Settings (environment): `SOAK_MINUTES` (default 2;
//! fractions allowed), `SOAK_FAULT_EVERY` (seconds, default 20), `SOAK_CONVERSATIONS` (default
//! 20), `SOAK_RATE` (posts per second over all conversations, default 10), `SOAK_SEED`,
//! `SOAK_KEEP_LOGS` (keep the logs of a clean run too).

#[allow(dead_code)]
#[path = "soak/backends.rs"]
mod backends;
#[allow(dead_code)]
#[path = "soak/deployment.rs"]
mod deployment;
#[path = "soak/faults.rs"]
mod faults;
#[path = "soak/load.rs"]
mod load;
#[allow(dead_code)]
#[path = "it/topology/processes.rs"]
mod processes;
#[path = "soak/report.rs"]
mod report;

use std::time::Duration;

use deployment::Deployment;
use load::Conversation;
use serde_json::Value;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

fn setting(name: &str, default: f64) -> f64 {
    match std::env::var(name) {
        Ok(value) => value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value} is not a number")),
        Err(_) => default,
    }
}

/// Upper bound of the wait, after the load stopped, for every socket to hold every message.
/// Sessions stranded on an instance whose keys moved reconnect within SESSION_MAX_AGE (40 s).
const SETTLE_WAIT: Duration = Duration::from_secs(150);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs kafka, mongo (jars), redis-server and nginx: run scripts/soak.sh or scripts/test.sh"]
async fn soak_under_faults() {
    let minutes = setting("SOAK_MINUTES", 2.0);
    let every = Duration::from_secs_f64(setting("SOAK_FAULT_EVERY", 20.0));
    let conversations_count = setting("SOAK_CONVERSATIONS", 20.0) as usize;
    let rate = setting("SOAK_RATE", 10.0);
    let seed = std::env::var("SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| u64::from(std::process::id()) * 7919 + 17);
    let duration = Duration::from_secs_f64(minutes * 60.0);

    let unique = chatcore::dedup::ClaimToken::unique()
        .as_str()
        .replace('-', "_");
    let dir = std::env::temp_dir().join(format!("chatcore-soak-{unique}"));
    std::fs::create_dir_all(&dir).expect("soak dir");
    let http = reqwest::Client::new();
    let started = Instant::now();
    let mut deployment = Deployment::start(dir.clone(), http.clone()).await;
    println!(
        "soak: up in {:?} (logs in {}); {minutes} min, a fault every {every:?}, \
         {conversations_count} conversations, {rate} posts/s, seed {seed}",
        started.elapsed(),
        dir.display()
    );

    let sockets_stop = CancellationToken::new();
    let ws = deployment.ws_public();
    let conversations: Vec<Conversation> = (0..conversations_count)
        .map(|i| Conversation::open(i, &ws, &sockets_stop))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while conversations
        .iter()
        .flat_map(|c| c.sockets())
        .any(|s| s.connections() == 0)
    {
        assert!(Instant::now() < deadline, "sockets did not connect");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let sending_stop = CancellationToken::new();
    let every_post = Duration::from_secs_f64(conversations_count as f64 / rate);
    let senders: Vec<_> = conversations
        .iter()
        .map(|c| {
            let offset = Duration::from_secs_f64(c.index as f64 / rate);
            tokio::spawn(load::send_paced(
                http.clone(),
                deployment.public(),
                c.users.clone(),
                c.index,
                c.sends.clone(),
                (every_post, offset),
                sending_stop.clone(),
            ))
        })
        .collect();
    let load_started = Instant::now();
    let faults_stop = CancellationToken::new();
    let stopper = {
        let (faults_stop, sending_stop) = (faults_stop.clone(), sending_stop.clone());
        tokio::spawn(async move {
            tokio::time::sleep(duration).await;
            faults_stop.cancel();
            sending_stop.cancel();
        })
    };
    let faults = faults::inject(
        &mut deployment,
        every,
        faults::Rng::new(seed),
        load_started,
        faults_stop,
    )
    .await;
    stopper.await.expect("stopper");
    for sender in senders {
        sender.await.expect("sender");
    }
    println!("soak: load stopped after {:?}", load_started.elapsed());

    // Settle: until every chat socket holds its conversation's stored messages.
    let public = deployment.public();
    let settle = Instant::now();
    let stored = loop {
        deployment.assert_running();
        let mut stored = Vec::new();
        for c in &conversations {
            stored.push(history(&http, &public, &c.stream_id).await);
        }
        let report = report::compare(&conversations, &stored, &faults);
        if report.lost == 0 || settle.elapsed() > SETTLE_WAIT {
            break stored;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    println!("soak: settled in {:?}", settle.elapsed());
    sockets_stop.cancel();
    let report = report::compare(&conversations, &stored, &faults);
    let summary = report.summary();
    println!("{summary}");
    print!("{}", report.details());
    println!(
        "{}",
        inbox_survey(&http, &public, &conversations, &stored).await
    );
    let clean = report.clean();
    for c in &conversations {
        for key in &c.sends.lock().expect("sends").abandoned {
            println!("soak: abandoned post {key}");
        }
    }
    if !clean {
        println!("soak: problems (first ones): {:#?}", report.problems);
        println!("{}", deployment.tails());
    }
    deployment.stop().await;
    // Data (Kafka's log, the MongoDB file) always goes; logs stay only when the soak failed.
    for data in ["kafka-data", "mongo.mv"] {
        let path = dir.join(data);
        let _ = std::fs::remove_dir_all(&path);
        let _ = std::fs::remove_file(&path);
    }
    if clean && std::env::var_os("SOAK_KEEP_LOGS").is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        println!("soak: logs kept in {}", dir.display());
    }
    assert!(clean, "{summary}");
    assert!(
        report.acked > 0 && !faults.is_empty() || duration < every,
        "the soak acknowledged nothing or injected no fault: {summary}"
    );
}

/// The whole stored history of a stream, through nginx, in pages: `(message_id, client key)`.
async fn history(http: &reqwest::Client, public: &str, stream_id: &str) -> report::Stored {
    let mut stored: report::Stored = Vec::new();
    loop {
        let mut url = format!("{public}/chat/messages?stream_id={stream_id}&limit=500");
        if let Some((last, _)) = stored.last() {
            url.push_str(&format!("&since={last}"));
        }
        let page: Value = match http.get(&url).send().await {
            Ok(response) if response.status().is_success() => {
                response.json().await.expect("history JSON")
            }
            _ => {
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let messages = page["messages"].as_array().expect("messages").clone();
        if messages.is_empty() {
            return stored;
        }
        for m in &messages {
            let id = m["message_id"].as_str().expect("id").to_owned();
            let key = load::key_of(m["content"].as_str().unwrap_or_default())
                .unwrap_or_default()
                .to_owned();
            stored.push((id, key));
        }
    }
}

/// Compares the receivers' inboxes (through nginx) with the stored messages: every message should
/// have left exactly one `chat_notification` in its receiver's inbox. Reported, not yet required:
/// a notification whose forwards all failed while a notification tier was down is not kept.
async fn inbox_survey(
    http: &reqwest::Client,
    public: &str,
    conversations: &[Conversation],
    stored: &[report::Stored],
) -> String {
    let mut expected = 0;
    let mut kept = std::collections::HashSet::new();
    let mut entries = 0;
    let mut misplaced = 0;
    for (c, stored) in conversations.iter().zip(stored) {
        let ids: std::collections::HashSet<&str> =
            stored.iter().map(|(id, _)| id.as_str()).collect();
        expected += ids.len();
        for user in &c.users {
            let Some(inbox) = inbox_of(http, public, user).await else {
                return format!("soak: inbox of {user} unavailable through nginx");
            };
            for entry in inbox {
                let payload = &entry["payload"];
                if entry["notification_type"] != "chat_notification"
                    || payload["stream_id"] != c.stream_id.as_str()
                {
                    continue;
                }
                entries += 1;
                let id = payload["message_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                if payload["receiver_id"] != user.as_str() || !ids.contains(id.as_str()) {
                    misplaced += 1;
                } else {
                    kept.insert((user.clone(), id));
                }
            }
        }
    }
    format!(
        "soak: inbox chat notifications kept {} of {expected} (missing {}), entries {entries} \
         (duplicated {}, misplaced {misplaced}; reported, not required)",
        kept.len(),
        expected.saturating_sub(kept.len()),
        entries - misplaced - kept.len()
    )
}

/// A user's whole inbox, through nginx, in pages; `None` when it cannot be read.
async fn inbox_of(http: &reqwest::Client, public: &str, user: &str) -> Option<Vec<Value>> {
    let mut entries: Vec<Value> = Vec::new();
    let mut failures = 0;
    loop {
        let mut url = format!("{public}/notifications?user_id={user}&limit=500");
        if let Some(last) = entries.last().and_then(|e| e["notification_id"].as_str()) {
            url.push_str(&format!("&since={last}"));
        }
        let page: Value = match http.get(&url).send().await {
            Ok(response) if response.status().is_success() => response.json().await.ok()?,
            _ if failures < 20 => {
                failures += 1;
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            _ => return None,
        };
        let page = page["notifications"].as_array()?.clone();
        if page.is_empty() {
            return Some(entries);
        }
        entries.extend(page);
    }
}
