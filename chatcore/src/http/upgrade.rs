//! The websocket upgrade and the socket slot every subscription takes.

use axum::extract::ws::{rejection::WebSocketUpgradeRejection, WebSocketUpgrade};

use super::ApiError;
use crate::sockets::{QuotaGuard, SocketQuota};

pub(super) fn upgrade(
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<WebSocketUpgrade, ApiError> {
    ws.map_err(|rejection| ApiError::Status {
        status: rejection.status(),
        message: format!("websocket upgrade required: {}", rejection.body_text()),
    })
}

/// One of `user_id`'s socket slots, held for the session's life; 429 when they are all taken.
pub(super) fn socket_slot(quota: &SocketQuota, user_id: &str) -> Result<QuotaGuard, ApiError> {
    quota.acquire(user_id).ok_or_else(|| {
        ApiError::TooManyRequests(format!(
            "user {user_id:?} already has the maximum of {} open sockets",
            quota.limit().unwrap_or_default()
        ))
    })
}
