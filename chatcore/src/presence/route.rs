//! The notification tier's internal presence route.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::http::{ApiError, QueryParams};
use crate::model::check_id;
use crate::sockets::SocketRegistry;

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
