//! Presence: is a user connected to the notification tier right now? The e-mail consumer asks
//! before e-mailing a chat message, so only offline receivers get one.
//!
//! In one process [`RegistryPresence`] looks at the notification socket registry; across
//! processes [`HttpPresence`] asks the notification tier's internal route
//! `GET /notifications/presence?user_id=` ([`presence_router`]), through the balancer that hashes
//! on `user_id`, so the instance holding the user's sockets answers.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::forward::ROUTING_KEY_HEADER;
use crate::http::{ApiError, QueryParams};
use crate::model::check_id;
use crate::sockets::SocketRegistry;

/// Presence could not be learned.
#[derive(Debug, Clone, thiserror::Error)]
#[error("presence unknown: {0}")]
pub struct PresenceError(pub String);

/// Tells whether a user has an open notification socket.
#[async_trait]
pub trait Presence: Send + Sync {
    /// True when `user_id` has at least one notification session.
    async fn is_online(&self, user_id: &str) -> Result<bool, PresenceError>;
}

/// Presence from a local notification socket registry (one process).
#[derive(Clone)]
pub struct RegistryPresence(pub Arc<dyn SocketRegistry>);

#[async_trait]
impl Presence for RegistryPresence {
    async fn is_online(&self, user_id: &str) -> Result<bool, PresenceError> {
        Ok(self.0.sessions(user_id) > 0)
    }
}

/// Presence asked over HTTP of the notification tier (`GET {base}/notifications/presence`).
#[derive(Debug, Clone)]
pub struct HttpPresence {
    client: reqwest::Client,
    base_url: String,
    token: Option<String>,
    timeout: Duration,
}

impl HttpPresence {
    /// Asks the tier at `base_url` (the balancer's internal address), with `token` as bearer.
    pub fn new(base_url: impl Into<String>, token: Option<String>, timeout: Duration) -> Self {
        Self {
            client: reqwest::Client::new(),
            base_url: base_url.into().trim_end_matches('/').to_owned(),
            token,
            timeout,
        }
    }
}

#[derive(Debug, Deserialize)]
struct PresenceAnswer {
    online: bool,
}

#[async_trait]
impl Presence for HttpPresence {
    async fn is_online(&self, user_id: &str) -> Result<bool, PresenceError> {
        let mut request = self
            .client
            .get(format!("{}/notifications/presence", self.base_url))
            .query(&[("user_id", user_id)])
            .header(ROUTING_KEY_HEADER, user_id)
            .timeout(self.timeout);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request
            .send()
            .await
            .map_err(|e| PresenceError(e.to_string()))?;
        let status = response.status();
        if !status.is_success() {
            return Err(PresenceError(format!("status {status}")));
        }
        response
            .json::<PresenceAnswer>()
            .await
            .map(|answer| answer.online)
            .map_err(|e| PresenceError(e.to_string()))
    }
}

#[derive(Debug, Deserialize)]
struct PresenceParams {
    user_id: Option<String>,
}

/// `GET /notifications/presence?user_id=`: 200 `{"user_id", "online", "sessions"}` from the
/// local notification registry; 400 without a valid `user_id`. An internal route: mount it on
/// the internal listener of the notification tier.
pub fn presence_router(sockets: Arc<dyn SocketRegistry>) -> Router {
    Router::new()
        .route("/notifications/presence", get(presence))
        .with_state(sockets)
}

async fn presence(
    State(sockets): State<Arc<dyn SocketRegistry>>,
    QueryParams(params): QueryParams<PresenceParams>,
) -> Result<Json<Value>, ApiError> {
    let user_id = params.user_id.unwrap_or_default();
    check_id("user_id", &user_id)?;
    let sessions = sockets.sessions(&user_id);
    Ok(Json(
        json!({ "user_id": user_id, "online": sessions > 0, "sessions": sessions }),
    ))
}
