//! The operational routes: liveness, readiness and metrics.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

#[cfg(feature = "openapi")]
use super::ErrorBody;
use crate::metrics::Metrics;
use crate::store::MessageStore;

/// A readiness probe: resolves to `Err(reason)` when a backend is not reachable.
pub type ReadinessCheck =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// Builds a readiness check from a message store's `ping`.
pub fn store_readiness(store: Arc<dyn MessageStore>) -> ReadinessCheck {
    Arc::new(move || {
        let store = Arc::clone(&store);
        Box::pin(async move { store.ping().await.map_err(|e| e.to_string()) })
    })
}

/// Builds a readiness check from an inbox's `ping`.
pub fn inbox_readiness(inbox: Arc<dyn crate::inbox::InboxStore>) -> ReadinessCheck {
    Arc::new(move || {
        let inbox = Arc::clone(&inbox);
        Box::pin(async move { inbox.ping().await.map_err(|e| e.to_string()) })
    })
}

/// Builds a readiness check from a conversation store's `ping`.
pub fn conversations_readiness(
    conversations: Arc<dyn crate::conversation::ConversationStore>,
) -> ReadinessCheck {
    Arc::new(move || {
        let conversations = Arc::clone(&conversations);
        Box::pin(async move { conversations.ping().await.map_err(|e| e.to_string()) })
    })
}

/// State of the operational routes.
#[derive(Clone)]
pub struct OpsState {
    /// Rendered at `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Named probes run by `/readyz`.
    pub readiness: Vec<(String, ReadinessCheck)>,
}

/// `GET /healthz`, `GET /readyz`, `GET /metrics`.
pub fn ops_router(state: OpsState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

#[cfg_attr(
    feature = "openapi",
    utoipa::path(
        get,
        path = "/healthz",
        tag = "operations",
        summary = "Liveness",
        responses((status = 200, description = "The process is serving", body = Object, example = json!({"status": "ok"}))),
    )
)]
pub(super) async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

#[cfg_attr(
    feature = "openapi",
    utoipa::path(
        get,
        path = "/readyz",
        tag = "operations",
        summary = "Readiness",
        responses(
            (status = 200, description = "Every backend answers", body = Object, example = json!({"status": "ready"})),
            (status = 503, description = "A backend is unreachable; `checks` names it", body = ErrorBody),
        ),
    )
)]
pub(super) async fn readyz(State(state): State<OpsState>) -> Response {
    let mut failures = HashMap::new();
    for (name, check) in &state.readiness {
        if let Err(reason) = check().await {
            failures.insert(name.clone(), reason);
        }
    }
    if failures.is_empty() {
        Json(json!({ "status": "ready" })).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "unavailable", "error": "a backend is unreachable", "checks": failures })),
        )
            .into_response()
    }
}

#[cfg_attr(
    feature = "openapi",
    utoipa::path(
        get,
        path = "/metrics",
        tag = "operations",
        summary = "Prometheus / OpenMetrics counters",
        responses((status = 200, description = "OpenMetrics text", content_type = "application/openmetrics-text", body = String)),
    )
)]
pub(super) async fn metrics(State(state): State<OpsState>) -> Response {
    #[cfg(feature = "prometheus")]
    return (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response();
    #[cfg(not(feature = "prometheus"))]
    {
        let _ = state;
        super::ApiError::NotFound("metrics are not compiled in (feature prometheus)".to_owned())
            .into_response()
    }
}
