//! Role `all`: persistence, change handler and both websocket tiers in one process, on the
//! backends the settings name (embedded defaults when none is configured).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chatcore::app::{AppConfig, ChatApp, ChatAppBuilder, Consumer, NOTIFICATIONS_GROUP_SUFFIX};
use chatcore::change::ChangeSource;
use chatcore::commerce::{
    NotificationHandler, PAYMENTS_COLLECTION, PURCHASES_COLLECTION, SHIPMENTS_COLLECTION,
};
use chatcore::pipeline::EventHandler;
use chatcore::store::CHAT_COLLECTION;

use crate::backends::{
    event_store, kafka_feed, kafka_relay, kafka_source_of, CompanionStarter, Store, RELAY_CONSUMER,
};
use crate::config::{ConfigError, Settings};
use crate::serving::{serve_routes, Listeners, Routes, ServeOptions};
use crate::ServerError;

/// The builder of role `all` on the backends the settings name, and the relay it needs when
/// Kafka is configured: the store is SQLite, MongoDB or in memory; the change handler reads the
/// store's own feed, or Kafka fed by a relay of it.
async fn all_in_one_builder(
    settings: &Settings,
    config: &AppConfig,
) -> Result<(ChatAppBuilder, Option<CompanionStarter>), ConfigError> {
    let (events, probe) = event_store(settings, config)?;
    let store = Store::open(settings).await?;
    let mut builder = ChatApp::builder()
        .config(config.clone())
        .auth(settings.auth()?)
        .event_store(events)
        .message_store(store.message_store().await?)
        .inbox(store.inbox(settings).await?)
        .conversations(store.conversations().await?)
        .consumer_group(&settings.kafka.group);
    if let Some((name, check)) = probe {
        builder = builder.readiness(name, check);
    }
    for consumer in commerce_consumers(settings, &store).await? {
        builder = builder.consumer(consumer);
    }
    match Settings::present(&settings.kafka.bootstrap_servers) {
        None => Ok((builder.change_feed(store.change_feed()), None)),
        Some(bootstrap) => {
            let relay = kafka_relay(settings, bootstrap, store.feed(RELAY_CONSUMER).await?).await?;
            let feed = Arc::new(kafka_feed(
                settings,
                bootstrap,
                CHAT_COLLECTION,
                &settings.kafka.topic,
            ));
            Ok((builder.change_feed(feed), Some(relay)))
        }
    }
}

/// Consumer group (Kafka) or change-stream consumer (MongoDB) of the chat-notification consumer
/// of strategies `separate` and `segregated`: `<group>-notifications`.
pub(crate) fn notifications_group(settings: &Settings) -> String {
    format!("{}{NOTIFICATIONS_GROUP_SUFFIX}", settings.kafka.group)
}

/// The commerce consumers, one per collection: from its Kafka topic when
/// `COMMERCE_<COLLECTION>_KAFKA_TOPIC` is set, else from MongoDB's change stream of the collection
/// when `MONGO_URI` is set, else none. Each reads as `<group>-commerce-<collection>` and shows in
/// the metrics as consumer `commerce-<collection>`.
pub(crate) async fn commerce_consumers(
    settings: &Settings,
    store: &Store,
) -> Result<Vec<Consumer>, ConfigError> {
    let handler: Arc<dyn EventHandler> = Arc::new(NotificationHandler::commerce());
    let topics = [
        (
            PURCHASES_COLLECTION,
            &settings.commerce.purchases_kafka_topic,
        ),
        (PAYMENTS_COLLECTION, &settings.commerce.payments_kafka_topic),
        (
            SHIPMENTS_COLLECTION,
            &settings.commerce.shipments_kafka_topic,
        ),
    ];
    let mut consumers = Vec::new();
    for (collection, topic) in topics {
        let name = format!("commerce-{collection}");
        let group = format!("{}-{name}", settings.kafka.group);
        let bootstrap = Settings::present(&settings.kafka.bootstrap_servers);
        let source: Option<Arc<dyn ChangeSource>> = match (Settings::present(topic), bootstrap) {
            (Some(topic), Some(bootstrap)) => Some(Arc::new(kafka_source_of(
                settings, bootstrap, &group, collection, topic,
            )?)),
            (Some(_), None) => {
                return Err(ConfigError::Invalid {
                    variable: "CHAT_PERSISTENCE_CHANGE_KAFKA_BOOTSTRAP_SERVERS",
                    reason: "must be set when a COMMERCE_*_KAFKA_TOPIC is",
                })
            }
            (None, _) => store.collection_feed(collection, &group).await?,
        };
        if let Some(source) = source {
            consumers.push(Consumer::new(name, source, handler.clone()));
        }
    }
    Ok(consumers)
}

/// Builds the all-in-one node on the backends the settings name, lets `customize` adjust the
/// builder (tests inject failing forwarders or stores), and starts it with its relay, if any.
/// With `AUTH_MODE=jwt` its client routes require bearer tokens.
pub async fn build_app_with(
    settings: &Settings,
    customize: impl FnOnce(ChatAppBuilder) -> ChatAppBuilder,
) -> Result<ChatApp, ServerError> {
    let config = settings.app_config()?;
    let (builder, relay) = all_in_one_builder(settings, &config).await?;
    let app = customize(builder).build().await?;
    if let Some(relay) = relay {
        tokio::spawn(relay(app.shutdown_token()));
    }
    Ok(app)
}

/// Builds the all-in-one node on the backends the settings name.
pub async fn build_app(settings: &Settings) -> Result<ChatApp, ServerError> {
    build_app_with(settings, |builder| builder).await
}

/// Serves the all-in-one node on `listeners` until `shutdown` resolves, then shuts down
/// gracefully: stop accepting, close websockets with 1001, let in-flight events finish, all within
/// `SHUTDOWN_TIMEOUT`.
pub async fn serve(
    settings: Settings,
    listeners: impl Into<Listeners>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let app = build_app(&settings).await?;
    serve_app_with(
        app,
        listeners.into(),
        &ServeOptions::from(&settings),
        shutdown,
    )
    .await
}

/// Serves an already built node on `listener` (every route, no token) until `shutdown` resolves,
/// then shuts it down within `shutdown_timeout`.
pub async fn serve_app(
    app: ChatApp,
    listener: tokio::net::TcpListener,
    shutdown_timeout: Duration,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let options = ServeOptions {
        shutdown_timeout,
        ..ServeOptions::default()
    };
    serve_app_with(app, listener.into(), &options, shutdown).await
}

/// Serves an already built node on `listeners` with `options` until `shutdown` resolves.
pub async fn serve_app_with(
    app: ChatApp,
    listeners: Listeners,
    options: &ServeOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let routes = Routes {
        client: app.client_routes(),
        internal: Some(app.internal_routes()),
    };
    let drained = serve_routes(routes, listeners, options, shutdown, || {
        app.begin_shutdown()
    })
    .await?;
    let remaining = options.shutdown_timeout.saturating_sub(drained);
    if !app.shutdown(remaining).await {
        tracing::warn!(
            "change handler or websockets still busy at SHUTDOWN_TIMEOUT; unfinished events will be redelivered"
        );
    }
    tracing::info!("chat-server stopped");
    Ok(())
}
