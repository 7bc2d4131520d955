use axum::extract::{FromRequestParts, Request};
use axum::http::{header, StatusCode};
use axum::routing::{get, post};
use axum::Router;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::chat_tier::ChatSubscribeParams;
use super::params::UserParams;
use super::persistence::HistoryParams;
use super::*;
use crate::sockets::DeliveryReport;
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
        with_common_layers(with_fallback(
            Router::new().route("/fine", get(|| async { "fine" })),
        )),
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
        if path == "/missing" {
            assert_eq!(response.status(), StatusCode::NOT_FOUND);
            let body = axum::body::to_bytes(response.into_body(), 1024)
                .await
                .expect("body");
            let json: Value = serde_json::from_slice(&body).expect("JSON 404");
            assert_eq!(json["error"], "no such route");
        }
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
    let history: HistoryParams = parse("/chat/messages?stream_id=s&limit=5&access_token=t").await;
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
