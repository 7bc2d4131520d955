//! The persistence API: `POST /chat/messages` and `GET /chat/messages`.

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;

use super::params::{idempotency_key, parse_limit, required, required_stream_id};
#[cfg(feature = "rate-limit")]
use super::rate_limit::RateLimiter;
#[cfg(feature = "openapi")]
use super::ErrorBody;
use super::{ApiError, JsonBody, Limits, QueryParams};
use crate::auth::Caller;
use crate::conversation::{Conversation, ConversationStore};
use crate::metrics::Metrics;
use crate::model::{check_id, check_stream, ChatMessage, NewChatMessage};
use crate::store::{HistoryQuery, MessageStore};

/// State of the persistence API.
#[derive(Clone)]
pub struct PersistenceState {
    /// Where messages go.
    pub store: Arc<dyn MessageStore>,
    /// Groups: who may post to and read a group.
    pub conversations: Arc<dyn ConversationStore>,
    /// Client limits.
    pub limits: Limits,
    /// Counters.
    pub metrics: Arc<Metrics>,
}

/// `POST /chat/messages` (alias `/chat/persist`) and `GET /chat/messages`.
pub fn persistence_router(state: PersistenceState) -> Router {
    let body_limit = state.limits.body_limit();
    #[cfg(feature = "rate-limit")]
    let limiter = state.limits.post_rate.map(RateLimiter::new);
    let post_route = || {
        #[cfg(feature = "rate-limit")]
        if let Some(limiter) = &limiter {
            return limiter.clone().layer_method(post(post_message));
        }
        post(post_message)
    };
    Router::new()
        .route("/chat/messages", post_route().get(get_history))
        .route("/chat/persist", post_route())
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

#[cfg_attr(
    feature = "openapi",
    utoipa::path(
        post,
        path = "/chat/messages",
        tag = "chat",
        summary = "Store a chat message",
        description = "Validates and stores a message; delivery to the participants' sockets follows from the store's change feed. A message to a group names the group's `stream_id` and no `receiver_id`; its sender must be a member. Alias: `POST /chat/persist`.",
        request_body = NewChatMessage,
        params(
            ("Idempotency-Key" = Option<String>, Header, description = "A repeat with the same key (per sender) returns the first message with 200 instead of storing a second copy"),
            ("stream_id" = Option<String>, Query, description = "The conversation's stream_id, for the balancer to route a conversation's writes to one persistence instance; when given it must match sender_id and receiver_id", min_length = 1, max_length = 256, pattern = r"^[^\x00-\x1f\x7f-\x9f]+$"),
            ("x-routing-key" = Option<String>, Header, description = "Alternative to the stream_id query parameter, with the same rule"),
        ),
        responses(
            (status = 201, description = "Stored", body = ChatMessage),
            (status = 200, description = "A repeated Idempotency-Key: the first message", body = ChatMessage),
            (status = 400, description = "Invalid JSON, empty content, bad ids or a mismatched stream_id", body = ErrorBody),
            (status = 401, description = "Missing or invalid bearer token (AUTH_MODE=jwt)", body = ErrorBody),
            (status = 403, description = "sender_id is not the token's subject, or not a member of the group", body = ErrorBody),
            (status = 404, description = "A group message to an unknown group", body = ErrorBody),
            (status = 413, description = "content over MAX_CONTENT_BYTES", body = ErrorBody),
            (status = 429, description = "Over the user's POST rate limit (Retry-After)", body = ErrorBody),
            (status = 503, description = "The store is unavailable", body = ErrorBody),
        ),
        security((), ("bearer" = [])),
    )
)]
pub(super) async fn post_message(
    State(state): State<PersistenceState>,
    caller: Caller,
    headers: HeaderMap,
    QueryParams(route): QueryParams<PostParams>,
    JsonBody(message): JsonBody<NewChatMessage>,
) -> Result<Response, ApiError> {
    let idempotency_key = idempotency_key(&headers)?;
    caller.require_user(&message.sender_id)?;
    let valid = match message.is_group() {
        true => {
            let group = group_of(&state, message.stream_id.as_deref()).await?;
            message.validate_for_group(state.limits.max_content_bytes, &group)?
        }
        false => message.validate(state.limits.max_content_bytes)?,
    };
    check_routing_key(&route, &headers, valid.stream_id())?;
    let inserted = state
        .store
        .insert(valid, idempotency_key.as_deref())
        .await?;
    let status = if inserted.created {
        state.metrics.message_stored();
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    tracing::debug!(message_id = %inserted.message.message_id, stream_id = %inserted.message.stream_id, created = inserted.created, "message stored");
    Ok((status, Json(inserted.message)).into_response())
}

/// The group a group message names (400 without a well-formed `stream_id`, 404 unknown).
async fn group_of(
    state: &PersistenceState,
    stream_id: Option<&str>,
) -> Result<Conversation, ApiError> {
    let stream_id = stream_id.ok_or_else(|| {
        ApiError::BadRequest("receiver_id is required (or a group's stream_id)".to_owned())
    })?;
    let stream_id = required_stream_id(Some(stream_id))?;
    state
        .conversations
        .group(&stream_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no conversation {stream_id:?}")))
}

/// The query of `POST /chat/messages`.
#[derive(Debug, Deserialize)]
pub(super) struct PostParams {
    /// The balancer's routing key (several persistence instances behind one balancer).
    stream_id: Option<String>,
}

/// A routing key given in the query or the `x-routing-key` header must be the message's
/// `stream_id`: the balancer hashed the request on it, and a key naming another conversation
/// would put two instances on one conversation's writes.
fn check_routing_key(
    route: &PostParams,
    headers: &HeaderMap,
    stream_id: &str,
) -> Result<(), ApiError> {
    let header = headers
        .get("x-routing-key")
        .map(|v| v.to_str().unwrap_or_default());
    for (name, given) in [
        ("stream_id", route.stream_id.as_deref()),
        ("x-routing-key", header),
    ] {
        if given.is_some_and(|given| given != stream_id) {
            return Err(ApiError::BadRequest(format!(
                "{name} does not match sender_id and receiver_id (expected {stream_id})"
            )));
        }
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
pub(super) struct HistoryParams {
    pub(super) stream_id: Option<String>,
    pub(super) sender_id: Option<String>,
    pub(super) receiver_id: Option<String>,
    pub(super) user_id: Option<String>,
    pub(super) since: Option<String>,
    pub(super) before: Option<String>,
    pub(super) limit: Option<String>,
}

#[cfg_attr(
    feature = "openapi",
    utoipa::path(
        get,
        path = "/chat/messages",
        tag = "chat",
        summary = "Read a conversation's history",
        description = "Messages ascending by message_id: the first `limit` after `since`, or the `limit` just before `before`. With authentication, `sender_id` and `receiver_id` are required, must hash to `stream_id`, and must include the subject.",
        params(
            ("stream_id" = String, Query, description = "16 lowercase hex characters", pattern = "^[0-9a-f]{16}$"),
            ("sender_id" = Option<String>, Query, description = "One participant (required with authentication)", min_length = 1, max_length = 256, pattern = r"^[^\x00-\x1f\x7f-\x9f]+$"),
            ("receiver_id" = Option<String>, Query, description = "The other participant (required with authentication)", min_length = 1, max_length = 256, pattern = r"^[^\x00-\x1f\x7f-\x9f]+$"),
            ("user_id" = Option<String>, Query, description = "For a group: the reading member (required without authentication)", min_length = 1, max_length = 256, pattern = r"^[^\x00-\x1f\x7f-\x9f]+$"),
            ("since" = Option<String>, Query, description = "Exclusive lower bound, a message_id", min_length = 1, max_length = 256, pattern = r"^[^\x00-\x1f\x7f-\x9f]+$"),
            ("before" = Option<String>, Query, description = "Exclusive upper bound, a message_id", min_length = 1, max_length = 256, pattern = r"^[^\x00-\x1f\x7f-\x9f]+$"),
            ("limit" = Option<u32>, Query, description = "1 to 500, default 50 (larger values are clamped)", minimum = 1),
        ),
        responses(
            (status = 200, description = "A page of messages", body = HistoryPage),
            (status = 400, description = "Missing or malformed parameter", body = ErrorBody),
            (status = 401, description = "Missing or invalid bearer token", body = ErrorBody),
            (status = 403, description = "The subject is not a participant, or not a member of the group", body = ErrorBody),
            (status = 503, description = "The store is unavailable", body = ErrorBody),
        ),
        security((), ("bearer" = [])),
    )
)]
pub(super) async fn get_history(
    State(state): State<PersistenceState>,
    caller: Caller,
    QueryParams(params): QueryParams<HistoryParams>,
) -> Result<Json<HistoryPage>, ApiError> {
    let stream_id = required_stream_id(params.stream_id.as_deref())?;
    // Two participants that hash to the stream name a direct conversation: no group lookup.
    let direct = params.sender_id.is_some() && params.receiver_id.is_some();
    let group = match direct {
        true => None,
        false => state.conversations.group(&stream_id).await?,
    };
    match group {
        Some(group) => authorize_group_reader(&caller, &group, params.user_id.as_ref())?,
        None => authorize_history(&caller, &stream_id, &params)?,
    }
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
#[derive(Debug, Clone, serde::Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HistoryPage {
    /// Messages, ascending by `message_id`.
    pub messages: Vec<ChatMessage>,
}

/// A group's history is for its members: `user_id` (the token's subject with authentication)
/// must be one.
pub(super) fn authorize_group_reader(
    caller: &Caller,
    group: &Conversation,
    user_id: Option<&String>,
) -> Result<(), ApiError> {
    let reader = match (caller.subject(), user_id) {
        (Some(subject), _) => subject,
        (None, Some(user_id)) => {
            check_id("user_id", user_id)?;
            user_id.as_str()
        }
        (None, None) => return Err(ApiError::BadRequest("user_id is required".to_owned())),
    };
    if let Some(user_id) = user_id {
        caller.require_user(user_id)?;
    }
    match group.has_member(reader) {
        true => Ok(()),
        false => Err(ApiError::Forbidden(format!(
            "{reader:?} is not a member of this conversation"
        ))),
    }
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
    Ok(caller.require_participant(sender_id, receiver_id)?)
}
