//! The HTTP and websocket surface (CONTRACT §5) as composable axum routers.
//!
//! Each tier is its own router with its own state, so a service mounts exactly the parts it runs:
//! [`persistence_router`], [`chat_tier_router`], [`notification_tier_router`], [`internal_router`]
//! and [`ops_router`]. Errors are typed in the library and mapped to a status once, in
//! [`ApiError`]'s `IntoResponse`.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::ws::{rejection::WebSocketUpgradeRejection, WebSocketUpgrade};
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Query, Request, State};
use axum::http::{header, request::Parts, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::forward::{Delivery, DeliveryReport, ForwardError, Forwarder};
use crate::metrics::Metrics;
use crate::model::{
    check_id, check_stream, ChatMessage, NewChatMessage, Notification, NotificationType,
    PaymentReminder, PurchaseUpdate, ShippingUpdate, ValidationError, DEFAULT_MAX_CONTENT_BYTES,
};
use crate::rate_limit::{RateLimit, RateLimiter};
use crate::sockets::{
    CloseReason, Frame, QuotaGuard, SessionConfig, SocketQuota, SocketRegistry, Subscription,
    INTERNAL_ERROR_CLOSE_CODE,
};
use crate::store::{
    HistoryQuery, MessageStore, StoreError, DEFAULT_HISTORY_LIMIT, MAX_HISTORY_LIMIT,
};

mod openapi;

pub use openapi::{openapi_document, openapi_router};

/// The body of every error answer (for the API description; [`ApiError`] renders it).
#[derive(Debug, Clone, serde::Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: String,
}

/// An error answered to a client as `{"error": "..."}` with a fitting status.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed or invalid.
    #[error("{0}")]
    BadRequest(String),
    /// 401: the request lacks valid credentials (answered with `WWW-Authenticate: Bearer`).
    #[error("{0}")]
    Unauthorized(String),
    /// 403: the caller may not act on this resource.
    #[error("{0}")]
    Forbidden(String),
    /// 404: no such route or resource.
    #[error("{0}")]
    NotFound(String),
    /// 413: the body or content is larger than allowed.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 429: a rate limit or a cap was reached.
    #[error("{0}")]
    TooManyRequests(String),
    /// 503: a backend is unavailable.
    #[error("{0}")]
    Unavailable(String),
    /// 500: something this server did not expect.
    #[error("{0}")]
    Internal(String),
    /// Any other status, e.g. a websocket upgrade refusal.
    #[error("{message}")]
    Status {
        /// The status to answer.
        status: StatusCode,
        /// The message.
        message: String,
    },
}

impl ApiError {
    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Status { status, .. } => *status,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({ "error": self.to_string() }));
        if matches!(self, Self::Unauthorized(_)) {
            return (self.status(), [(header::WWW_AUTHENTICATE, "Bearer")], body).into_response();
        }
        (self.status(), body).into_response()
    }
}

impl From<ValidationError> for ApiError {
    fn from(error: ValidationError) -> Self {
        match error {
            ValidationError::ContentTooLarge { .. } => Self::PayloadTooLarge(error.to_string()),
            _ => Self::BadRequest(error.to_string()),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(_) => Self::Unavailable(error.to_string()),
            StoreError::Backend(_) => Self::Internal(error.to_string()),
            StoreError::InvalidCursor(_) => Self::BadRequest(error.to_string()),
        }
    }
}

impl From<ForwardError> for ApiError {
    fn from(error: ForwardError) -> Self {
        Self::Internal(error.to_string())
    }
}

/// Who is calling. Route handlers take it as an extractor; an authentication layer inserts it
/// into the request extensions, and without one every caller is [`Caller::Anonymous`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Caller {
    /// No authentication is configured: every request is allowed.
    #[default]
    Anonymous,
    /// An authenticated user (the token's subject).
    User(String),
}

impl Caller {
    /// Allows the call when the caller is `user_id` (or authentication is off).
    pub fn require_user(&self, user_id: &str) -> Result<(), ApiError> {
        match self {
            Self::Anonymous => Ok(()),
            Self::User(subject) if subject == user_id => Ok(()),
            Self::User(_) => Err(ApiError::Forbidden(format!(
                "not allowed to act for user {user_id:?}"
            ))),
        }
    }

    /// The authenticated subject, if any.
    pub fn subject(&self) -> Option<&str> {
        match self {
            Self::Anonymous => None,
            Self::User(subject) => Some(subject),
        }
    }

    /// Allows the call when the caller is one of the two participants (or authentication is off).
    pub fn require_participant(&self, a: &str, b: &str) -> Result<(), ApiError> {
        self.require_user(a).or_else(|_| self.require_user(b))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<Caller>()
            .cloned()
            .unwrap_or_default())
    }
}

/// A JSON object body whose every failure is a JSON error: 413 past the body limit, 400
/// otherwise.
#[derive(Debug, Clone)]
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes =
            Bytes::from_request(req, state)
                .await
                .map_err(|rejection: BytesRejection| match rejection.status() {
                    StatusCode::PAYLOAD_TOO_LARGE => {
                        ApiError::PayloadTooLarge("request body is too large".to_owned())
                    }
                    status => ApiError::Status {
                        status,
                        message: rejection.body_text(),
                    },
                })?;
        // Serde would also accept a struct as a JSON array of its fields: insist on an object.
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(ApiError::BadRequest(
                "request body must be a JSON object".to_owned(),
            ));
        }
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
    }
}

/// Query parameters whose failures are JSON 400 errors.
#[derive(Debug, Clone)]
pub struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(value)| QueryParams(value))
            .map_err(|e| ApiError::BadRequest(format!("invalid query: {}", e.body_text())))
    }
}

/// Limits on what clients send.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Maximum `content` size in bytes (`MAX_CONTENT_BYTES`).
    pub max_content_bytes: usize,
    /// Websockets one user may hold open in this process, both tiers together
    /// (`SOCKETS_PER_USER`); `None` for no cap. Over it a subscription is refused with 429.
    pub sockets_per_user: Option<usize>,
    /// `POST /chat/messages` per user (`POST_RATE_LIMIT_*`); `None` for no limit.
    pub post_rate: Option<RateLimit>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_content_bytes: DEFAULT_MAX_CONTENT_BYTES,
            sockets_per_user: None,
            post_rate: None,
        }
    }
}

impl Limits {
    /// The body limit that lets the largest valid content through even fully JSON-escaped.
    pub fn body_limit(&self) -> usize {
        self.max_content_bytes
            .saturating_mul(6)
            .saturating_add(16 * 1024)
    }
}

/// State of the persistence API.
#[derive(Clone)]
pub struct PersistenceState {
    /// Where messages go.
    pub store: Arc<dyn MessageStore>,
    /// Client limits.
    pub limits: Limits,
    /// Counters.
    pub metrics: Arc<Metrics>,
}

/// `POST /chat/messages` (alias `/chat/persist`) and `GET /chat/messages`.
pub fn persistence_router(state: PersistenceState) -> Router {
    let body_limit = state.limits.body_limit();
    let limiter = state.limits.post_rate.map(RateLimiter::new);
    let post_route = || match &limiter {
        Some(limiter) => limiter.clone().layer_method(post(post_message)),
        None => post(post_message),
    };
    Router::new()
        .route("/chat/messages", post_route().get(get_history))
        .route("/chat/persist", post_route())
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

/// Name of the request header carrying a client's idempotency key.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

#[utoipa::path(
    post,
    path = "/chat/messages",
    tag = "chat",
    summary = "Store a chat message",
    description = "Validates and stores a message; delivery to the participants' sockets follows from the store's change feed. Alias: `POST /chat/persist`.",
    request_body = NewChatMessage,
    params(("Idempotency-Key" = Option<String>, Header, description = "A repeat with the same key (per sender) returns the first message with 200 instead of storing a second copy")),
    responses(
        (status = 201, description = "Stored", body = ChatMessage),
        (status = 200, description = "A repeated Idempotency-Key: the first message", body = ChatMessage),
        (status = 400, description = "Invalid JSON, empty content, bad ids or a mismatched stream_id", body = ErrorBody),
        (status = 401, description = "Missing or invalid bearer token (AUTH_MODE=jwt)", body = ErrorBody),
        (status = 403, description = "sender_id is not the token's subject", body = ErrorBody),
        (status = 413, description = "content over MAX_CONTENT_BYTES", body = ErrorBody),
        (status = 429, description = "Over the user's POST rate limit (Retry-After)", body = ErrorBody),
        (status = 503, description = "The store is unavailable", body = ErrorBody),
    ),
    security((), ("bearer" = [])),
)]
async fn post_message(
    State(state): State<PersistenceState>,
    caller: Caller,
    headers: HeaderMap,
    JsonBody(message): JsonBody<NewChatMessage>,
) -> Result<Response, ApiError> {
    let idempotency_key = idempotency_key(&headers)?;
    caller.require_user(&message.sender_id)?;
    let valid = message.validate(state.limits.max_content_bytes)?;
    let inserted = state
        .store
        .insert(valid, idempotency_key.as_deref())
        .await?;
    let status = if inserted.created {
        state.metrics.messages_stored.inc();
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    tracing::debug!(message_id = %inserted.message.message_id, stream_id = %inserted.message.stream_id, created = inserted.created, "message stored");
    Ok((status, Json(inserted.message)).into_response())
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY_HEADER) else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .map_err(|_| ApiError::BadRequest("Idempotency-Key must be visible ASCII".to_owned()))?;
    check_id("Idempotency-Key", key)?;
    Ok(Some(key.to_owned()))
}

#[derive(Debug, Deserialize)]
struct HistoryParams {
    stream_id: Option<String>,
    sender_id: Option<String>,
    receiver_id: Option<String>,
    since: Option<String>,
    before: Option<String>,
    limit: Option<String>,
}

#[utoipa::path(
    get,
    path = "/chat/messages",
    tag = "chat",
    summary = "Read a conversation's history",
    description = "Messages ascending by message_id: the first `limit` after `since`, or the `limit` just before `before`. With authentication, `sender_id` and `receiver_id` are required, must hash to `stream_id`, and must include the subject.",
    params(
        ("stream_id" = String, Query, description = "16 lowercase hex characters", pattern = "^[0-9a-f]{16}$"),
        ("sender_id" = Option<String>, Query, description = "One participant (required with authentication)", min_length = 1, max_length = 256, pattern = r"^[^\x00-\x1f\x7f-\x9f]+$"),
        ("receiver_id" = Option<String>, Query, description = "The other participant (required with authentication)", min_length = 1, max_length = 256, pattern = r"^[^\x00-\x1f\x7f-\x9f]+$"),
        ("since" = Option<String>, Query, description = "Exclusive lower bound, a message_id", min_length = 1, max_length = 256, pattern = r"^[^\x00-\x1f\x7f-\x9f]+$"),
        ("before" = Option<String>, Query, description = "Exclusive upper bound, a message_id", min_length = 1, max_length = 256, pattern = r"^[^\x00-\x1f\x7f-\x9f]+$"),
        ("limit" = Option<u32>, Query, description = "1 to 500, default 50 (larger values are clamped)", minimum = 1),
    ),
    responses(
        (status = 200, description = "A page of messages", body = HistoryPage),
        (status = 400, description = "Missing or malformed parameter", body = ErrorBody),
        (status = 401, description = "Missing or invalid bearer token", body = ErrorBody),
        (status = 403, description = "The subject is not a participant", body = ErrorBody),
        (status = 503, description = "The store is unavailable", body = ErrorBody),
    ),
    security((), ("bearer" = [])),
)]
async fn get_history(
    State(state): State<PersistenceState>,
    caller: Caller,
    QueryParams(params): QueryParams<HistoryParams>,
) -> Result<Json<HistoryPage>, ApiError> {
    let stream_id = required_stream_id(params.stream_id.as_deref())?;
    authorize_history(&caller, &stream_id, &params)?;
    let mut query = HistoryQuery::stream(stream_id).limit(parse_limit(params.limit.as_deref())?);
    if let Some(since) = params.since {
        check_id("since", &since)?;
        query = query.since(since);
    }
    if let Some(before) = params.before {
        check_id("before", &before)?;
        query = query.before(before);
    }
    let messages = state.store.history(&query).await?;
    Ok(Json(HistoryPage { messages }))
}

/// The answer of `GET /chat/messages`.
#[derive(Debug, Clone, serde::Serialize, Deserialize, utoipa::ToSchema)]
pub struct HistoryPage {
    /// Messages, ascending by `message_id`.
    pub messages: Vec<ChatMessage>,
}

/// History needs no participants while authentication is off. An authenticated caller must name
/// both participants (`sender_id`, `receiver_id`), which must hash to `stream_id` and include them.
fn authorize_history(
    caller: &Caller,
    stream_id: &str,
    params: &HistoryParams,
) -> Result<(), ApiError> {
    let named = params.sender_id.is_some() || params.receiver_id.is_some();
    if !named && matches!(caller, Caller::Anonymous) {
        return Ok(());
    }
    let sender_id = required("sender_id", &params.sender_id)?;
    let receiver_id = required("receiver_id", &params.receiver_id)?;
    check_stream(Some(stream_id), sender_id, receiver_id)?;
    caller.require_participant(sender_id, receiver_id)
}

fn required_stream_id(stream_id: Option<&str>) -> Result<String, ApiError> {
    let stream_id = stream_id
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::BadRequest("stream_id is required".to_owned()))?;
    if !crate::stream_id::is_well_formed(stream_id) {
        return Err(ApiError::BadRequest(
            "stream_id must be 16 lowercase hex characters".to_owned(),
        ));
    }
    Ok(stream_id.to_owned())
}

fn parse_limit(limit: Option<&str>) -> Result<usize, ApiError> {
    let Some(limit) = limit else {
        return Ok(DEFAULT_HISTORY_LIMIT);
    };
    match limit.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n.min(MAX_HISTORY_LIMIT)),
        _ => Err(ApiError::BadRequest(format!(
            "limit must be an integer from 1 to {MAX_HISTORY_LIMIT}"
        ))),
    }
}

/// State of the chat websocket tier.
#[derive(Clone)]
pub struct ChatTierState {
    /// Chat sessions by `stream_id`.
    pub sockets: Arc<dyn SocketRegistry>,
    /// Where `since=` replays come from.
    pub store: Arc<dyn MessageStore>,
    /// Session timing.
    pub session: SessionConfig,
    /// Sockets per user.
    pub quota: SocketQuota,
}

/// `GET /chat/subscribe` (alias `/chat/subscribe-websocket`).
pub fn chat_tier_router(state: ChatTierState) -> Router {
    Router::new()
        .route("/chat/subscribe", get(subscribe_chat))
        .route("/chat/subscribe-websocket", get(subscribe_chat))
        .with_state(state)
}

#[derive(Debug, Deserialize)]
struct ChatSubscribeParams {
    stream_id: Option<String>,
    sender_id: Option<String>,
    receiver_id: Option<String>,
    since: Option<String>,
}

fn required<'a>(field: &'static str, value: &'a Option<String>) -> Result<&'a str, ApiError> {
    let value = value.as_deref().unwrap_or_default();
    check_id(field, value)?;
    Ok(value)
}

fn upgrade(
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<WebSocketUpgrade, ApiError> {
    ws.map_err(|rejection| ApiError::Status {
        status: rejection.status(),
        message: format!("websocket upgrade required: {}", rejection.body_text()),
    })
}

#[utoipa::path(
    get,
    path = "/chat/subscribe",
    tag = "websockets",
    summary = "Subscribe to a conversation (websocket)",
    description = "A websocket upgrade; each text frame is a ChatMessage. With `since`, the messages after it are replayed from the store first, with no gap and no duplicate. Close codes: 1001 shutdown, 4000 delivery gave up, 4001 too slow, 1011 history unavailable; reconnect with since=<last message_id>. Alias: `/chat/subscribe-websocket`. Browsers pass the token as `access_token`.",
    params(
        ("stream_id" = String, Query, description = "Must match sender_id and receiver_id", pattern = "^[0-9a-f]{16}$"),
        ("sender_id" = String, Query, description = "The subscribing participant", min_length = 1, max_length = 256, pattern = r"^[^\x00-\x1f\x7f-\x9f]+$"),
        ("receiver_id" = String, Query, description = "The other participant", min_length = 1, max_length = 256, pattern = r"^[^\x00-\x1f\x7f-\x9f]+$"),
        ("since" = Option<String>, Query, description = "Replay the messages after this message_id first", min_length = 1, max_length = 256, pattern = r"^[^\x00-\x1f\x7f-\x9f]+$"),
        ("access_token" = Option<String>, Query, description = "The bearer token, for clients that cannot set headers"),
    ),
    responses(
        (status = 101, description = "Switching protocols; frames are ChatMessage JSON", body = ChatMessage),
        (status = 400, description = "Missing or mismatched parameters, or not a websocket request", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "The subject is not a participant", body = ErrorBody),
        (status = 426, description = "The connection cannot be upgraded", body = ErrorBody),
        (status = 429, description = "The user holds SOCKETS_PER_USER sockets already", body = ErrorBody),
    ),
    security((), ("bearer" = [])),
)]
async fn subscribe_chat(
    State(state): State<ChatTierState>,
    caller: Caller,
    QueryParams(params): QueryParams<ChatSubscribeParams>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let sender_id = required("sender_id", &params.sender_id)?;
    let receiver_id = required("receiver_id", &params.receiver_id)?;
    let given = required("stream_id", &params.stream_id)?;
    let stream_id = check_stream(Some(given), sender_id, receiver_id)?;
    caller.require_participant(sender_id, receiver_id)?;
    if let Some(since) = &params.since {
        check_id("since", since)?;
    }
    let ws = upgrade(ws)?;
    let slot = socket_slot(&state.quota, caller.subject().unwrap_or(sender_id))?;
    // Registered before the 101 answer: once the client sees the handshake complete, nothing
    // broadcast to the stream can miss it.
    let mut subscription = Subscription::open(
        Arc::clone(&state.sockets),
        &stream_id,
        state.session.clone(),
    );
    if let Some(since) = &params.since {
        subscription = subscription.after(since);
    }
    let since = params.since;
    Ok(ws.on_upgrade(move |socket| async move {
        let _slot = slot;
        let replay = match since {
            Some(since) => match replay_after(state.store.as_ref(), &stream_id, since).await {
                Ok(frames) => frames,
                Err(error) => {
                    tracing::warn!(%stream_id, %error, "replay failed; closing the session");
                    let reason = CloseReason::new(INTERNAL_ERROR_CLOSE_CODE, "history unavailable");
                    return subscription.refuse(socket, reason).await;
                }
            },
            None => Vec::new(),
        };
        subscription.run(socket, replay).await;
    }))
}

/// Reads every message of `stream_id` after `since` from the store, page by page, as frames.
async fn replay_after(
    store: &dyn MessageStore,
    stream_id: &str,
    mut since: String,
) -> Result<Vec<Frame>, ApiError> {
    let mut frames = Vec::new();
    loop {
        let query = HistoryQuery::stream(stream_id)
            .since(since.clone())
            .limit(MAX_HISTORY_LIMIT);
        let page = store.history(&query).await?;
        let full = page.len() == MAX_HISTORY_LIMIT;
        for message in &page {
            frames.push(Delivery::Chat(message.clone()).frame()?);
        }
        match page.last() {
            Some(last) if full => since = last.message_id.clone(),
            _ => return Ok(frames),
        }
    }
}

/// State of the notification websocket tier.
#[derive(Clone)]
pub struct NotificationTierState {
    /// Notification sessions by `user_id`.
    pub sockets: Arc<dyn SocketRegistry>,
    /// Session timing.
    pub session: SessionConfig,
    /// Sockets per user.
    pub quota: SocketQuota,
}

/// `GET /notifications/subscribe`.
pub fn notification_tier_router(state: NotificationTierState) -> Router {
    Router::new()
        .route("/notifications/subscribe", get(subscribe_notifications))
        .with_state(state)
}

#[derive(Debug, Deserialize)]
struct UserParams {
    user_id: Option<String>,
}

#[utoipa::path(
    get,
    path = "/notifications/subscribe",
    tag = "websockets",
    summary = "Subscribe to a user's notifications (websocket)",
    description = "A websocket upgrade; each text frame is a Notification envelope (chat, purchase, payment reminder or shipping update). Close codes as for /chat/subscribe.",
    params(
        ("user_id" = String, Query, description = "The user; with authentication, the token's subject", min_length = 1, max_length = 256, pattern = r"^[^\x00-\x1f\x7f-\x9f]+$"),
        ("access_token" = Option<String>, Query, description = "The bearer token, for clients that cannot set headers"),
    ),
    responses(
        (status = 101, description = "Switching protocols; frames are Notification JSON", body = Notification),
        (status = 400, description = "Missing user_id, or not a websocket request", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "user_id is not the subject", body = ErrorBody),
        (status = 426, description = "The connection cannot be upgraded", body = ErrorBody),
        (status = 429, description = "The user holds SOCKETS_PER_USER sockets already", body = ErrorBody),
    ),
    security((), ("bearer" = [])),
)]
async fn subscribe_notifications(
    State(state): State<NotificationTierState>,
    caller: Caller,
    QueryParams(params): QueryParams<UserParams>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let user_id = required("user_id", &params.user_id)?.to_owned();
    caller.require_user(&user_id)?;
    let ws = upgrade(ws)?;
    let slot = socket_slot(&state.quota, &user_id)?;
    let subscription = Subscription::open(Arc::clone(&state.sockets), &user_id, state.session);
    Ok(ws.on_upgrade(move |socket| async move {
        let _slot = slot;
        subscription.run(socket, Vec::new()).await
    }))
}

/// One of `user_id`'s socket slots, held for the session's life; 429 when they are all taken.
fn socket_slot(quota: &SocketQuota, user_id: &str) -> Result<QuotaGuard, ApiError> {
    quota.acquire(user_id).ok_or_else(|| {
        ApiError::TooManyRequests(format!(
            "user {user_id:?} already has the maximum of {} open sockets",
            quota.limit().unwrap_or_default()
        ))
    })
}

/// State of the internal routes: the local tiers behind a forwarder.
#[derive(Clone)]
pub struct InternalState {
    /// Usually an [`crate::forward::InProcessForwarder`] over this process's registries.
    pub forwarder: Arc<dyn Forwarder>,
    /// Limits applied to forwarded messages.
    pub limits: Limits,
}

/// The routes the change handler calls on both tiers: [`chat_internal_router`] and
/// [`notification_internal_router`].
pub fn internal_router(state: InternalState) -> Router {
    chat_internal_router(state.clone()).merge(notification_internal_router(state))
}

/// The chat tier's internal routes: `POST /chat/forward-to-websocket` and
/// `POST /chat/close-stream`.
pub fn chat_internal_router(state: InternalState) -> Router {
    let body_limit = state.limits.body_limit();
    Router::new()
        .route("/chat/forward-to-websocket", post(forward_chat))
        .route("/chat/close-stream", post(close_stream))
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
    let closed = state.forwarder.close_stream(&stream_id, &reason).await?;
    Ok(Json(json!({ "closed": closed, "stream_id": stream_id })))
}

async fn notify(
    state: &InternalState,
    user_id: String,
    notification: Notification,
) -> Result<Response, ApiError> {
    check_id("user_id", &user_id)?;
    let delivery = Delivery::Notify {
        user_id,
        notification,
    };
    let report = state.forwarder.forward(&delivery).await?;
    Ok(report_response(report, "user_id", delivery.routing_key()))
}

async fn notify_chat(
    State(state): State<InternalState>,
    QueryParams(params): QueryParams<UserParams>,
    JsonBody(message): JsonBody<ChatMessage>,
) -> Result<Response, ApiError> {
    message.check(state.limits.max_content_bytes)?;
    let user_id = params
        .user_id
        .unwrap_or_else(|| message.receiver_id.clone());
    notify(&state, user_id, Notification::chat(&message)).await
}

fn user_param(params: UserParams) -> Result<String, ApiError> {
    params
        .user_id
        .filter(|u| !u.is_empty())
        .ok_or_else(|| ApiError::BadRequest("user_id is required".to_owned()))
}

async fn notify_purchase(
    State(state): State<InternalState>,
    QueryParams(params): QueryParams<UserParams>,
    JsonBody(payload): JsonBody<PurchaseUpdate>,
) -> Result<Response, ApiError> {
    let user_id = user_param(params)?;
    let notification = Notification::new(NotificationType::PurchaseNotification, &payload);
    notify(&state, user_id, notification).await
}

async fn notify_payment(
    State(state): State<InternalState>,
    QueryParams(params): QueryParams<UserParams>,
    JsonBody(payload): JsonBody<PaymentReminder>,
) -> Result<Response, ApiError> {
    let user_id = user_param(params)?;
    let notification = Notification::new(NotificationType::PaymentReminderNotification, &payload);
    notify(&state, user_id, notification).await
}

async fn notify_shipping(
    State(state): State<InternalState>,
    QueryParams(params): QueryParams<UserParams>,
    JsonBody(payload): JsonBody<ShippingUpdate>,
) -> Result<Response, ApiError> {
    let user_id = user_param(params)?;
    let notification = Notification::new(NotificationType::ShippingUpdateNotification, &payload);
    notify(&state, user_id, notification).await
}

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

#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    summary = "Liveness",
    responses((status = 200, description = "The process is serving", body = Object, example = json!({"status": "ok"}))),
)]
async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    summary = "Readiness",
    responses(
        (status = 200, description = "Every backend answers", body = Object, example = json!({"status": "ready"})),
        (status = 503, description = "A backend is unreachable; `checks` names it", body = ErrorBody),
    ),
)]
async fn readyz(State(state): State<OpsState>) -> Response {
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

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    summary = "Prometheus / OpenMetrics counters",
    responses((status = 200, description = "OpenMetrics text", content_type = "application/openmetrics-text", body = String)),
)]
async fn metrics(State(state): State<OpsState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

/// Header naming the node that answered (`NODE_ID`), so a client or a test can see where a
/// balancer placed it.
pub const NODE_HEADER: &str = "x-chatcore-node";

/// Requires `Authorization: Bearer <token>` on every route of `router` (apply it before merging
/// into a larger router): anything else is answered 401 JSON and never reaches a handler. Tokens
/// are compared through their SHA-256 digests, so the comparison time says nothing about the
/// token.
///
/// ```
/// use axum::{routing::post, Router};
/// let internal = chatcore::http::require_bearer(
///     Router::new().route("/chat/close-stream", post(|| async { "closed" })),
///     "s3cret",
/// );
/// # let _ = internal;
/// ```
pub fn require_bearer(router: Router, token: &str) -> Router {
    let expected: Arc<[u8]> = Arc::from(Sha256::digest(token.as_bytes()).as_slice());
    router.route_layer(axum::middleware::from_fn(
        move |request: Request, next: axum::middleware::Next| {
            let authorized = bearer_matches(request.headers(), &expected);
            async move {
                if authorized {
                    next.run(request).await
                } else {
                    ApiError::Unauthorized("a valid bearer token is required".to_owned())
                        .into_response()
                }
            }
        },
    ))
}

fn bearer_matches(headers: &HeaderMap, expected_digest: &[u8]) -> bool {
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
    else {
        return false;
    };
    Sha256::digest(given.trim().as_bytes()).as_slice() == expected_digest
}

/// Adds [`NODE_HEADER`]`: node_id` to every response of `router`, websocket upgrades included.
pub fn with_node_id(router: Router, node_id: &str) -> Router {
    let value = match header::HeaderValue::from_str(node_id) {
        Ok(value) => value,
        Err(_) => {
            tracing::warn!(node_id, "NODE_ID is not a valid header value; not sent");
            return router;
        }
    };
    router.layer(axum::middleware::map_response(
        move |mut response: Response| {
            let value = value.clone();
            async move {
                response.headers_mut().insert(NODE_HEADER, value);
                response
            }
        },
    ))
}

/// Wraps a router with the layers every service wants: a JSON 404 fallback, a panic catcher that
/// answers 500 instead of dropping the connection, and request tracing. The request span records
/// the path without the query, which may carry an `access_token`.
pub fn with_common_layers(router: Router) -> Router {
    router
        .fallback(|| async { ApiError::NotFound("no such route".to_owned()) })
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            |_: Box<dyn std::any::Any + Send>| {
                tracing::error!("handler panicked");
                ApiError::Internal("internal error".to_owned()).into_response()
            },
        ))
        .layer(
            tower_http::trace::TraceLayer::new_for_http().make_span_with(|request: &Request| {
                tracing::debug_span!(
                    "request",
                    method = %request.method(),
                    path = %request.uri().path(),
                    version = ?request.version(),
                )
            }),
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use tower::ServiceExt;

    #[tokio::test]
    async fn a_panicking_handler_answers_500_json_and_the_router_keeps_serving() {
        let router = with_common_layers(
            Router::new()
                .route(
                    "/boom",
                    get(|| async { panic!("handler bug") as &'static str }),
                )
                .route("/fine", get(|| async { "fine" })),
        );
        let boom = router
            .clone()
            .oneshot(Request::get("/boom").body(Body::empty()).expect("request"))
            .await
            .expect("response");
        assert_eq!(boom.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(boom.into_body(), 1024)
            .await
            .expect("body");
        let json: Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(json["error"], "internal error");
        let fine = router
            .oneshot(Request::get("/fine").body(Body::empty()).expect("request"))
            .await
            .expect("response");
        assert_eq!(fine.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn bearer_routes_refuse_missing_and_wrong_tokens_and_leave_other_routes_open() {
        let guarded = require_bearer(
            Router::new().route("/internal", post(|| async { "done" })),
            "s3cret",
        );
        let router = with_common_layers(
            Router::new()
                .route("/public", get(|| async { "open" }))
                .merge(guarded),
        );
        let call = |path: &'static str, auth: Option<&'static str>| {
            let router = router.clone();
            async move {
                let mut request = Request::builder()
                    .method(if path == "/public" { "GET" } else { "POST" })
                    .uri(path);
                if let Some(auth) = auth {
                    request = request.header(header::AUTHORIZATION, auth);
                }
                let response = router
                    .oneshot(request.body(Body::empty()).expect("request"))
                    .await
                    .expect("response");
                let status = response.status();
                let challenge = response.headers().get(header::WWW_AUTHENTICATE).cloned();
                let body = axum::body::to_bytes(response.into_body(), 1024)
                    .await
                    .expect("body");
                (status, challenge, body)
            }
        };
        for auth in [
            None,
            Some("Bearer wrong"),
            Some("s3cret"),
            Some("Basic czNjcmV0"),
        ] {
            let (status, challenge, body) = call("/internal", auth).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{auth:?}");
            assert_eq!(
                challenge.as_ref().map(|v| v.as_bytes()),
                Some(&b"Bearer"[..])
            );
            let json: Value = serde_json::from_slice(&body).expect("JSON error");
            assert!(json["error"].as_str().is_some_and(|e| e.contains("bearer")));
        }
        let (status, _, body) = call("/internal", Some("Bearer s3cret")).await;
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"done"[..]));
        let (status, _, body) = call("/public", None).await;
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"open"[..]));
    }

    #[tokio::test]
    async fn the_node_header_is_on_every_response_including_errors() {
        let router = with_node_id(
            with_common_layers(Router::new().route("/fine", get(|| async { "fine" }))),
            "chat-ws-2",
        );
        for path in ["/fine", "/missing"] {
            let response = router
                .clone()
                .oneshot(Request::get(path).body(Body::empty()).expect("request"))
                .await
                .expect("response");
            assert_eq!(
                response.headers().get(NODE_HEADER).map(|v| v.as_bytes()),
                Some(&b"chat-ws-2"[..]),
                "{path}"
            );
        }
    }

    #[tokio::test]
    async fn subscription_and_history_queries_ignore_an_access_token_parameter() {
        async fn parse<T: DeserializeOwned>(uri: &str) -> T {
            let (mut parts, ()) = Request::get(uri).body(()).expect("request").into_parts();
            let QueryParams(params) = QueryParams::<T>::from_request_parts(&mut parts, &())
                .await
                .expect("parsed despite access_token");
            params
        }
        let chat: ChatSubscribeParams =
            parse("/chat/subscribe?stream_id=s&access_token=a.b.c&sender_id=x&receiver_id=y").await;
        assert_eq!(
            (chat.stream_id, chat.sender_id, chat.receiver_id, chat.since),
            (Some("s".into()), Some("x".into()), Some("y".into()), None)
        );
        let user: UserParams = parse("/notifications/subscribe?access_token=t&user_id=bob").await;
        assert_eq!(user.user_id.as_deref(), Some("bob"));
        let history: HistoryParams =
            parse("/chat/messages?stream_id=s&limit=5&access_token=t").await;
        assert_eq!(
            (history.stream_id.as_deref(), history.limit.as_deref()),
            (Some("s"), Some("5"))
        );
    }

    #[test]
    fn reports_map_to_200_206_and_500() {
        let status = |delivered, failed| {
            report_response(DeliveryReport { delivered, failed }, "stream_id", "s").status()
        };
        assert_eq!(status(0, 0), StatusCode::OK);
        assert_eq!(status(3, 0), StatusCode::OK);
        assert_eq!(status(2, 1), StatusCode::PARTIAL_CONTENT);
        assert_eq!(status(0, 2), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
