//! The reference deployment of chatcore: configuration, wiring and serving, shared by the
//! `chat-server` binary and its end-to-end tests.

#![warn(missing_docs)]

pub mod config;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use std::sync::Arc;

use chatcore::app::{Backends, ChatApp};
use chatcore::dedup::UnavailablePolicy;
use chatcore_redis::{RedisConfig, RedisEventStore};
use tokio::net::TcpListener;

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

/// The backends the settings name; the embedded defaults when none is set.
///
/// With `REDIS_ADDR` the event store is Redis. Redis joins `/readyz` only under the fail-closed
/// policy: with fail-open (the default) the service keeps delivering while Redis is down.
pub fn backends(settings: &Settings) -> Result<Backends, ConfigError> {
    let config = settings.app_config()?;
    let mut backends = Backends::in_memory();
    if let Some(addr) = settings.redis_addr.as_deref().filter(|a| !a.is_empty()) {
        let store = Arc::new(redis_event_store(settings, addr)?);
        if config.dedup.on_unavailable == UnavailablePolicy::FailClosed {
            let probe = Arc::clone(&store);
            backends.readiness.push((
                "redis".to_owned(),
                Arc::new(move || {
                    let probe = Arc::clone(&probe);
                    Box::pin(async move { probe.ping().await.map_err(|e| e.to_string()) })
                }),
            ));
        }
        backends = backends.with_event_store(store);
    }
    Ok(backends)
}

fn redis_event_store(settings: &Settings, addr: &str) -> Result<RedisEventStore, ConfigError> {
    let mut config = RedisConfig::new(addr, settings.event_store_key_prefix.clone());
    config.password = settings.redis_password.clone();
    config.db = settings.redis_db;
    RedisEventStore::new(config).map_err(|e| ConfigError::Backend {
        variable: "REDIS_ADDR",
        reason: e.to_string(),
    })
}

/// Builds the all-in-one node on the backends the settings name and starts its change handler.
pub fn build_app(settings: &Settings) -> Result<ChatApp, ConfigError> {
    Ok(ChatApp::start(backends(settings)?, settings.app_config()?))
}

/// Binds `LISTEN_ADDR` and serves until `shutdown` resolves.
pub async fn run(
    settings: Settings,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let addr = settings.listen_addr;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Listen { addr, source })?;
    serve(settings, listener, shutdown).await
}

/// Serves the all-in-one node on `listener` until `shutdown` resolves, then shuts down
/// gracefully: stop accepting, close websockets with 1001, let in-flight events finish, all within
/// `SHUTDOWN_TIMEOUT`.
pub async fn serve(
    settings: Settings,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let app = build_app(&settings)?;
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
    let addr = listener
        .local_addr()
        .map_err(|source| ServerError::Listen {
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            source,
        })?;
    tracing::info!(%addr, "chat-server listening (role all)");
    let stopping = app.shutdown_token();
    let server = axum::serve(listener, app.router())
        .with_graceful_shutdown(stopping.clone().cancelled_owned());
    let mut server = tokio::spawn(async move { server.await });
    tokio::select! {
        () = shutdown => tracing::info!("shutdown requested"),
        ended = &mut server => {
            // The server stopped by itself: report why, then clean up.
            if let Ok(Err(error)) = ended {
                return Err(ServerError::Listen { addr, source: error });
            }
        }
    }
    let deadline = tokio::time::Instant::now() + shutdown_timeout;
    app.begin_shutdown();
    if tokio::time::timeout_at(deadline, &mut server)
        .await
        .is_err()
    {
        tracing::warn!("connections still open at SHUTDOWN_TIMEOUT; closing them");
        server.abort();
    }
    let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
    if !app.shutdown(remaining).await {
        tracing::warn!(
            "change handler still busy at SHUTDOWN_TIMEOUT; unfinished events will be redelivered"
        );
    }
    tracing::info!("chat-server stopped");
    Ok(())
}
