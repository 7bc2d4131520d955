//! Role `all`: persistence, change handler and both websocket tiers in one process, on the
//! backends the settings name (embedded defaults when none is configured).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chatcore::app::{AppConfig, Backends, ChatApp};

use crate::backends::{
    event_store, kafka_relay, kafka_source, CompanionStarter, Store, RELAY_CONSUMER,
};
use crate::config::{ConfigError, Settings};
use crate::serving::{serve_routes, Listeners, Routes, ServeOptions};
use crate::ServerError;

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
/// (tests inject failing forwarders or stores), and starts it with its relay, if any. With
/// `AUTH_MODE=jwt` its client routes require bearer tokens.
pub async fn build_app_with(
    settings: &Settings,
    customize: impl FnOnce(Backends) -> Backends,
) -> Result<ChatApp, ConfigError> {
    let mut config = settings.app_config()?;
    // The node applies it to its client routes (`ChatApp::client_routes`).
    config.auth = settings.authenticator()?;
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
