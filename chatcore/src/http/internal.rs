//! The internal routes the change handler calls: forwards to the chat tier's sessions, stream
//! closes, and pushes to the notification tier.

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::params::{idempotency_key, required_stream_id, UserParams};
use super::{ApiError, JsonBody, Limits, QueryParams};
use crate::conversation::ReadMarker;
use crate::forward::{Delivery, Forwarder};
use crate::model::{
    check_id, ChatMessage, Notification, NotificationType, PaymentReminder, PurchaseUpdate,
    ShippingUpdate,
};
use crate::sockets::DeliveryReport;

/// State of the internal routes: the local tiers behind a forwarder.
#[derive(Clone)]
pub struct InternalState {
    /// Usually an [`crate::forward::InProcessForwarder`] over this process's registries.
    pub forwarder: Arc<dyn Forwarder>,
    /// Closes the local chat sessions of a stream (`POST /chat/close-stream`).
    pub closer: Arc<dyn crate::forward::StreamCloser>,
    /// Limits applied to forwarded messages.
    pub limits: Limits,
}

/// The routes the change handler calls on both tiers: [`chat_internal_router`] and
/// [`notification_internal_router`].
pub fn internal_router(state: InternalState) -> Router {
    chat_internal_router(state.clone()).merge(notification_internal_router(state))
}

/// The chat tier's internal routes: `POST /chat/forward-to-websocket`, `POST /chat/close-stream`,
/// `POST /chat/forward-read` (a read receipt to the stream's protocol-2 sessions) and
/// `POST /chat/close-member` (a removed member's sessions of a group).
pub fn chat_internal_router(state: InternalState) -> Router {
    let body_limit = state.limits.body_limit();
    Router::new()
        .route("/chat/forward-to-websocket", post(forward_chat))
        .route("/chat/close-stream", post(close_stream))
        .route("/chat/forward-read", post(forward_read))
        .route("/chat/close-member", post(close_member))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

/// The notification tier's internal routes: `POST /notifications/{chat, purchase,
/// payment-reminder, shipping, shipping-update}`.
pub fn notification_internal_router(state: InternalState) -> Router {
    let body_limit = state.limits.body_limit();
    Router::new()
        .route("/notifications/chat", post(notify_chat))
        .route("/notifications/purchase", post(notify_purchase))
        .route("/notifications/payment-reminder", post(notify_payment))
        .route("/notifications/shipping", post(notify_shipping))
        .route("/notifications/shipping-update", post(notify_shipping))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

/// Maps a delivery report to the contract's 200 / 206 / 500 answer.
pub fn report_response(report: DeliveryReport, key_field: &str, key: &str) -> Response {
    let DeliveryReport { delivered, failed } = report;
    if failed == 0 {
        return (
            StatusCode::OK,
            Json(json!({ "delivered": delivered, key_field: key })),
        )
            .into_response();
    }
    let status = if delivered > 0 {
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    let error = format!(
        "{failed} of {} sessions did not get the payload",
        delivered + failed
    );
    (
        status,
        Json(json!({ "delivered": delivered, "failed": failed, "error": error, key_field: key })),
    )
        .into_response()
}

async fn forward_chat(
    State(state): State<InternalState>,
    JsonBody(message): JsonBody<ChatMessage>,
) -> Result<Response, ApiError> {
    message.check(state.limits.max_content_bytes)?;
    let stream_id = message.stream_id.clone();
    let report = state.forwarder.forward(&Delivery::Chat(message)).await?;
    Ok(report_response(report, "stream_id", &stream_id))
}

#[derive(Debug, Deserialize)]
struct CloseStreamBody {
    stream_id: String,
    #[serde(default)]
    reason: Option<String>,
}

async fn close_stream(
    State(state): State<InternalState>,
    JsonBody(body): JsonBody<CloseStreamBody>,
) -> Result<Json<Value>, ApiError> {
    let stream_id = required_stream_id(Some(&body.stream_id))?;
    let reason = body.reason.unwrap_or_else(|| "delivery failed".to_owned());
    let closed = state.closer.close_stream(&stream_id, &reason).await?;
    Ok(Json(json!({ "closed": closed, "stream_id": stream_id })))
}

async fn forward_read(
    State(state): State<InternalState>,
    JsonBody(marker): JsonBody<ReadMarker>,
) -> Result<Response, ApiError> {
    let stream_id = required_stream_id(Some(&marker.stream_id))?;
    check_id("user_id", &marker.user_id)?;
    check_id("message_id", &marker.message_id)?;
    let report = state.forwarder.forward(&Delivery::Read(marker)).await?;
    Ok(report_response(report, "stream_id", &stream_id))
}

#[derive(Debug, Deserialize)]
struct CloseMemberBody {
    stream_id: String,
    user_id: String,
}

async fn close_member(
    State(state): State<InternalState>,
    JsonBody(body): JsonBody<CloseMemberBody>,
) -> Result<Json<Value>, ApiError> {
    let stream_id = required_stream_id(Some(&body.stream_id))?;
    check_id("user_id", &body.user_id)?;
    let closed = state.closer.close_member(&stream_id, &body.user_id).await?;
    Ok(Json(
        json!({ "closed": closed, "stream_id": stream_id, "user_id": body.user_id }),
    ))
}

/// Pushes `notification` to `user_id`'s sessions; the forwarder keeps it in the inbox first
/// ([`crate::forward::InboxForwarder`]), once per `Idempotency-Key` and user.
async fn notify(
    state: &InternalState,
    headers: &HeaderMap,
    user_id: String,
    mut notification: Notification,
) -> Result<Response, ApiError> {
    check_id("user_id", &user_id)?;
    notification.source_key = idempotency_key(headers)?;
    let delivery = Delivery::Notify {
        user_id,
        notification,
    };
    let report = state.forwarder.forward(&delivery).await?;
    Ok(report_response(report, "user_id", delivery.routing_key()))
}

async fn notify_chat(
    State(state): State<InternalState>,
    headers: HeaderMap,
    QueryParams(params): QueryParams<UserParams>,
    JsonBody(message): JsonBody<ChatMessage>,
) -> Result<Response, ApiError> {
    message.check(state.limits.max_content_bytes)?;
    let user_id = params
        .user_id
        .or_else(|| message.receiver_id.clone())
        .ok_or_else(|| ApiError::BadRequest("user_id is required for a group message".into()))?;
    notify(&state, &headers, user_id, Notification::chat(&message)).await
}

fn user_param(params: UserParams) -> Result<String, ApiError> {
    params
        .user_id
        .filter(|u| !u.is_empty())
        .ok_or_else(|| ApiError::BadRequest("user_id is required".to_owned()))
}

async fn notify_purchase(
    State(state): State<InternalState>,
    headers: HeaderMap,
    QueryParams(params): QueryParams<UserParams>,
    JsonBody(payload): JsonBody<PurchaseUpdate>,
) -> Result<Response, ApiError> {
    let user_id = user_param(params)?;
    let notification = Notification::new(NotificationType::PurchaseNotification, &payload);
    notify(&state, &headers, user_id, notification).await
}

async fn notify_payment(
    State(state): State<InternalState>,
    headers: HeaderMap,
    QueryParams(params): QueryParams<UserParams>,
    JsonBody(payload): JsonBody<PaymentReminder>,
) -> Result<Response, ApiError> {
    let user_id = user_param(params)?;
    let notification = Notification::new(NotificationType::PaymentReminderNotification, &payload);
    notify(&state, &headers, user_id, notification).await
}

async fn notify_shipping(
    State(state): State<InternalState>,
    headers: HeaderMap,
    QueryParams(params): QueryParams<UserParams>,
    JsonBody(payload): JsonBody<ShippingUpdate>,
) -> Result<Response, ApiError> {
    let user_id = user_param(params)?;
    let notification = Notification::new(NotificationType::ShippingUpdateNotification, &payload);
    notify(&state, &headers, user_id, notification).await
}
