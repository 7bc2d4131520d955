//! The notification websocket tier: `GET /notifications/subscribe`, with `since=` replay from
//! the inbox, and the inbox routes.

use std::sync::Arc;

use axum::extract::ws::{rejection::WebSocketUpgradeRejection, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde::Deserialize;

use super::inbox;
use super::params::required;
use super::upgrade::{socket_slot, upgrade};
#[cfg(feature = "openapi")]
use super::ErrorBody;
use super::{ApiError, QueryParams};
use crate::auth::Caller;
use crate::metrics::Metrics;
#[cfg(feature = "openapi")]
use crate::model::Notification;
use crate::sockets::{
    CloseReason, SessionConfig, SocketQuota, SocketRegistry, Subscription,
    INTERNAL_ERROR_CLOSE_CODE,
};

/// State of the notification websocket tier.
#[derive(Clone)]
pub struct NotificationTierState {
    /// Notification sessions by `user_id`.
    pub sockets: Arc<dyn SocketRegistry>,
    /// The users' inboxes: `GET /notifications`, read state, and `since=` replays.
    pub inbox: Arc<dyn crate::inbox::InboxStore>,
    /// Counters (inbox entries read).
    pub metrics: Arc<Metrics>,
    /// Session timing.
    pub session: SessionConfig,
    /// Sockets per user.
    pub quota: SocketQuota,
}

/// `GET /notifications/subscribe` and the inbox: `GET /notifications`,
/// `GET /notifications/unread-count`, `POST /notifications/read`.
pub fn notification_tier_router(state: NotificationTierState) -> Router {
    Router::new()
        .route("/notifications/subscribe", get(subscribe_notifications))
        .with_state(state.clone())
        .merge(inbox::inbox_routes(state))
}

#[derive(Debug, Deserialize)]
pub(super) struct NotificationSubscribeParams {
    user_id: Option<String>,
    since: Option<String>,
}

#[cfg_attr(
    feature = "openapi",
    utoipa::path(
        get,
        path = "/notifications/subscribe",
        tag = "websockets",
        summary = "Subscribe to a user's notifications (websocket)",
        description = "A websocket upgrade; each text frame is a Notification envelope (chat, purchase, payment reminder, shipping update or a custom type) with its inbox notification_id. With `since`, the inbox entries after it are replayed first, with no gap and no duplicate. Close codes as for /chat/subscribe; reconnect with since=<last notification_id>.",
        params(
            ("user_id" = String, Query, description = "The user; with authentication, the token's subject", min_length = 1, max_length = 256, pattern = r"^[^\x00-\x1f\x7f-\x9f]+$"),
            ("since" = Option<String>, Query, description = "Replay the inbox entries after this notification_id first", pattern = "^[0-9a-f]{24}$"),
            ("access_token" = Option<String>, Query, description = "The bearer token, for clients that cannot set headers"),
        ),
        responses(
            (status = 101, description = "Switching protocols; frames are Notification JSON", body = Notification),
            (status = 400, description = "Missing user_id, a malformed since, or not a websocket request", body = ErrorBody),
            (status = 401, description = "Missing or invalid token", body = ErrorBody),
            (status = 403, description = "user_id is not the subject", body = ErrorBody),
            (status = 426, description = "The connection cannot be upgraded", body = ErrorBody),
            (status = 429, description = "The user holds SOCKETS_PER_USER sockets already", body = ErrorBody),
        ),
        security((), ("bearer" = [])),
    )
)]
pub(super) async fn subscribe_notifications(
    State(state): State<NotificationTierState>,
    caller: Caller,
    QueryParams(params): QueryParams<NotificationSubscribeParams>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let user_id = required("user_id", &params.user_id)?.to_owned();
    caller.require_user(&user_id)?;
    if let Some(since) = &params.since {
        crate::inbox::check_notification_id("since", since)?;
    }
    let ws = state.session.websocket.apply(upgrade(ws)?);
    let slot = socket_slot(&state.quota, &user_id)?;
    // Registered before the inbox is read: an entry kept meanwhile is both replayed and queued,
    // and sent once (frames carry their notification_id).
    let mut subscription =
        Subscription::open(Arc::clone(&state.sockets), &user_id, state.session.clone());
    if let Some(since) = &params.since {
        subscription = subscription.after(since);
    }
    Ok(ws.on_upgrade(move |socket| async move {
        let _slot = slot;
        let replay = match params.since {
            Some(since) => match inbox::replay_after(state.inbox.as_ref(), &user_id, since).await {
                Ok(frames) => frames,
                Err(error) => {
                    tracing::warn!(%user_id, %error, "inbox replay failed; closing the session");
                    let reason = CloseReason::new(INTERNAL_ERROR_CLOSE_CODE, "inbox unavailable");
                    return subscription.refuse(socket, reason).await;
                }
            },
            None => Vec::new(),
        };
        state.metrics.inbox_read(replay.len() as u64);
        subscription.run(socket, replay).await
    }))
}
