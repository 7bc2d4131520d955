//! Assembly of a whole node: persistence, change handler, chat and notification tiers and the
//! operational routes in one process, on whichever backends it is given.
//!
//! With [`Backends::in_memory`] it is the embedded mode: a POST goes to the in-memory store, whose
//! change feed drives the same pipeline a CDC feed would, which forwards to the local tiers.
//!
//! ```no_run
//! use chatcore::app::{AppConfig, Backends, ChatApp};
//!
//! # async fn run() -> std::io::Result<()> {
//! let app = ChatApp::start(Backends::in_memory(), AppConfig::default());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app.router()).await
//! # }
//! ```

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::auth::{self, Authenticator};
use crate::change::ChangeSource;
use crate::dedup::{DedupConfig, Deduplicator, EventStore, InMemoryEventStore};
use crate::forward::{Forwarder, InProcessForwarder};
use crate::http::{
    self, ChatTierState, InternalState, Limits, NotificationTierState, OpsState, PersistenceState,
    ReadinessCheck,
};
use crate::metrics::{Metrics, TierLabel};
use crate::pipeline::{ChatHandler, Pipeline, PipelineConfig};
use crate::sockets::{
    CloseReason, LocalSocketRegistry, SessionConfig, SocketQuota, SocketRegistry,
    SHUTDOWN_CLOSE_CODE,
};
use crate::store::{InMemoryMessageStore, MessageStore};

/// Consumer group of the change handler on the embedded feed.
pub const CHAT_CONSUMER_GROUP: &str = "chat-change-handler";

/// A one-shot wrapper around a forwarder, see [`Backends::layer_forwarder`].
pub type ForwarderLayer = Arc<dyn Fn(Arc<dyn Forwarder>) -> Arc<dyn Forwarder> + Send + Sync>;

/// The pluggable parts of a node.
#[derive(Clone)]
pub struct Backends {
    /// The message store.
    pub store: Arc<dyn MessageStore>,
    /// The change feed of that store.
    pub source: Arc<dyn ChangeSource>,
    /// Idempotency.
    pub event_store: Arc<dyn EventStore>,
    /// Where the pipeline delivers; `None` means this node's own tiers.
    pub forwarder: Option<Arc<dyn Forwarder>>,
    /// Wraps whichever forwarder the pipeline uses (a layer, in tower's sense): auditing,
    /// extra targets, rate limits.
    pub forwarder_layer: Option<ForwarderLayer>,
    /// Extra `/readyz` probes (the store's is always added).
    pub readiness: Vec<(String, ReadinessCheck)>,
}

impl Backends {
    /// Every part in memory: the embedded default.
    pub fn in_memory() -> Self {
        let store = Arc::new(InMemoryMessageStore::new());
        let source = Arc::new(store.change_source(CHAT_CONSUMER_GROUP));
        Self {
            store,
            source,
            event_store: Arc::new(InMemoryEventStore::new()),
            forwarder: None,
            forwarder_layer: None,
            readiness: Vec::new(),
        }
    }

    /// Replaces the forwarder the pipeline delivers through.
    pub fn with_forwarder(mut self, forwarder: Arc<dyn Forwarder>) -> Self {
        self.forwarder = Some(forwarder);
        self
    }

    /// Wraps the pipeline's forwarder (by default the in-process one over this node's own
    /// registries) with `layer`.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use chatcore::app::Backends;
    /// let backends = Backends::in_memory().layer_forwarder(|inner| inner /* wrap it here */);
    /// # let _ = backends;
    /// ```
    pub fn layer_forwarder(
        mut self,
        layer: impl Fn(Arc<dyn Forwarder>) -> Arc<dyn Forwarder> + Send + Sync + 'static,
    ) -> Self {
        self.forwarder_layer = Some(Arc::new(layer));
        self
    }

    /// Replaces the event store.
    pub fn with_event_store(mut self, event_store: Arc<dyn EventStore>) -> Self {
        self.event_store = event_store;
        self
    }
}

/// Settings of a node.
#[derive(Debug, Clone, Default)]
pub struct AppConfig {
    /// Client limits.
    pub limits: Limits,
    /// Websocket timing.
    pub session: SessionConfig,
    /// The change handler.
    pub pipeline: PipelineConfig,
    /// Idempotency TTLs and failure policy.
    pub dedup: DedupConfig,
    /// Verifies the bearer tokens of the client routes (persistence and both websocket tiers;
    /// the operational routes stay open). `None`: no authentication, every caller is
    /// [`crate::http::Caller::Anonymous`].
    pub auth: Option<Arc<Authenticator>>,
}

/// A running node: its parts, its routes and its change handler.
pub struct ChatApp {
    /// Counters of every part.
    pub metrics: Arc<Metrics>,
    /// The message store.
    pub store: Arc<dyn MessageStore>,
    /// Chat sessions by `stream_id`.
    pub chat_sockets: Arc<LocalSocketRegistry>,
    /// Notification sessions by `user_id`.
    pub notification_sockets: Arc<LocalSocketRegistry>,
    config: AppConfig,
    socket_quota: SocketQuota,
    readiness: Vec<(String, ReadinessCheck)>,
    shutdown: CancellationToken,
    pipeline: JoinHandle<()>,
}

impl std::fmt::Debug for ChatApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatApp")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl ChatApp {
    /// Builds the node and spawns its change handler on the current tokio runtime.
    pub fn start(backends: Backends, config: AppConfig) -> Self {
        let metrics = Arc::new(Metrics::new());
        let slow_clients = config.session.slow_clients;
        let chat_sockets = Arc::new(
            LocalSocketRegistry::new(TierLabel::chat, metrics.clone())
                .with_slow_client_policy(slow_clients),
        );
        let notification_sockets = Arc::new(
            LocalSocketRegistry::new(TierLabel::notifications, metrics.clone())
                .with_slow_client_policy(slow_clients),
        );
        let mut forwarder = backends.forwarder.clone().unwrap_or_else(|| {
            Arc::new(InProcessForwarder::new(
                chat_sockets.clone(),
                notification_sockets.clone(),
            ))
        });
        if let Some(layer) = &backends.forwarder_layer {
            forwarder = layer(forwarder);
        }
        let handler = ChatHandler {
            max_content_bytes: config.limits.max_content_bytes,
            ..ChatHandler::default()
        };
        let pipeline = Pipeline::new(
            backends.source,
            Arc::new(handler),
            Deduplicator::new(backends.event_store, config.dedup.clone(), metrics.clone()),
            forwarder,
            config.pipeline.clone(),
            metrics.clone(),
        );
        let shutdown = CancellationToken::new();
        let pipeline = tokio::spawn(pipeline.run(shutdown.clone()));
        let mut readiness = vec![(
            "store".to_owned(),
            http::store_readiness(backends.store.clone()),
        )];
        readiness.extend(backends.readiness);
        Self {
            metrics,
            store: backends.store,
            chat_sockets,
            notification_sockets,
            socket_quota: SocketQuota::new(config.limits.sockets_per_user),
            config,
            readiness,
            shutdown,
            pipeline,
        }
    }

    /// Every route of CONTRACT §5 on one router, with the common layers.
    pub fn router(&self) -> Router {
        http::with_common_layers(self.client_routes().merge(self.internal_routes()))
    }

    /// The client-facing routes without layers: persistence, both websocket tiers, the
    /// operational routes and `/openapi.json`. Merge them with other routes, then wrap the result
    /// in [`http::with_common_layers`]. With [`AppConfig::auth`], every route but the operational
    /// ones and the API description requires a bearer token ([`auth::require_auth`]).
    pub fn client_routes(&self) -> Router {
        let client = Router::new()
            .merge(http::persistence_router(PersistenceState {
                store: self.store.clone(),
                limits: self.config.limits.clone(),
                metrics: self.metrics.clone(),
            }))
            .merge(http::chat_tier_router(ChatTierState {
                sockets: self.chat_sockets.clone(),
                store: self.store.clone(),
                session: self.config.session.clone(),
                quota: self.socket_quota.clone(),
            }))
            .merge(http::notification_tier_router(NotificationTierState {
                sockets: self.notification_sockets.clone(),
                session: self.config.session.clone(),
                quota: self.socket_quota.clone(),
            }));
        let client = match &self.config.auth {
            Some(authenticator) => auth::require_auth(client, authenticator.clone()),
            None => client,
        };
        client
            .merge(http::ops_router(OpsState {
                metrics: self.metrics.clone(),
                readiness: self.readiness.clone(),
            }))
            .merge(http::openapi_router())
    }

    /// The internal routes (forward, close-stream, notifications) over this node's registries,
    /// without layers; guard them with [`http::require_bearer`] or serve them on a private
    /// listener.
    pub fn internal_routes(&self) -> Router {
        http::internal_router(InternalState {
            forwarder: Arc::new(InProcessForwarder::new(
                self.chat_sockets.clone(),
                self.notification_sockets.clone(),
            )),
            limits: self.config.limits.clone(),
        })
    }

    /// A token cancelled when the node begins to shut down.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Closes every websocket with 1001 and stops the change handler from taking new events.
    /// Call it when the shutdown signal arrives, before waiting for the HTTP server to drain.
    pub fn begin_shutdown(&self) {
        let reason = CloseReason::new(SHUTDOWN_CLOSE_CODE, "server shutting down");
        self.chat_sockets.close_all(reason.clone());
        self.notification_sockets.close_all(reason);
        self.shutdown.cancel();
    }

    /// Shuts down and waits up to `grace` for in-flight events to finish and every websocket to
    /// be closed. Returns false when something was still busy at the deadline (unfinished events
    /// are not acknowledged and will be delivered again).
    pub async fn shutdown(self, grace: Duration) -> bool {
        self.begin_shutdown();
        let mut pipeline = self.pipeline;
        // Sessions write their 1001 close frames on their own tasks: wait for them too, so a
        // process exiting right after this does not cut them off.
        let sessions = async {
            self.chat_sockets.drained().await;
            self.notification_sockets.drained().await;
        };
        let finished = async { tokio::join!(&mut pipeline, sessions) };
        match tokio::time::timeout(grace, finished).await {
            Ok(_) => true,
            Err(_) => {
                pipeline.abort();
                false
            }
        }
    }
}
