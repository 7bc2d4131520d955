//! The client-facing services of the split topology: `persistence` (the message API), `chat-ws`
//! (chat websockets by `stream_id`) and `notifications-ws` (notification websockets by
//! `user_id`). The websocket tiers take deliveries on their internal routes, which only
//! `INTERNAL_LISTEN_ADDR` serves.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use chatcore::forward::{HttpForwarder, InProcessForwarder, InboxForwarder, TierEndpoint};
use chatcore::http::{
    self, ChatTier, ChatTierState, ConversationsState, InternalState, NotificationTierState,
    OpsState, PersistenceState,
};
use chatcore::metrics::Metrics;
use chatcore::sockets::{
    CloseReason, LocalSocketRegistry, SocketQuota, SocketRegistry, SHUTDOWN_CLOSE_CODE,
};
use chatcore::store::MessageStore;
use chatcore::tier::Tier;

use crate::backends::Store;
use crate::config::{ConfigError, Settings};
use crate::serving::{serve_routes, Listeners, Routes, ServeOptions};
use crate::ServerError;

/// The backend of a split role: MongoDB, which `MONGO_URI` must name (an in-memory store would
/// not be shared with the other processes).
async fn shared_backend(settings: &Settings, role: &'static str) -> Result<Store, ConfigError> {
    Settings::required(&settings.mongo.uri, "MONGO_URI", role)?;
    Store::open(settings).await
}

fn ops(metrics: &Arc<Metrics>, store: Option<&Arc<dyn MessageStore>>) -> Router {
    let readiness = store
        .map(|store| ("store".to_owned(), http::store_readiness(store.clone())))
        .into_iter()
        .collect();
    http::ops_router(OpsState {
        metrics: metrics.clone(),
        readiness,
    })
}

/// The client routes of a role: `tier` behind the bearer-token check with `AUTH_MODE=jwt`, then
/// the operational routes, which stay open. Applied before [`Routes`] splits them over the
/// listeners, so the client routes the internal listener also serves are guarded too.
fn client_routes(settings: &Settings, tier: Router, ops: Router) -> Result<Router, ConfigError> {
    let tier = match settings.authenticator()? {
        Some(authenticator) => chatcore::auth::require_auth(tier, authenticator),
        None => tier,
    };
    Ok(tier.merge(ops).merge(http::openapi_router()))
}

/// The chat tier as the persistence role reaches it (through the balancer, by `stream_id`) for
/// read frames and removed members' closes: `CHAT_MESSAGE_SOCKET_TRANSFER_OUTGOING_CONFIG_CLIENT_HOST`,
/// or none (logged: read state and membership are stored, sockets are not told).
fn remote_chat_tier(settings: &Settings) -> Option<ChatTier> {
    let Some(url) = Settings::present(&settings.tiers.chat_ws_url) else {
        tracing::warn!("no CHAT_MESSAGE_SOCKET_TRANSFER_OUTGOING_CONFIG_CLIENT_HOST: read frames are not sent and removed members' sockets are not closed");
        return None;
    };
    let endpoint = TierEndpoint {
        timeout: settings.tiers.chat_ws_timeout,
        ..TierEndpoint::new(url)
    };
    // Only chat-tier routes are called from here; the notification endpoint is never used.
    let forwarder = Arc::new(HttpForwarder::new(
        endpoint.clone(),
        endpoint,
        Settings::present(&settings.server.internal_token).map(str::to_owned),
    ));
    Some(ChatTier {
        forwarder: forwarder.clone(),
        closer: forwarder,
    })
}

/// Serves role `persistence`: `POST /chat/messages` (alias `/chat/persist`),
/// `GET /chat/messages`, the conversation routes and `POST /chat/read` on MongoDB. Stateless:
/// run as many as the write load needs.
pub async fn serve_persistence(
    settings: Settings,
    listeners: impl Into<Listeners>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let config = settings.app_config()?;
    let backend = shared_backend(&settings, "persistence").await?;
    let store = backend.message_store().await?;
    let conversations = backend.conversations().await?;
    let metrics = Arc::new(Metrics::new());
    let tier = http::persistence_router(PersistenceState {
        store: store.clone(),
        conversations: conversations.clone(),
        limits: config.limits.clone(),
        metrics: metrics.clone(),
    })
    .merge(http::conversations_router(ConversationsState {
        store: store.clone(),
        conversations,
        chat_tier: remote_chat_tier(&settings),
        limits: config.limits,
        metrics: metrics.clone(),
    }));
    let client = client_routes(&settings, tier, ops(&metrics, Some(&store)))?;
    let routes = Routes {
        client,
        internal: None,
    };
    let options = ServeOptions::from(&settings);
    serve_routes(routes, listeners.into(), &options, shutdown, || {}).await?;
    tracing::info!("persistence stopped");
    Ok(())
}

/// Serves a websocket tier until `shutdown`, then closes its sessions with 1001 and drains.
async fn serve_tier(
    role: &'static str,
    routes: Routes,
    sockets: Arc<LocalSocketRegistry>,
    listeners: Listeners,
    settings: &Settings,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let options = ServeOptions::from(settings);
    let registry = sockets.clone();
    let close_sessions = move || {
        let reason = CloseReason::new(SHUTDOWN_CLOSE_CODE, "server shutting down");
        let closed = registry.close_all(reason);
        tracing::info!(closed, "websockets closed");
    };
    let drained = serve_routes(routes, listeners, &options, shutdown, close_sessions).await?;
    // The close frames are written by the sessions' own tasks: wait for them before exiting.
    let remaining = options.shutdown_timeout.saturating_sub(drained);
    if tokio::time::timeout(remaining, sockets.drained())
        .await
        .is_err()
    {
        tracing::warn!(
            open = sockets.len(),
            "websockets still open at SHUTDOWN_TIMEOUT"
        );
    }
    tracing::info!(role, "stopped");
    Ok(())
}

fn require_internal_listener(listeners: &Listeners, role: &'static str) -> Result<(), ConfigError> {
    match listeners.internal {
        Some(_) => Ok(()),
        None => Err(ConfigError::Missing {
            variable: "INTERNAL_LISTEN_ADDR",
            role,
        }),
    }
}

/// Serves role `chat-ws`: `GET /chat/subscribe` (with `since=` replayed from MongoDB) and, on
/// the internal listener, `POST /chat/forward-to-websocket` and `POST /chat/close-stream`. Run
/// several behind a balancer that hashes on `stream_id` (`deploy/nginx`).
pub async fn serve_chat_ws(
    settings: Settings,
    listeners: impl Into<Listeners>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    const ROLE: &str = "chat-ws";
    let listeners = listeners.into();
    require_internal_listener(&listeners, ROLE)?;
    let config = settings.app_config()?;
    let backend = shared_backend(&settings, ROLE).await?;
    let store = backend.message_store().await?;
    let metrics = Arc::new(Metrics::new());
    let sockets = Arc::new(
        LocalSocketRegistry::new(Tier::Chat, metrics.clone())
            .with_slow_client_policy(config.session.slow_clients),
    );
    // The chat routes only touch the chat registry; the other one is never used here.
    let unused = Arc::new(LocalSocketRegistry::new(
        Tier::Notifications,
        metrics.clone(),
    ));
    let tier = http::chat_tier_router(ChatTierState {
        sockets: sockets.clone(),
        store: store.clone(),
        conversations: backend.conversations().await?,
        session: config.session,
        quota: SocketQuota::new(config.limits.sockets_per_user),
    });
    let client = client_routes(&settings, tier, ops(&metrics, Some(&store)))?;
    let local = Arc::new(InProcessForwarder::new(sockets.clone(), unused));
    let internal = http::chat_internal_router(InternalState {
        forwarder: local.clone(),
        closer: local,
        limits: config.limits,
    });
    let routes = Routes {
        client,
        internal: Some(internal),
    };
    serve_tier(ROLE, routes, sockets, listeners, &settings, shutdown).await
}

/// Serves role `notifications-ws`: `GET /notifications/subscribe` and the inbox
/// (`GET /notifications`, `GET /notifications/unread-count`, `POST /notifications/read`) and, on
/// the internal listener, `POST /notifications/{chat, purchase, payment-reminder, shipping}`,
/// which keep each notification in the inbox before pushing it. The inbox is MongoDB's
/// `notifications` collection when `MONGO_URI` is set (shared by every instance), else in this
/// process's memory. Run several behind a balancer that hashes on `user_id`.
pub async fn serve_notifications_ws(
    settings: Settings,
    listeners: impl Into<Listeners>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    const ROLE: &str = "notifications-ws";
    let listeners = listeners.into();
    require_internal_listener(&listeners, ROLE)?;
    let config = settings.app_config()?;
    let metrics = Arc::new(Metrics::new());
    let sockets = Arc::new(
        LocalSocketRegistry::new(Tier::Notifications, metrics.clone())
            .with_slow_client_policy(config.session.slow_clients),
    );
    let unused = Arc::new(LocalSocketRegistry::new(Tier::Chat, metrics.clone()));
    let store = Store::open(&settings).await?;
    if matches!(store, Store::Memory(_)) {
        tracing::warn!(
            "no MONGO_URI: the notification inbox is in memory, per instance, and lost on restart"
        );
    }
    let inbox = store.inbox(&settings).await?;
    let tier = http::notification_tier_router(NotificationTierState {
        sockets: sockets.clone(),
        inbox: inbox.clone(),
        metrics: metrics.clone(),
        session: config.session,
        quota: SocketQuota::new(config.limits.sockets_per_user),
    });
    let mut ops_routes = ops(&metrics, None);
    if matches!(store, Store::Mongo(..)) {
        ops_routes = http::ops_router(OpsState {
            metrics: metrics.clone(),
            readiness: vec![("inbox".to_owned(), http::inbox_readiness(inbox.clone()))],
        });
    }
    let client = client_routes(&settings, tier, ops_routes)?;
    let local = Arc::new(InProcessForwarder::new(unused, sockets.clone()));
    let internal = http::notification_internal_router(InternalState {
        forwarder: Arc::new(InboxForwarder::new(local.clone(), inbox, metrics.clone())),
        // The notification tier has no chat sessions: closing a stream closes nothing.
        closer: local,
        limits: config.limits,
    })
    .merge(chatcore::presence::presence_router(sockets.clone()));
    let routes = Routes {
        client,
        internal: Some(internal),
    };
    serve_tier(ROLE, routes, sockets, listeners, &settings, shutdown).await
}
