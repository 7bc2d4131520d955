//! The reference deployment of chatcore: configuration, wiring and serving, shared by the
//! `chat-server` binary and its end-to-end tests.
//!
//! - Role `all`: every part in one process. The store is in memory; the change feed is the
//!   store's own feed, or — with `CHAT_PERSISTENCE_CHANGE_KAFKA_BOOTSTRAP_SERVERS` — the store's
//!   changes relayed to Kafka in Debezium's shape and consumed back from the topic, the production
//!   path on one machine. The event store is Redis with `REDIS_ADDR`, in memory otherwise.
//! - Role `change-handler`: the Kafka change feed, the event store, and HTTP forwarders to remote
//!   chat and notification tiers; it serves only `/healthz`, `/readyz` and `/metrics`.

#![warn(missing_docs)]

pub mod config;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use chatcore::app::{AppConfig, Backends, ChatApp};
use chatcore::change::ChangeSource;
use chatcore::dedup::{Deduplicator, EventStore, InMemoryEventStore, UnavailablePolicy};
use chatcore::forward::{HttpForwarder, TierEndpoint};
use chatcore::http::{self, OpsState, ReadinessCheck};
use chatcore::metrics::Metrics;
use chatcore::pipeline::{ChatHandler, Pipeline};
use chatcore::store::{InMemoryMessageStore, MessageStore, CHAT_COLLECTION};
use chatcore_kafka::{KafkaChangeSource, KafkaPublisher, KafkaSourceConfig};
use chatcore_mongo::{MongoChangeStream, MongoConfig, MongoMessageStore};
use chatcore_redis::{RedisConfig, RedisEventStore};
use mongodb::Database;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::{Cli, ConfigError, Role, Settings};

/// Serving failed.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The listener could not be bound or failed.
    #[error("listener {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
}

/// A named `/readyz` probe.
type NamedCheck = (String, ReadinessCheck);

/// The event store the settings name, with its readiness probe when it has one.
fn event_store(
    settings: &Settings,
    config: &AppConfig,
) -> Result<(Arc<dyn EventStore>, Option<NamedCheck>), ConfigError> {
    let Some(addr) = Settings::present(&settings.redis_addr) else {
        return Ok((Arc::new(InMemoryEventStore::new()), None));
    };
    let mut redis = RedisConfig::new(addr, settings.event_store_key_prefix.clone());
    redis.password = settings.redis_password.clone();
    redis.db = settings.redis_db;
    let store = Arc::new(
        RedisEventStore::new(redis).map_err(|e| ConfigError::Backend {
            variable: "REDIS_ADDR",
            reason: e.to_string(),
        })?,
    );
    // With fail-open (the default) the service keeps delivering while Redis is down, so Redis
    // only gates readiness under fail-closed.
    let probe = (config.dedup.on_unavailable == UnavailablePolicy::FailClosed).then(|| {
        let probe = Arc::clone(&store);
        let check: ReadinessCheck = Arc::new(move || {
            let probe = Arc::clone(&probe);
            Box::pin(async move { probe.ping().await.map_err(|e| e.to_string()) })
        });
        ("redis".to_owned(), check)
    });
    Ok((store, probe))
}

fn kafka_source(settings: &Settings, bootstrap: &str) -> Result<KafkaChangeSource, ConfigError> {
    let mut config =
        KafkaSourceConfig::new(bootstrap, &settings.kafka_topic, &settings.kafka_group);
    config.ignore_old_messages = settings.ignore_old_message;
    KafkaChangeSource::new(config).map_err(|e| ConfigError::Backend {
        variable: "CHAT_PERSISTENCE_CHANGE_KAFKA_BOOTSTRAP_SERVERS",
        reason: e.to_string(),
    })
}

/// A task that runs beside a node and stops with it (the relay to Kafka).
type Companion = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// Starts a companion once the node's shutdown token exists.
type CompanionStarter = Box<dyn FnOnce(CancellationToken) -> Companion + Send>;

fn kafka_error(error: chatcore_kafka::KafkaBackendError) -> ConfigError {
    ConfigError::Backend {
        variable: "CHAT_PERSISTENCE_CHANGE_KAFKA_BOOTSTRAP_SERVERS",
        reason: error.to_string(),
    }
}

fn mongo_error(error: impl std::fmt::Display) -> ConfigError {
    ConfigError::Backend {
        variable: "MONGO_URI",
        reason: error.to_string(),
    }
}

/// The message store the settings name and a way to open consumers of its change feed.
enum Store {
    Memory(Arc<InMemoryMessageStore>),
    Mongo(Database, Duration),
}

impl Store {
    async fn open(settings: &Settings) -> Result<Self, ConfigError> {
        let Some(uri) = Settings::present(&settings.mongo_uri) else {
            return Ok(Self::Memory(Arc::new(InMemoryMessageStore::new())));
        };
        let config = MongoConfig {
            timeout: settings.mongo_timeout,
            ..MongoConfig::new(uri, &settings.mongo_database)
        };
        let database = chatcore_mongo::connect(&config)
            .await
            .map_err(mongo_error)?;
        Ok(Self::Mongo(database, settings.mongo_timeout))
    }

    async fn message_store(&self) -> Result<Arc<dyn MessageStore>, ConfigError> {
        match self {
            Self::Memory(store) => Ok(store.clone()),
            Self::Mongo(database, timeout) => {
                let store = MongoMessageStore::new(database.clone(), *timeout);
                store.create_indexes().await.map_err(mongo_error)?;
                Ok(Arc::new(store))
            }
        }
    }

    /// The store's change feed, read as consumer `consumer`.
    async fn feed(&self, consumer: &str) -> Result<Arc<dyn ChangeSource>, ConfigError> {
        match self {
            Self::Memory(store) => Ok(Arc::new(store.change_source(consumer))),
            Self::Mongo(database, timeout) => Ok(Arc::new(
                MongoChangeStream::open(database, CHAT_COLLECTION, consumer, *timeout)
                    .await
                    .map_err(mongo_error)?,
            )),
        }
    }
}

/// Consumer name of the relay on the store's change feed.
const RELAY_CONSUMER: &str = "kafka-relay";

/// A relay of the store's feed to the Kafka topic, started once the node's shutdown token exists.
async fn kafka_relay(
    settings: &Settings,
    bootstrap: &str,
    feed: Arc<dyn ChangeSource>,
) -> Result<CompanionStarter, ConfigError> {
    let publisher =
        KafkaPublisher::new(bootstrap, &settings.mongo_database).map_err(kafka_error)?;
    publisher
        .ensure_topic(&settings.kafka_topic, settings.kafka_topic_partitions)
        .await
        .map_err(kafka_error)?;
    let topic = settings.kafka_topic.clone();
    Ok(Box::new(move |shutdown: CancellationToken| -> Companion {
        Box::pin(chatcore_kafka::relay(feed, publisher, topic, shutdown))
    }))
}

/// The backends of role `all` and the relay it needs when Kafka is configured: the store is
/// MongoDB or in memory; the change handler reads the store's own feed, or Kafka fed by a relay.
async fn all_in_one_backends(
    settings: &Settings,
    config: &AppConfig,
) -> Result<(Backends, Option<CompanionStarter>), ConfigError> {
    let (events, probe) = event_store(settings, config)?;
    let store = Store::open(settings).await?;
    let mut backends = Backends::in_memory().with_event_store(events);
    backends.readiness.extend(probe);
    backends.store = store.message_store().await?;
    match Settings::present(&settings.kafka_bootstrap_servers) {
        None => {
            backends.source = store.feed(&settings.kafka_group).await?;
            Ok((backends, None))
        }
        Some(bootstrap) => {
            let relay = kafka_relay(settings, bootstrap, store.feed(RELAY_CONSUMER).await?).await?;
            backends.source = Arc::new(kafka_source(settings, bootstrap)?);
            Ok((backends, Some(relay)))
        }
    }
}

/// Builds the all-in-one node on the backends the settings name, lets `customize` adjust them
/// (tests inject failing forwarders or stores), and starts it with its relay, if any.
pub async fn build_app_with(
    settings: &Settings,
    customize: impl FnOnce(Backends) -> Backends,
) -> Result<ChatApp, ConfigError> {
    let config = settings.app_config()?;
    let (backends, relay) = all_in_one_backends(settings, &config).await?;
    let app = ChatApp::start(customize(backends), config);
    if let Some(relay) = relay {
        tokio::spawn(relay(app.shutdown_token()));
    }
    Ok(app)
}

/// Builds the all-in-one node on the backends the settings name.
pub async fn build_app(settings: &Settings) -> Result<ChatApp, ConfigError> {
    build_app_with(settings, |backends| backends).await
}

/// Binds `LISTEN_ADDR` and runs `role` until `shutdown` resolves.
pub async fn run(
    role: Role,
    settings: Settings,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let addr = settings.listen_addr;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Listen { addr, source })?;
    match role {
        Role::All => serve(settings, listener, shutdown).await,
        Role::ChangeHandler => serve_change_handler(settings, listener, shutdown).await,
        Role::Relay => serve_relay(settings, listener, shutdown).await,
    }
}

/// Serves the all-in-one node on `listener` until `shutdown` resolves, then shuts down
/// gracefully: stop accepting, close websockets with 1001, let in-flight events finish, all within
/// `SHUTDOWN_TIMEOUT`.
pub async fn serve(
    settings: Settings,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let app = build_app(&settings).await?;
    serve_app(app, listener, settings.shutdown_timeout, shutdown).await
}

/// Serves an already built node on `listener` until `shutdown` resolves, then shuts it down
/// within `shutdown_timeout`.
pub async fn serve_app(
    app: ChatApp,
    listener: TcpListener,
    shutdown_timeout: Duration,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let router = app.router();
    let stopping = app.shutdown_token();
    let drained = serve_router(
        router,
        listener,
        stopping,
        shutdown_timeout,
        shutdown,
        || app.begin_shutdown(),
    )
    .await?;
    let remaining = shutdown_timeout.saturating_sub(drained);
    if !app.shutdown(remaining).await {
        tracing::warn!(
            "change handler still busy at SHUTDOWN_TIMEOUT; unfinished events will be redelivered"
        );
    }
    tracing::info!("chat-server stopped");
    Ok(())
}

/// Serves `router` until `shutdown` resolves, calls `begin_shutdown` (which must cancel
/// `stopping`), and waits for open connections up to `shutdown_timeout`. Returns the time the
/// drain took.
async fn serve_router(
    router: Router,
    listener: TcpListener,
    stopping: CancellationToken,
    shutdown_timeout: Duration,
    shutdown: impl Future<Output = ()>,
    begin_shutdown: impl FnOnce(),
) -> Result<Duration, ServerError> {
    let addr = listener
        .local_addr()
        .map_err(|source| ServerError::Listen {
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            source,
        })?;
    tracing::info!(%addr, "chat-server listening");
    let server =
        axum::serve(listener, router).with_graceful_shutdown(stopping.clone().cancelled_owned());
    let mut server = tokio::spawn(async move { server.await });
    tokio::select! {
        () = shutdown => tracing::info!("shutdown requested"),
        ended = &mut server => {
            if let Ok(Err(error)) = ended {
                return Err(ServerError::Listen { addr, source: error });
            }
        }
    }
    let started = tokio::time::Instant::now();
    begin_shutdown();
    if tokio::time::timeout(shutdown_timeout, &mut server)
        .await
        .is_err()
    {
        tracing::warn!("connections still open at SHUTDOWN_TIMEOUT; closing them");
        server.abort();
    }
    Ok(started.elapsed())
}

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
            None,
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

    /// `/healthz`, `/readyz` and `/metrics` of the change handler.
    pub fn router(&self) -> Router {
        http::with_common_layers(http::ops_router(OpsState {
            metrics: self.metrics.clone(),
            readiness: self.readiness.clone(),
        }))
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

/// Serves role `change-handler` on `listener` until `shutdown` resolves.
pub async fn serve_change_handler(
    settings: Settings,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let handler = ChangeHandler::start(&settings)?;
    let stopping = CancellationToken::new();
    let drained = serve_router(
        handler.router(),
        listener,
        stopping.clone(),
        settings.shutdown_timeout,
        shutdown,
        || stopping.cancel(),
    )
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

/// Serves role `relay`: the MongoDB change stream of `chat` published to Kafka in Debezium's
/// shape, checkpointed after each record Kafka acknowledged.
pub async fn serve_relay(
    settings: Settings,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    const ROLE: &str = "relay";
    settings.app_config()?;
    Settings::required(&settings.mongo_uri, "MONGO_URI", ROLE)?;
    let bootstrap = Settings::required(
        &settings.kafka_bootstrap_servers,
        "CHAT_PERSISTENCE_CHANGE_KAFKA_BOOTSTRAP_SERVERS",
        ROLE,
    )?;
    let store = Store::open(&settings).await?;
    let relay = kafka_relay(&settings, bootstrap, store.feed(RELAY_CONSUMER).await?).await?;
    let stopping = CancellationToken::new();
    let task = tokio::spawn(relay(stopping.clone()));
    let ops = http::with_common_layers(http::ops_router(OpsState {
        metrics: Arc::new(Metrics::new()),
        readiness: Vec::new(),
    }));
    let drained = serve_router(
        ops,
        listener,
        stopping.clone(),
        settings.shutdown_timeout,
        shutdown,
        || stopping.cancel(),
    )
    .await?;
    let remaining = settings.shutdown_timeout.saturating_sub(drained);
    if tokio::time::timeout(remaining, task).await.is_err() {
        tracing::warn!("relay still publishing at SHUTDOWN_TIMEOUT; unacknowledged changes are republished on restart");
    }
    Ok(())
}
