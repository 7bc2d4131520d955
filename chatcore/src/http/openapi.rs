//! The OpenAPI 3.1 description of the client-facing API, generated from the handlers' own
//! annotations (`#[utoipa::path]`) and the model's schemas, served at `GET /openapi.json`.
//!
//! The internal routes are not part of it: they are for the change handler, not for clients.

use axum::routing::get;
use axum::{Json, Router};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::conversations::{ConversationList, ReadReceipt, ReadState};
use super::inbox::{MarkRead, NotificationPage, UnreadCount};
use super::{ErrorBody, HistoryPage};
use crate::conversation::list::ConversationSummary;
use crate::conversation::{Conversation, ConversationKind, MembershipChange, NewGroup};
use crate::inbox::InboxEntry;
use crate::model::{
    ChatMessage, NewChatMessage, Notification, NotificationType, PaymentReminder, PurchaseUpdate,
    ShippingUpdate,
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "chatcore",
        description = "Real-time chat and notifications: messages are written once to a store and delivered to websockets from its change feed. With AUTH_MODE=jwt every route but /healthz, /readyz, /metrics and /openapi.json needs a bearer token whose subject is the acting user."
    ),
    paths(
        super::persistence::post_message,
        super::persistence::get_history,
        super::chat_tier::subscribe_chat,
        super::notification_tier::subscribe_notifications,
        super::inbox::list_notifications,
        super::inbox::unread_count,
        super::inbox::mark_read,
        super::conversations::create_group,
        super::conversations::list_conversations,
        super::conversations::get_conversation,
        super::conversations::change_members,
        super::conversations::mark_read,
        super::ops::healthz,
        super::ops::readyz,
        super::ops::metrics,
    ),
    components(schemas(
        ChatMessage,
        NewChatMessage,
        HistoryPage,
        ErrorBody,
        Notification,
        NotificationType,
        PurchaseUpdate,
        PaymentReminder,
        ShippingUpdate,
        InboxEntry,
        NotificationPage,
        UnreadCount,
        MarkRead,
        Conversation,
        ConversationKind,
        NewGroup,
        MembershipChange,
        ConversationSummary,
        ConversationList,
        ReadReceipt,
        ReadState
    )),
    modifiers(&BearerScheme),
    tags(
        (name = "chat", description = "Storing and reading messages"),
        (name = "websockets", description = "Live delivery"),
        (name = "notifications", description = "The notification inbox: every notification kept, with read state"),
        (name = "conversations", description = "Groups, the conversation list and read receipts"),
        (name = "operations", description = "Health, readiness and metrics"),
    )
)]
struct ApiDoc;

/// Declares the `bearer` security scheme the paths refer to.
struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .bearer_format("JWT")
            .build();
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// The API description, built from the handlers.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    let mut document = ApiDoc::openapi();
    document.info.version = env!("CARGO_PKG_VERSION").to_owned();
    document
}

/// `GET /openapi.json`: the document, rendered once. Serve it unauthenticated beside the client
/// routes.
pub fn openapi_router() -> Router {
    let document = Json(openapi_document());
    Router::new().route(
        "/openapi.json",
        get(move || async move { document.clone() }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn the_document_describes_every_client_route_with_its_errors() {
        let json: Value = serde_json::to_value(openapi_document()).expect("JSON");
        assert!(json["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.")));
        let paths = json["paths"].as_object().expect("paths");
        for (path, method) in [
            ("/chat/messages", "post"),
            ("/chat/messages", "get"),
            ("/chat/subscribe", "get"),
            ("/notifications/subscribe", "get"),
            ("/notifications", "get"),
            ("/notifications/unread-count", "get"),
            ("/notifications/read", "post"),
            ("/conversations", "post"),
            ("/conversations", "get"),
            ("/conversations/{stream_id}", "get"),
            ("/conversations/{stream_id}/members", "post"),
            ("/chat/read", "post"),
            ("/healthz", "get"),
        ] {
            assert!(paths[path][method].is_object(), "{method} {path}");
        }
        let post = &paths["/chat/messages"]["post"];
        for status in ["201", "400", "401", "403", "413", "429", "503"] {
            assert!(post["responses"][status].is_object(), "POST {status}");
        }
        assert!(
            !paths.contains_key("/chat/forward-to-websocket"),
            "internal routes stay out"
        );
        let read = &paths["/notifications/read"]["post"];
        for status in ["200", "400", "401", "403", "413", "503"] {
            assert!(read["responses"][status].is_object(), "POST read {status}");
        }
        let entry = &json["components"]["schemas"]["InboxEntry"]["properties"];
        for field in [
            "notification_id",
            "user_id",
            "notification_type",
            "timestamp",
            "payload",
            "read_at",
        ] {
            assert!(entry[field].is_object(), "InboxEntry.{field}");
        }
        let schema = &json["components"]["schemas"]["NewChatMessage"];
        let required: Vec<&str> = schema["required"]
            .as_array()
            .expect("required")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(
            required,
            ["content", "sender_id"],
            "receiver_id: direct only"
        );
        assert_eq!(
            json["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
    }
}
