//! # chatcore-redis
//!
//! The Redis backend of chatcore: [`RedisEventStore`], a [`chatcore::dedup::EventStore`] shared by
//! every consumer of a group, so an event is processed once however many consumers see it.
//!
//! - A claim is one atomic command, `SET key processing:<token> NX PX <lease> GET`: of two
//!   consumers racing on a key exactly one sets it, and the other learns in the same round trip
//!   whether the key is being processed or already done (unlike an `EXISTS` then `SET`).
//! - Completion sets the key to `done` for `DEDUPLICATION_TTL`, and release deletes it, each only
//!   while the claim is still ours (a small Lua script compares the token), so a failed event is
//!   retried rather than dropped and a stale consumer never clobbers a newer claim.
//! - Keys are `eventstore:{EVENT_STORE_KEY_PREFIX}:{key}` .
//! - The connection is a reconnecting [`redis::aio::ConnectionManager`] created lazily, with
//!   bounded connect and response timeouts: when Redis is down every call fails fast and the
//!   [`chatcore::dedup::Deduplicator`]'s fail-open / fail-closed policy decides, and when it comes
//!   back the store reconnects by itself.
//!
//! The notification throttle of the `separate` strategy is [`chatcore::dedup::Throttle`] on this
//! store.
//!
//! ```no_run
//! use std::sync::Arc;
//! use chatcore::dedup::{DedupConfig, Deduplicator};
//! use chatcore::metrics::Metrics;
//! use chatcore_redis::{RedisConfig, RedisEventStore};
//!
//! # fn build() -> Result<(), chatcore_redis::RedisConfigError> {
//! let store = RedisEventStore::new(RedisConfig::new("127.0.0.1:6379", "chat-cdc"))?;
//! let dedup = Deduplicator::new(Arc::new(store), DedupConfig::default(), Arc::new(Metrics::new()));
//! # let _ = dedup; Ok(()) }
//! ```

#![warn(missing_docs)]
#![deny(unreachable_pub)]

use std::time::Duration;

use async_trait::async_trait;
use chatcore::dedup::{Claim, ClaimToken, EventStore, EventStoreError};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, IntoConnectionInfo, Script};

/// The value of a completed key.
pub const DONE: &str = "done";
/// The prefix of the value of a claimed key; the claim token follows.
pub const PROCESSING_PREFIX: &str = "processing:";

/// Where and how to reach Redis.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `host:port` (the reference server's `REDIS_ADDR`) or a `redis://` URL.
    pub addr: String,
    /// `REDIS_PASSWORD`, if any.
    pub password: Option<String>,
    /// `REDIS_DB`.
    pub db: i64,
    /// `EVENT_STORE_KEY_PREFIX`: keys are `eventstore:{prefix}:{key}`.
    pub key_prefix: String,
    /// Upper bound of one connection attempt.
    pub connect_timeout: Duration,
    /// Upper bound of one command.
    pub response_timeout: Duration,
}

impl RedisConfig {
    /// A configuration with database 0, no password and 1 s timeouts.
    pub fn new(addr: impl Into<String>, key_prefix: impl Into<String>) -> Self {
        Self {
            addr: addr.into(),
            password: None,
            db: 0,
            key_prefix: key_prefix.into(),
            connect_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_secs(1),
        }
    }
}

/// The Redis address or settings are unusable.
#[derive(Debug, thiserror::Error)]
#[error("invalid Redis configuration: {0}")]
pub struct RedisConfigError(String);

/// The idempotency store on Redis.
#[derive(Clone)]
pub struct RedisEventStore {
    connection: ConnectionManager,
    key_prefix: String,
    complete: Script,
    release: Script,
}

impl std::fmt::Debug for RedisEventStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisEventStore")
            .field("key_prefix", &self.key_prefix)
            .finish_non_exhaustive()
    }
}

/// Sets the key to `done` for the TTL when it still holds our claim or has expired.
const COMPLETE_SCRIPT: &str = r"
local current = redis.call('GET', KEYS[1])
if current == false or current == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
";

/// Deletes the key when it still holds our claim.
const RELEASE_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

impl RedisEventStore {
    /// Creates the store. No connection is made until the first call, so a service starts even
    /// while Redis is down (its failure policy applies meanwhile).
    pub fn new(config: RedisConfig) -> Result<Self, RedisConfigError> {
        let client =
            Client::open(connection_info(&config)?).map_err(|e| RedisConfigError(e.to_string()))?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(config.response_timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(config.connect_timeout);
        let connection = ConnectionManager::new_lazy_with_config(client, manager_config)
            .map_err(|e| RedisConfigError(e.to_string()))?;
        Ok(Self {
            connection,
            key_prefix: config.key_prefix,
            complete: Script::new(COMPLETE_SCRIPT),
            release: Script::new(RELEASE_SCRIPT),
        })
    }

    /// The Redis key of an event key: `eventstore:{prefix}:{key}`.
    pub fn redis_key(&self, key: &str) -> String {
        format!("eventstore:{}:{key}", self.key_prefix)
    }

    /// Checks that Redis answers (for readiness probes).
    pub async fn ping(&self) -> Result<(), EventStoreError> {
        let mut connection = self.connection.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut connection)
            .await
            .map(|_| ())
            .map_err(unavailable)
    }
}

fn connection_info(config: &RedisConfig) -> Result<redis::ConnectionInfo, RedisConfigError> {
    let url = if config.addr.contains("://") {
        config.addr.clone()
    } else {
        format!("redis://{}", config.addr)
    };
    let info = url
        .as_str()
        .into_connection_info()
        .map_err(|e| RedisConfigError(format!("{}: {e}", config.addr)))?;
    let mut redis_settings = info.redis_settings().clone().set_db(config.db);
    if let Some(password) = config.password.as_ref().filter(|p| !p.is_empty()) {
        redis_settings = redis_settings.set_password(password.clone());
    }
    Ok(info.set_redis_settings(redis_settings))
}

fn unavailable(error: redis::RedisError) -> EventStoreError {
    EventStoreError(chatcore::error::Cause::new(error))
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

#[async_trait]
impl EventStore for RedisEventStore {
    async fn claim(&self, key: &str, lease: Duration) -> Result<Claim, EventStoreError> {
        let token = ClaimToken::unique();
        let mut connection = self.connection.clone();
        let previous: Option<String> = redis::cmd("SET")
            .arg(self.redis_key(key))
            .arg(format!("{PROCESSING_PREFIX}{}", token.as_str()))
            .arg("NX")
            .arg("PX")
            .arg(millis(lease))
            .arg("GET")
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok(match previous {
            None => Claim::Acquired(token),
            Some(value) if value.starts_with(PROCESSING_PREFIX) => Claim::InProgress,
            Some(_) => Claim::Completed,
        })
    }

    async fn complete(
        &self,
        key: &str,
        token: &ClaimToken,
        ttl: Duration,
    ) -> Result<(), EventStoreError> {
        let mut connection = self.connection.clone();
        self.complete
            .key(self.redis_key(key))
            .arg(format!("{PROCESSING_PREFIX}{}", token.as_str()))
            .arg(DONE)
            .arg(millis(ttl))
            .invoke_async::<i64>(&mut connection)
            .await
            .map(|_| ())
            .map_err(unavailable)
    }

    async fn release(&self, key: &str, token: &ClaimToken) -> Result<(), EventStoreError> {
        let mut connection = self.connection.clone();
        self.release
            .key(self.redis_key(key))
            .arg(format!("{PROCESSING_PREFIX}{}", token.as_str()))
            .invoke_async::<i64>(&mut connection)
            .await
            .map(|_| ())
            .map_err(unavailable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_may_be_host_port_or_urls_and_carry_db_and_password() {
        let mut config = RedisConfig::new("127.0.0.1:6390", "p");
        config.db = 3;
        config.password = Some("secret".into());
        let info = connection_info(&config).expect("valid");
        assert_eq!(info.redis_settings().db(), 3);
        assert_eq!(info.redis_settings().password(), Some("secret"));
        let url =
            connection_info(&RedisConfig::new("redis://localhost:6391/2", "p")).expect("valid");
        assert_eq!(url.addr().to_string(), "localhost:6391");
        assert!(connection_info(&RedisConfig::new("redis://:::", "p")).is_err());
    }

    #[tokio::test]
    async fn keys_follow_the_contract() {
        let store =
            RedisEventStore::new(RedisConfig::new("127.0.0.1:1", "chat-cdc")).expect("lazy");
        assert_eq!(store.redis_key("m1:s1"), "eventstore:chat-cdc:m1:s1");
    }
}
