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
use crate::change::{ChangeEvent, ChangeSource, InMemoryChangeFeed};
use crate::dedup::{
    DedupConfig, Deduplicator, EventStore, InMemoryEventStore, DEFAULT_THROTTLE_TTL,
};
use crate::forward::{Forwarder, InProcessForwarder, ThrottledForwarder};
use crate::http::{
    self, ChatTierState, InternalState, Limits, NotificationTierState, OpsState, PersistenceState,
    ReadinessCheck,
};
use crate::metrics::{DropReason, Metrics, TierLabel};
use crate::pipeline::{
    ChatHandler, EventHandler, FailurePolicy, Pipeline, PipelineConfig, Plan, RetryPolicy,
};
use crate::sockets::{
    CloseReason, LocalSocketRegistry, SessionConfig, SocketQuota, SocketRegistry,
    SHUTDOWN_CLOSE_CODE,
};
use crate::store::{InMemoryMessageStore, MessageStore};

/// Consumer group of the change handler on the embedded feed.
pub const CHAT_CONSUMER_GROUP: &str = "chat-change-handler";
/// Suffix of the notification consumer's group (strategies `separate` and `segregated`): with
/// the default chat group, `chat-change-handler-notifications`.
pub const NOTIFICATIONS_GROUP_SUFFIX: &str = "-notifications";

/// How chat messages reach the notification tier: the seed's three strategies (CONTRACT §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NotificationStrategy {
    /// One consumer forwards each message to the chat and the notification tiers concurrently
    /// (the seed's implementation). Simplest; a failing notification tier makes the whole event
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
/// strategy, and the document consumers (commerce, [`Backends::with_consumer`]).
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

/// An extra consumer of a node: a change feed and the handler that turns its events into
/// deliveries (commerce, a team's own documents, the e-mail consumer). By default it runs with
/// the [`NotificationsConfig`] settings and delivers through the node's forwarder; both can be
/// its own ([`Consumer::with_forwarder`], [`Consumer::with_settings`]).
#[derive(Clone)]
pub struct Consumer {
    /// Name in metrics and logs (`chatcore_events_total{consumer=...}`).
    pub name: String,
    /// Its change feed (its own consumer group or change stream).
    pub source: Arc<dyn ChangeSource>,
    /// What its events become.
    pub handler: Arc<dyn EventHandler>,
    /// Where it delivers instead of the node's forwarder (e.g. an e-mail forwarder).
    pub forwarder: Option<Arc<dyn Forwarder>>,
    /// Its own retry, failure policy and idempotency instead of [`NotificationsConfig`]'s
    /// (e.g. the e-mail consumer's 10 retries, dead letters and 24 h TTL).
    pub settings: Option<(PipelineConfig, DedupConfig)>,
}

impl Consumer {
    /// `handler` over `source`, with the notification consumers' settings and the node's
    /// forwarder.
    pub fn new(
        name: impl Into<String>,
        source: Arc<dyn ChangeSource>,
        handler: Arc<dyn EventHandler>,
    ) -> Self {
        Self {
            name: name.into(),
            source,
            handler,
            forwarder: None,
            settings: None,
        }
    }

    /// Delivers through `forwarder` instead of the node's.
    pub fn with_forwarder(mut self, forwarder: Arc<dyn Forwarder>) -> Self {
        self.forwarder = Some(forwarder);
        self
    }

    /// Runs with its own pipeline and idempotency settings (the pipeline's name is replaced by
    /// the consumer's).
    pub fn with_settings(mut self, pipeline: PipelineConfig, dedup: DedupConfig) -> Self {
        self.settings = Some((pipeline, dedup));
        self
    }
}

/// Prefixes a handler's idempotency keys, so two consumers of the same events sharing an event
/// store (the chat and the notification consumer of one message) do not take each other's work
/// for duplicates.
#[derive(Debug, Clone)]
pub struct KeyPrefixed<H> {
    prefix: String,
    inner: H,
}

impl<H> KeyPrefixed<H> {
    /// Keys of `inner` become `{prefix}{key}`.
    pub fn new(prefix: impl Into<String>, inner: H) -> Self {
        Self {
            prefix: prefix.into(),
            inner,
        }
    }
}

impl<H: EventHandler> EventHandler for KeyPrefixed<H> {
    fn plan(&self, event: &ChangeEvent) -> Result<Plan, DropReason> {
        let mut plan = self.inner.plan(event)?;
        plan.event_key.insert_str(0, &self.prefix);
        Ok(plan)
    }
}

/// The consumers a strategy runs, over sources opened by the caller: what [`ChatApp`] and the
/// reference server's change handler both start.
pub struct ConsumerSet {
    /// The chat consumer's feed.
    pub chat_source: Arc<dyn ChangeSource>,
    /// The notification consumer's feed (required by `separate` and `segregated`).
    pub notification_source: Option<Arc<dyn ChangeSource>>,
    /// Extra consumers (commerce, custom documents).
    pub consumers: Vec<Consumer>,
    /// Idempotency and throttle windows.
    pub event_store: Arc<dyn EventStore>,
    /// Where every consumer delivers.
    pub forwarder: Arc<dyn Forwarder>,
}

impl ConsumerSet {
    /// Spawns the consumers of `strategy` on the current runtime; they stop when `shutdown` is
    /// cancelled. Without a notification source, `separate` and `segregated` fall back to
    /// `concurrent` (logged) rather than losing notifications.
    pub fn spawn(
        self,
        strategy: NotificationStrategy,
        config: &AppConfig,
        metrics: &Arc<Metrics>,
        shutdown: &CancellationToken,
    ) -> Vec<JoinHandle<()>> {
        let mut tasks = Vec::new();
        let mut run = |pipeline: Pipeline| tasks.push(tokio::spawn(pipeline.run(shutdown.clone())));
        let strategy = match (strategy, &self.notification_source) {
            (NotificationStrategy::Concurrent, _) | (_, Some(_)) => strategy,
            (other, None) => {
                tracing::error!(
                    ?other,
                    "no notification consumer feed: notifying from the chat consumer"
                );
                NotificationStrategy::Concurrent
            }
        };
        let chat_handler = ChatHandler {
            notify_receiver: strategy == NotificationStrategy::Concurrent,
            max_content_bytes: config.limits.max_content_bytes,
            ..ChatHandler::default()
        };
        let dedup = |dedup: &DedupConfig| {
            Deduplicator::new(self.event_store.clone(), dedup.clone(), metrics.clone())
        };
        run(Pipeline::new(
            self.chat_source,
            Arc::new(chat_handler),
            dedup(&config.dedup),
            self.forwarder.clone(),
            config.pipeline.clone(),
            metrics.clone(),
        ));
        if let Some(source) = self
            .notification_source
            .filter(|_| strategy.has_notification_consumer())
        {
            let (pipeline, dedup_config) = match strategy {
                NotificationStrategy::Segregated => (
                    config.notifications.pipeline.clone(),
                    &config.notifications.dedup,
                ),
                _ => (config.pipeline.clone(), &config.dedup),
            };
            let pipeline = PipelineConfig {
                name: "notifications".to_owned(),
                ..pipeline
            };
            let handler = KeyPrefixed::new(
                "notify:",
                ChatHandler {
                    forward_chat: false,
                    notify_receiver: true,
                    max_content_bytes: config.limits.max_content_bytes,
                },
            );
            let throttle = config.notifications.throttle_ttl;
            let forwarder: Arc<dyn Forwarder> = if throttle.is_zero() {
                self.forwarder.clone()
            } else {
                Arc::new(
                    ThrottledForwarder::new(
                        self.forwarder.clone(),
                        self.event_store.clone(),
                        throttle,
                    )
                    .counted(metrics.clone(), pipeline.name.clone()),
                )
            };
            run(Pipeline::new(
                source,
                Arc::new(handler),
                dedup(dedup_config),
                forwarder,
                pipeline,
                metrics.clone(),
            ));
        }
        // Strategy `segregated`'s third group, the e-mail consumer, is one of these: a
        // `Consumer` with the e-mail forwarder and its own settings (`chatcore::email`).
        for consumer in self.consumers {
            let (pipeline, dedup_config) = consumer.settings.unwrap_or_else(|| {
                (
                    config.notifications.pipeline.clone(),
                    config.notifications.dedup.clone(),
                )
            });
            run(Pipeline::new(
                consumer.source,
                consumer.handler,
                dedup(&dedup_config),
                consumer.forwarder.unwrap_or_else(|| self.forwarder.clone()),
                PipelineConfig {
                    name: consumer.name,
                    ..pipeline
                },
                metrics.clone(),
            ));
        }
        tasks
    }
}

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
    /// The notification consumer's feed (strategies `separate` and `segregated`); `None`: a
    /// new group of the in-memory feed, when there is one.
    pub notification_source: Option<Arc<dyn ChangeSource>>,
    /// The in-memory feed of [`Backends::in_memory`], where the notification consumer joins
    /// its own group when no `notification_source` is given.
    pub memory_feed: Option<Arc<InMemoryChangeFeed>>,
    /// Extra consumers (commerce notifications, a team's own documents).
    pub consumers: Vec<Consumer>,
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
        let memory_feed = Some(store.feed().clone());
        Self {
            store,
            source,
            notification_source: None,
            memory_feed,
            consumers: Vec::new(),
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

    /// Adds a consumer: `handler` applied to the events of `source`, delivered through the
    /// node's forwarder with the notification consumers' settings.
    pub fn with_consumer(
        mut self,
        name: impl Into<String>,
        source: Arc<dyn ChangeSource>,
        handler: Arc<dyn EventHandler>,
    ) -> Self {
        self.consumers.push(Consumer::new(name, source, handler));
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
    /// How chat notifications are delivered.
    pub strategy: NotificationStrategy,
    /// Settings of the notification consumers.
    pub notifications: NotificationsConfig,
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
    pipelines: Vec<JoinHandle<()>>,
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
        let notification_source = match (&backends.notification_source, &backends.memory_feed) {
            (Some(source), _) => Some(source.clone()),
            (None, Some(feed)) if config.strategy.has_notification_consumer() => {
                let group = format!("{CHAT_CONSUMER_GROUP}{NOTIFICATIONS_GROUP_SUFFIX}");
                Some(Arc::new(feed.subscribe(&group)) as Arc<dyn ChangeSource>)
            }
            (None, _) => None,
        };
        let shutdown = CancellationToken::new();
        let pipelines = ConsumerSet {
            chat_source: backends.source,
            notification_source,
            consumers: backends.consumers,
            event_store: backends.event_store,
            forwarder,
        }
        .spawn(config.strategy, &config, &metrics, &shutdown);
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
            pipelines,
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
        let aborts: Vec<_> = self
            .pipelines
            .iter()
            .map(JoinHandle::abort_handle)
            .collect();
        let mut pipeline = futures::future::join_all(self.pipelines);
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
                aborts.iter().for_each(tokio::task::AbortHandle::abort);
                false
            }
        }
    }
}
