//! Role `relay`: the MongoDB change stream of `chat` published to Kafka in Debezium's shape,
//! checkpointed after each record Kafka acknowledged (what a Debezium connector does in
//! production).

use std::future::Future;
use std::sync::Arc;

use chatcore::http::{self, OpsState};
use chatcore::metrics::Metrics;
use tokio_util::sync::CancellationToken;

use crate::backends::{kafka_relay, Store, RELAY_CONSUMER};
use crate::config::Settings;
use crate::serving::{serve_routes, Listeners, Routes, ServeOptions};
use crate::ServerError;

/// Serves role `relay` until `shutdown` resolves; only `/healthz`, `/readyz` and `/metrics` are
/// served.
pub async fn serve_relay(
    settings: Settings,
    listeners: impl Into<Listeners>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    const ROLE: &str = "relay";
    settings.app_config()?;
    Settings::required(&settings.mongo.uri, "MONGO_URI", ROLE)?;
    let bootstrap = Settings::required(
        &settings.kafka.bootstrap_servers,
        "CHAT_PERSISTENCE_CHANGE_KAFKA_BOOTSTRAP_SERVERS",
        ROLE,
    )?;
    let store = Store::open(&settings).await?;
    let relay = kafka_relay(&settings, bootstrap, store.feed(RELAY_CONSUMER).await?).await?;
    let stopping = CancellationToken::new();
    let task = tokio::spawn(relay(stopping.clone()));
    let routes = Routes {
        client: http::ops_router(OpsState {
            metrics: Arc::new(Metrics::new()),
            readiness: Vec::new(),
        }),
        internal: None,
    };
    let options = ServeOptions::from(&settings);
    let drained = serve_routes(routes, listeners.into(), &options, shutdown, || {
        stopping.cancel()
    })
    .await?;
    let remaining = settings.server.shutdown_timeout.saturating_sub(drained);
    if tokio::time::timeout(remaining, task).await.is_err() {
        tracing::warn!(
            "relay still publishing at SHUTDOWN_TIMEOUT; unacknowledged changes are republished on restart"
        );
    }
    tracing::info!("relay stopped");
    Ok(())
}
