//! Prometheus counters, labelled like the seed's: events that succeeded, failed or were dropped
//! (by reason), deliveries per tier, retries, failovers, event-store outages and open sockets.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// How an event from the change feed ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Outcome {
    /// Delivered to every target.
    success,
    /// Retries exhausted; the failure policy ran.
    failed,
    /// Not processed, see [`DropReason`].
    dropped,
}

/// Why an event was dropped without delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum DropReason {
    /// Already processed (the event store had its key).
    duplicate,
    /// The record could not be decoded.
    invalid_format,
    /// A change this consumer does not act on (update, delete, other collections).
    ignored_op,
    /// Suppressed by a notification throttle.
    throttled,
}

/// Which websocket tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum TierLabel {
    /// Chat sockets keyed by `stream_id`.
    chat,
    /// Notification sockets keyed by `user_id`.
    notifications,
}

/// Labels of [`Metrics::events`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct EventLabels {
    /// Consumer name, e.g. `chat`.
    pub consumer: String,
    /// How it ended.
    pub outcome: Outcome,
}

/// Labels of [`Metrics::dropped`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct DropLabels {
    /// Consumer name.
    pub consumer: String,
    /// Why.
    pub reason: DropReason,
}

/// Labels naming only a consumer.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ConsumerLabels {
    /// Consumer name.
    pub consumer: String,
}

/// Labels of [`Metrics::deliveries`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct DeliveryLabels {
    /// The tier.
    pub tier: TierLabel,
    /// `delivered` or `failed`.
    pub result: DeliveryResult,
}

/// Per-session delivery result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum DeliveryResult {
    /// Queued to the session.
    delivered,
    /// The session was dead or its queue full.
    failed,
    /// A session closed because its queue was full (also counted as `failed`).
    slow_client_closed,
}

/// How an e-mail of the e-mail consumer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum EmailResult {
    /// Handed to the mail server.
    sent,
    /// The mail server or the directory failed (the attempt is retried).
    failed,
    /// The recipient is not in the user e-mail directory: skipped.
    unknown_recipient,
    /// The address or message was refused before sending: skipped.
    invalid,
    /// The receiver of a chat message was online: no e-mail.
    receiver_online,
}

/// Labels of [`Metrics::emails`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct EmailLabels {
    /// How it ended.
    pub result: EmailResult,
}

/// Labels of [`Metrics::event_store_errors`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct PolicyLabels {
    /// `fail_open` or `fail_closed`.
    pub policy: String,
}

/// Labels of [`Metrics::sockets`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct SocketLabels {
    /// The tier.
    pub tier: TierLabel,
}

/// Every metric the library records, with the registry that renders them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// `chatcore_events_total{consumer,outcome}`.
    pub events: Family<EventLabels, Counter>,
    /// `chatcore_events_dropped_total{consumer,reason}`.
    pub dropped: Family<DropLabels, Counter>,
    /// `chatcore_retries_total{consumer}`: delivery attempts after the first.
    pub retries: Family<ConsumerLabels, Counter>,
    /// `chatcore_failovers_total{consumer}`: failure policies run after exhausted retries.
    pub failovers: Family<ConsumerLabels, Counter>,
    /// `chatcore_deliveries_total{tier,result}`: per-session broadcast results.
    pub deliveries: Family<DeliveryLabels, Counter>,
    /// `chatcore_event_store_errors_total{policy}`: event store unreachable.
    pub event_store_errors: Family<PolicyLabels, Counter>,
    /// `chatcore_sockets{tier}`: open websocket sessions.
    pub sockets: Family<SocketLabels, Gauge<i64, std::sync::atomic::AtomicI64>>,
    /// `chatcore_messages_stored_total`: messages accepted by the persistence API.
    pub messages_stored: Counter<u64, AtomicU64>,
    /// `chatcore_emails_total{result}`: e-mails of the e-mail consumer.
    pub emails: Family<EmailLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates the metrics and registers them under the `chatcore` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("chatcore");
        let metrics = Self {
            events: Family::default(),
            dropped: Family::default(),
            retries: Family::default(),
            failovers: Family::default(),
            deliveries: Family::default(),
            event_store_errors: Family::default(),
            sockets: Family::default(),
            messages_stored: Counter::default(),
            emails: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "events",
            "Change events by consumer and outcome",
            metrics.events.clone(),
        );
        registry.register(
            "events_dropped",
            "Change events dropped without delivery, by reason",
            metrics.dropped.clone(),
        );
        registry.register(
            "retries",
            "Delivery attempts after the first",
            metrics.retries.clone(),
        );
        registry.register(
            "failovers",
            "Failure policies run after exhausted retries",
            metrics.failovers.clone(),
        );
        registry.register(
            "deliveries",
            "Per-session broadcast results by tier",
            metrics.deliveries.clone(),
        );
        registry.register(
            "event_store_errors",
            "Event store unreachable, by failure policy",
            metrics.event_store_errors.clone(),
        );
        registry.register(
            "sockets",
            "Open websocket sessions by tier",
            metrics.sockets.clone(),
        );
        registry.register(
            "messages_stored",
            "Messages accepted by the persistence API",
            metrics.messages_stored.clone(),
        );
        registry.register(
            "emails",
            "E-mails of the e-mail consumer, by result",
            metrics.emails.clone(),
        );
        Self {
            registry,
            ..metrics
        }
    }

    /// Renders every metric in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    /// Counts an event outcome.
    pub fn event(&self, consumer: &str, outcome: Outcome) {
        self.events
            .get_or_create(&EventLabels {
                consumer: consumer.to_owned(),
                outcome,
            })
            .inc();
    }

    /// Counts an e-mail of the e-mail consumer.
    pub fn email(&self, result: EmailResult) {
        self.emails.get_or_create(&EmailLabels { result }).inc();
    }

    /// Reads `chatcore_emails_total` for one result (for tests).
    pub fn email_count(&self, result: EmailResult) -> u64 {
        self.emails.get_or_create(&EmailLabels { result }).get()
    }

    /// Counts a dropped event (also as an `outcome="dropped"` event).
    pub fn drop_event(&self, consumer: &str, reason: DropReason) {
        self.event(consumer, Outcome::dropped);
        self.dropped
            .get_or_create(&DropLabels {
                consumer: consumer.to_owned(),
                reason,
            })
            .inc();
    }

    /// Reads `chatcore_events_total` for one label pair (for tests and health output).
    pub fn event_count(&self, consumer: &str, outcome: Outcome) -> u64 {
        self.events
            .get_or_create(&EventLabels {
                consumer: consumer.to_owned(),
                outcome,
            })
            .get()
    }

    /// Reads `chatcore_events_dropped_total` for one label pair.
    pub fn dropped_count(&self, consumer: &str, reason: DropReason) -> u64 {
        self.dropped
            .get_or_create(&DropLabels {
                consumer: consumer.to_owned(),
                reason,
            })
            .get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text_with_labels() {
        let metrics = Metrics::new();
        metrics.event("chat", Outcome::success);
        metrics.drop_event("chat", DropReason::invalid_format);
        let text = metrics.render();
        assert!(
            text.contains(r#"chatcore_events_total{consumer="chat",outcome="success"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"chatcore_events_dropped_total{consumer="chat",reason="invalid_format"} 1"#
            ),
            "{text}"
        );
        assert_eq!(metrics.event_count("chat", Outcome::dropped), 1);
    }
}
