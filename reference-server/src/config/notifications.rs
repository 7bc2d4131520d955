//! The notification strategy, its consumers' retries and idempotency, and the inbox retention.

use std::time::Duration;

use chatcore::app::{NotificationStrategy, NotificationsConfig};
use chatcore::config::parse_duration;
use chatcore::dedup::DedupConfig;
use chatcore::pipeline::{PipelineConfig, RetryPolicy};
use clap::ValueEnum;

/// `concurrent`, `separate` or `segregated` (`NOTIFICATION_STRATEGY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Strategy {
    /// One consumer forwards to the chat and notification tiers concurrently.
    Concurrent,
    /// A second consumer group sends throttled chat notifications.
    Separate,
    /// Consumer groups with their own retry, idempotency and failure policies.
    Segregated,
}

impl From<Strategy> for NotificationStrategy {
    fn from(strategy: Strategy) -> Self {
        match strategy {
            Strategy::Concurrent => Self::Concurrent,
            Strategy::Separate => Self::Separate,
            Strategy::Segregated => Self::Segregated,
        }
    }
}

/// Notifications (flattened into [`super::Settings`] as `notifications`).
#[derive(Debug, Clone, clap::Args)]
pub struct NotificationSettings {
    /// How chat notifications are sent (roles `all` and `change-handler`): `concurrent` (one
    /// consumer, both tiers), `separate` (a second consumer group `<group>-notifications`,
    /// throttled per conversation) or `segregated` (that group with its own `NOTIFICATIONS_*`
    /// retry, idempotency and log-and-skip failure policy).
    #[arg(
        long = "notification-strategy",
        id = "notification_strategy",
        value_name = "NOTIFICATION_STRATEGY",
        global = true,
        env = "NOTIFICATION_STRATEGY",
        value_enum,
        default_value = "concurrent"
    )]
    pub strategy: Strategy,
    /// Strategies `separate` and `segregated`: one chat notification per conversation and
    /// receiver within this window; `0s` turns the throttle off.
    #[arg(
        long = "notification-throttle-ttl",
        id = "notification_throttle_ttl",
        value_name = "NOTIFICATION_THROTTLE_TTL",
        global = true,
        env = "NOTIFICATION_THROTTLE_TTL",
        default_value = "6h",
        value_parser = parse_duration
    )]
    pub throttle_ttl: Duration,
    /// How long the notification inbox keeps an entry (`GET /notifications`): a TTL index on
    /// MongoDB, pruned as it is read in memory. More than `0s`; default 30 days (`720h`).
    #[arg(
        long = "notification-retention",
        id = "notification_retention",
        value_name = "NOTIFICATION_RETENTION",
        global = true,
        env = "NOTIFICATION_RETENTION",
        default_value = "720h",
        value_parser = parse_duration
    )]
    pub retention: Duration,
    /// Retries of the notification consumers (strategy `segregated`'s chat notifications, and
    /// commerce); the waits follow `MESSAGE_RETRY_*`. Exhausted: logged and skipped.
    #[arg(
        long = "notifications-message-retry-max-retries",
        id = "notifications_message_retry_max_retries",
        value_name = "NOTIFICATIONS_MESSAGE_RETRY_MAX_RETRIES",
        global = true,
        env = "NOTIFICATIONS_MESSAGE_RETRY_MAX_RETRIES",
        default_value_t = 3
    )]
    pub max_retries: u32,
    /// How long a processed event of the notification consumers suppresses its duplicates.
    #[arg(
        long = "notifications-deduplication-ttl",
        id = "notifications_deduplication_ttl",
        value_name = "NOTIFICATIONS_DEDUPLICATION_TTL",
        global = true,
        env = "NOTIFICATIONS_DEDUPLICATION_TTL",
        default_value = "1h",
        value_parser = parse_duration
    )]
    pub deduplication_ttl: Duration,
}

impl NotificationSettings {
    /// The notification consumers' configuration: `retry` (with these retries) and `dedup`
    /// (with this TTL) are the chat consumer's.
    pub fn config(&self, retry: RetryPolicy, dedup: &DedupConfig) -> NotificationsConfig {
        let defaults = NotificationsConfig::default();
        NotificationsConfig {
            throttle_ttl: self.throttle_ttl,
            pipeline: PipelineConfig {
                retry: RetryPolicy {
                    max_retries: self.max_retries,
                    ..retry
                },
                ..defaults.pipeline
            },
            dedup: DedupConfig {
                ttl: self.deduplication_ttl,
                ..dedup.clone()
            },
        }
    }
}
