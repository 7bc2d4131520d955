//! Configuration of `chat-server`: every setting is an environment variable (the seed's names,
//! so an existing `.env` keeps working) and a CLI flag. Durations are Go-style (`100ms`, `30s`).

use std::net::SocketAddr;
use std::time::Duration;

use chatcore::app::{AppConfig, NotificationStrategy, NotificationsConfig};
use chatcore::config::parse_duration;
use chatcore::dedup::{DedupConfig, UnavailablePolicy};
use chatcore::http::Limits;
use chatcore::pipeline::{PipelineConfig, RetryPolicy};
use chatcore::rate_limit::RateLimit;
use chatcore::sockets::{SessionConfig, SlowClientPolicy};
use clap::{Parser, Subcommand, ValueEnum};

/// `chat-server`: the reference deployment of chatcore.
#[derive(Debug, Parser)]
#[command(name = "chat-server", version, about)]
pub struct Cli {
    /// Which service to run; `all` (the default) runs every part in one process.
    #[command(subcommand)]
    pub role: Option<Role>,
    /// Settings shared by every role.
    #[command(flatten)]
    pub settings: Settings,
}

/// The services of the seed, each runnable on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Subcommand)]
pub enum Role {
    /// Persistence API, change handler, chat and notification tiers in one process (the
    /// default).
    All,
    /// The message API (`POST`/`GET /chat/messages`) on MongoDB (`MONGO_URI` required).
    Persistence,
    /// Publishes the MongoDB change stream of `chat` to Kafka in Debezium's shape (`MONGO_URI`
    /// and `CHAT_PERSISTENCE_CHANGE_KAFKA_BOOTSTRAP_SERVERS` required).
    Relay,
    /// Kafka change feed → event store → HTTP forwarders to the chat and notification tiers
    /// (`CHAT_PERSISTENCE_CHANGE_KAFKA_BOOTSTRAP_SERVERS`, `CHAT_MESSAGE_SOCKET_TRANSFER_...` and
    /// `GENERAL_NOTIFICATION_..._CLIENT_HOST` required).
    ChangeHandler,
    /// Chat websockets by `stream_id`; deliveries arrive on `INTERNAL_LISTEN_ADDR` (required, with
    /// `MONGO_URI` for `since=` replays).
    ChatWs,
    /// Notification websockets by `user_id`; deliveries arrive on `INTERNAL_LISTEN_ADDR`
    /// (required).
    NotificationsWs,
    /// Kafka change feed → an e-mail to each offline receiver of a new chat message, through
    /// the `user_email` directory and SMTP; dead-letter topic after exhausted retries
    /// (`CHAT_PERSISTENCE_CHANGE_KAFKA_BOOTSTRAP_SERVERS`, `MONGO_URI`, `SMTP_HOST` and
    /// `EMAIL_FROM_ADDRESS` required).
    Email,
}

impl Role {
    /// The role's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Persistence => "persistence",
            Self::Relay => "relay",
            Self::ChangeHandler => "change-handler",
            Self::ChatWs => "chat-ws",
            Self::NotificationsWs => "notifications-ws",
            Self::Email => "email",
        }
    }
}

/// `close` or `retry`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SlowClients {
    /// Close a session whose queue is full with 4001.
    Close,
    /// Count a failed delivery; the pipeline retries and eventually fails the stream over.
    Retry,
}

/// `jwt` or `none`: how the client routes authenticate (`AUTH_MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuthMode {
    /// JWT bearer tokens (`AUTH_JWT_SECRET` and/or `AUTH_JWKS_FILE`); the subject is the user.
    Jwt,
    /// No authentication, chosen explicitly: anyone may act as any user.
    None,
}

/// `fail-open` or `fail-closed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EventStorePolicy {
    /// Process events anyway when the event store is unreachable (the seed's behaviour).
    FailOpen,
    /// Hold events until the event store is back.
    FailClosed,
}

/// Every setting, with the environment variable that sets it.
#[derive(Debug, Clone, Parser)]
pub struct Settings {
    /// Address the public HTTP and websocket listener binds (client routes only when
    /// `INTERNAL_LISTEN_ADDR` is set).
    #[arg(
        long,
        global = true,
        env = "LISTEN_ADDR",
        default_value = "127.0.0.1:8080"
    )]
    pub listen_addr: SocketAddr,
    /// Address of the listener for the balancer and the change handler: the internal routes
    /// (forward, close-stream, notifications) plus the client routes. Required by `chat-ws` and
    /// `notifications-ws`; in role `all` it moves the internal routes off `LISTEN_ADDR`.
    #[arg(long, global = true, env = "INTERNAL_LISTEN_ADDR")]
    pub internal_listen_addr: Option<SocketAddr>,
    /// Bearer token the internal routes require, and the change handler sends. Unset: no check
    /// (keep the internal listener on a private network).
    #[arg(long, global = true, env = "INTERNAL_TOKEN", hide_env_values = true)]
    pub internal_token: Option<String>,
    /// Name of this instance, sent as the `x-chatcore-node` header on every response.
    #[arg(long, global = true, env = "NODE_ID")]
    pub node_id: Option<String>,
    /// Authentication of the client routes: `jwt` (bearer tokens) or `none` (anyone may act as
    /// any user). Unset: none, and `chat-server` refuses to start unless every listener is on a
    /// loopback address.
    #[arg(long, global = true, env = "AUTH_MODE", value_enum)]
    pub auth_mode: Option<AuthMode>,
    /// HS256 shared secret of the JWTs (its bytes as given; at least 32). Prefer the environment
    /// variable to the flag, which other local users can see.
    #[arg(long, global = true, env = "AUTH_JWT_SECRET", hide_env_values = true)]
    pub auth_jwt_secret: Option<String>,
    /// JWK set file (`{"keys": [...]}`) with the public keys of RS256 and ES256 JWTs, chosen by
    /// the token's `kid`. Read at start-up.
    #[arg(long, global = true, env = "AUTH_JWKS_FILE")]
    pub auth_jwks_file: Option<String>,
    /// Required `iss` claim of the JWTs; unset: not checked.
    #[arg(long, global = true, env = "AUTH_ISSUER")]
    pub auth_issuer: Option<String>,
    /// Accepted `aud` values, comma-separated: a JWT must name at least one. Unset: not checked.
    #[arg(long, global = true, env = "AUTH_AUDIENCE")]
    pub auth_audience: Option<String>,
    /// Clock-skew leeway of the JWTs' `exp` and `nbf`.
    #[arg(long, global = true, env = "AUTH_LEEWAY", default_value = "30s", value_parser = parse_duration)]
    pub auth_leeway: Duration,
    /// How long shutdown waits for connections and in-flight events.
    #[arg(long, global = true, env = "SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,
    /// Interval between server pings on every websocket.
    #[arg(long, global = true, env = "PING_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    pub ping_interval: Duration,
    /// A websocket silent for this long is dropped.
    #[arg(long, global = true, env = "PONG_WAIT", default_value = "40s", value_parser = parse_duration)]
    pub pong_wait: Duration,
    /// Upper bound of one websocket write.
    #[arg(long, global = true, env = "WRITE_WAIT", default_value = "10s", value_parser = parse_duration)]
    pub write_wait: Duration,
    /// Frames queued per websocket before broadcasts to it count as failed.
    #[arg(
        long,
        global = true,
        env = "SOCKET_QUEUE_CAPACITY",
        default_value_t = 256
    )]
    pub socket_queue_capacity: usize,
    /// Largest accepted message content, in bytes.
    #[arg(
        long,
        global = true,
        env = "MAX_CONTENT_BYTES",
        default_value_t = 65_536
    )]
    pub max_content_bytes: usize,
    /// What happens to a websocket whose queue is full: `close` it with 4001 (the client
    /// reconnects with since=) or count a failure and let the pipeline `retry`.
    #[arg(
        long,
        global = true,
        env = "SLOW_CLIENT_POLICY",
        value_enum,
        default_value = "close"
    )]
    pub slow_client_policy: SlowClients,
    /// A websocket open this long (less up to a tenth) is closed with 4002 so its client
    /// reconnects with since= — onto its key's current instance if the balancer's members
    /// changed meanwhile; 0s: never.
    #[arg(long, global = true, env = "SESSION_MAX_AGE", default_value = "1h", value_parser = parse_duration)]
    pub session_max_age: Duration,
    /// Websockets one user may hold open on this instance (both tiers); 0 for no cap. Over it a
    /// subscription is answered 429.
    #[arg(long, global = true, env = "SOCKETS_PER_USER", default_value_t = 64)]
    pub sockets_per_user: usize,
    /// `POST /chat/messages` allowed per authenticated user and second; 0 for no limit. Over it
    /// the answer is 429 with `Retry-After`.
    #[arg(
        long,
        global = true,
        env = "POST_RATE_LIMIT_PER_SECOND",
        default_value_t = 10
    )]
    pub post_rate_limit_per_second: u32,
    /// Posts a user may make at once before the per-second rate applies.
    #[arg(
        long,
        global = true,
        env = "POST_RATE_LIMIT_BURST",
        default_value_t = 20
    )]
    pub post_rate_limit_burst: u32,
    /// A connection that has not sent a complete request head within this time is closed.
    #[arg(long, global = true, env = "HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,
    /// How long a processed event suppresses its duplicates.
    #[arg(long, global = true, env = "DEDUPLICATION_TTL", default_value = "5m", value_parser = parse_duration)]
    pub deduplication_ttl: Duration,
    /// How long a claimed event stays exclusive to the consumer processing it.
    #[arg(long, global = true, env = "DEDUPLICATION_LEASE", default_value = "60s", value_parser = parse_duration)]
    pub deduplication_lease: Duration,
    /// Behaviour when the event store is unreachable.
    #[arg(
        long,
        global = true,
        env = "EVENT_STORE_FAILURE_POLICY",
        value_enum,
        default_value = "fail-open"
    )]
    pub event_store_failure_policy: EventStorePolicy,
    /// Prefix of idempotency keys: `eventstore:{prefix}:{key}`.
    #[arg(
        long,
        global = true,
        env = "EVENT_STORE_KEY_PREFIX",
        default_value = "chat-cdc"
    )]
    pub event_store_key_prefix: String,
    /// Retries after the first delivery attempt.
    #[arg(
        long,
        global = true,
        env = "MESSAGE_RETRY_MAX_RETRIES",
        default_value_t = 5
    )]
    pub message_retry_max_retries: u32,
    /// Wait before the first retry.
    #[arg(long, global = true, env = "MESSAGE_RETRY_INITIAL_INTERVAL", default_value = "100ms", value_parser = parse_duration)]
    pub message_retry_initial_interval: Duration,
    /// Upper bound of the wait between retries.
    #[arg(long, global = true, env = "MESSAGE_RETRY_MAX_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    pub message_retry_max_interval: Duration,
    /// Growth factor of the wait between retries.
    #[arg(
        long,
        global = true,
        env = "MESSAGE_RETRY_MULTIPLIER",
        default_value_t = 2.0
    )]
    pub message_retry_multiplier: f64,
    /// Log filter (`trace`, `debug`, `info`, `warn`, `error`, or a tracing directive).
    #[arg(long, global = true, env = "LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// Log output: `text` or `json`.
    #[arg(long, global = true, env = "LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,
    /// MongoDB connection string of the message store; in memory when unset.
    #[arg(long, global = true, env = "MONGO_URI", hide_env_values = true)]
    pub mongo_uri: Option<String>,
    /// MongoDB database holding `chat`, `user_email` and the change checkpoints.
    #[arg(long, global = true, env = "MONGO_DATABASE", default_value = "chat_db")]
    pub mongo_database: String,
    /// Upper bound of every MongoDB call (a store that does not answer is a 503, not a hang).
    #[arg(long, global = true, env = "MONGO_TIMEOUT", default_value = "3s", value_parser = parse_duration)]
    pub mongo_timeout: Duration,
    /// Redis `host:port` (or `redis://` URL) of the event store; in memory when unset.
    #[arg(long, global = true, env = "REDIS_ADDR")]
    pub redis_addr: Option<String>,
    /// Redis password.
    #[arg(long, global = true, env = "REDIS_PASSWORD", hide_env_values = true)]
    pub redis_password: Option<String>,
    /// Redis database number.
    #[arg(long, global = true, env = "REDIS_DB", default_value_t = 0)]
    pub redis_db: i64,
    /// Kafka bootstrap servers of the change feed. In role `all` the store's changes are relayed
    /// to the topic and consumed back from it; role `change-handler` requires it.
    #[arg(
        long,
        global = true,
        env = "CHAT_PERSISTENCE_CHANGE_KAFKA_BOOTSTRAP_SERVERS"
    )]
    pub kafka_bootstrap_servers: Option<String>,
    /// Topic of the chat change events (Debezium's topic for the `chat` collection).
    #[arg(
        long,
        global = true,
        env = "CHAT_PERSISTENCE_CHANGE_KAFKA_CONSUMER_INFO_TOPIC_NAME",
        default_value = "chat.changes"
    )]
    pub kafka_topic: String,
    /// Consumer group of the change handler.
    #[arg(
        long,
        global = true,
        env = "CHAT_PERSISTENCE_CHANGE_KAFKA_CONSUMER_INFO_CONSUMER_NAME",
        default_value = "chat-change-handler"
    )]
    pub kafka_group: String,
    /// A new consumer group starts at the end of the topic instead of its beginning.
    #[arg(long, global = true, env = "IGNORE_OLD_MESSAGE", default_value_t = false, action = clap::ArgAction::Set)]
    pub ignore_old_message: bool,
    /// Partitions of the topic when role `all` creates it for its relay.
    #[arg(
        long,
        global = true,
        env = "KAFKA_TOPIC_PARTITIONS",
        default_value_t = 3
    )]
    pub kafka_topic_partitions: i32,
    /// Base URL of the chat websocket tier (role `change-handler`).
    #[arg(
        long,
        global = true,
        env = "CHAT_MESSAGE_SOCKET_TRANSFER_OUTGOING_CONFIG_CLIENT_HOST"
    )]
    pub chat_ws_url: Option<String>,
    /// Request timeout towards the chat websocket tier.
    #[arg(long, global = true, env = "CHAT_MESSAGE_SOCKET_TRANSFER_OUTGOING_CONFIG_CLIENT_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub chat_ws_timeout: Duration,
    /// Base URL of the notification websocket tier (role `change-handler`).
    #[arg(
        long,
        global = true,
        env = "GENERAL_NOTIFICATION_OUTGOING_CONFIG_CLIENT_HOST"
    )]
    pub notifications_ws_url: Option<String>,
    /// Request timeout towards the notification websocket tier.
    #[arg(long, global = true, env = "GENERAL_NOTIFICATION_OUTGOING_CONFIG_CLIENT_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub notifications_ws_timeout: Duration,
    /// Role `email`: SMTP, sender, consumer group, retries and dead-letter topic.
    #[command(flatten)]
    pub email: crate::email::EmailSettings,
    /// How chat notifications are sent (roles `all` and `change-handler`): `concurrent` (one
    /// consumer, both tiers), `separate` (a second consumer group `<group>-notifications`,
    /// throttled per conversation) or `segregated` (that group with its own `NOTIFICATIONS_*`
    /// retry, idempotency and log-and-skip failure policy).
    #[arg(
        long,
        global = true,
        env = "NOTIFICATION_STRATEGY",
        value_enum,
        default_value = "concurrent"
    )]
    pub notification_strategy: Strategy,
    /// Strategies `separate` and `segregated`: one chat notification per conversation and
    /// receiver within this window; `0s` turns the throttle off.
    #[arg(long, global = true, env = "NOTIFICATION_THROTTLE_TTL", default_value = "6h", value_parser = parse_duration)]
    pub notification_throttle_ttl: Duration,
    /// Retries of the notification consumers (strategy `segregated`'s chat notifications, and
    /// commerce); the waits follow `MESSAGE_RETRY_*`. Exhausted: logged and skipped.
    #[arg(
        long,
        global = true,
        env = "NOTIFICATIONS_MESSAGE_RETRY_MAX_RETRIES",
        default_value_t = 3
    )]
    pub notifications_message_retry_max_retries: u32,
    /// How long a processed event of the notification consumers suppresses its duplicates.
    #[arg(long, global = true, env = "NOTIFICATIONS_DEDUPLICATION_TTL", default_value = "1h", value_parser = parse_duration)]
    pub notifications_deduplication_ttl: Duration,
    /// Kafka topic of the `purchases` collection's changes (Debezium); unset: purchases are read
    /// from MongoDB's change stream when `MONGO_URI` is set.
    #[arg(long, global = true, env = "COMMERCE_PURCHASES_KAFKA_TOPIC")]
    pub commerce_purchases_kafka_topic: Option<String>,
    /// Kafka topic of the `payments` collection's changes, as above.
    #[arg(long, global = true, env = "COMMERCE_PAYMENTS_KAFKA_TOPIC")]
    pub commerce_payments_kafka_topic: Option<String>,
    /// Kafka topic of the `shipments` collection's changes, as above.
    #[arg(long, global = true, env = "COMMERCE_SHIPMENTS_KAFKA_TOPIC")]
    pub commerce_shipments_kafka_topic: Option<String>,
}

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

impl Cli {
    /// Parses the command line and environment. Help and version are printed and exit 0; any
    /// other error exits 2 after one line naming the environment variable and flag at fault.
    pub fn parse_or_exit() -> Self {
        match Self::try_parse() {
            Ok(cli) => cli,
            Err(error) if !error.use_stderr() => error.exit(),
            Err(error) => {
                eprintln!("chat-server: {}", parse_error_line(&error));
                std::process::exit(2)
            }
        }
    }
}

/// One line for a command-line or environment error: `NAME (--flag): invalid value "x": why`.
pub fn parse_error_line(error: &clap::Error) -> String {
    use clap::error::{ContextKind, ContextValue};
    use clap::CommandFactory;
    let context = |kind| match error.get(kind) {
        Some(ContextValue::String(text)) => Some(text.clone()),
        Some(ContextValue::StyledStr(text)) => Some(text.to_string()),
        _ => None,
    };
    let Some(flag) = context(ContextKind::InvalidArg) else {
        let text = error.render().to_string();
        let first = text.lines().next().unwrap_or("invalid command line");
        return first.trim_start_matches("error: ").to_owned();
    };
    let long = flag.split_whitespace().next().unwrap_or(&flag).to_owned();
    let command = Cli::command();
    let env = command
        .get_arguments()
        .find(|arg| arg.get_long().is_some_and(|l| format!("--{l}") == long))
        .and_then(|arg| arg.get_env())
        .map(|env| env.to_string_lossy().into_owned());
    let name = match env {
        Some(env) => format!("{env} ({long})"),
        None => long,
    };
    let value = context(ContextKind::InvalidValue).unwrap_or_default();
    let reason = std::error::Error::source(error)
        .map(|cause| cause.to_string())
        .unwrap_or_else(|| error.kind().to_string());
    format!("{name}: invalid value {value:?}: {reason}")
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// A setting that cannot be honoured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A backend's settings are unusable.
    #[error("{variable}: {reason}")]
    Backend {
        /// The environment variable.
        variable: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A role needs a setting that is missing.
    #[error("{variable} is required by role {role}")]
    Missing {
        /// The environment variable.
        variable: &'static str,
        /// The role.
        role: &'static str,
    },
    /// A value is out of range.
    #[error("{variable} {reason}")]
    Invalid {
        /// The environment variable.
        variable: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
    /// The authentication settings are missing, contradictory or unsafe; the reason names the
    /// variable.
    #[error("{reason}")]
    Auth {
        /// The environment variable at fault.
        variable: &'static str,
        /// What is wrong, naming the variable.
        reason: String,
    },
}

impl Default for Settings {
    fn default() -> Self {
        // Parsing an empty command line gives every documented default (and reads the environment).
        Settings::parse_from(["chat-server"])
    }
}

impl Settings {
    /// A setting that is set and not empty.
    pub fn present(value: &Option<String>) -> Option<&str> {
        value.as_deref().filter(|v| !v.trim().is_empty())
    }

    /// Checks the settings and turns them into the library's configuration.
    pub fn app_config(&self) -> Result<AppConfig, ConfigError> {
        if self.max_content_bytes == 0 {
            return Err(ConfigError::Invalid {
                variable: "MAX_CONTENT_BYTES",
                reason: "must be at least 1",
            });
        }
        if self.socket_queue_capacity == 0 {
            return Err(ConfigError::Invalid {
                variable: "SOCKET_QUEUE_CAPACITY",
                reason: "must be at least 1",
            });
        }
        if !(self.message_retry_multiplier.is_finite() && self.message_retry_multiplier >= 1.0) {
            return Err(ConfigError::Invalid {
                variable: "MESSAGE_RETRY_MULTIPLIER",
                reason: "must be a number of at least 1.0",
            });
        }
        let dedup = DedupConfig {
            ttl: self.deduplication_ttl,
            lease: self.deduplication_lease,
            on_unavailable: match self.event_store_failure_policy {
                EventStorePolicy::FailOpen => UnavailablePolicy::FailOpen,
                EventStorePolicy::FailClosed => UnavailablePolicy::FailClosed,
            },
        };
        Ok(AppConfig {
            limits: Limits {
                max_content_bytes: self.max_content_bytes,
                sockets_per_user: (self.sockets_per_user > 0).then_some(self.sockets_per_user),
                post_rate: (self.post_rate_limit_per_second > 0).then_some(RateLimit {
                    per_second: self.post_rate_limit_per_second,
                    burst: self.post_rate_limit_burst.max(1),
                }),
            },
            session: SessionConfig {
                ping_interval: self.ping_interval,
                pong_wait: self.pong_wait,
                write_wait: self.write_wait,
                queue_capacity: self.socket_queue_capacity,
                slow_clients: match self.slow_client_policy {
                    SlowClients::Close => SlowClientPolicy::Close,
                    SlowClients::Retry => SlowClientPolicy::Retry,
                },
                max_age: (!self.session_max_age.is_zero()).then_some(self.session_max_age),
            },
            pipeline: PipelineConfig {
                retry: RetryPolicy {
                    max_retries: self.message_retry_max_retries,
                    initial_interval: self.message_retry_initial_interval,
                    max_interval: self.message_retry_max_interval,
                    multiplier: self.message_retry_multiplier,
                },
                ..PipelineConfig::default()
            },
            strategy: match self.notification_strategy {
                Strategy::Concurrent => NotificationStrategy::Concurrent,
                Strategy::Separate => NotificationStrategy::Separate,
                Strategy::Segregated => NotificationStrategy::Segregated,
            },
            notifications: {
                let defaults = NotificationsConfig::default();
                NotificationsConfig {
                    throttle_ttl: self.notification_throttle_ttl,
                    pipeline: PipelineConfig {
                        retry: RetryPolicy {
                            max_retries: self.notifications_message_retry_max_retries,
                            initial_interval: self.message_retry_initial_interval,
                            max_interval: self.message_retry_max_interval,
                            multiplier: self.message_retry_multiplier,
                        },
                        ..defaults.pipeline
                    },
                    dedup: DedupConfig {
                        ttl: self.notifications_deduplication_ttl,
                        ..dedup.clone()
                    },
                }
            },
            dedup,
            // Built by `Settings::authenticator`, which reads AUTH_JWKS_FILE.
            auth: None,
        })
    }

    /// A setting a role cannot run without.
    pub fn required<'a>(
        value: &'a Option<String>,
        variable: &'static str,
        role: &'static str,
    ) -> Result<&'a str, ConfigError> {
        Self::present(value).ok_or(ConfigError::Missing { variable, role })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_names_and_go_durations_are_read() {
        let cli = Cli::parse_from([
            "chat-server",
            "--message-retry-initial-interval",
            "250ms",
            "--deduplication-ttl",
            "1h30m",
        ]);
        let config = cli.settings.app_config().expect("valid");
        assert_eq!(
            config.pipeline.retry.initial_interval,
            Duration::from_millis(250)
        );
        assert_eq!(config.dedup.ttl, Duration::from_secs(5400));
        assert_eq!(cli.role, None);
    }

    #[test]
    fn malformed_values_are_refused_with_the_setting_named() {
        let error = Cli::try_parse_from(["chat-server", "--ping-interval", "30 seconds"])
            .expect_err("bad duration");
        assert!(error.to_string().contains("--ping-interval"), "{error}");
        let settings = Settings {
            message_retry_multiplier: 0.5,
            ..Settings::parse_from(["chat-server"])
        };
        assert!(matches!(
            settings.app_config(),
            Err(ConfigError::Invalid {
                variable: "MESSAGE_RETRY_MULTIPLIER",
                ..
            })
        ));
    }

    #[test]
    fn a_malformed_value_is_one_line_naming_the_variable() {
        let error =
            Cli::try_parse_from(["chat-server", "chat-ws", "--ping-interval", "30 seconds"])
                .expect_err("bad duration");
        let line = parse_error_line(&error);
        assert!(
            line.starts_with("PING_INTERVAL (--ping-interval): invalid value \"30 seconds\": "),
            "{line}"
        );
        assert!(!line.contains('\n'), "{line}");
        let error = Cli::try_parse_from(["chat-server", "--listen-addr", "nowhere"])
            .expect_err("bad address");
        assert!(parse_error_line(&error).starts_with("LISTEN_ADDR (--listen-addr)"));
    }

    #[test]
    fn help_documents_every_variable_with_its_default() {
        use clap::CommandFactory;
        let help = Cli::command().render_long_help().to_string();
        for variable in [
            "LISTEN_ADDR",
            "INTERNAL_LISTEN_ADDR",
            "INTERNAL_TOKEN",
            "NODE_ID",
            "SHUTDOWN_TIMEOUT",
            "PING_INTERVAL",
            "PONG_WAIT",
            "WRITE_WAIT",
            "MONGO_URI",
            "MONGO_DATABASE",
            "REDIS_ADDR",
            "REDIS_PASSWORD",
            "REDIS_DB",
            "DEDUPLICATION_TTL",
            "EVENT_STORE_KEY_PREFIX",
            "MESSAGE_RETRY_MAX_RETRIES",
            "MESSAGE_RETRY_INITIAL_INTERVAL",
            "MESSAGE_RETRY_MAX_INTERVAL",
            "MESSAGE_RETRY_MULTIPLIER",
            "CHAT_PERSISTENCE_CHANGE_KAFKA_BOOTSTRAP_SERVERS",
            "CHAT_PERSISTENCE_CHANGE_KAFKA_CONSUMER_INFO_TOPIC_NAME",
            "CHAT_PERSISTENCE_CHANGE_KAFKA_CONSUMER_INFO_CONSUMER_NAME",
            "CHAT_MESSAGE_SOCKET_TRANSFER_OUTGOING_CONFIG_CLIENT_HOST",
            "CHAT_MESSAGE_SOCKET_TRANSFER_OUTGOING_CONFIG_CLIENT_TIMEOUT",
            "GENERAL_NOTIFICATION_OUTGOING_CONFIG_CLIENT_HOST",
            "GENERAL_NOTIFICATION_OUTGOING_CONFIG_CLIENT_TIMEOUT",
            "LOG_LEVEL",
        ] {
            assert!(
                help.contains(&format!("[env: {variable}")),
                "{variable} missing from --help"
            );
        }
        for default in [
            "[default: 5m]",
            "[default: 100ms]",
            "[default: 30s]",
            "[default: 2]",
            "[default: chat.changes]",
        ] {
            assert!(help.contains(default), "{default} missing from --help");
        }
        for role in [
            "persistence",
            "relay",
            "change-handler",
            "chat-ws",
            "notifications-ws",
            "email",
        ] {
            assert!(help.contains(role), "role {role} missing from --help");
        }
    }

    #[test]
    fn the_notification_strategy_and_its_consumer_settings_are_read() {
        use chatcore::app::NotificationStrategy;
        use chatcore::pipeline::FailurePolicy;
        let defaults = Settings::parse_from(["chat-server"])
            .app_config()
            .expect("valid");
        assert_eq!(defaults.strategy, NotificationStrategy::Concurrent);
        assert_eq!(
            defaults.notifications.throttle_ttl,
            Duration::from_secs(6 * 3600)
        );
        let config = Cli::parse_from([
            "chat-server",
            "--notification-strategy",
            "segregated",
            "--notification-throttle-ttl",
            "0s",
            "--notifications-message-retry-max-retries",
            "1",
            "--notifications-deduplication-ttl",
            "2h",
            "--message-retry-initial-interval",
            "250ms",
        ])
        .settings
        .app_config()
        .expect("valid");
        assert_eq!(config.strategy, NotificationStrategy::Segregated);
        assert!(
            config.notifications.throttle_ttl.is_zero(),
            "0s: no throttle"
        );
        assert_eq!(config.notifications.pipeline.retry.max_retries, 1);
        assert_eq!(
            config.notifications.pipeline.retry.initial_interval,
            Duration::from_millis(250)
        );
        assert_eq!(
            config.notifications.pipeline.failure,
            FailurePolicy::LogAndSkip
        );
        assert_eq!(config.notifications.dedup.ttl, Duration::from_secs(7200));
        assert_eq!(config.pipeline.retry.max_retries, 5, "chat keeps its own");
        assert!(Cli::try_parse_from(["chat-server", "--notification-strategy", "both"]).is_err());
    }

    #[test]
    fn roles_name_the_variable_they_miss() {
        let settings = Settings::parse_from(["chat-server"]);
        assert_eq!(
            Settings::required(&settings.chat_ws_url, "CHAT_MESSAGE_SOCKET_TRANSFER_OUTGOING_CONFIG_CLIENT_HOST", "change-handler")
                .map_err(|e| e.to_string()),
            Err("CHAT_MESSAGE_SOCKET_TRANSFER_OUTGOING_CONFIG_CLIENT_HOST is required by role change-handler".to_owned())
        );
    }
}
