//! Role `email`: the e-mail consumer. The Kafka change feed (its own consumer group,
//! `CHAT_EMAIL_KAFKA_CONSUMER_NAME`) → the event store (Redis with `REDIS_ADDR`; 24 h
//! idempotency, `EMAIL_DEDUPLICATION_TTL`) → an e-mail to the receiver of each new chat message
//! who is offline, found in MongoDB's `user_email` directory (`MONGO_URI`) and sent over SMTP
//! (`SMTP_*`, `EMAIL_FROM_*`). Failures are retried (`EMAIL_RETRY_MAX_RETRIES`, 10, with the
//! `MESSAGE_RETRY_*` waits); when retries run out the event goes to the dead-letter topic
//! (`EMAIL_DEAD_LETTER_TOPIC`, `<topic>.email-dlq`) with its origin and error as headers, and
//! only then is its offset committed. An unknown recipient is counted and skipped. With
//! `COMMERCE_PURCHASES_KAFKA_TOPIC` a second consumer (group `<CHAT_EMAIL_KAFKA_CONSUMER_NAME>-purchases`)
//! e-mails the shop owner of each new purchase the same way.
//!
//! Presence: with `GENERAL_NOTIFICATION_OUTGOING_CONFIG_CLIENT_HOST` (the balancer's internal
//! address of the notification tier) the consumer asks `GET /notifications/presence?user_id=`
//! and e-mails only receivers with no notification socket; without it every receiver counts as
//! offline, and so does one whose presence cannot be learned.
//!
//! It serves `/healthz`, `/readyz` and `/metrics` on `LISTEN_ADDR`, and with
//! `INTERNAL_LISTEN_ADDR` also `POST /email/chat` and `POST /email/purchased` there (behind
//! `INTERNAL_TOKEN` when set).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use chatcore::config::parse_duration;
use chatcore::dead_letter::DeadLetterTarget;
use chatcore::dedup::{DedupConfig, Deduplicator};
use chatcore::email::{
    email_router, EmailForwarder, EmailHandler, EmailService, EmailState, SmtpConfig,
    SmtpEmailSender, SmtpTls, EMAIL_CONSUMER, PURCHASES_COLLECTION,
};
use chatcore::http::{self, OpsState};
use chatcore::metrics::Metrics;
use chatcore::pipeline::{FailurePolicy, Pipeline, PipelineConfig};
use chatcore::presence::{HttpPresence, Presence};
use chatcore::store::CHAT_COLLECTION;
use chatcore_kafka::{KafkaChangeSource, KafkaDeadLetters, KafkaPublisher};
use chatcore_mongo::{MongoConfig, MongoUserDirectory};
use tokio_util::sync::CancellationToken;

use crate::backends::{event_store, kafka_error, kafka_source_of, mongo_error, NamedCheck};
use crate::config::{ConfigError, Settings};
use crate::serving::{serve_routes, Listeners, Routes, ServeOptions};
use crate::ServerError;

const ROLE: &str = "email";

fn parse_tls(text: &str) -> Result<SmtpTls, String> {
    text.parse()
}

/// The settings of role `email` (flattened into [`Settings`]).
#[derive(Debug, Clone, clap::Args)]
pub struct EmailSettings {
    /// SMTP server host (role `email`, required).
    #[arg(long, global = true, env = "SMTP_HOST")]
    pub smtp_host: Option<String>,
    /// SMTP server port; unset: 25, 587 or 465 by `SMTP_TLS`.
    #[arg(long, global = true, env = "SMTP_PORT")]
    pub smtp_port: Option<u16>,
    /// SMTP AUTH user; with `SMTP_PASSWORD`. Unset: no AUTH.
    #[arg(long, global = true, env = "SMTP_USERNAME")]
    pub smtp_username: Option<String>,
    /// SMTP AUTH password.
    #[arg(long, global = true, env = "SMTP_PASSWORD", hide_env_values = true)]
    pub smtp_password: Option<String>,
    /// Connection security: `starttls` (required STARTTLS), `tls` (implicit TLS, "SMTPS") or
    /// `none` (plain text: a trusted relay or a test sink only).
    #[arg(long, global = true, env = "SMTP_TLS", default_value = "starttls", value_parser = parse_tls)]
    pub smtp_tls: SmtpTls,
    /// Upper bound of one whole SMTP exchange.
    #[arg(long, global = true, env = "SMTP_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub smtp_timeout: Duration,
    /// Sender address of the e-mails (role `email`, required).
    #[arg(long, global = true, env = "EMAIL_FROM_ADDRESS")]
    pub email_from_address: Option<String>,
    /// Sender display name.
    #[arg(long, global = true, env = "EMAIL_FROM_NAME")]
    pub email_from_name: Option<String>,
    /// Consumer group of the e-mail consumer on the chat change topic.
    #[arg(
        long,
        global = true,
        env = "CHAT_EMAIL_KAFKA_CONSUMER_NAME",
        default_value = EMAIL_CONSUMER
    )]
    pub email_kafka_group: String,
    /// Topic of events whose e-mail failed after every retry; unset: `<topic>.email-dlq`.
    #[arg(long, global = true, env = "EMAIL_DEAD_LETTER_TOPIC")]
    pub email_dead_letter_topic: Option<String>,
    /// Retries of an e-mail after the first attempt (waits from `MESSAGE_RETRY_*`).
    #[arg(
        long,
        global = true,
        env = "EMAIL_RETRY_MAX_RETRIES",
        default_value_t = 10
    )]
    pub email_retry_max_retries: u32,
    /// How long a processed e-mail event suppresses its redeliveries.
    #[arg(long, global = true, env = "EMAIL_DEDUPLICATION_TTL", default_value = "24h", value_parser = parse_duration)]
    pub email_deduplication_ttl: Duration,
}

impl EmailSettings {
    /// The SMTP configuration, checked: one error naming the variable at fault.
    pub fn smtp_config(&self) -> Result<SmtpConfig, ConfigError> {
        let host = Settings::required(&self.smtp_host, "SMTP_HOST", ROLE)?;
        if host.contains(char::is_whitespace) || host.contains('/') {
            return Err(ConfigError::Backend {
                variable: "SMTP_HOST",
                reason: format!("{host:?} is not a host name (no scheme, no port)"),
            });
        }
        if self.smtp_port == Some(0) {
            return Err(ConfigError::Invalid {
                variable: "SMTP_PORT",
                reason: "must be between 1 and 65535",
            });
        }
        let from = Settings::required(&self.email_from_address, "EMAIL_FROM_ADDRESS", ROLE)?;
        let credentials = match (
            Settings::present(&self.smtp_username),
            Settings::present(&self.smtp_password),
        ) {
            (Some(user), Some(password)) => Some((user.to_owned(), password.to_owned())),
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigError::Missing {
                    variable: "SMTP_PASSWORD",
                    role: "email with SMTP_USERNAME",
                })
            }
            (None, Some(_)) => {
                return Err(ConfigError::Missing {
                    variable: "SMTP_USERNAME",
                    role: "email with SMTP_PASSWORD",
                })
            }
        };
        if self.smtp_timeout.is_zero() {
            return Err(ConfigError::Invalid {
                variable: "SMTP_TIMEOUT",
                reason: "must be more than 0s",
            });
        }
        let config = SmtpConfig {
            host: host.trim().to_owned(),
            port: self.smtp_port,
            tls: self.smtp_tls,
            credentials,
            timeout: self.smtp_timeout,
            from_address: from.trim().to_owned(),
            from_name: Settings::present(&self.email_from_name).map(str::to_owned),
        };
        // Building the sender parses the address and host as sending will.
        if let Err(error) = SmtpEmailSender::new(&config) {
            let text = error.to_string();
            let variable = if text.contains("sender address") {
                "EMAIL_FROM_ADDRESS"
            } else {
                "SMTP_HOST"
            };
            return Err(ConfigError::Backend {
                variable,
                reason: text,
            });
        }
        Ok(config)
    }

    /// The dead-letter topic: `EMAIL_DEAD_LETTER_TOPIC`, or `<topic>.email-dlq`.
    pub fn dead_letter_topic(&self, source_topic: &str) -> String {
        Settings::present(&self.email_dead_letter_topic)
            .map_or_else(|| format!("{source_topic}.email-dlq"), str::to_owned)
    }
}

/// A running e-mail consumer: the pipeline task and what its routes serve.
pub struct EmailConsumer {
    /// Counters of the pipeline and the e-mails.
    pub metrics: Arc<Metrics>,
    state: EmailState,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    readiness: Vec<NamedCheck>,
}

impl EmailConsumer {
    /// Checks the settings, connects the backends and starts consuming.
    pub async fn start(settings: &Settings) -> Result<Self, ConfigError> {
        let config = settings.app_config()?;
        let email = &settings.email;
        let bootstrap = Settings::required(
            &settings.kafka_bootstrap_servers,
            "CHAT_PERSISTENCE_CHANGE_KAFKA_BOOTSTRAP_SERVERS",
            ROLE,
        )?;
        let uri = Settings::required(&settings.mongo_uri, "MONGO_URI", ROLE)?;
        let smtp = email.smtp_config()?;
        let sender = SmtpEmailSender::new(&smtp).map_err(|e| ConfigError::Backend {
            variable: "SMTP_HOST",
            reason: e.to_string(),
        })?;
        let mongo = MongoConfig {
            timeout: settings.mongo_timeout,
            ..MongoConfig::new(uri, &settings.mongo_database)
        };
        let database = chatcore_mongo::connect(&mongo).await.map_err(mongo_error)?;
        let directory = MongoUserDirectory::new(&database, settings.mongo_timeout);
        if let Err(error) = directory.create_indexes().await {
            tracing::warn!(%error, "user_email index not created (MongoDB unreachable?); lookups go on");
        }
        let service = EmailService::new(Arc::new(directory), Arc::new(sender));

        let dedup_config = DedupConfig {
            ttl: email.email_deduplication_ttl,
            ..config.dedup.clone()
        };
        if Settings::present(&settings.redis_addr).is_none() {
            tracing::warn!("REDIS_ADDR unset: e-mail idempotency is in memory, lost on restart and not shared between instances");
        }
        let (events, probe) = event_store(settings, &config)?;

        let source = kafka_source_of(
            settings,
            bootstrap,
            &email.email_kafka_group,
            CHAT_COLLECTION,
            &settings.kafka_topic,
        )?;
        let publisher =
            KafkaPublisher::new(bootstrap, &settings.mongo_database).map_err(kafka_error)?;
        let dead_letter_topic = email.dead_letter_topic(&settings.kafka_topic);
        publisher
            .ensure_topic(&dead_letter_topic, settings.kafka_topic_partitions)
            .await
            .map_err(|e| ConfigError::Backend {
                variable: "EMAIL_DEAD_LETTER_TOPIC",
                reason: e.to_string(),
            })?;
        let dead_letters = |source_topic: &str| {
            FailurePolicy::DeadLetter(DeadLetterTarget::new(Arc::new(KafkaDeadLetters::new(
                publisher.clone(),
                &dead_letter_topic,
                source_topic,
            ))))
        };

        let presence = Settings::present(&settings.notifications_ws_url).map(|url| {
            Arc::new(HttpPresence::new(
                url,
                Settings::present(&settings.internal_token).map(str::to_owned),
                settings.notifications_ws_timeout,
            )) as Arc<dyn Presence>
        });
        if presence.is_none() {
            tracing::info!("GENERAL_NOTIFICATION_OUTGOING_CONFIG_CLIENT_HOST unset: no presence check, every receiver is e-mailed");
        }
        let metrics = Arc::new(Metrics::new());
        let forwarder = Arc::new(EmailForwarder::new(
            service.clone(),
            presence,
            metrics.clone(),
        ));
        let handler = Arc::new(EmailHandler::new(config.limits.max_content_bytes));
        let pipeline = |name: &str, source: KafkaChangeSource, topic: &str| {
            Pipeline::new(
                Arc::new(source),
                handler.clone(),
                Deduplicator::new(events.clone(), dedup_config.clone(), metrics.clone()),
                forwarder.clone(),
                PipelineConfig {
                    name: name.to_owned(),
                    retry: chatcore::pipeline::RetryPolicy {
                        max_retries: email.email_retry_max_retries,
                        ..config.pipeline.retry.clone()
                    },
                    failure: dead_letters(topic),
                    ..config.pipeline.clone()
                },
                metrics.clone(),
            )
        };
        let shutdown = CancellationToken::new();
        let mut pipelines = vec![tokio::spawn(
            pipeline("email", source, &settings.kafka_topic).run(shutdown.clone()),
        )];
        // Purchases e-mail their shop owner when their Debezium topic is named.
        if let Some(topic) = Settings::present(&settings.commerce_purchases_kafka_topic) {
            let source = kafka_source_of(
                settings,
                bootstrap,
                &format!("{}-purchases", email.email_kafka_group),
                PURCHASES_COLLECTION,
                topic,
            )?;
            pipelines.push(tokio::spawn(
                pipeline("email-purchases", source, topic).run(shutdown.clone()),
            ));
        }
        let task = tokio::spawn(async move {
            for pipeline in pipelines {
                let _ = pipeline.await;
            }
        });
        tracing::info!(
            group = %email.email_kafka_group,
            dead_letter_topic = %dead_letter_topic,
            smtp = %format!("{}:{}", smtp.host, smtp.effective_port()),
            tls = ?smtp.tls,
            "e-mail consumer started"
        );
        Ok(Self {
            metrics,
            state: EmailState {
                service,
                limits: config.limits,
            },
            shutdown,
            task,
            readiness: probe.into_iter().collect(),
        })
    }

    /// `/healthz`, `/readyz` and `/metrics`, without layers.
    pub fn ops_routes(&self) -> Router {
        http::ops_router(OpsState {
            metrics: self.metrics.clone(),
            readiness: self.readiness.clone(),
        })
    }

    /// `POST /email/chat` and `POST /email/purchased`, without layers.
    pub fn email_routes(&self) -> Router {
        email_router(self.state.clone())
    }

    /// Stops taking new events (in-flight ones go on).
    pub fn begin_shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Stops taking events and waits up to `grace` for in-flight ones; true when it finished.
    pub async fn shutdown(self, grace: Duration) -> bool {
        self.shutdown.cancel();
        let mut task = self.task;
        match tokio::time::timeout(grace, &mut task).await {
            Ok(_) => true,
            Err(_) => {
                task.abort();
                false
            }
        }
    }
}

/// Serves role `email` on `listeners` until `shutdown` resolves, then lets in-flight e-mails
/// finish (and commit) within `SHUTDOWN_TIMEOUT`.
pub async fn serve_email(
    settings: Settings,
    listeners: impl Into<Listeners>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let listeners = listeners.into();
    let consumer = EmailConsumer::start(&settings).await?;
    let options = ServeOptions::from(&settings);
    let routes = Routes {
        client: consumer.ops_routes(),
        // The e-mail routes are internal: served only where the internal listener is.
        internal: listeners
            .internal
            .is_some()
            .then(|| consumer.email_routes()),
    };
    let drained = serve_routes(routes, listeners, &options, shutdown, || {
        consumer.begin_shutdown()
    })
    .await?;
    if !consumer
        .shutdown(settings.shutdown_timeout.saturating_sub(drained))
        .await
    {
        tracing::warn!("e-mail events still in flight at SHUTDOWN_TIMEOUT will be redelivered");
    }
    tracing::info!("e-mail consumer stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn email(flags: &[&str]) -> EmailSettings {
        let mut args = vec!["chat-server", "email"];
        args.extend_from_slice(flags);
        crate::Cli::parse_from(args).settings.email
    }

    #[test]
    fn defaults_are_starttls_ten_retries_a_day_of_idempotency_and_a_dlq_beside_the_topic() {
        let settings = email(&[]);
        assert_eq!(settings.smtp_tls, SmtpTls::StartTls);
        assert_eq!(settings.email_retry_max_retries, 10);
        assert_eq!(
            settings.email_deduplication_ttl,
            Duration::from_secs(86_400)
        );
        assert_eq!(settings.email_kafka_group, "chat-email");
        assert_eq!(settings.smtp_timeout, Duration::from_secs(10));
        assert_eq!(
            settings.dead_letter_topic("chat.changes"),
            "chat.changes.email-dlq"
        );
        let named = email(&["--email-dead-letter-topic", "dlq"]);
        assert_eq!(named.dead_letter_topic("chat.changes"), "dlq");
    }

    #[test]
    fn smtp_settings_are_checked_naming_the_variable() {
        let error = |flags: &[&str]| email(flags).smtp_config().expect_err("invalid").to_string();
        assert_eq!(error(&[]), "SMTP_HOST is required by role email");
        assert_eq!(
            error(&["--smtp-host", "mail.example.com"]),
            "EMAIL_FROM_ADDRESS is required by role email"
        );
        let base = ["--smtp-host", "mail.example.com", "--email-from-address"];
        assert!(error(&[&base[..], &["nobody"]].concat()).starts_with("EMAIL_FROM_ADDRESS: "));
        assert!(
            error(&[&base[..], &["a@example.com", "--smtp-username", "u"]].concat())
                .starts_with("SMTP_PASSWORD is required")
        );
        assert!(
            error(&[&base[..], &["a@example.com", "--smtp-port", "0"]].concat())
                .starts_with("SMTP_PORT ")
        );
        assert!(
            error(&[&base[..], &["a@example.com", "--smtp-timeout", "0s"]].concat())
                .starts_with("SMTP_TIMEOUT ")
        );
        let host = error(&[
            "--smtp-host",
            "smtp://mail.example.com",
            "--email-from-address",
            "a@example.com",
        ]);
        assert!(host.starts_with("SMTP_HOST: "), "{host}");
        let config = email(
            &[
                &base[..],
                &[
                    "a@example.com",
                    "--email-from-name",
                    "Chat",
                    "--smtp-tls",
                    "tls",
                    "--smtp-username",
                    "u",
                    "--smtp-password",
                    "p",
                ],
            ]
            .concat(),
        )
        .smtp_config()
        .expect("valid");
        assert_eq!(config.effective_port(), 465);
        assert_eq!(config.credentials, Some(("u".into(), "p".into())));
        assert_eq!(config.from_name.as_deref(), Some("Chat"));
        let bad_tls = crate::Cli::try_parse_from(["chat-server", "email", "--smtp-tls", "ssl"])
            .expect_err("bad mode");
        assert!(crate::config::parse_error_line(&bad_tls).starts_with("SMTP_TLS (--smtp-tls)"));
    }

    #[test]
    fn help_lists_the_email_settings() {
        use clap::CommandFactory;
        let help = crate::Cli::command().render_long_help().to_string();
        for variable in [
            "SMTP_HOST",
            "SMTP_PORT",
            "SMTP_USERNAME",
            "SMTP_PASSWORD",
            "SMTP_TLS",
            "SMTP_TIMEOUT",
            "EMAIL_FROM_ADDRESS",
            "EMAIL_FROM_NAME",
            "CHAT_EMAIL_KAFKA_CONSUMER_NAME",
            "EMAIL_DEAD_LETTER_TOPIC",
            "EMAIL_RETRY_MAX_RETRIES",
            "EMAIL_DEDUPLICATION_TTL",
        ] {
            assert!(
                help.contains(&format!("[env: {variable}")),
                "{variable} missing from --help"
            );
        }
        assert!(help.contains("[default: starttls]"));
        assert!(help.contains("[default: chat-email]"));
    }
}
