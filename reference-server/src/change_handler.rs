//! Role `change-handler`: the Kafka change feed → the event store → HTTP forwarders to the chat
//! and notification tiers (through the balancer), with the failover call to
//! `/chat/close-stream` after exhausted retries. It serves only `/healthz`, `/readyz` and
//! `/metrics`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use chatcore::dedup::Deduplicator;
use chatcore::forward::{HttpForwarder, TierEndpoint};
use chatcore::http::{self, OpsState};
use chatcore::metrics::Metrics;
use chatcore::pipeline::{ChatHandler, Pipeline};
use tokio_util::sync::CancellationToken;

use crate::backends::{event_store, kafka_source, NamedCheck};
use crate::config::{ConfigError, Settings};
use crate::serving::{serve_routes, Listeners, Routes, ServeOptions};
use crate::ServerError;

/// A running change handler: the pipeline task and what its ops routes show.
pub struct ChangeHandler {
    /// Counters of the pipeline.
    pub metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    readiness: Vec<NamedCheck>,
}

impl ChangeHandler {
    /// Starts role `change-handler`: Kafka source → event store → HTTP forwarders.
    pub fn start(settings: &Settings) -> Result<Self, ConfigError> {
        const ROLE: &str = "change-handler";
        let config = settings.app_config()?;
        let bootstrap = Settings::required(
            &settings.kafka_bootstrap_servers,
            "CHAT_PERSISTENCE_CHANGE_KAFKA_BOOTSTRAP_SERVERS",
            ROLE,
        )?;
        let chat_url = Settings::required(
            &settings.chat_ws_url,
            "CHAT_MESSAGE_SOCKET_TRANSFER_OUTGOING_CONFIG_CLIENT_HOST",
            ROLE,
        )?;
        let notifications_url = Settings::required(
            &settings.notifications_ws_url,
            "GENERAL_NOTIFICATION_OUTGOING_CONFIG_CLIENT_HOST",
            ROLE,
        )?;
        let forwarder = HttpForwarder::new(
            TierEndpoint {
                timeout: settings.chat_ws_timeout,
                ..TierEndpoint::new(chat_url)
            },
            TierEndpoint {
                timeout: settings.notifications_ws_timeout,
                ..TierEndpoint::new(notifications_url)
            },
            Settings::present(&settings.internal_token).map(str::to_owned),
        );
        let (events, probe) = event_store(settings, &config)?;
        let metrics = Arc::new(Metrics::new());
        let pipeline = Pipeline::new(
            Arc::new(kafka_source(settings, bootstrap)?),
            Arc::new(ChatHandler {
                max_content_bytes: config.limits.max_content_bytes,
                ..ChatHandler::default()
            }),
            Deduplicator::new(events, config.dedup.clone(), metrics.clone()),
            Arc::new(forwarder),
            config.pipeline.clone(),
            metrics.clone(),
        );
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(pipeline.run(shutdown.clone()));
        Ok(Self {
            metrics,
            shutdown,
            task,
            readiness: probe.into_iter().collect(),
        })
    }

    /// `/healthz`, `/readyz` and `/metrics` of the change handler, without layers.
    pub fn routes(&self) -> Router {
        http::ops_router(OpsState {
            metrics: self.metrics.clone(),
            readiness: self.readiness.clone(),
        })
    }

    /// The ops routes with the common layers.
    pub fn router(&self) -> Router {
        http::with_common_layers(self.routes())
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

/// Serves role `change-handler` on `listeners` until `shutdown` resolves, then lets in-flight
/// events finish (and commit) within `SHUTDOWN_TIMEOUT`.
pub async fn serve_change_handler(
    settings: Settings,
    listeners: impl Into<Listeners>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let handler = ChangeHandler::start(&settings)?;
    let options = ServeOptions::from(&settings);
    let routes = Routes {
        client: handler.routes(),
        internal: None,
    };
    let drained = serve_routes(routes, listeners.into(), &options, shutdown, || {
        handler.begin_shutdown()
    })
    .await?;
    if !handler
        .shutdown(settings.shutdown_timeout.saturating_sub(drained))
        .await
    {
        tracing::warn!("events still in flight at SHUTDOWN_TIMEOUT will be redelivered");
    }
    tracing::info!("change handler stopped");
    Ok(())
}
