//! Role `change-handler`: the Kafka change feed → the event store → HTTP forwarders to the chat
//! and notification tiers (through the balancer), with the failover call to
//! `/chat/close-stream` after exhausted retries. With `NOTIFICATION_STRATEGY=separate` or
//! `segregated` chat notifications come from a second consumer group, `<group>-notifications`;
//! commerce notifications come from their Kafka topics or MongoDB change streams; with
//! `MONGO_URI`, group messages notify every member and the conversation list's view is kept
//! from `<group>-conversation-view`. It serves only
//! `/healthz`, `/readyz` and `/metrics`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use chatcore::app::ConsumerSet;
use chatcore::change::ChangeSource;
use chatcore::conversation::VIEW_CONSUMER_GROUP;
use chatcore::forward::{HttpForwarder, TierEndpoint};
use chatcore::http::{self, OpsState};
use chatcore::metrics::Metrics;
use chatcore::store::CHAT_COLLECTION;
use tokio_util::sync::CancellationToken;

use crate::backends::{event_store, kafka_source, kafka_source_of, NamedCheck, Store};
use crate::config::{ConfigError, Settings};
use crate::roles::all::{commerce_consumers, notifications_group};
use crate::serving::{serve_routes, Listeners, Routes, ServeOptions};
use crate::ServerError;

/// A running change handler: the pipeline task and what its ops routes show.
pub struct ChangeHandler {
    /// Counters of the pipeline.
    pub metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    readiness: Vec<NamedCheck>,
}

impl ChangeHandler {
    /// Starts role `change-handler`: Kafka source → event store → HTTP forwarders, with the
    /// consumers of `NOTIFICATION_STRATEGY` and the commerce consumers.
    pub async fn start(settings: &Settings) -> Result<Self, ConfigError> {
        const ROLE: &str = "change-handler";
        let config = settings.app_config()?;
        let bootstrap = Settings::required(
            &settings.kafka.bootstrap_servers,
            "CHAT_PERSISTENCE_CHANGE_KAFKA_BOOTSTRAP_SERVERS",
            ROLE,
        )?;
        let chat_url = Settings::required(
            &settings.tiers.chat_ws_url,
            "CHAT_MESSAGE_SOCKET_TRANSFER_OUTGOING_CONFIG_CLIENT_HOST",
            ROLE,
        )?;
        let notifications_url = Settings::required(
            &settings.tiers.notifications_ws_url,
            "GENERAL_NOTIFICATION_OUTGOING_CONFIG_CLIENT_HOST",
            ROLE,
        )?;
        let forwarder = Arc::new(HttpForwarder::new(
            TierEndpoint {
                timeout: settings.tiers.chat_ws_timeout,
                ..TierEndpoint::new(chat_url)
            },
            TierEndpoint {
                timeout: settings.tiers.notifications_ws_timeout,
                ..TierEndpoint::new(notifications_url)
            },
            Settings::present(&settings.server.internal_token).map(str::to_owned),
        ));
        let (events, probe) = event_store(settings, &config)?;
        let metrics = Arc::new(Metrics::new());
        let notification_source = match config.strategy.has_notification_consumer() {
            true => Some(Arc::new(kafka_source_of(
                settings,
                bootstrap,
                &notifications_group(settings),
                CHAT_COLLECTION,
                &settings.kafka.topic,
            )?) as Arc<dyn ChangeSource>),
            false => None,
        };
        let store = Store::open(settings).await?;
        // Groups live in MongoDB: without MONGO_URI the handler cannot find a group's members.
        let conversations = match &store {
            Store::Mongo(_) => Some(store.conversations().await?),
            _ => {
                tracing::warn!("no MONGO_URI: group messages notify nobody and the conversation list is not kept");
                None
            }
        };
        let view_source = match conversations {
            Some(_) => Some(Arc::new(kafka_source_of(
                settings,
                bootstrap,
                &format!("{}-{VIEW_CONSUMER_GROUP}", settings.kafka.group),
                CHAT_COLLECTION,
                &settings.kafka.topic,
            )?) as Arc<dyn ChangeSource>),
            None => None,
        };
        let shutdown = CancellationToken::new();
        let tasks = ConsumerSet {
            chat_source: Arc::new(kafka_source(settings, bootstrap)?),
            notification_source,
            consumers: commerce_consumers(settings, &store).await?,
            event_store: events,
            forwarder: forwarder.clone(),
            closer: forwarder,
            conversations,
            view_source,
        }
        .spawn(&config.delivery(), &metrics, &shutdown);
        Ok(Self {
            metrics,
            shutdown,
            tasks,
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
        http::with_common_layers(http::with_fallback(self.routes()))
    }

    /// Stops taking new events (in-flight ones go on).
    pub fn begin_shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Stops taking events and waits up to `grace` for in-flight ones; true when it finished.
    pub async fn shutdown(self, grace: Duration) -> bool {
        self.shutdown.cancel();
        let aborts: Vec<_> = self
            .tasks
            .iter()
            .map(tokio::task::JoinHandle::abort_handle)
            .collect();
        let finished = async {
            for task in self.tasks {
                let _ = task.await;
            }
        };
        match tokio::time::timeout(grace, finished).await {
            Ok(_) => true,
            Err(_) => {
                aborts.iter().for_each(tokio::task::AbortHandle::abort);
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
    let handler = ChangeHandler::start(&settings).await?;
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
        .shutdown(settings.server.shutdown_timeout.saturating_sub(drained))
        .await
    {
        tracing::warn!("events still in flight at SHUTDOWN_TIMEOUT will be redelivered");
    }
    tracing::info!("change handler stopped");
    Ok(())
}
