//! The layers every service wants: a panic catcher, request tracing, the node header, and the
//! JSON 404 fallback for the outermost router.

use axum::extract::Request;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Router;

use super::ApiError;

/// Header naming the node that answered (`NODE_ID`), so a client or a test can see where a
/// balancer placed it.
pub const NODE_HEADER: &str = "x-chatcore-node";

/// Adds [`NODE_HEADER`]`: node_id` to every response of `router`, websocket upgrades included.
pub fn with_node_id(router: Router, node_id: &str) -> Router {
    let value = match header::HeaderValue::from_str(node_id) {
        Ok(value) => value,
        Err(_) => {
            tracing::warn!(node_id, "NODE_ID is not a valid header value; not sent");
            return router;
        }
    };
    router.layer(axum::middleware::map_response(
        move |mut response: Response| {
            let value = value.clone();
            async move {
                response.headers_mut().insert(NODE_HEADER, value);
                response
            }
        },
    ))
}

/// Wraps a router with the layers every service wants: a panic catcher that answers 500 instead
/// of dropping the connection, and request tracing. It installs no fallback, so the result
/// merges into a router that has its own; see [`with_fallback`]. The request span records
/// the path without the query, which may carry an `access_token`.
pub fn with_common_layers(router: Router) -> Router {
    router
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            |_: Box<dyn std::any::Any + Send>| {
                tracing::error!("handler panicked");
                ApiError::Internal("internal error".to_owned()).into_response()
            },
        ))
        .layer(
            tower_http::trace::TraceLayer::new_for_http().make_span_with(|request: &Request| {
                tracing::debug_span!(
                    "request",
                    method = %request.method(),
                    path = %request.uri().path(),
                    version = ?request.version(),
                )
            }),
        )
}

/// Answers every path `router` does not route with a JSON 404, `{"error": "no such route"}`.
/// Put it on the outermost router only: axum refuses to merge two routers that both have a
/// fallback.
///
/// ```
/// use axum::{routing::get, Router};
/// let app = chatcore::http::with_fallback(Router::new().route("/fine", get(|| async { "fine" })));
/// # let _ = app;
/// ```
pub fn with_fallback(router: Router) -> Router {
    router.fallback(|| async { ApiError::NotFound("no such route".to_owned()) })
}
