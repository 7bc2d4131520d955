//! The internal e-mail routes, `POST /email/chat` and `POST /email/purchased`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::json;

use crate::http::{ApiError, JsonBody, Limits};
use crate::model::{ChatMessage, PurchaseUpdate};

use super::{EmailMessage, EmailService, EmailServiceError};

impl From<EmailServiceError> for ApiError {
    fn from(error: EmailServiceError) -> Self {
        match &error {
            EmailServiceError::UnknownRecipient(_) => Self::NotFound(error.to_string()),
            EmailServiceError::Directory(_) => Self::Unavailable(error.to_string()),
            EmailServiceError::Send(_) => Self::Status {
                status: StatusCode::BAD_GATEWAY,
                message: error.to_string(),
            },
        }
    }
}

/// State of the e-mail routes.
#[derive(Clone, Debug)]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub struct EmailState {
    /// Renders and sends.
    pub service: EmailService,
    /// Limits applied to the chat messages posted.
    pub limits: Limits,
}

/// The internal e-mail routes: `POST /email/chat` (body a chat message; e-mails its
/// `receiver_id`) and `POST /email/purchased` (body a `PurchaseUpdate`; e-mails its
/// `shop_owner_id`). 201 `{"user_id", "subject"}` when sent, 400 on a bad body, 404 for an
/// unknown recipient, 502 when the mail server failed, 503 when the directory is unavailable;
/// every error as `{"error": ...}`. Mount it where only trusted callers reach it (an internal
/// listener, or behind [`crate::http::require_bearer`]). No fallback: it merges into any router.
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub fn email_router(state: EmailState) -> Router {
    let body_limit = state.limits.body_limit();
    Router::new()
        .route("/email/chat", post(email_chat))
        .route("/email/purchased", post(email_purchased))
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

fn sent(user_id: &str, email: &EmailMessage) -> Response {
    (
        StatusCode::CREATED,
        Json(json!({ "user_id": user_id, "subject": email.subject })),
    )
        .into_response()
}

async fn email_chat(
    State(state): State<EmailState>,
    JsonBody(message): JsonBody<ChatMessage>,
) -> Result<Response, ApiError> {
    message.check(state.limits.max_content_bytes)?;
    let Some(receiver) = message.receiver_id.clone() else {
        return Err(ApiError::BadRequest(
            "a group message has no receiver to e-mail".to_owned(),
        ));
    };
    let email = state.service.send_chat(&message).await?;
    Ok(sent(&receiver, &email))
}

async fn email_purchased(
    State(state): State<EmailState>,
    JsonBody(update): JsonBody<PurchaseUpdate>,
) -> Result<Response, ApiError> {
    crate::model::check_id("order_id", &update.order_id)?;
    crate::model::check_id("shop_owner_id", &update.shop_owner_id)?;
    let email = state.service.send_purchase(&update).await?;
    Ok(sent(&update.shop_owner_id, &email))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::Value;

    use super::*;
    use crate::email::fixtures::{directory, message, purchase, Down, Unreachable};
    use crate::email::InMemoryEmailSender;

    async fn post(router: &Router, path: &str, body: Value) -> (StatusCode, Value) {
        use tower::ServiceExt;
        let request = axum::http::Request::post(path)
            .header("content-type", "application/json")
            .body(axum::body::Body::from(body.to_string()))
            .expect("request");
        let response = router.clone().oneshot(request).await.expect("response");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    #[tokio::test]
    async fn the_email_routes_answer_201_404_400_and_502() {
        let outbox = Arc::new(InMemoryEmailSender::new());
        let router = email_router(EmailState {
            service: EmailService::new(directory(), outbox.clone()),
            limits: Limits::default(),
        });
        let chat = serde_json::to_value(message("alice", "bob", "hi")).expect("json");
        let (status, body) = post(&router, "/email/chat", chat.clone()).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["subject"], "New message from Alice");
        let (status, _) = post(
            &router,
            "/email/purchased",
            serde_json::to_value(purchase()).expect("json"),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);
        let sent = outbox.sent();
        assert_eq!(sent.len(), 2);
        assert_eq!(sent[1].to, "owner@example.com");

        let stranger = serde_json::to_value(message("alice", "carol", "hi")).expect("json");
        let (status, body) = post(&router, "/email/chat", stranger).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body["error"].as_str().is_some_and(|e| e.contains("carol")));
        let (status, body) = post(&router, "/email/chat", json!({"content": "x"})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body["error"].is_string());
        let mut forged = chat.clone();
        forged["stream_id"] = "0000000000000000".into();
        assert_eq!(
            post(&router, "/email/chat", forged).await.0,
            StatusCode::BAD_REQUEST
        );

        let failing = email_router(EmailState {
            service: EmailService::new(directory(), Arc::new(Down)),
            limits: Limits::default(),
        });
        let (status, body) = post(&failing, "/email/chat", chat).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY);
        assert!(body["error"].is_string());
    }

    #[tokio::test]
    async fn an_unreachable_directory_is_503_on_the_route() {
        let outbox = Arc::new(InMemoryEmailSender::new());
        let router = email_router(EmailState {
            service: EmailService::new(Arc::new(Unreachable), outbox.clone()),
            limits: Limits::default(),
        });
        let chat = serde_json::to_value(message("alice", "bob", "hi")).expect("json");
        let (status, body) = post(&router, "/email/chat", chat).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(outbox.sent().is_empty());
    }
}
