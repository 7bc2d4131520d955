//! [`Settings`]: every group of settings, and the library configuration they make together.

use chatcore::app::AppConfig;
use chatcore::pipeline::PipelineConfig;
use clap::Parser;

use super::{
    error, AuthSettings, CommerceSettings, ConfigError, EmailSettings, EventStoreSettings,
    KafkaSettings, LimitSettings, LogSettings, MongoSettings, NotificationSettings, RetrySettings,
    ServerSettings, SocketSettings, StoreKind, StoreSettings, TierSettings,
};

/// Every setting, with the environment variable that sets it, in groups.
#[derive(Debug, Clone, Parser)]
pub struct Settings {
    /// Listeners, internal token, node name, shutdown and header bounds.
    #[command(flatten)]
    pub server: ServerSettings,
    /// Authentication of the client routes (`AUTH_*`).
    #[command(flatten)]
    pub auth: AuthSettings,
    /// Websocket sessions (`PING_INTERVAL`, `PONG_WAIT`, `WRITE_WAIT`, `WS_*`, ...).
    #[command(flatten)]
    pub sockets: SocketSettings,
    /// Content size, sockets per user, post rate.
    #[command(flatten)]
    pub limits: LimitSettings,
    /// The event store (`REDIS_*`, `EVENT_STORE_*`) and `DEDUPLICATION_*`.
    #[command(flatten)]
    pub event_store: EventStoreSettings,
    /// `MESSAGE_RETRY_*`.
    #[command(flatten)]
    pub retry: RetrySettings,
    /// `LOG_LEVEL`, `LOG_FORMAT`.
    #[command(flatten)]
    pub log: LogSettings,
    /// The message store of role `all` (`STORE`, `DATA_DIR`).
    #[command(flatten)]
    pub store: StoreSettings,
    /// MongoDB (`MONGO_*`).
    #[command(flatten)]
    pub mongo: MongoSettings,
    /// The Kafka change feed.
    #[command(flatten)]
    pub kafka: KafkaSettings,
    /// The remote websocket tiers of role `change-handler`.
    #[command(flatten)]
    pub tiers: TierSettings,
    /// Role `email`: SMTP, sender, consumer group, retries and dead-letter topic.
    #[command(flatten)]
    pub email: EmailSettings,
    /// The notification strategy, its consumers and the inbox retention.
    #[command(flatten)]
    pub notifications: NotificationSettings,
    /// The commerce collections' Kafka topics.
    #[command(flatten)]
    pub commerce: CommerceSettings,
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
        error::present(value)
    }

    /// A setting a role cannot run without.
    pub fn required<'a>(
        value: &'a Option<String>,
        variable: &'static str,
        role: &'static str,
    ) -> Result<&'a str, ConfigError> {
        error::required(value, variable, role)
    }

    /// Checks the settings and turns them into the library's configuration.
    pub fn app_config(&self) -> Result<AppConfig, ConfigError> {
        let limits = self.limits.limits()?;
        let session = self.sockets.session_config(limits.max_content_bytes)?;
        let retry = self.retry.policy()?;
        let dedup = self.event_store.dedup_config();
        Ok(AppConfig {
            limits,
            session,
            pipeline: PipelineConfig {
                retry: retry.clone(),
                ..PipelineConfig::default()
            },
            strategy: self.notifications.strategy.into(),
            notifications: self.notifications.config(retry, &dedup),
            dedup,
        })
    }

    /// The message store `STORE` and `MONGO_URI` name together; contradictory combinations are
    /// refused with one line.
    pub fn store_kind(&self) -> Result<StoreKind, ConfigError> {
        self.store.resolve(&self.mongo)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::Cli;

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
        let mut settings = Settings::parse_from(["chat-server"]);
        settings.retry.multiplier = 0.5;
        assert!(matches!(
            settings.app_config(),
            Err(ConfigError::Invalid {
                variable: "MESSAGE_RETRY_MULTIPLIER",
                ..
            })
        ));
        for (flag, variable) in [
            ("--max-content-bytes", "MAX_CONTENT_BYTES"),
            ("--socket-queue-capacity", "SOCKET_QUEUE_CAPACITY"),
        ] {
            let zero = Settings::parse_from(["chat-server", flag, "0"]);
            assert!(
                matches!(zero.app_config(), Err(ConfigError::Invalid { variable: v, .. }) if v == variable),
                "{flag} 0"
            );
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
    fn store_defaults_to_sqlite_or_mongo_and_refuses_contradictions() {
        let with = |flags: &[&str]| {
            let mut args = vec!["chat-server"];
            args.extend(flags);
            Settings::parse_from(args).store_kind()
        };
        assert_eq!(with(&[]), Ok(StoreKind::Sqlite));
        assert_eq!(with(&["--mongo-uri", "mongodb://x"]), Ok(StoreKind::Mongo));
        assert_eq!(with(&["--store", "memory"]), Ok(StoreKind::Memory));
        for contradiction in [
            &["--store", "mongo"][..],
            &["--store", "sqlite", "--mongo-uri", "mongodb://x"],
            &["--store", "memory", "--mongo-uri", "mongodb://x"],
        ] {
            let error = with(contradiction).expect_err("contradiction");
            assert!(error.to_string().starts_with("STORE "), "{error}");
        }
        assert_eq!(
            Settings::parse_from(["chat-server"]).store.data_dir,
            std::path::PathBuf::from("./chatcore-data")
        );
    }

    #[test]
    fn the_notification_retention_defaults_to_30_days() {
        let defaults = Settings::parse_from(["chat-server"]);
        assert_eq!(
            defaults.notifications.retention,
            Duration::from_secs(30 * 24 * 3600)
        );
        assert_eq!(
            defaults.notifications.retention,
            chatcore::inbox::DEFAULT_RETENTION
        );
        let settings = Cli::parse_from(["chat-server", "--notification-retention", "48h"]).settings;
        assert_eq!(
            settings.notifications.retention,
            Duration::from_secs(48 * 3600)
        );
    }

    #[test]
    fn websocket_settings_default_to_small_buffers_and_the_content_limit() {
        let config = Cli::parse_from(["chat-server", "--max-content-bytes", "10240"])
            .settings
            .app_config()
            .expect("valid");
        let websocket = config.session.websocket;
        assert_eq!(websocket.read_buffer_size, 1024);
        assert_eq!(websocket.write_buffer_size, 4096);
        assert_eq!(websocket.max_write_buffer_size, None);
        assert_eq!(
            (websocket.max_message_size, websocket.max_frame_size),
            (10_240, 10_240)
        );
        let config = Cli::parse_from([
            "chat-server",
            "--ws-read-buffer-size",
            "512",
            "--ws-max-message-size",
            "2048",
            "--ws-max-frame-size",
            "1024",
        ])
        .settings
        .app_config()
        .expect("valid");
        assert_eq!(config.session.websocket.read_buffer_size, 512);
        assert_eq!(config.session.websocket.max_message_size, 2048);
        assert_eq!(config.session.websocket.max_frame_size, 1024);
        let bound = Cli::parse_from(["chat-server", "--ws-max-write-buffer-size", "4096"]);
        assert!(matches!(
            bound.settings.app_config(),
            Err(ConfigError::Backend {
                variable: "WS_MAX_WRITE_BUFFER_SIZE",
                ..
            })
        ));
        let zero = Cli::parse_from(["chat-server", "--ws-read-buffer-size", "0"]);
        assert!(matches!(
            zero.settings.app_config(),
            Err(ConfigError::Backend {
                variable: "WS_READ_BUFFER_SIZE",
                ..
            })
        ));
    }

    #[test]
    fn roles_name_the_variable_they_miss() {
        let settings = Settings::parse_from(["chat-server"]);
        assert_eq!(
            Settings::required(&settings.tiers.chat_ws_url, "CHAT_MESSAGE_SOCKET_TRANSFER_OUTGOING_CONFIG_CLIENT_HOST", "change-handler")
                .map_err(|e| e.to_string()),
            Err("CHAT_MESSAGE_SOCKET_TRANSFER_OUTGOING_CONFIG_CLIENT_HOST is required by role change-handler".to_owned())
        );
    }
}
