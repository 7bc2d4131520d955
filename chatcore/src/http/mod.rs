//! The HTTP and websocket surface as composable axum routers.
//!
//! Each tier is its own router with its own state, so a service mounts exactly the parts it runs:
//! [`persistence_router`], [`chat_tier_router`], [`notification_tier_router`], [`internal_router`]
//! and [`ops_router`]. None of them installs a fallback, so they merge into a router that has
//! one; [`with_fallback`] adds the JSON 404 to the outermost router. Errors are typed in the
//! library and mapped to a status once, in [`ApiError`] (`http/error.rs`).

mod bearer;
#[cfg(feature = "ws")]
mod chat_tier;
mod conversations;
mod error;
mod extract;
#[cfg(feature = "ws")]
mod inbox;
mod internal;
mod layers;
mod limits;
#[cfg(feature = "ws")]
mod notification_tier;
#[cfg(feature = "openapi")]
mod openapi;
mod ops;
mod params;
mod persistence;
#[cfg(feature = "rate-limit")]
#[cfg_attr(docsrs, doc(cfg(feature = "rate-limit")))]
pub mod rate_limit;
#[cfg(test)]
mod tests;
#[cfg(feature = "ws")]
mod upgrade;

pub use bearer::require_bearer;
#[cfg(feature = "ws")]
pub use chat_tier::{chat_tier_router, ChatTierState};
pub use conversations::{
    conversations_router, ChatTier, ConversationList, ConversationsState, ReadReceipt, ReadState,
};
pub use error::{ApiError, ErrorBody};
pub use extract::{JsonBody, QueryParams};
#[cfg(feature = "ws")]
pub use inbox::{MarkRead, NotificationPage, UnreadCount};
pub use internal::{
    chat_internal_router, internal_router, notification_internal_router, report_response,
    InternalState,
};
pub use layers::{with_common_layers, with_fallback, with_node_id, NODE_HEADER};
pub use limits::Limits;
#[cfg(feature = "ws")]
pub use notification_tier::{notification_tier_router, NotificationTierState};
#[cfg(feature = "openapi")]
pub use openapi::{openapi_document, openapi_router};
pub use ops::{
    conversations_readiness, inbox_readiness, ops_router, store_readiness, OpsState, ReadinessCheck,
};
pub use persistence::{persistence_router, HistoryPage, PersistenceState};

/// Name of the request header carrying a client's idempotency key.
pub use crate::headers::IDEMPOTENCY_KEY_HEADER;
