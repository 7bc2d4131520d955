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
use chatcore::dead_letter::DeadLetterTarget;
use chatcore::dedup::{DedupConfig, Deduplicator};
use chatcore::email::{
    email_router, EmailForwarder, EmailHandler, EmailService, EmailState, SmtpConfig,
    SmtpEmailSender, PURCHASES_COLLECTION,
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
use crate::startup::retry_backend;
use crate::ServerError;

const ROLE: &str = "email";

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
            &settings.kafka.bootstrap_servers,
            "CHAT_PERSISTENCE_CHANGE_KAFKA_BOOTSTRAP_SERVERS",
            ROLE,
        )?;
        let uri = Settings::required(&settings.mongo.uri, "MONGO_URI", ROLE)?;
        let smtp = email.smtp.config()?;
        let service = email_service(settings, uri, &smtp).await?;

        let dedup_config = DedupConfig {
            ttl: email.deduplication_ttl,
            ..config.dedup.clone()
        };
        if Settings::present(&settings.event_store.redis_addr).is_none() {
            tracing::warn!("REDIS_ADDR unset: e-mail idempotency is in memory, lost on restart and not shared between instances");
        }
        let (events, probe) = event_store(settings, &config)?;

        let source = kafka_source_of(
            settings,
            bootstrap,
            &email.kafka_group,
            CHAT_COLLECTION,
            &settings.kafka.topic,
        )?;
        let publisher =
            KafkaPublisher::new(bootstrap, &settings.mongo.database).map_err(kafka_error)?;
        let dead_letter_topic = email.dead_letter_topic(&settings.kafka.topic);
        retry_backend("kafka", settings.server.startup_timeout, || async {
            publisher
                .ensure_topic(&dead_letter_topic, settings.kafka.topic_partitions)
                .await
                .map_err(|e| ConfigError::Backend {
                    variable: "EMAIL_DEAD_LETTER_TOPIC",
                    reason: e.to_string(),
                })
        })
        .await?;
        let dead_letters = |source_topic: &str| {
            FailurePolicy::DeadLetter(DeadLetterTarget::new(Arc::new(KafkaDeadLetters::new(
                publisher.clone(),
                &dead_letter_topic,
                source_topic,
            ))))
        };

        let metrics = Arc::new(Metrics::new());
        let forwarder = Arc::new(EmailForwarder::new(
            service.clone(),
            presence(settings),
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
                        max_retries: email.max_retries,
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
            pipeline("email", source, &settings.kafka.topic).run(shutdown.clone()),
        )];
        // Purchases e-mail their shop owner when their Debezium topic is named.
        if let Some(topic) = Settings::present(&settings.commerce.purchases_kafka_topic) {
            let source = kafka_source_of(
                settings,
                bootstrap,
                &format!("{}-purchases", email.kafka_group),
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
            group = %email.kafka_group,
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

/// The e-mail service of the role: the SMTP sender of `smtp` and the `user_email` directory of
/// the MongoDB at `uri`.
async fn email_service(
    settings: &Settings,
    uri: &str,
    smtp: &SmtpConfig,
) -> Result<EmailService, ConfigError> {
    let sender = SmtpEmailSender::new(smtp).map_err(|e| ConfigError::Backend {
        variable: "SMTP_HOST",
        reason: e.to_string(),
    })?;
    let mongo = MongoConfig {
        timeout: settings.mongo.timeout,
        ..MongoConfig::new(uri, &settings.mongo.database)
    };
    let database = chatcore_mongo::connect(&mongo).await.map_err(mongo_error)?;
    let directory = MongoUserDirectory::new(&database, settings.mongo.timeout);
    if let Err(error) = directory.create_indexes().await {
        tracing::warn!(%error, "user_email index not created (MongoDB unreachable?); lookups go on");
    }
    Ok(EmailService::new(Arc::new(directory), Arc::new(sender)))
}

/// The presence check of chat receivers: the notification tier's presence route when
/// `GENERAL_NOTIFICATION_OUTGOING_CONFIG_CLIENT_HOST` is set, none otherwise.
fn presence(settings: &Settings) -> Option<Arc<dyn Presence>> {
    let presence = Settings::present(&settings.tiers.notifications_ws_url).map(|url| {
        Arc::new(HttpPresence::new(
            url,
            Settings::present(&settings.server.internal_token).map(str::to_owned),
            settings.tiers.notifications_ws_timeout,
        )) as Arc<dyn Presence>
    });
    if presence.is_none() {
        tracing::info!("GENERAL_NOTIFICATION_OUTGOING_CONFIG_CLIENT_HOST unset: no presence check, every receiver is e-mailed");
    }
    presence
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
        .shutdown(settings.server.shutdown_timeout.saturating_sub(drained))
        .await
    {
        tracing::warn!("e-mail events still in flight at SHUTDOWN_TIMEOUT will be redelivered");
    }
    tracing::info!("e-mail consumer stopped");
    Ok(())
}
