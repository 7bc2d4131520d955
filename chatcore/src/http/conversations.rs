//! Conversations: `POST /conversations`, `GET /conversations`, `GET /conversations/{stream_id}`,
//! `POST /conversations/{stream_id}/members` and read receipts, `POST /chat/read`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::params::{parse_limit, required, required_stream_id, UserParams};
use super::persistence::authorize_group_reader;
#[cfg(feature = "openapi")]
use super::ErrorBody;
use super::{ApiError, JsonBody, Limits, QueryParams};
use crate::auth::Caller;
use crate::conversation::list::{conversation_list, conversation_of, ConversationSummary};
use crate::conversation::{
    Conversation, ConversationKind, ConversationStore, MembershipChange, NewGroup, ReadMarker,
};
use crate::forward::{Delivery, Forwarder, StreamCloser};
use crate::metrics::{ConversationChange, Metrics};
use crate::model::{check_id, ChatMessage};
use crate::store::MessageStore;

/// Where read frames and removed members' closes go: the chat tier holding the stream's sockets
/// (this process's registry in a node, the chat tier's internal routes in a split deployment).
#[derive(Clone)]
pub struct ChatTier {
    /// Delivers `read` frames ([`Delivery::Read`]).
    pub forwarder: Arc<dyn Forwarder>,
    /// Closes a removed member's sessions ([`StreamCloser::close_member`]).
    pub closer: Arc<dyn StreamCloser>,
}

/// State of the conversation routes.
#[derive(Clone)]
pub struct ConversationsState {
    /// The messages (read receipts name one; unread counts come from it).
    pub store: Arc<dyn MessageStore>,
    /// Groups, read markers and the conversation view.
    pub conversations: Arc<dyn ConversationStore>,
    /// The chat tier, for read frames and closes; without it neither is sent (the read state
    /// and membership are stored all the same).
    pub chat_tier: Option<ChatTier>,
    /// Client limits (`MAX_GROUP_MEMBERS`).
    pub limits: Limits,
    /// Counters.
    pub metrics: Arc<Metrics>,
}

/// The conversation routes and `POST /chat/read`.
pub fn conversations_router(state: ConversationsState) -> Router {
    Router::new()
        .route("/conversations", post(create_group).get(list_conversations))
        .route("/conversations/{stream_id}", get(get_conversation))
        .route("/conversations/{stream_id}/members", post(change_members))
        .route("/chat/read", post(mark_read))
        .with_state(state)
}

#[cfg_attr(
    feature = "openapi",
    utoipa::path(
        post,
        path = "/conversations",
        tag = "conversations",
        summary = "Create a group",
        description = "2 to MAX_GROUP_MEMBERS distinct members, the creator among them; the server makes the group's stream_id.",
        request_body = NewGroup,
        responses(
            (status = 201, description = "Created", body = Conversation),
            (status = 400, description = "Bad ids, too few or too many members, or the creator not among them", body = ErrorBody),
            (status = 401, description = "Missing or invalid bearer token", body = ErrorBody),
            (status = 403, description = "created_by is not the token's subject", body = ErrorBody),
            (status = 503, description = "The store is unavailable", body = ErrorBody),
        ),
        security((), ("bearer" = [])),
    )
)]
pub(super) async fn create_group(
    State(state): State<ConversationsState>,
    caller: Caller,
    JsonBody(group): JsonBody<NewGroup>,
) -> Result<(StatusCode, Json<Conversation>), ApiError> {
    caller.require_user(&group.created_by)?;
    let group = group.validate(state.limits.max_group_members)?;
    let created = state
        .conversations
        .create_group(group.into_conversation())
        .await?;
    state.metrics.conversation(ConversationChange::GroupCreated);
    tracing::info!(stream_id = %created.stream_id, members = created.members.len(), "group created");
    Ok((StatusCode::CREATED, Json(created)))
}

/// The acting user of a read route: the token's subject, which `user_id` must match when given;
/// without authentication `user_id` itself.
fn acting_user(caller: &Caller, user_id: &Option<String>) -> Result<String, ApiError> {
    if let Some(user_id) = user_id {
        caller.require_user(user_id)?;
    }
    match caller.subject() {
        Some(subject) => Ok(subject.to_owned()),
        None => Ok(required("user_id", user_id)?.to_owned()),
    }
}

#[cfg_attr(
    feature = "openapi",
    utoipa::path(
        get,
        path = "/conversations/{stream_id}",
        tag = "conversations",
        summary = "A conversation",
        description = "A group the caller is a member of, or a direct conversation of the caller's (known once it has a message).",
        params(
            ("stream_id" = String, Path, description = "16 lowercase hex characters", pattern = "^[0-9a-f]{16}$"),
            ("user_id" = Option<String>, Query, description = "The caller (required without authentication)", min_length = 1, max_length = 256, pattern = r"^[^\x00-\x1f\x7f-\x9f]+$"),
        ),
        responses(
            (status = 200, description = "The conversation", body = Conversation),
            (status = 400, description = "Malformed stream_id or user_id", body = ErrorBody),
            (status = 403, description = "Not a member of the group", body = ErrorBody),
            (status = 404, description = "No such conversation of the caller's", body = ErrorBody),
            (status = 503, description = "The store is unavailable", body = ErrorBody),
        ),
        security((), ("bearer" = [])),
    )
)]
pub(super) async fn get_conversation(
    State(state): State<ConversationsState>,
    caller: Caller,
    Path(stream_id): Path<String>,
    QueryParams(params): QueryParams<UserParams>,
) -> Result<Json<Conversation>, ApiError> {
    let stream_id = required_stream_id(Some(&stream_id))?;
    let user = acting_user(&caller, &params.user_id)?;
    let found = conversation_of(state.conversations.as_ref(), &user, &stream_id).await?;
    let conversation = found.ok_or_else(|| not_found(&stream_id))?;
    if conversation.kind == ConversationKind::Group {
        authorize_group_reader(&caller, &conversation, Some(&user))?;
    }
    Ok(Json(conversation))
}

fn not_found(stream_id: &str) -> ApiError {
    ApiError::NotFound(format!("no conversation {stream_id:?}"))
}

#[cfg_attr(
    feature = "openapi",
    utoipa::path(
        post,
        path = "/conversations/{stream_id}/members",
        tag = "conversations",
        summary = "Add and remove group members",
        description = "By a member; atomic. Removed members' chat sockets of the group are closed with 4003. A member may remove itself (leave); the group keeps at least one member.",
        request_body = MembershipChange,
        params(("stream_id" = String, Path, description = "The group", pattern = "^[0-9a-f]{16}$")),
        responses(
            (status = 200, description = "The group after the change", body = Conversation),
            (status = 400, description = "Bad ids, nothing to change, or the group would leave its size limits", body = ErrorBody),
            (status = 403, description = "`by` is not a member, or not the token's subject", body = ErrorBody),
            (status = 404, description = "No such group", body = ErrorBody),
            (status = 503, description = "The store is unavailable", body = ErrorBody),
        ),
        security((), ("bearer" = [])),
    )
)]
pub(super) async fn change_members(
    State(state): State<ConversationsState>,
    caller: Caller,
    Path(stream_id): Path<String>,
    JsonBody(change): JsonBody<MembershipChange>,
) -> Result<Json<Conversation>, ApiError> {
    let stream_id = required_stream_id(Some(&stream_id))?;
    caller.require_user(&change.by)?;
    let change = change.validate(state.limits.max_group_members)?;
    let changed = state
        .conversations
        .change_members(&stream_id, &change, state.limits.max_group_members)
        .await?;
    state
        .metrics
        .conversation(ConversationChange::MembersChanged);
    if let Some(tier) = &state.chat_tier {
        for user_id in &changed.removed {
            match tier.closer.close_member(&stream_id, user_id).await {
                Ok(closed) => {
                    tracing::info!(%stream_id, %user_id, closed, "removed member's sockets closed")
                }
                Err(error) => {
                    tracing::warn!(%stream_id, %user_id, %error, "could not close a removed member's sockets")
                }
            }
        }
    }
    Ok(Json(changed.conversation))
}

#[derive(Debug, Deserialize)]
pub(super) struct ListParams {
    user_id: Option<String>,
    limit: Option<String>,
}

/// The answer of `GET /conversations`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConversationList {
    /// Latest activity first.
    pub conversations: Vec<ConversationSummary>,
}

#[cfg_attr(
    feature = "openapi",
    utoipa::path(
        get,
        path = "/conversations",
        tag = "conversations",
        summary = "A user's conversation list",
        description = "Direct conversations with a message and every group of the user's, latest activity first, each with its last message, unread count and read marker. Kept from the change feed by a consumer of its own, so a message shows here shortly after it is stored.",
        params(
            ("user_id" = String, Query, description = "Whose list (the token's subject with authentication)", min_length = 1, max_length = 256, pattern = r"^[^\x00-\x1f\x7f-\x9f]+$"),
            ("limit" = Option<u32>, Query, description = "1 to 500, default 50 (larger values are clamped)", minimum = 1),
        ),
        responses(
            (status = 200, description = "The list", body = ConversationList),
            (status = 400, description = "Missing or malformed parameter", body = ErrorBody),
            (status = 403, description = "user_id is not the token's subject", body = ErrorBody),
            (status = 503, description = "The store is unavailable", body = ErrorBody),
        ),
        security((), ("bearer" = [])),
    )
)]
pub(super) async fn list_conversations(
    State(state): State<ConversationsState>,
    caller: Caller,
    QueryParams(params): QueryParams<ListParams>,
) -> Result<Json<ConversationList>, ApiError> {
    // Always named, as the inbox's routes name theirs; the token's subject with authentication.
    let user = required("user_id", &params.user_id)?;
    caller.require_user(user)?;
    let limit = parse_limit(params.limit.as_deref())?;
    let conversations = conversation_list(
        state.store.as_ref(),
        state.conversations.as_ref(),
        user,
        limit,
    )
    .await?;
    Ok(Json(ConversationList { conversations }))
}

/// `POST /chat/read`: everything up to `message_id` is read by `user_id`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReadReceipt {
    /// The conversation.
    #[cfg_attr(feature = "openapi", schema(pattern = "^[0-9a-f]{16}$"))]
    pub stream_id: String,
    /// The reader, a participant or member.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 256))]
    pub user_id: String,
    /// The newest message read: a message of this conversation.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 256))]
    pub message_id: String,
}

/// The answer of `POST /chat/read`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReadState {
    /// The conversation.
    pub stream_id: String,
    /// The reader.
    pub user_id: String,
    /// The read marker after the call (never older than before it).
    pub last_read_message_id: String,
    /// Messages after the marker that the reader did not send.
    pub unread: u64,
}

#[cfg_attr(
    feature = "openapi",
    utoipa::path(
        post,
        path = "/chat/read",
        tag = "conversations",
        summary = "Mark a conversation read up to a message",
        description = "Monotonic and idempotent: an older message_id never moves the marker back. When the marker moves, the conversation's protocol-2 sockets get a `read` frame.",
        request_body = ReadReceipt,
        responses(
            (status = 200, description = "The read state", body = ReadState),
            (status = 400, description = "Malformed ids", body = ErrorBody),
            (status = 403, description = "Not a participant or member, or not the token's subject", body = ErrorBody),
            (status = 404, description = "The conversation has no such message", body = ErrorBody),
            (status = 503, description = "The store is unavailable", body = ErrorBody),
        ),
        security((), ("bearer" = [])),
    )
)]
pub(super) async fn mark_read(
    State(state): State<ConversationsState>,
    caller: Caller,
    JsonBody(receipt): JsonBody<ReadReceipt>,
) -> Result<Json<ReadState>, ApiError> {
    let stream_id = required_stream_id(Some(&receipt.stream_id))?;
    check_id("user_id", &receipt.user_id)?;
    check_id("message_id", &receipt.message_id)?;
    caller.require_user(&receipt.user_id)?;
    let message = state
        .store
        .find(&stream_id, &receipt.message_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no message {:?}", receipt.message_id)))?;
    authorize_reader(&state, &message, &receipt.user_id).await?;
    let marker = state
        .conversations
        .mark_read(&stream_id, &receipt.user_id, &receipt.message_id)
        .await?;
    let unread = state
        .store
        .count_unread(&stream_id, Some(&marker.message_id), &receipt.user_id)
        .await?;
    if marker.moved {
        state
            .metrics
            .conversation(ConversationChange::ReadMarkerMoved);
        send_read_frame(&state, &marker).await;
    }
    Ok(Json(ReadState {
        stream_id,
        user_id: marker.user_id,
        last_read_message_id: marker.message_id,
        unread,
    }))
}

/// A reader of `message` is one of its two participants, or a member of its group.
async fn authorize_reader(
    state: &ConversationsState,
    message: &ChatMessage,
    user_id: &str,
) -> Result<(), ApiError> {
    let allowed = match &message.receiver_id {
        Some(receiver) => *receiver == user_id || message.sender_id == user_id,
        None => state
            .conversations
            .group(&message.stream_id)
            .await?
            .is_some_and(|group| group.has_member(user_id)),
    };
    match allowed {
        true => Ok(()),
        false => Err(ApiError::Forbidden(format!(
            "{user_id:?} is not in this conversation"
        ))),
    }
}

/// The `read` frame to the conversation's protocol-2 sessions, best effort: the read state is
/// stored, and a client that missed the frame finds it in `GET /conversations`.
async fn send_read_frame(state: &ConversationsState, marker: &ReadMarker) {
    let Some(tier) = &state.chat_tier else {
        return;
    };
    if let Err(error) = tier
        .forwarder
        .forward(&Delivery::Read(marker.clone()))
        .await
    {
        tracing::warn!(stream_id = %marker.stream_id, user_id = %marker.user_id, %error, "read frame not delivered");
    }
}
