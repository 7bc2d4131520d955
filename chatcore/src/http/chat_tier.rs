//! The chat websocket tier: `GET /chat/subscribe`, with `since=` replay from the store.

use std::sync::Arc;

use axum::extract::ws::{rejection::WebSocketUpgradeRejection, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde::Deserialize;

use super::params::{required, required_stream_id};
use super::persistence::authorize_group_reader;
use super::upgrade::{socket_slot, upgrade};
#[cfg(feature = "openapi")]
use super::ErrorBody;
use super::{ApiError, QueryParams};
use crate::auth::Caller;
use crate::conversation::ConversationStore;
use crate::forward::Delivery;
#[cfg(feature = "openapi")]
use crate::model::ChatMessage;
use crate::model::{check_id, check_stream};
use crate::sockets::{
    CloseReason, Frame, Protocol, SessionConfig, SocketQuota, SocketRegistry, Subscription,
    INTERNAL_ERROR_CLOSE_CODE,
};
use crate::store::{HistoryQuery, MessageStore, MAX_HISTORY_LIMIT};

/// State of the chat websocket tier.
#[derive(Clone)]
pub struct ChatTierState {
    /// Chat sessions by `stream_id`.
    pub sockets: Arc<dyn SocketRegistry>,
    /// Where `since=` replays come from.
    pub store: Arc<dyn MessageStore>,
    /// Groups: who may subscribe to a group.
    pub conversations: Arc<dyn ConversationStore>,
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
pub(super) struct ChatSubscribeParams {
    pub(super) stream_id: Option<String>,
    pub(super) sender_id: Option<String>,
    pub(super) receiver_id: Option<String>,
    pub(super) user_id: Option<String>,
    pub(super) since: Option<String>,
    pub(super) protocol: Option<String>,
}

/// `protocol=`: absent or `1` for bare chat messages, `2` for typed frames.
fn protocol(given: Option<&str>) -> Result<Protocol, ApiError> {
    match given {
        None | Some("1") => Ok(Protocol::Bare),
        Some("2") => Ok(Protocol::Typed),
        Some(_) => Err(ApiError::BadRequest("protocol must be 1 or 2".to_owned())),
    }
}

/// Checks who subscribes to what: the two participants of a direct conversation (`sender_id`
/// subscribes), or a member of a group (`user_id`). Returns the stream and the subscriber.
async fn subscriber(
    state: &ChatTierState,
    caller: &Caller,
    params: &ChatSubscribeParams,
) -> Result<(String, String), ApiError> {
    let given = required("stream_id", &params.stream_id)?;
    if params.receiver_id.is_some() || params.sender_id.is_some() {
        let sender_id = required("sender_id", &params.sender_id)?;
        let receiver_id = required("receiver_id", &params.receiver_id)?;
        let stream_id = check_stream(Some(given), sender_id, receiver_id)?;
        caller.require_participant(sender_id, receiver_id)?;
        let user = caller.subject().unwrap_or(sender_id).to_owned();
        return Ok((stream_id, user));
    }
    let stream_id = required_stream_id(Some(given))?;
    let group = state
        .conversations
        .group(&stream_id)
        .await?
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "no group {stream_id:?}; a direct conversation names sender_id and receiver_id"
            ))
        })?;
    authorize_group_reader(caller, &group, params.user_id.as_ref())?;
    let user = match caller.subject() {
        Some(subject) => subject,
        None => required("user_id", &params.user_id)?,
    };
    Ok((stream_id, user.to_owned()))
}

#[cfg_attr(
    feature = "openapi",
    utoipa::path(
        get,
        path = "/chat/subscribe",
        tag = "websockets",
        summary = "Subscribe to a conversation (websocket)",
        description = "A websocket upgrade; each text frame is a ChatMessage (protocol 1), or with `protocol=2` a typed frame: `{\"type\": \"message\", \"message\": {...}}` or `{\"type\": \"read\", \"stream_id\", \"user_id\", \"message_id\", \"read_at\"}` or `{\"type\": \"typing\", \"stream_id\", \"user_id\", \"state\"}`; a protocol-2 client may send `{\"type\": \"typing\", \"state\": \"start\"|\"stop\"}` (at most 2 per second are relayed). A direct conversation names sender_id and receiver_id; a group names user_id, a member. With `since`, the messages after it are replayed from the store first, with no gap and no duplicate. Close codes: 1001 shutdown, 4000 delivery gave up, 4001 too slow, 4003 removed from the group, 1011 history unavailable; reconnect with since=<last message_id>. Alias: `/chat/subscribe-websocket`. Browsers pass the token as `access_token`.",
        params(
            ("stream_id" = String, Query, description = "Must match sender_id and receiver_id, or be a group's id", pattern = "^[0-9a-f]{16}$"),
            ("sender_id" = Option<String>, Query, description = "The subscribing participant of a direct conversation", min_length = 1, max_length = 256, pattern = r"^[^\x00-\x1f\x7f-\x9f]+$"),
            ("receiver_id" = Option<String>, Query, description = "The other participant of a direct conversation", min_length = 1, max_length = 256, pattern = r"^[^\x00-\x1f\x7f-\x9f]+$"),
            ("user_id" = Option<String>, Query, description = "The subscribing member of a group", min_length = 1, max_length = 256, pattern = r"^[^\x00-\x1f\x7f-\x9f]+$"),
            ("protocol" = Option<String>, Query, description = "1 (default): bare chat messages; 2: typed frames", pattern = "^[12]$"),
            ("since" = Option<String>, Query, description = "Replay the messages after this message_id first", min_length = 1, max_length = 256, pattern = r"^[^\x00-\x1f\x7f-\x9f]+$"),
            ("access_token" = Option<String>, Query, description = "The bearer token, for clients that cannot set headers"),
        ),
        responses(
            (status = 101, description = "Switching protocols; frames are ChatMessage JSON", body = ChatMessage),
            (status = 400, description = "Missing or mismatched parameters, or not a websocket request", body = ErrorBody),
            (status = 401, description = "Missing or invalid token", body = ErrorBody),
            (status = 403, description = "The subject is not a participant or member", body = ErrorBody),
            (status = 404, description = "No group has this stream_id", body = ErrorBody),
            (status = 426, description = "The connection cannot be upgraded", body = ErrorBody),
            (status = 429, description = "The user holds SOCKETS_PER_USER sockets already", body = ErrorBody),
        ),
        security((), ("bearer" = [])),
    )
)]
pub(super) async fn subscribe_chat(
    State(state): State<ChatTierState>,
    caller: Caller,
    QueryParams(params): QueryParams<ChatSubscribeParams>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let protocol = protocol(params.protocol.as_deref())?;
    let (stream_id, user) = subscriber(&state, &caller, &params).await?;
    if let Some(since) = &params.since {
        check_id("since", since)?;
    }
    let ws = state.session.websocket.apply(upgrade(ws)?);
    let slot = socket_slot(&state.quota, &user)?;
    // Registered before the 101 answer: once the client sees the handshake complete, nothing
    // broadcast to the stream can miss it.
    let mut subscription = Subscription::open_as(
        Arc::clone(&state.sockets),
        &stream_id,
        Some(&user),
        state.session.clone(),
    )
    .with_protocol(protocol);
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
