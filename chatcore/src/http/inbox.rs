//! The inbox routes of the notification tier: `GET /notifications`,
//! `GET /notifications/unread-count` and `POST /notifications/read`, plus the inbox replay of
//! `GET /notifications/subscribe?since=`.

use axum::extract::{DefaultBodyLimit, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{SubsecRound, Utc};
use serde::{Deserialize, Serialize};

use super::params::{parse_limit, required};
use super::{ApiError, JsonBody, NotificationTierState, QueryParams};
use crate::auth::Caller;
use crate::forward::Delivery;
use crate::inbox::{
    check_notification_id, InboxEntry, InboxQuery, InboxStore, ReadSelection, MAX_INBOX_LIMIT,
    MAX_READ_IDS,
};
use crate::sockets::Frame;

/// Body limit of `POST /notifications/read`: room for [`MAX_READ_IDS`] ids and a long user id.
const READ_BODY_LIMIT: usize = 64 * 1024;

/// The inbox routes over `state.inbox`.
pub(super) fn inbox_routes(state: NotificationTierState) -> Router {
    Router::new()
        .route("/notifications", get(list_notifications))
        .route("/notifications/unread-count", get(unread_count))
        .route(
            "/notifications/read",
            post(mark_read).layer(DefaultBodyLimit::max(READ_BODY_LIMIT)),
        )
        .with_state(state)
}

/// The answer of `GET /notifications`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NotificationPage {
    /// Entries, ascending by `notification_id`.
    pub notifications: Vec<InboxEntry>,
}

/// The answer of `GET /notifications/unread-count` and `POST /notifications/read`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UnreadCount {
    /// Whose inbox.
    pub user_id: String,
    /// Entries not read yet.
    pub unread: u64,
}

/// The body of `POST /notifications/read`: `notification_ids` or `up_to`, not both.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MarkRead {
    /// Whose inbox (with authentication, the token's subject).
    #[cfg_attr(
        feature = "openapi",
        schema(
            min_length = 1,
            max_length = 256,
            pattern = r"^[^\x00-\x1f\x7f-\x9f]+$"
        )
    )]
    pub user_id: String,
    /// Entries to mark read (at most 500; unknown ids are ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(max_items = 500, value_type = Option<Vec<String>>, pattern = "^[0-9a-f]{24}$"))]
    pub notification_ids: Option<Vec<String>>,
    /// Marks every entry up to and including this id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(pattern = "^[0-9a-f]{24}$"))]
    pub up_to: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct InboxParams {
    user_id: Option<String>,
    since: Option<String>,
    before: Option<String>,
    limit: Option<String>,
    unread: Option<String>,
}

fn parse_unread(unread: Option<&str>) -> Result<bool, ApiError> {
    match unread {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(_) => Err(ApiError::BadRequest(
            "unread must be true or false".to_owned(),
        )),
    }
}

fn cursor(field: &str, id: Option<String>) -> Result<Option<String>, ApiError> {
    if let Some(id) = &id {
        check_notification_id(field, id)?;
    }
    Ok(id)
}

#[cfg_attr(
    feature = "openapi",
    utoipa::path(
        get,
        path = "/notifications",
        tag = "notifications",
        summary = "Read a user's notification inbox",
        description = "Every notification pushed to the user (also while offline), ascending by notification_id: the first `limit` after `since`, or the `limit` just before `before`, like GET /chat/messages. With authentication, user_id must be the token's subject.",
        params(
            ("user_id" = String, Query, description = "The user", min_length = 1, max_length = 256, pattern = r"^[^\x00-\x1f\x7f-\x9f]+$"),
            ("since" = Option<String>, Query, description = "Exclusive lower bound, a notification_id", pattern = "^[0-9a-f]{24}$"),
            ("before" = Option<String>, Query, description = "Exclusive upper bound, a notification_id", pattern = "^[0-9a-f]{24}$"),
            ("limit" = Option<u32>, Query, description = "1 to 500, default 50 (larger values are clamped)", minimum = 1),
            ("unread" = Option<bool>, Query, description = "true: only entries not read yet"),
        ),
        responses(
            (status = 200, description = "A page of the inbox", body = NotificationPage),
            (status = 400, description = "Missing or malformed parameter", body = super::ErrorBody),
            (status = 401, description = "Missing or invalid bearer token", body = super::ErrorBody),
            (status = 403, description = "user_id is not the subject", body = super::ErrorBody),
            (status = 503, description = "The inbox is unavailable", body = super::ErrorBody),
        ),
        security((), ("bearer" = [])),
    )
)]
pub(super) async fn list_notifications(
    State(state): State<NotificationTierState>,
    caller: Caller,
    QueryParams(params): QueryParams<InboxParams>,
) -> Result<Json<NotificationPage>, ApiError> {
    let user_id = required("user_id", &params.user_id)?.to_owned();
    let query = InboxQuery {
        since: cursor("since", params.since)?,
        before: cursor("before", params.before)?,
        limit: parse_limit(params.limit.as_deref())?,
        unread_only: parse_unread(params.unread.as_deref())?,
        user_id,
    };
    caller.require_user(&query.user_id)?;
    let notifications = state.inbox.list(&query).await?;
    state.metrics.inbox_read(notifications.len() as u64);
    Ok(Json(NotificationPage { notifications }))
}

#[derive(Debug, Deserialize)]
pub(super) struct CountParams {
    user_id: Option<String>,
}

#[cfg_attr(
    feature = "openapi",
    utoipa::path(
        get,
        path = "/notifications/unread-count",
        tag = "notifications",
        summary = "Count a user's unread notifications",
        params(
            ("user_id" = String, Query, description = "The user", min_length = 1, max_length = 256, pattern = r"^[^\x00-\x1f\x7f-\x9f]+$"),
        ),
        responses(
            (status = 200, description = "The unread count", body = UnreadCount),
            (status = 400, description = "Missing or malformed user_id", body = super::ErrorBody),
            (status = 401, description = "Missing or invalid bearer token", body = super::ErrorBody),
            (status = 403, description = "user_id is not the subject", body = super::ErrorBody),
            (status = 503, description = "The inbox is unavailable", body = super::ErrorBody),
        ),
        security((), ("bearer" = [])),
    )
)]
pub(super) async fn unread_count(
    State(state): State<NotificationTierState>,
    caller: Caller,
    QueryParams(params): QueryParams<CountParams>,
) -> Result<Json<UnreadCount>, ApiError> {
    let user_id = required("user_id", &params.user_id)?.to_owned();
    caller.require_user(&user_id)?;
    let unread = state.inbox.unread_count(&user_id).await?;
    Ok(Json(UnreadCount { user_id, unread }))
}

fn selection(body: MarkRead) -> Result<(String, ReadSelection), ApiError> {
    let selection = match (body.notification_ids, body.up_to) {
        (Some(ids), None) if ids.len() > MAX_READ_IDS => {
            return Err(ApiError::PayloadTooLarge(format!(
                "at most {MAX_READ_IDS} notification_ids per request"
            )))
        }
        (Some(ids), None) => ReadSelection::Ids(ids),
        (None, Some(up_to)) => ReadSelection::UpTo(up_to),
        _ => {
            return Err(ApiError::BadRequest(
                "give either notification_ids or up_to".to_owned(),
            ))
        }
    };
    crate::inbox::check_selection(&selection)?;
    Ok((body.user_id, selection))
}

#[cfg_attr(
    feature = "openapi",
    utoipa::path(
        post,
        path = "/notifications/read",
        tag = "notifications",
        summary = "Mark notifications read",
        description = "Marks the given entries (unknown ids are ignored), or every entry up to and including `up_to`, read. Idempotent: an entry read once keeps its first read_at. Answers the unread count afterwards.",
        request_body = MarkRead,
        responses(
            (status = 200, description = "The unread count afterwards", body = UnreadCount),
            (status = 400, description = "Invalid JSON, a malformed id, or neither or both of notification_ids and up_to", body = super::ErrorBody),
            (status = 401, description = "Missing or invalid bearer token", body = super::ErrorBody),
            (status = 403, description = "user_id is not the subject", body = super::ErrorBody),
            (status = 413, description = "More than 500 ids, or a body over 64 KiB", body = super::ErrorBody),
            (status = 503, description = "The inbox is unavailable", body = super::ErrorBody),
        ),
        security((), ("bearer" = [])),
    )
)]
pub(super) async fn mark_read(
    State(state): State<NotificationTierState>,
    caller: Caller,
    JsonBody(body): JsonBody<MarkRead>,
) -> Result<Json<UnreadCount>, ApiError> {
    crate::model::check_id("user_id", &body.user_id)?;
    let (user_id, selection) = selection(body)?;
    caller.require_user(&user_id)?;
    let now = Utc::now().trunc_subsecs(3);
    let unread = state.inbox.mark_read(&user_id, &selection, now).await?;
    state.metrics.inbox_read_request();
    tracing::debug!(%user_id, unread, "notifications marked read");
    Ok(Json(UnreadCount { user_id, unread }))
}

/// Reads every entry of `user_id` after `since`, page by page, as socket frames.
pub(super) async fn replay_after(
    inbox: &dyn InboxStore,
    user_id: &str,
    mut since: String,
) -> Result<Vec<Frame>, ApiError> {
    let mut frames = Vec::new();
    loop {
        let query = InboxQuery::user(user_id)
            .since(since.clone())
            .limit(MAX_INBOX_LIMIT);
        let page = inbox.list(&query).await?;
        let full = page.len() == MAX_INBOX_LIMIT;
        for entry in &page {
            let delivery = Delivery::Notify {
                user_id: user_id.to_owned(),
                notification: entry.envelope(),
            };
            frames.push(delivery.frame()?);
        }
        match page.last() {
            Some(last) if full => since = last.notification_id.clone(),
            _ => return Ok(frames),
        }
    }
}
