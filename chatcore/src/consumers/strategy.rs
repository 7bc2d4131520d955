//! The notification strategies and the settings of the notification consumers.

use std::time::Duration;

use crate::dedup::{DedupConfig, DEFAULT_THROTTLE_TTL};
use crate::model::DEFAULT_MAX_CONTENT_BYTES;
use crate::pipeline::{FailurePolicy, PipelineConfig, RetryPolicy};

/// Consumer group of the change handler on the embedded feed.
pub const CHAT_CONSUMER_GROUP: &str = "chat-change-handler";
/// Suffix of the notification consumer's group (strategies `separate` and `segregated`): with
/// the default chat group, `chat-change-handler-notifications`.
pub const NOTIFICATIONS_GROUP_SUFFIX: &str = "-notifications";

/// How chat messages reach the notification tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum NotificationStrategy {
    /// One consumer forwards each message to the chat and the notification tiers concurrently
    /// (the original design's). Simplest; a failing notification tier makes the whole event
    /// retry, and holds back the conversation's next messages meanwhile.
    #[default]
    Concurrent,
    /// The chat consumer forwards chat only; a second consumer group sends chat notifications,
    /// throttled to one per conversation and receiver per [`NotificationsConfig::throttle_ttl`].
    /// Both use the chat consumer's retry and idempotency settings.
    Separate,
    /// Like `Separate`, and the notification consumer has its own retry, idempotency TTL and
    /// failure policy ([`NotificationsConfig`]), so an unavailable notification tier never delays
    /// chat. The e-mail consumer is the third group of this strategy.
    Segregated,
}

impl NotificationStrategy {
    /// True when chat notifications are sent by a consumer group of their own.
    pub fn has_notification_consumer(self) -> bool {
        self != Self::Concurrent
    }
}

/// Settings of the notification consumers: the chat-notification consumer of the `segregated`
/// strategy, and the document consumers (commerce, a team's own: [`Consumer`](super::Consumer)).
#[derive(Debug, Clone)]
pub struct NotificationsConfig {
    /// One chat notification per conversation and receiver within this window (strategies
    /// `separate` and `segregated`); zero turns the throttle off.
    pub throttle_ttl: Duration,
    /// Retry and failure policy (log and skip by default) of the notification consumers.
    pub pipeline: PipelineConfig,
    /// Idempotency of the notification consumers.
    pub dedup: DedupConfig,
}

impl Default for NotificationsConfig {
    fn default() -> Self {
        Self {
            throttle_ttl: DEFAULT_THROTTLE_TTL,
            pipeline: PipelineConfig {
                name: "notifications".to_owned(),
                retry: RetryPolicy {
                    max_retries: 3,
                    ..RetryPolicy::default()
                },
                failure: FailurePolicy::LogAndSkip,
                ..PipelineConfig::default()
            },
            dedup: DedupConfig {
                ttl: Duration::from_secs(60 * 60),
                ..DedupConfig::default()
            },
        }
    }
}

/// Everything the consumers of a node need to know: the strategy, the chat consumer's retry and
/// idempotency, the notification consumers' settings, and the content limit the chat handler
/// applies to decoded messages.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// How chat notifications are delivered.
    pub strategy: NotificationStrategy,
    /// The chat consumer's retry and failure policy.
    pub pipeline: PipelineConfig,
    /// The chat consumer's idempotency.
    pub dedup: DedupConfig,
    /// The notification consumers.
    pub notifications: NotificationsConfig,
    /// Messages with longer content are dropped as invalid.
    pub max_content_bytes: usize,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            strategy: NotificationStrategy::default(),
            pipeline: PipelineConfig::default(),
            dedup: DedupConfig::default(),
            notifications: NotificationsConfig::default(),
            max_content_bytes: DEFAULT_MAX_CONTENT_BYTES,
        }
    }
}
