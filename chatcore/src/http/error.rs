//! The one place where library errors become HTTP answers: [`ApiError`] and every
//! `From<_> for ApiError`.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use crate::auth::Forbidden;
use crate::conversation::list::ListError;
use crate::conversation::ConversationError;
use crate::forward::ForwardError;
use crate::inbox::InboxError;
use crate::model::ValidationError;
use crate::store::StoreError;

/// The body of every error answer (for the API description; [`ApiError`] renders it).
#[derive(Debug, Clone, serde::Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
            ValidationError::NotAMember(_) => Self::Forbidden(error.to_string()),
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

impl From<ConversationError> for ApiError {
    fn from(error: ConversationError) -> Self {
        match error {
            ConversationError::Unavailable(_) => Self::Unavailable(error.to_string()),
            ConversationError::NotFound(_) => Self::NotFound(error.to_string()),
            ConversationError::NotAMember(_) => Self::Forbidden(error.to_string()),
            ConversationError::Limit(_) => Self::BadRequest(error.to_string()),
            _ => Self::Internal(error.to_string()),
        }
    }
}

impl From<ListError> for ApiError {
    fn from(error: ListError) -> Self {
        match error {
            ListError::Conversations(error) => error.into(),
            ListError::Store(error) => error.into(),
        }
    }
}

impl From<ForwardError> for ApiError {
    fn from(error: ForwardError) -> Self {
        Self::Internal(error.to_string())
    }
}

impl From<Forbidden> for ApiError {
    fn from(error: Forbidden) -> Self {
        Self::Forbidden(error.to_string())
    }
}

impl From<InboxError> for ApiError {
    fn from(error: InboxError) -> Self {
        match error {
            InboxError::Unavailable(_) => Self::Unavailable(error.to_string()),
            InboxError::InvalidId(_) => Self::BadRequest(error.to_string()),
            _ => Self::Internal(error.to_string()),
        }
    }
}

#[cfg(feature = "auth-jwt")]
impl From<crate::auth::AuthError> for ApiError {
    fn from(error: crate::auth::AuthError) -> Self {
        match error {
            crate::auth::AuthError::Ambiguous => Self::BadRequest(error.to_string()),
            other => Self::Unauthorized(other.to_string()),
        }
    }
}
