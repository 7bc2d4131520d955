//! [`Metrics`]: what the library records, kept and rendered with the `prometheus` feature.

use super::labels::{
    ClientFrameOutcome, ConversationChange, DeliveryResult, DropReason, EmailResult, Outcome,
};
use crate::tier::Tier;

/// Every counter the library records.
///
/// ```
/// use chatcore::metrics::{DropReason, Metrics, Outcome};
///
/// let metrics = Metrics::new();
/// metrics.event("chat", Outcome::Success);
/// metrics.drop_event("chat", DropReason::InvalidFormat);
/// # #[cfg(feature = "prometheus")]
/// assert!(metrics.render().contains(r#"chatcore_events_total{consumer="chat",outcome="success"} 1"#));
/// ```
#[derive(Debug, Default)]
pub struct Metrics {
    #[cfg(feature = "prometheus")]
    prometheus: prometheus::Counters,
}

impl Metrics {
    /// Creates the counters (registered under the `chatcore` prefix with `prometheus`).
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts an event outcome (`chatcore_events_total{consumer,outcome}`).
    pub fn event(&self, consumer: &str, outcome: Outcome) {
        #[cfg(feature = "prometheus")]
        self.prometheus.event(consumer, outcome);
        #[cfg(not(feature = "prometheus"))]
        let _ = (consumer, outcome);
    }

    /// Counts a dropped event (`chatcore_events_dropped_total{consumer,reason}`), also as an
    /// `outcome="dropped"` event.
    pub fn drop_event(&self, consumer: &str, reason: DropReason) {
        self.event(consumer, Outcome::Dropped);
        #[cfg(feature = "prometheus")]
        self.prometheus.drop_event(consumer, reason);
        #[cfg(not(feature = "prometheus"))]
        let _ = reason;
    }

    /// Counts a delivery attempt after the first (`chatcore_retries_total{consumer}`).
    pub fn retry(&self, consumer: &str) {
        #[cfg(feature = "prometheus")]
        self.prometheus.retry(consumer);
        #[cfg(not(feature = "prometheus"))]
        let _ = consumer;
    }

    /// Counts a failure policy run after exhausted retries (`chatcore_failovers_total{consumer}`).
    pub fn failover(&self, consumer: &str) {
        #[cfg(feature = "prometheus")]
        self.prometheus.failover(consumer);
        #[cfg(not(feature = "prometheus"))]
        let _ = consumer;
    }

    /// Counts `n` per-session broadcast results (`chatcore_deliveries_total{tier,result}`).
    pub fn deliveries(&self, tier: Tier, result: DeliveryResult, n: u64) {
        #[cfg(feature = "prometheus")]
        self.prometheus.deliveries(tier, result, n);
        #[cfg(not(feature = "prometheus"))]
        let _ = (tier, result, n);
    }

    /// Counts an unreachable event store under failure policy `policy`
    /// (`chatcore_event_store_errors_total{policy}`).
    pub fn event_store_error(&self, policy: &str) {
        #[cfg(feature = "prometheus")]
        self.prometheus.event_store_error(policy);
        #[cfg(not(feature = "prometheus"))]
        let _ = policy;
    }

    /// Moves the open-sessions gauge of `tier` by `delta` (`chatcore_sockets{tier}`).
    pub fn sockets_changed(&self, tier: Tier, delta: i64) {
        #[cfg(feature = "prometheus")]
        self.prometheus.sockets_changed(tier, delta);
        #[cfg(not(feature = "prometheus"))]
        let _ = (tier, delta);
    }

    /// Counts a message accepted by the persistence API (`chatcore_messages_stored_total`).
    pub fn message_stored(&self) {
        #[cfg(feature = "prometheus")]
        self.prometheus.message_stored();
    }

    /// Counts a conversation write (`chatcore_groups_created_total`,
    /// `chatcore_membership_changes_total`, `chatcore_read_receipts_total`).
    pub fn conversation(&self, change: ConversationChange) {
        #[cfg(feature = "prometheus")]
        self.prometheus.conversation(change);
        #[cfg(not(feature = "prometheus"))]
        let _ = change;
    }

    /// Counts a frame a client sent on its chat socket (`chatcore_client_frames_total{outcome}`).
    pub fn client_frame(&self, outcome: ClientFrameOutcome) {
        #[cfg(feature = "prometheus")]
        self.prometheus.client_frame(outcome);
        #[cfg(not(feature = "prometheus"))]
        let _ = outcome;
    }

    /// Counts an e-mail of the e-mail consumer (`chatcore_emails_total{result}`).
    pub fn email(&self, result: EmailResult) {
        #[cfg(feature = "prometheus")]
        self.prometheus.email(result);
        #[cfg(not(feature = "prometheus"))]
        let _ = result;
    }

    /// Counts `n` notifications newly kept in an inbox (`chatcore_inbox_entries_written_total`).
    pub fn inbox_written(&self, n: u64) {
        #[cfg(feature = "prometheus")]
        self.prometheus.inbox_written(n);
        #[cfg(not(feature = "prometheus"))]
        let _ = n;
    }

    /// Counts `n` inbox entries answered by a history request or replayed on a socket
    /// (`chatcore_inbox_entries_read_total`).
    pub fn inbox_read(&self, n: u64) {
        #[cfg(feature = "prometheus")]
        self.prometheus.inbox_read(n);
        #[cfg(not(feature = "prometheus"))]
        let _ = n;
    }

    /// Counts a mark-read request served (`chatcore_inbox_read_requests_total`).
    pub fn inbox_read_request(&self) {
        #[cfg(feature = "prometheus")]
        self.prometheus.inbox_read_request();
    }
}

#[cfg(feature = "prometheus")]
#[cfg_attr(docsrs, doc(cfg(feature = "prometheus")))]
impl Metrics {
    /// Renders every metric in the Prometheus text format.
    pub fn render(&self) -> String {
        self.prometheus.render()
    }

    /// Reads `chatcore_events_total` for one consumer and outcome.
    pub fn event_count(&self, consumer: &str, outcome: Outcome) -> u64 {
        self.prometheus.event_count(consumer, outcome)
    }

    /// Reads `chatcore_events_dropped_total` for one consumer and reason.
    pub fn dropped_count(&self, consumer: &str, reason: DropReason) -> u64 {
        self.prometheus.dropped_count(consumer, reason)
    }

    /// Reads `chatcore_retries_total` for one consumer.
    pub fn retry_count(&self, consumer: &str) -> u64 {
        self.prometheus.retry_count(consumer)
    }

    /// Reads `chatcore_client_frames_total` for one outcome.
    pub fn client_frame_count(&self, outcome: ClientFrameOutcome) -> u64 {
        self.prometheus.client_frame_count(outcome)
    }

    /// Reads `chatcore_emails_total` for one result.
    pub fn email_count(&self, result: EmailResult) -> u64 {
        self.prometheus.email_count(result)
    }

    /// Reads `chatcore_inbox_entries_written_total`.
    pub fn inbox_written_count(&self) -> u64 {
        self.prometheus.inbox_written_count()
    }
}

#[cfg(feature = "prometheus")]
mod prometheus {
    use std::sync::atomic::{AtomicI64, AtomicU64};

    use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::family::Family;
    use prometheus_client::metrics::gauge::Gauge;
    use prometheus_client::registry::Registry;

    use super::{ClientFrameOutcome, DeliveryResult, DropReason, EmailResult, Outcome, Tier};

    impl EncodeLabelValue for Tier {
        fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
            std::fmt::Write::write_str(encoder, self.label())
        }
    }

    #[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
    struct EventLabels {
        consumer: String,
        outcome: Outcome,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
    struct DropLabels {
        consumer: String,
        reason: DropReason,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
    struct ConsumerLabels {
        consumer: String,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
    struct DeliveryLabels {
        tier: Tier,
        result: DeliveryResult,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
    struct EmailLabels {
        result: EmailResult,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
    struct ClientFrameLabels {
        outcome: ClientFrameOutcome,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
    struct PolicyLabels {
        policy: String,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
    struct SocketLabels {
        tier: Tier,
    }

    /// The prometheus-client families behind [`super::Metrics`].
    #[derive(Debug)]
    pub(super) struct Counters {
        registry: Registry,
        events: Family<EventLabels, Counter>,
        dropped: Family<DropLabels, Counter>,
        retries: Family<ConsumerLabels, Counter>,
        failovers: Family<ConsumerLabels, Counter>,
        deliveries: Family<DeliveryLabels, Counter>,
        event_store_errors: Family<PolicyLabels, Counter>,
        sockets: Family<SocketLabels, Gauge<i64, AtomicI64>>,
        messages_stored: Counter<u64, AtomicU64>,
        emails: Family<EmailLabels, Counter>,
        client_frames: Family<ClientFrameLabels, Counter>,
        inbox_written: Counter<u64, AtomicU64>,
        inbox_read: Counter<u64, AtomicU64>,
        inbox_read_requests: Counter<u64, AtomicU64>,
        groups_created: Counter<u64, AtomicU64>,
        membership_changes: Counter<u64, AtomicU64>,
        read_receipts: Counter<u64, AtomicU64>,
    }

    impl Default for Counters {
        fn default() -> Self {
            let counters = Self {
                registry: Registry::with_prefix("chatcore"),
                events: Family::default(),
                dropped: Family::default(),
                retries: Family::default(),
                failovers: Family::default(),
                deliveries: Family::default(),
                event_store_errors: Family::default(),
                sockets: Family::default(),
                messages_stored: Counter::default(),
                emails: Family::default(),
                client_frames: Family::default(),
                inbox_written: Counter::default(),
                inbox_read: Counter::default(),
                inbox_read_requests: Counter::default(),
                groups_created: Counter::default(),
                membership_changes: Counter::default(),
                read_receipts: Counter::default(),
            };
            counters.registered()
        }
    }

    impl Counters {
        fn registered(mut self) -> Self {
            let r = &mut self.registry;
            r.register(
                "events",
                "Change events by consumer and outcome",
                self.events.clone(),
            );
            r.register(
                "events_dropped",
                "Change events dropped without delivery, by reason",
                self.dropped.clone(),
            );
            r.register(
                "retries",
                "Delivery attempts after the first",
                self.retries.clone(),
            );
            r.register(
                "failovers",
                "Failure policies run after exhausted retries",
                self.failovers.clone(),
            );
            r.register(
                "deliveries",
                "Per-session broadcast results by tier",
                self.deliveries.clone(),
            );
            r.register(
                "event_store_errors",
                "Event store unreachable, by failure policy",
                self.event_store_errors.clone(),
            );
            r.register(
                "sockets",
                "Open websocket sessions by tier",
                self.sockets.clone(),
            );
            r.register(
                "messages_stored",
                "Messages accepted by the persistence API",
                self.messages_stored.clone(),
            );
            r.register(
                "emails",
                "E-mails of the e-mail consumer, by result",
                self.emails.clone(),
            );
            r.register(
                "inbox_entries_written",
                "Notifications newly kept in an inbox",
                self.inbox_written.clone(),
            );
            r.register(
                "inbox_entries_read",
                "Inbox entries answered by GET /notifications or replayed on a socket",
                self.inbox_read.clone(),
            );
            r.register(
                "inbox_read_requests",
                "Mark-read requests served",
                self.inbox_read_requests.clone(),
            );
            r.register(
                "client_frames",
                "Frames clients sent on chat sockets, by outcome",
                self.client_frames.clone(),
            );
            r.register(
                "groups_created",
                "Groups created by POST /conversations",
                self.groups_created.clone(),
            );
            r.register(
                "membership_changes",
                "Group membership changes applied",
                self.membership_changes.clone(),
            );
            r.register(
                "read_receipts",
                "Read receipts that moved a read marker",
                self.read_receipts.clone(),
            );
            self
        }

        fn event_counter(&self, consumer: &str, outcome: Outcome) -> Counter {
            self.events
                .get_or_create(&EventLabels {
                    consumer: consumer.to_owned(),
                    outcome,
                })
                .clone()
        }

        fn drop_counter(&self, consumer: &str, reason: DropReason) -> Counter {
            self.dropped
                .get_or_create(&DropLabels {
                    consumer: consumer.to_owned(),
                    reason,
                })
                .clone()
        }

        fn retry_counter(&self, consumer: &str) -> Counter {
            self.retries
                .get_or_create(&ConsumerLabels {
                    consumer: consumer.to_owned(),
                })
                .clone()
        }

        pub(super) fn event(&self, consumer: &str, outcome: Outcome) {
            self.event_counter(consumer, outcome).inc();
        }

        pub(super) fn drop_event(&self, consumer: &str, reason: DropReason) {
            self.drop_counter(consumer, reason).inc();
        }

        pub(super) fn retry(&self, consumer: &str) {
            self.retry_counter(consumer).inc();
        }

        pub(super) fn failover(&self, consumer: &str) {
            self.failovers
                .get_or_create(&ConsumerLabels {
                    consumer: consumer.to_owned(),
                })
                .inc();
        }

        pub(super) fn deliveries(&self, tier: Tier, result: DeliveryResult, n: u64) {
            self.deliveries
                .get_or_create(&DeliveryLabels { tier, result })
                .inc_by(n);
        }

        pub(super) fn event_store_error(&self, policy: &str) {
            self.event_store_errors
                .get_or_create(&PolicyLabels {
                    policy: policy.to_owned(),
                })
                .inc();
        }

        pub(super) fn sockets_changed(&self, tier: Tier, delta: i64) {
            self.sockets
                .get_or_create(&SocketLabels { tier })
                .inc_by(delta);
        }

        pub(super) fn message_stored(&self) {
            self.messages_stored.inc();
        }

        pub(super) fn conversation(&self, change: super::ConversationChange) {
            match change {
                super::ConversationChange::GroupCreated => self.groups_created.inc(),
                super::ConversationChange::MembersChanged => self.membership_changes.inc(),
                super::ConversationChange::ReadMarkerMoved => self.read_receipts.inc(),
            };
        }

        pub(super) fn client_frame(&self, outcome: ClientFrameOutcome) {
            self.client_frames
                .get_or_create(&ClientFrameLabels { outcome })
                .inc();
        }

        pub(super) fn client_frame_count(&self, outcome: ClientFrameOutcome) -> u64 {
            self.client_frames
                .get_or_create(&ClientFrameLabels { outcome })
                .get()
        }

        pub(super) fn email(&self, result: EmailResult) {
            self.emails.get_or_create(&EmailLabels { result }).inc();
        }

        pub(super) fn inbox_written(&self, n: u64) {
            self.inbox_written.inc_by(n);
        }

        pub(super) fn inbox_read(&self, n: u64) {
            self.inbox_read.inc_by(n);
        }

        pub(super) fn inbox_read_request(&self) {
            self.inbox_read_requests.inc();
        }

        pub(super) fn render(&self) -> String {
            let mut out = String::new();
            if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
                out.clear();
            }
            out
        }

        pub(super) fn event_count(&self, consumer: &str, outcome: Outcome) -> u64 {
            self.event_counter(consumer, outcome).get()
        }

        pub(super) fn dropped_count(&self, consumer: &str, reason: DropReason) -> u64 {
            self.drop_counter(consumer, reason).get()
        }

        pub(super) fn retry_count(&self, consumer: &str) -> u64 {
            self.retry_counter(consumer).get()
        }

        pub(super) fn email_count(&self, result: EmailResult) -> u64 {
            self.emails.get_or_create(&EmailLabels { result }).get()
        }

        pub(super) fn inbox_written_count(&self) -> u64 {
            self.inbox_written.get()
        }
    }
}

#[cfg(all(test, feature = "prometheus"))]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text_with_labels() {
        let metrics = Metrics::new();
        metrics.event("chat", Outcome::Success);
        metrics.drop_event("chat", DropReason::InvalidFormat);
        metrics.deliveries(Tier::Notifications, DeliveryResult::SlowClientClosed, 2);
        let text = metrics.render();
        for line in [
            r#"chatcore_events_total{consumer="chat",outcome="success"} 1"#,
            r#"chatcore_events_dropped_total{consumer="chat",reason="invalid_format"} 1"#,
            r#"chatcore_deliveries_total{tier="notifications",result="slow_client_closed"} 2"#,
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        assert_eq!(metrics.event_count("chat", Outcome::Dropped), 1);
    }
}
