//! The backends the settings name: the message store (SQLite, MongoDB or in memory) and its
//! change feed, the event store (Redis or in memory), the Kafka change source and the relay to
//! Kafka.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chatcore::app::AppConfig;
use chatcore::change::{ChangeFeed, ChangeSource};
use chatcore::conversation::{ConversationStore, InMemoryConversations};
use chatcore::dedup::{EventStore, InMemoryEventStore, UnavailablePolicy};
use chatcore::http::ReadinessCheck;
use chatcore::inbox::{InMemoryInbox, InboxStore};
use chatcore::store::{InMemoryMessageStore, MessageStore, CHAT_COLLECTION};
use chatcore_kafka::{KafkaChangeFeed, KafkaChangeSource, KafkaPublisher, KafkaSourceConfig};
use chatcore_mongo::{
    MongoChangeStream, MongoConfig, MongoConversations, MongoInbox, MongoMessageStore,
};
use chatcore_redis::{RedisConfig, RedisEventStore};
use chatcore_sqlite::{SqliteBackend, SqliteConfig};
use mongodb::Database;
use tokio_util::sync::CancellationToken;

use crate::config::{ConfigError, Settings, StoreKind};
use crate::startup::retry_backend;

/// A named `/readyz` probe.
pub(crate) type NamedCheck = (String, ReadinessCheck);

/// The event store the settings name, with its readiness probe when it has one.
pub(crate) fn event_store(
    settings: &Settings,
    config: &AppConfig,
) -> Result<(Arc<dyn EventStore>, Option<NamedCheck>), ConfigError> {
    let Some(addr) = Settings::present(&settings.event_store.redis_addr) else {
        return Ok((Arc::new(InMemoryEventStore::new()), None));
    };
    let mut redis = RedisConfig::new(addr, settings.event_store.key_prefix.clone());
    redis.password = settings.event_store.redis_password.clone();
    redis.db = settings.event_store.redis_db;
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

pub(crate) fn kafka_source(
    settings: &Settings,
    bootstrap: &str,
) -> Result<KafkaChangeSource, ConfigError> {
    kafka_source_of(
        settings,
        bootstrap,
        &settings.kafka.group,
        CHAT_COLLECTION,
        &settings.kafka.topic,
    )
}

/// The Kafka topic `topic` (the changes of `collection`) as a change feed: the node opens its
/// consumer groups on it.
pub(crate) fn kafka_feed(
    settings: &Settings,
    bootstrap: &str,
    collection: &str,
    topic: &str,
) -> KafkaChangeFeed {
    let mut config = KafkaSourceConfig::new(bootstrap, topic, &settings.kafka.group);
    config.collection = collection.to_owned();
    config.ignore_old_messages = settings.kafka.ignore_old_message;
    KafkaChangeFeed::new(config)
}

/// A Kafka change source of `topic` (the changes of `collection`) for consumer group `group`.
pub(crate) fn kafka_source_of(
    settings: &Settings,
    bootstrap: &str,
    group: &str,
    collection: &str,
    topic: &str,
) -> Result<KafkaChangeSource, ConfigError> {
    let mut config = KafkaSourceConfig::new(bootstrap, topic, group);
    config.collection = collection.to_owned();
    config.ignore_old_messages = settings.kafka.ignore_old_message;
    KafkaChangeSource::new(config).map_err(|e| ConfigError::Backend {
        variable: "CHAT_PERSISTENCE_CHANGE_KAFKA_BOOTSTRAP_SERVERS",
        reason: e.to_string(),
    })
}

/// A task that runs beside a node and stops with it (the relay to Kafka).
pub(crate) type Companion = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// Starts a companion once the node's shutdown token exists.
pub(crate) type CompanionStarter = Box<dyn FnOnce(CancellationToken) -> Companion + Send>;

pub(crate) fn kafka_error(error: chatcore_kafka::KafkaBackendError) -> ConfigError {
    ConfigError::Backend {
        variable: "CHAT_PERSISTENCE_CHANGE_KAFKA_BOOTSTRAP_SERVERS",
        reason: error.to_string(),
    }
}

pub(crate) fn mongo_error(error: impl std::fmt::Display) -> ConfigError {
    ConfigError::Backend {
        variable: "MONGO_URI",
        reason: error.to_string(),
    }
}

fn sqlite_error(error: chatcore_sqlite::SqliteError) -> ConfigError {
    ConfigError::Backend {
        variable: "DATA_DIR",
        reason: error.to_string(),
    }
}

/// The message store the settings name and a way to open consumers of its change feed.
pub(crate) enum Store {
    Memory(Arc<InMemoryMessageStore>),
    Sqlite(SqliteBackend),
    Mongo(MongoHandle),
}

/// A MongoDB database with its operation timeout (`MONGO_TIMEOUT`) and how long start-up waits
/// for it to answer (`STARTUP_TIMEOUT`).
pub(crate) struct MongoHandle {
    database: Database,
    timeout: Duration,
    startup: Duration,
}

impl MongoHandle {
    /// Runs `step` against the database until it answers, for up to `STARTUP_TIMEOUT`.
    async fn at_startup<T, E, F, Fut>(&self, step: F) -> Result<T, ConfigError>
    where
        E: std::fmt::Display,
        F: Fn(Database, Duration) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        retry_backend("mongodb", self.startup, || {
            let attempt = step(self.database.clone(), self.timeout);
            async move { attempt.await.map_err(mongo_error) }
        })
        .await
    }
}

impl Store {
    pub(crate) async fn open(settings: &Settings) -> Result<Self, ConfigError> {
        let uri = match settings.store_kind()? {
            StoreKind::Memory => return Ok(Self::Memory(Arc::new(InMemoryMessageStore::new()))),
            StoreKind::Sqlite => {
                let backend = SqliteBackend::open(SqliteConfig::new(&settings.store.data_dir))
                    .await
                    .map_err(sqlite_error)?;
                return Ok(Self::Sqlite(backend));
            }
            StoreKind::Mongo => Settings::required(&settings.mongo.uri, "MONGO_URI", "all")?,
        };
        let config = MongoConfig {
            timeout: settings.mongo.timeout,
            ..MongoConfig::new(uri, &settings.mongo.database)
        };
        let database = chatcore_mongo::connect(&config)
            .await
            .map_err(mongo_error)?;
        Ok(Self::Mongo(MongoHandle {
            database,
            timeout: settings.mongo.timeout,
            startup: settings.server.startup_timeout,
        }))
    }

    pub(crate) async fn message_store(&self) -> Result<Arc<dyn MessageStore>, ConfigError> {
        match self {
            Self::Memory(store) => Ok(store.clone()),
            Self::Sqlite(backend) => Ok(Arc::new(backend.store())),
            Self::Mongo(mongo) => {
                let store = MongoMessageStore::new(mongo.database.clone(), mongo.timeout);
                mongo
                    .at_startup(|database, timeout| async move {
                        MongoMessageStore::new(database, timeout)
                            .create_indexes()
                            .await
                    })
                    .await?;
                Ok(Arc::new(store))
            }
        }
    }

    /// The notification inbox beside the store: the `notifications` collection (indexes
    /// created), the SQLite file's table, or in memory, keeping entries for `NOTIFICATION_RETENTION`.
    pub(crate) async fn inbox(
        &self,
        settings: &Settings,
    ) -> Result<Arc<dyn InboxStore>, ConfigError> {
        let retention = settings.notifications.retention;
        if retention.is_zero() {
            return Err(ConfigError::Invalid {
                variable: "NOTIFICATION_RETENTION",
                reason: "must be more than 0s",
            });
        }
        match self {
            Self::Memory(_) => Ok(Arc::new(InMemoryInbox::with_retention(retention))),
            Self::Sqlite(backend) => Ok(Arc::new(
                backend.inbox(retention).await.map_err(sqlite_error)?,
            )),
            Self::Mongo(mongo) => {
                let inbox = MongoInbox::new(mongo.database.clone(), mongo.timeout, retention);
                mongo
                    .at_startup(|database, timeout| async move {
                        MongoInbox::new(database, timeout, retention)
                            .create_indexes()
                            .await
                    })
                    .await?;
                Ok(Arc::new(inbox))
            }
        }
    }

    /// Groups, read markers and the conversation view beside the store: MongoDB's collections
    /// (indexes created), the SQLite file's tables, or in memory.
    pub(crate) async fn conversations(&self) -> Result<Arc<dyn ConversationStore>, ConfigError> {
        match self {
            Self::Memory(_) => Ok(Arc::new(InMemoryConversations::new())),
            Self::Sqlite(backend) => Ok(Arc::new(
                backend.conversations().await.map_err(sqlite_error)?,
            )),
            Self::Mongo(mongo) => {
                let conversations = MongoConversations::new(mongo.database.clone(), mongo.timeout);
                mongo
                    .at_startup(|database, timeout| async move {
                        MongoConversations::new(database, timeout)
                            .create_indexes()
                            .await
                    })
                    .await?;
                Ok(Arc::new(conversations))
            }
        }
    }

    /// The change stream of `collection` read as consumer `consumer`; `None` in memory.
    pub(crate) async fn collection_feed(
        &self,
        collection: &str,
        consumer: &str,
    ) -> Result<Option<Arc<dyn ChangeSource>>, ConfigError> {
        match self {
            Self::Memory(_) | Self::Sqlite(_) => Ok(None),
            Self::Mongo(mongo) => Ok(Some(Arc::new(
                mongo
                    .at_startup(|database, timeout| async move {
                        MongoChangeStream::open(&database, collection, consumer, timeout).await
                    })
                    .await?,
            ))),
        }
    }

    /// The store's own change feed, whose consumer groups the node opens.
    pub(crate) fn change_feed(&self) -> Arc<dyn ChangeFeed> {
        match self {
            Self::Memory(store) => store.clone(),
            Self::Sqlite(backend) => Arc::new(backend.clone()),
            Self::Mongo(mongo) => Arc::new(MongoMessageStore::new(
                mongo.database.clone(),
                mongo.timeout,
            )),
        }
    }

    /// The store's change feed, read as consumer `consumer`.
    pub(crate) async fn feed(&self, consumer: &str) -> Result<Arc<dyn ChangeSource>, ConfigError> {
        match self {
            Self::Memory(store) => Ok(Arc::new(store.change_source(consumer))),
            Self::Sqlite(backend) => Ok(Arc::new(
                backend.subscribe(consumer).await.map_err(sqlite_error)?,
            )),
            Self::Mongo(mongo) => Ok(Arc::new(
                mongo
                    .at_startup(|database, timeout| async move {
                        MongoChangeStream::open(&database, CHAT_COLLECTION, consumer, timeout).await
                    })
                    .await?,
            )),
        }
    }
}

/// Consumer name of the relay on the store's change feed.
pub(crate) const RELAY_CONSUMER: &str = "kafka-relay";

/// A relay of the store's feed to the Kafka topic, started once the node's shutdown token exists.
pub(crate) async fn kafka_relay(
    settings: &Settings,
    bootstrap: &str,
    feed: Arc<dyn ChangeSource>,
) -> Result<CompanionStarter, ConfigError> {
    let publisher =
        KafkaPublisher::new(bootstrap, &settings.mongo.database).map_err(kafka_error)?;
    retry_backend("kafka", settings.server.startup_timeout, || async {
        publisher
            .ensure_topic(&settings.kafka.topic, settings.kafka.topic_partitions)
            .await
            .map_err(kafka_error)
    })
    .await?;
    let topic = settings.kafka.topic.clone();
    Ok(Box::new(move |shutdown: CancellationToken| -> Companion {
        Box::pin(chatcore_kafka::relay(feed, publisher, topic, shutdown))
    }))
}
