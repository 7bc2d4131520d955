//! Serving a role's routes on its listeners, and the graceful shutdown every role shares: stop
//! accepting, close websockets with 1001, let open requests finish, all within
//! `SHUTDOWN_TIMEOUT`.
//!
//! A role has client routes and, for the websocket tiers, internal routes (forward, close-stream,
//! notifications). Where they are served:
//!
//! | listeners | `LISTEN_ADDR` | `INTERNAL_LISTEN_ADDR` |
//! | --- | --- | --- |
//! | one (role `all` without `INTERNAL_LISTEN_ADDR`) | client + internal | — |
//! | two | client only | client + internal |
//!
//! The internal listener serves the client routes too, so a balancer reaches every route of an
//! instance at one address and hashes websockets and forwards of one key on one ring (see
//! `deploy/nginx/chatcore.conf`). With `INTERNAL_TOKEN` the internal routes require
//! `Authorization: Bearer <token>` wherever they are served.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use chatcore::http;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::config::Settings;
use crate::ServerError;

/// The bound listeners of a role.
#[derive(Debug)]
pub struct Listeners {
    /// `LISTEN_ADDR`: client routes (and, with no internal listener, the internal ones).
    pub public: TcpListener,
    /// `INTERNAL_LISTEN_ADDR`: client and internal routes, for the balancer and the change
    /// handler.
    pub internal: Option<TcpListener>,
}

impl From<TcpListener> for Listeners {
    fn from(public: TcpListener) -> Self {
        Self {
            public,
            internal: None,
        }
    }
}

impl Listeners {
    /// Binds `LISTEN_ADDR` and, when set, `INTERNAL_LISTEN_ADDR`.
    pub async fn bind(settings: &Settings) -> Result<Self, ServerError> {
        let public = bind(settings.server.listen_addr).await?;
        let internal = match settings.server.internal_listen_addr {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        Ok(Self { public, internal })
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Listen { addr, source })
}

/// How a role serves: the settings of `Settings` that shape its routers and its drain.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// How long shutdown waits for open connections (`SHUTDOWN_TIMEOUT`).
    pub shutdown_timeout: Duration,
    /// Bearer token the internal routes require (`INTERNAL_TOKEN`).
    pub internal_token: Option<String>,
    /// Sent as [`http::NODE_HEADER`] on every response (`NODE_ID`).
    pub node_id: Option<String>,
    /// A connection that has not sent a complete request head within this time is closed
    /// (`HEADER_READ_TIMEOUT`); also bounds idle keep-alive connections.
    pub header_read_timeout: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            shutdown_timeout: Duration::from_secs(10),
            internal_token: None,
            node_id: None,
            header_read_timeout: Duration::from_secs(10),
        }
    }
}

impl From<&Settings> for ServeOptions {
    fn from(settings: &Settings) -> Self {
        Self {
            shutdown_timeout: settings.server.shutdown_timeout,
            internal_token: Settings::present(&settings.server.internal_token).map(str::to_owned),
            node_id: Settings::present(&settings.server.node_id).map(str::to_owned),
            header_read_timeout: settings.server.header_read_timeout,
        }
    }
}

/// The routes of a role, before layers.
pub(crate) struct Routes {
    /// Client-facing routes, operational routes included.
    pub client: Router,
    /// Internal routes, if the role has any.
    pub internal: Option<Router>,
}

impl Routes {
    /// One router per listener: internal routes behind the bearer check when `INTERNAL_TOKEN` is
    /// set, every router with the common layers and the node header.
    fn into_routers(self, options: &ServeOptions, split: bool) -> (Router, Option<Router>) {
        let finish = |router: Router| {
            let router = http::with_common_layers(http::with_fallback(router));
            match &options.node_id {
                Some(node_id) => http::with_node_id(router, node_id),
                None => router,
            }
        };
        let internal = self.internal.map(|internal| match &options.internal_token {
            Some(token) => http::require_bearer(internal, token),
            None => internal,
        });
        match (split, internal) {
            (true, internal) => {
                let mut trusted = self.client.clone();
                if let Some(internal) = internal {
                    trusted = trusted.merge(internal);
                }
                (finish(self.client), Some(finish(trusted)))
            }
            (false, Some(internal)) => (finish(self.client.merge(internal)), None),
            (false, None) => (finish(self.client), None),
        }
    }
}

/// Serves `routes` on `listeners` until `shutdown` resolves, then calls `begin_shutdown` (close
/// websockets, stop taking events) and waits for open connections up to `SHUTDOWN_TIMEOUT`.
/// Returns the time the drain took, so the caller can give what is left to its own tasks.
pub(crate) async fn serve_routes(
    routes: Routes,
    listeners: Listeners,
    options: &ServeOptions,
    shutdown: impl Future<Output = ()>,
    begin_shutdown: impl FnOnce(),
) -> Result<Duration, ServerError> {
    let (public, internal) = routes.into_routers(options, listeners.internal.is_some());
    let mut served = vec![(listeners.public, public, "public")];
    if let (Some(listener), Some(router)) = (listeners.internal, internal) {
        served.push((listener, router, "internal"));
    }
    let stopping = CancellationToken::new();
    let mut servers = JoinSet::new();
    for (listener, router, name) in served {
        let addr = local_addr(&listener)?;
        tracing::info!(%addr, listener = name, "chat-server listening");
        let server = serve_listener(
            listener,
            router,
            stopping.clone(),
            options.header_read_timeout,
        );
        servers.spawn(async move { server.await.map_err(|source| (addr, source)) });
    }
    tokio::select! {
        () = shutdown => tracing::info!("shutdown requested"),
        Some(ended) = servers.join_next() => {
            if let Ok(Err((addr, source))) = ended {
                stopping.cancel();
                return Err(ServerError::Listen { addr, source });
            }
        }
    }
    let started = tokio::time::Instant::now();
    begin_shutdown();
    stopping.cancel();
    let drained = async { while servers.join_next().await.is_some() {} };
    if tokio::time::timeout(options.shutdown_timeout, drained)
        .await
        .is_err()
    {
        tracing::warn!("connections still open at SHUTDOWN_TIMEOUT; closing them");
        servers.abort_all();
    }
    Ok(started.elapsed())
}

/// Accepts connections on `listener` and serves `router` on each (HTTP/1.1 with upgrades, the
/// peer address as axum's `ConnectInfo`) until `stopping`; then stops accepting, asks open
/// connections to finish their current request, and returns once they have. Upgraded
/// connections (websockets) are no longer HTTP connections: their sessions are closed by the
/// socket registry.
async fn serve_listener(
    listener: TcpListener,
    router: Router,
    stopping: CancellationToken,
    header_read_timeout: Duration,
) -> std::io::Result<()> {
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let (stream, peer) = tokio::select! {
            () = stopping.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Per-connection failures (reset before accept, too many open files) must
                    // not stop the server; back off briefly so a persistent one does not spin.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let service = TowerToHyperService::new(router.clone().map_request(
            move |mut request: hyper::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                request.map(axum::body::Body::new)
            },
        ));
        let connection = http1
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        let stopping = stopping.clone();
        connections.spawn(async move {
            tokio::pin!(connection);
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                () = stopping.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = ended {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
    Ok(())
}

fn local_addr(listener: &TcpListener) -> Result<SocketAddr, ServerError> {
    listener.local_addr().map_err(|source| ServerError::Listen {
        addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        source,
    })
}
