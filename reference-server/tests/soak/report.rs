//! The soak's accounting: what was acknowledged, what the store holds and what every socket
//! received, compared message by message.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use tokio::time::Instant;

use super::faults::Fault;
use super::load::{Acked, Conversation};

/// A stored message: `(message_id, client key)`, in store order.
pub type Stored = Vec<(String, String)>;

/// The comparison's figures.
#[derive(Debug, Default)]
pub struct Report {
    /// Posts started.
    pub sent: usize,
    /// Posts acknowledged.
    pub acked: usize,
    /// Posts the client gave up on (never acknowledged).
    pub abandoned: usize,
    /// Attempts that failed and were retried.
    pub retried: usize,
    /// Posts acknowledged only after a retry with the same key.
    pub acked_after_retry: usize,
    /// Messages in the store.
    pub stored: usize,
    /// Acknowledged but not stored, or stored but missing on a chat socket (one per socket).
    pub lost: usize,
    /// A client key stored, or received, under more than one message id.
    pub duplicated: usize,
    /// Frames that arrived after a message that is newer in the store (after de-duplication).
    pub reordered: usize,
    /// Frames of a message id the socket had already received (at-least-once; de-duplicated).
    pub repeated_frames: usize,
    /// Chat deliveries expected (stored × chat sockets) and made.
    pub deliveries: (usize, usize),
    /// Chat notifications expected (acked × receiver's sockets) and received.
    pub notifications: (usize, usize),
    /// Delivery latencies: chat frame arrival − send of the acknowledged attempt.
    pub latencies: Vec<Duration>,
    /// Faults by kind.
    pub faults: BTreeMap<&'static str, usize>,
    /// Recovery times by kind: from the fault to the full delivery of the first message
    /// acknowledged after it.
    pub recovery: BTreeMap<&'static str, Vec<Duration>>,
    /// Examples of problems, for the failure message.
    pub problems: Vec<String>,
}

impl Report {
    fn problem(&mut self, text: String) {
        if self.problems.len() < 20 {
            self.problems.push(text);
        }
    }

    /// A latency percentile in milliseconds.
    pub fn percentile_ms(&self, p: f64) -> u128 {
        if self.latencies.is_empty() {
            return 0;
        }
        let mut sorted = self.latencies.clone();
        sorted.sort();
        let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
        sorted[rank.min(sorted.len() - 1)].as_millis()
    }

    /// The one summary line.
    pub fn summary(&self) -> String {
        format!(
            "soak: sent={} acked={} stored={} lost={} duplicated={} reordered={} faults={} \
             p50_ms={} p99_ms={} max_ms={}",
            self.sent,
            self.acked,
            self.stored,
            self.lost,
            self.duplicated,
            self.reordered,
            self.faults.values().sum::<usize>(),
            self.percentile_ms(50.0),
            self.percentile_ms(99.0),
            self.percentile_ms(100.0),
        )
    }

    /// The details under the summary line.
    pub fn details(&self) -> String {
        let mut out = format!(
            "soak: chat deliveries {}/{} (repeated frames, de-duplicated: {}); \
             chat notifications {}/{} (at most once per socket, none replayed after a reconnect); \
             failed attempts retried {} ({} posts acknowledged after a retry), abandoned posts {}\n",
            self.deliveries.1,
            self.deliveries.0,
            self.repeated_frames,
            self.notifications.1,
            self.notifications.0,
            self.retried,
            self.acked_after_retry,
            self.abandoned,
        );
        for (kind, count) in &self.faults {
            let mut times = self.recovery.get(kind).cloned().unwrap_or_default();
            times.sort();
            let median = times.get(times.len() / 2).map(|d| d.as_millis());
            let max = times.last().map(|d| d.as_millis());
            out.push_str(&format!(
                "soak: faults {kind}={count} recovery_ms median={} max={}\n",
                median.map_or("-".into(), |m| m.to_string()),
                max.map_or("-".into(), |m| m.to_string()),
            ));
        }
        out
    }

    /// Whether nothing was lost, duplicated or reordered.
    pub fn clean(&self) -> bool {
        self.lost == 0 && self.duplicated == 0 && self.reordered == 0
    }
}

/// Compares everything; `stored` per conversation, in the order of `conversations`.
pub fn compare(conversations: &[Conversation], stored: &[Stored], faults: &[Fault]) -> Report {
    let mut report = Report::default();
    let mut acked_all: Vec<Acked> = Vec::new();
    let mut delivered_everywhere: HashMap<String, Instant> = HashMap::new();
    for (conversation, stored) in conversations.iter().zip(stored) {
        let sends = conversation.sends.lock().expect("sends");
        report.sent += sends.sent;
        report.acked += sends.acked.len();
        report.abandoned += sends.abandoned.len();
        report.retried += sends.failed_attempts;
        report.acked_after_retry += sends.acked.iter().filter(|a| a.attempts > 1).count();
        report.stored += stored.len();
        let stored_ids: HashSet<&str> = stored.iter().map(|(id, _)| id.as_str()).collect();
        for acked in &sends.acked {
            if !stored_ids.contains(acked.id.as_str()) {
                report.lost += 1;
                report.problem(format!("acked {} ({}) not stored", acked.id, acked.key));
            }
        }
        let mut keys: HashMap<&str, usize> = HashMap::new();
        for (_, key) in stored {
            *keys.entry(key.as_str()).or_default() += 1;
        }
        for (key, copies) in keys.iter().filter(|(_, n)| **n > 1) {
            report.duplicated += copies - 1;
            report.problem(format!("{key} stored {copies} times"));
        }
        let sent_at: HashMap<&str, Instant> = sends
            .acked
            .iter()
            .map(|a| (a.id.as_str(), a.sent))
            .collect();
        let position: HashMap<&str, usize> = stored
            .iter()
            .enumerate()
            .map(|(i, (id, _))| (id.as_str(), i))
            .collect();
        for socket in &conversation.chat {
            let log = socket.log.lock().expect("log");
            let mut seen: HashSet<&str> = HashSet::new();
            let mut ids_of_key: HashMap<&str, HashSet<&str>> = HashMap::new();
            let mut newest: Option<usize> = None;
            for frame in &log.frames {
                if !seen.insert(frame.id.as_str()) {
                    report.repeated_frames += 1;
                    continue;
                }
                ids_of_key
                    .entry(frame.key.as_str())
                    .or_default()
                    .insert(frame.id.as_str());
                match position.get(frame.id.as_str()) {
                    Some(&p) => {
                        if newest.is_some_and(|n| p < n) {
                            report.reordered += 1;
                            report.problem(format!("{}: {} out of order", socket.label, frame.id));
                        }
                        newest = Some(newest.map_or(p, |n| n.max(p)));
                    }
                    None => report.problem(format!(
                        "{}: received {} that the store does not hold",
                        socket.label, frame.id
                    )),
                }
                if let Some(sent) = sent_at.get(frame.id.as_str()) {
                    report
                        .latencies
                        .push(frame.at.saturating_duration_since(*sent));
                }
                let last = delivered_everywhere
                    .entry(frame.id.clone())
                    .or_insert(frame.at);
                *last = (*last).max(frame.at);
            }
            for ids in ids_of_key.values().filter(|ids| ids.len() > 1) {
                report.duplicated += ids.len() - 1;
                report.problem(format!("{}: one key under ids {ids:?}", socket.label));
            }
            report.deliveries.0 += stored.len();
            for (id, key) in stored {
                if seen.contains(id.as_str()) {
                    report.deliveries.1 += 1;
                } else {
                    report.lost += 1;
                    report.problem(format!("{}: never received {id} ({key})", socket.label));
                }
            }
        }
        for (user, socket) in &conversation.notifications {
            let log = socket.log.lock().expect("log");
            let got: HashSet<&str> = log.frames.iter().map(|f| f.id.as_str()).collect();
            let receiver = &conversation.users[*user];
            for acked in &sends.acked {
                let to_user = acked
                    .key
                    .rsplit('-')
                    .next()
                    .and_then(|n| n.parse::<usize>().ok())
                    .is_some_and(|n| &conversation.users[1 - n % 2] == receiver);
                if to_user {
                    report.notifications.0 += 1;
                    report.notifications.1 += usize::from(got.contains(acked.id.as_str()));
                }
            }
        }
        acked_all.extend(sends.acked.iter().cloned());
    }
    acked_all.sort_by_key(|a| a.sent);
    for fault in faults {
        *report.faults.entry(fault.kind.name()).or_default() += 1;
        let recovered = acked_all
            .iter()
            .filter(|a| a.sent >= fault.at)
            .filter_map(|a| delivered_everywhere.get(&a.id))
            .min();
        if let Some(at) = recovered {
            report
                .recovery
                .entry(fault.kind.name())
                .or_default()
                .push(at.saturating_duration_since(fault.at));
        }
    }
    report
}
