//! # Embedding chatcore in your own axum service
//!
//! A template to copy: a team's own axum application that also serves chatcore's whole chat and
//! notification surface (`POST /chat/messages`, `GET /chat/subscribe`, `/notifications/...`,
//! `/healthz`, ...) next to its own routes, on the in-memory backends, with a custom
//! [`Forwarder`] that audits every delivery the pipeline makes.
//!
//! What it shows:
//!
//! - [`build_service`] builds a [`ChatApp`] on the embedded in-memory defaults and merges
//!   [`ChatApp::routes`] into the team's own [`Router`] (here `GET /team/hello`,
//!   `GET /team/audit` and the team's own JSON 404 fallback: chatcore's routes carry no
//!   fallback, so merging cannot clash). Merging keeps chatcore's paths as clients expect them;
//!   use `Router::nest("/prefix", ...)` instead if the team wants them under a prefix.
//! - [`AuditingForwarder`] is a decorator: it wraps whichever forwarder the pipeline would have
//!   used (by default the in-process one over the node's own socket registries) via
//!   [`ChatAppBuilder::layer_forwarder`](chatcore::app::ChatAppBuilder::layer_forwarder), logs
//!   every delivery and counts it in a [`DeliveryAudit`] the team's routes can read. The same
//!   decorator wraps an HTTP forwarder to remote tiers unchanged.
//! - [`serve`] runs it with [`ChatApp::serve`]'s graceful shutdown: websockets are closed with
//!   1001 and the change handler finishes its in-flight events.
//!
//! Run it with `cargo run -p chatcore-examples --example embed_in_axum` (it listens on
//! `LISTEN_ADDR`, default `127.0.0.1:3000`), then try `curl http://127.0.0.1:3000/team/hello`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use chatcore::app::{AppConfig, Auth, BuildError, ChatApp};
use chatcore::forward::{Delivery, DeliveryReport, ForwardError, Forwarder};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// How long [`serve`] waits for connections and in-flight events after the shutdown signal.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// What the pipeline delivered, as counted by an [`AuditingForwarder`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditSnapshot {
    /// Chat messages handed to the chat tier (one per message, however many sockets).
    pub chat_deliveries: u64,
    /// Notifications handed to the notification tier.
    pub notification_deliveries: u64,
    /// Sessions that got a payload, summed over all deliveries.
    pub sessions_reached: u64,
    /// Sessions that were dead or too slow, summed over all deliveries.
    pub sessions_failed: u64,
    /// Deliveries that could not be attempted at all (the pipeline retries them).
    pub errors: u64,
    /// `message_id` of the last chat message delivered.
    pub last_chat_message_id: Option<String>,
}

impl AuditSnapshot {
    /// The snapshot as JSON, for the team's own `/team/audit` route.
    pub fn to_json(&self) -> Value {
        json!({
            "chat_deliveries": self.chat_deliveries,
            "notification_deliveries": self.notification_deliveries,
            "sessions_reached": self.sessions_reached,
            "sessions_failed": self.sessions_failed,
            "errors": self.errors,
            "last_chat_message_id": self.last_chat_message_id,
        })
    }
}

/// The audit log shared by the forwarder (which writes) and the team's code (which reads or
/// awaits a condition through [`DeliveryAudit::subscribe`]). Cheap to clone.
#[derive(Debug, Clone)]
pub struct DeliveryAudit {
    counts: Arc<watch::Sender<AuditSnapshot>>,
}

impl Default for DeliveryAudit {
    fn default() -> Self {
        Self::new()
    }
}

impl DeliveryAudit {
    /// An empty audit log.
    pub fn new() -> Self {
        Self {
            counts: Arc::new(watch::Sender::new(AuditSnapshot::default())),
        }
    }

    /// The counts so far.
    pub fn snapshot(&self) -> AuditSnapshot {
        self.counts.borrow().clone()
    }

    /// A receiver that sees every change, e.g. for `receiver.wait_for(|s| ...)`.
    pub fn subscribe(&self) -> watch::Receiver<AuditSnapshot> {
        self.counts.subscribe()
    }

    fn record(&self, update: impl FnOnce(&mut AuditSnapshot)) {
        self.counts.send_modify(update);
    }
}

/// A [`Forwarder`] decorator: delegates to `inner` and logs and counts every delivery.
pub struct AuditingForwarder {
    inner: Arc<dyn Forwarder>,
    audit: DeliveryAudit,
}

impl std::fmt::Debug for AuditingForwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditingForwarder")
            .field("audit", &self.audit)
            .finish_non_exhaustive()
    }
}

impl AuditingForwarder {
    /// Wraps `inner`, recording into `audit`.
    pub fn new(inner: Arc<dyn Forwarder>, audit: DeliveryAudit) -> Self {
        Self { inner, audit }
    }
}

#[async_trait]
impl Forwarder for AuditingForwarder {
    async fn forward(&self, delivery: &Delivery) -> Result<DeliveryReport, ForwardError> {
        let result = self.inner.forward(delivery).await;
        match &result {
            Ok(report) => {
                tracing::info!(
                    tier = ?delivery.tier(),
                    key = delivery.routing_key(),
                    delivered = report.delivered,
                    failed = report.failed,
                    "audit: delivery"
                );
                self.audit.record(|counts| {
                    match delivery {
                        Delivery::Chat(message) => {
                            counts.chat_deliveries += 1;
                            counts.last_chat_message_id = Some(message.message_id.clone());
                        }
                        Delivery::Notify { .. } => counts.notification_deliveries += 1,
                        // Kinds of delivery added by later versions are not audited here.
                        _ => {}
                    }
                    counts.sessions_reached += report.delivered as u64;
                    counts.sessions_failed += report.failed as u64;
                });
            }
            Err(error) => {
                tracing::warn!(
                    tier = ?delivery.tier(),
                    key = delivery.routing_key(),
                    %error,
                    "audit: delivery failed"
                );
                self.audit.record(|counts| counts.errors += 1);
            }
        }
        result
    }
}

/// The team's service: its router (its own routes plus chatcore's) and the chatcore node.
#[derive(Debug)]
pub struct TeamService {
    /// Everything the service answers, ready for `axum::serve`.
    pub router: Router,
    /// The running chatcore node (its registries, store and metrics through accessors).
    pub chat: ChatApp,
    /// What the auditing forwarder has seen.
    pub audit: DeliveryAudit,
}

/// Builds the team's service on the in-memory backends and starts chatcore's change handler.
/// Call it inside a tokio runtime.
pub async fn build_service(config: AppConfig) -> Result<TeamService, BuildError> {
    let audit = DeliveryAudit::new();
    let forwarder_audit = audit.clone();
    let chat = ChatApp::builder()
        .config(config)
        .auth(Auth::disabled())
        .layer_forwarder(move |inner| -> Arc<dyn Forwarder> {
            Arc::new(AuditingForwarder::new(inner, forwarder_audit.clone()))
        })
        .build()
        .await?;
    let team_routes = Router::new()
        .route("/team/hello", get(hello))
        .route("/team/audit", get(audit_counts))
        .fallback(not_found)
        .with_state(audit.clone());
    let router = team_routes.merge(chat.routes());
    Ok(TeamService {
        router,
        chat,
        audit,
    })
}

/// The team's own fallback: a JSON 404 for every path nobody serves.
async fn not_found() -> (axum::http::StatusCode, Json<Value>) {
    (
        axum::http::StatusCode::NOT_FOUND,
        Json(json!({ "error": "no such route" })),
    )
}

/// `GET /team/hello`: a route of the team's own.
async fn hello() -> Json<Value> {
    Json(json!({ "service": "team", "message": "hello from the team's own route" }))
}

/// `GET /team/audit`: the auditing forwarder's counts.
async fn audit_counts(State(audit): State<DeliveryAudit>) -> Json<Value> {
    Json(audit.snapshot().to_json())
}

/// Serves `service` on `listener` until `shutdown` resolves, then shuts down gracefully: closes
/// the websockets with 1001, lets open requests and in-flight events finish within
/// [`SHUTDOWN_GRACE`].
pub async fn serve(
    service: TeamService,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let TeamService { router, chat, .. } = service;
    chat.serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .grace(SHUTDOWN_GRACE)
        .await
}

/// Resolves on Ctrl-C (or never, if the signal cannot be listened for).
async fn ctrl_c() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).init();
    let addr = std::env::var("LISTEN_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".to_owned());
    let listener = TcpListener::bind(&addr).await?;
    let service = build_service(AppConfig::default()).await?;
    tracing::info!(addr = %listener.local_addr()?, "team service listening; try GET /team/hello");
    serve(service, listener, ctrl_c()).await?;
    Ok(())
}
