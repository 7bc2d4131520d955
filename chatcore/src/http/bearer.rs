//! A shared bearer token in front of the internal routes.

use std::sync::Arc;

use axum::extract::Request;
use axum::http::header;
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::Router;
use sha2::{Digest, Sha256};

use super::ApiError;

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
