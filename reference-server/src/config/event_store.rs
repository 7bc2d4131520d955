//! The event store (Redis, or in memory) and the idempotency of the chat consumer.

use std::time::Duration;

use chatcore::config::parse_duration;
use chatcore::dedup::{DedupConfig, UnavailablePolicy};
use clap::ValueEnum;

/// `fail-open` or `fail-closed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EventStorePolicy {
    /// Process events anyway when the event store is unreachable (the seed's behaviour).
    FailOpen,
    /// Hold events until the event store is back.
    FailClosed,
}

/// The event store and its idempotency window (flattened into [`super::Settings`] as
/// `event_store`).
#[derive(Debug, Clone, clap::Args)]
pub struct EventStoreSettings {
    /// How long a processed event suppresses its duplicates.
    #[arg(
        long,
        global = true,
        env = "DEDUPLICATION_TTL",
        default_value = "5m",
        value_parser = parse_duration
    )]
    pub deduplication_ttl: Duration,
    /// How long a claimed event stays exclusive to the consumer processing it.
    #[arg(
        long,
        global = true,
        env = "DEDUPLICATION_LEASE",
        default_value = "60s",
        value_parser = parse_duration
    )]
    pub deduplication_lease: Duration,
    /// Behaviour when the event store is unreachable.
    #[arg(
        long = "event-store-failure-policy",
        id = "event_store_failure_policy",
        value_name = "EVENT_STORE_FAILURE_POLICY",
        global = true,
        env = "EVENT_STORE_FAILURE_POLICY",
        value_enum,
        default_value = "fail-open"
    )]
    pub failure_policy: EventStorePolicy,
    /// Prefix of idempotency keys: `eventstore:{prefix}:{key}`.
    #[arg(
        long = "event-store-key-prefix",
        id = "event_store_key_prefix",
        value_name = "EVENT_STORE_KEY_PREFIX",
        global = true,
        env = "EVENT_STORE_KEY_PREFIX",
        default_value = "chat-cdc"
    )]
    pub key_prefix: String,
    /// Redis `host:port` (or `redis://` URL) of the event store; in memory when unset.
    #[arg(long, global = true, env = "REDIS_ADDR")]
    pub redis_addr: Option<String>,
    /// Redis password.
    #[arg(long, global = true, env = "REDIS_PASSWORD", hide_env_values = true)]
    pub redis_password: Option<String>,
    /// Redis database number.
    #[arg(long, global = true, env = "REDIS_DB", default_value_t = 0)]
    pub redis_db: i64,
}

impl EventStoreSettings {
    /// The idempotency configuration of the chat consumer.
    pub fn dedup_config(&self) -> DedupConfig {
        DedupConfig {
            ttl: self.deduplication_ttl,
            lease: self.deduplication_lease,
            on_unavailable: match self.failure_policy {
                EventStorePolicy::FailOpen => UnavailablePolicy::FailOpen,
                EventStorePolicy::FailClosed => UnavailablePolicy::FailClosed,
            },
        }
    }
}
