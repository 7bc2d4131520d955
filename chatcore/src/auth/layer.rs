//! The axum layer: the token of a request, verified in front of a router.

use std::sync::Arc;

use axum::extract::{Query, Request};
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::IntoResponse;
use axum::Router;
use serde::Deserialize;

use super::{AuthError, Authenticator};
use crate::http::ApiError;

#[derive(Deserialize)]
struct TokenParam {
    access_token: Option<String>,
}

fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.eq_ignore_ascii_case("websocket"))
}

/// The token of a request: `Authorization: Bearer <token>` or, on a websocket upgrade only, the
/// [`ACCESS_TOKEN_PARAM`](crate::auth::ACCESS_TOKEN_PARAM) query parameter.
pub fn request_token(request: &Request) -> Result<String, AuthError> {
    let from_header = match request.headers().get(header::AUTHORIZATION) {
        None => None,
        Some(value) => {
            let value = value.to_str().map_err(|_| AuthError::NotBearer)?;
            let (scheme, token) = value.split_once(' ').ok_or(AuthError::NotBearer)?;
            let token = token.trim();
            if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
                return Err(AuthError::NotBearer);
            }
            Some(token.to_owned())
        }
    };
    let from_query = if is_websocket_upgrade(request.headers()) {
        Query::<TokenParam>::try_from_uri(request.uri())
            .ok()
            .and_then(|Query(param)| param.access_token)
            .filter(|token| !token.is_empty())
    } else {
        None
    };
    match (from_header, from_query) {
        (Some(_), Some(_)) => Err(AuthError::Ambiguous),
        (Some(token), None) | (None, Some(token)) => Ok(token),
        (None, None) => Err(AuthError::Missing),
    }
}

/// Requires a valid token on every route of `router` (apply it before merging into a larger
/// router; routes merged later are not covered): the caller is put in the request's extensions
/// as [`Caller::User`](crate::auth::Caller::User), and a request without a valid token is answered 401 JSON with
/// `WWW-Authenticate: Bearer` before it reaches a handler.
pub fn require_auth(router: Router, authenticator: Arc<Authenticator>) -> Router {
    router.route_layer(axum::middleware::from_fn(
        move |mut request: Request, next: Next| {
            let verified = request_token(&request).and_then(|token| authenticator.verify(&token));
            async move {
                match verified {
                    Ok(caller) => {
                        request.extensions_mut().insert(caller);
                        next.run(request).await
                    }
                    Err(error) => {
                        tracing::debug!(%error, path = request.uri().path(), "request refused");
                        ApiError::from(error).into_response()
                    }
                }
            }
        },
    ))
}
