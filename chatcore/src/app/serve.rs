//! [`Serve`]: serving a node with graceful shutdown in one call.

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::ChatApp;

/// The default bound of a graceful shutdown.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);

type Signal = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A node being served; made by [`ChatApp::serve`], run by awaiting it.
///
/// Without [`with_graceful_shutdown`](Self::with_graceful_shutdown) it serves until the listener
/// fails. With it, when the signal fires: new connections stop, every websocket is closed with
/// 1001, open requests finish, the change handler finishes its in-flight events, all within
/// [`grace`](Self::grace) (10 s by default); what is unfinished then is not acknowledged and is
/// delivered again after a restart.
#[must_use = "a Serve does nothing until it is awaited"]
pub struct Serve {
    app: ChatApp,
    listener: TcpListener,
    router: Router,
    signal: Option<Signal>,
    grace: Duration,
}

impl std::fmt::Debug for Serve {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Serve")
            .field("app", &self.app)
            .field("grace", &self.grace)
            .finish_non_exhaustive()
    }
}

impl Serve {
    pub(super) fn new(app: ChatApp, listener: TcpListener, router: Router) -> Self {
        Self {
            app,
            listener,
            router,
            signal: None,
            grace: DEFAULT_GRACE,
        }
    }

    /// Shuts down gracefully when `signal` resolves.
    pub fn with_graceful_shutdown(
        mut self,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> Self {
        self.signal = Some(Box::pin(signal));
        self
    }

    /// The bound of the whole graceful shutdown.
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    async fn run(self) -> std::io::Result<()> {
        let Self {
            app,
            listener,
            router,
            signal,
            grace,
        } = self;
        let signal = signal.unwrap_or_else(|| Box::pin(std::future::pending()));
        let closer = app.closer();
        let fired = CancellationToken::new();
        let on_signal = {
            let fired = fired.clone();
            async move {
                signal.await;
                tracing::info!("shutdown requested");
                closer.begin();
                fired.cancel();
            }
        };
        let mut server = tokio::spawn(
            axum::serve(listener, router)
                .with_graceful_shutdown(on_signal)
                .into_future(),
        );
        let served = tokio::select! {
            served = &mut server => Some(served),
            () = fired.cancelled() => None,
        };
        let started = tokio::time::Instant::now();
        let served = match served {
            Some(served) => served,
            None => match tokio::time::timeout(grace, &mut server).await {
                Ok(served) => served,
                Err(_) => {
                    tracing::warn!("connections still open at the shutdown deadline; closing them");
                    server.abort();
                    Ok(Ok(()))
                }
            },
        };
        if !app.shutdown(grace.saturating_sub(started.elapsed())).await {
            tracing::warn!(
                "change handler or websockets still busy at the shutdown deadline; unfinished events will be redelivered"
            );
        }
        served.map_err(std::io::Error::other)?
    }
}

impl IntoFuture for Serve {
    type Output = std::io::Result<()>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run())
    }
}
