//! Per-user request rate limits as an axum layer, on the GCRA limiter of the `governor` crate.
//!
//! The key is the authenticated caller ([`Caller::User`]). Anonymous requests (authentication
//! off) are not limited here: without a verified identity the only other key would be the peer
//! address, which behind a balancer is the balancer's; limit those in the balancer (nginx's
//! `limit_req`). A request over the limit is answered 429 with a JSON error and a `Retry-After`
//! header and never reaches the handler.
//!
//! ```
//! use axum::{routing::post, Router};
//! use chatcore::http::rate_limit::{RateLimit, RateLimiter};
//! let limit = RateLimit { per_second: 10, burst: 20 };
//! let router: Router = RateLimiter::new(limit).layer(
//!     Router::new().route("/chat/messages", post(|| async { "stored" })),
//! );
//! # let _ = router;
//! ```

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use axum::Router;
use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::Quota;

use super::ApiError;
use crate::auth::Caller;

/// Requests per second a key may make on average, and how many at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Sustained rate.
    pub per_second: u32,
    /// Requests allowed in a burst (at least 1).
    pub burst: u32,
}

type KeyedLimiter = governor::RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock>;

/// How often (in checked requests) the limiter forgets keys that are back to a full burst.
const FORGET_EVERY: u64 = 4096;

/// A keyed limiter shared by every clone of the routes it guards.
#[derive(Clone)]
pub struct RateLimiter {
    limiter: Arc<KeyedLimiter>,
    checked: Arc<AtomicU64>,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter").finish_non_exhaustive()
    }
}

impl RateLimiter {
    /// A limiter allowing `limit` per key. A zero rate or burst is raised to 1.
    pub fn new(limit: RateLimit) -> Self {
        let per_second = NonZeroU32::new(limit.per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(limit.burst).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::per_second(per_second).allow_burst(burst);
        Self {
            limiter: Arc::new(governor::RateLimiter::keyed(quota)),
            checked: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Guards every route of `router` (apply it before merging into a larger router, and inside
    /// an authentication layer so the caller is known).
    pub fn layer(self, router: Router) -> Router {
        router.route_layer(axum::middleware::from_fn(
            move |request: Request, next: Next| self.clone().guard(request, next),
        ))
    }

    /// Guards one method router, e.g. only the `POST` of a path.
    pub fn layer_method<S>(self, route: MethodRouter<S>) -> MethodRouter<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        route.route_layer(axum::middleware::from_fn(
            move |request: Request, next: Next| self.clone().guard(request, next),
        ))
    }

    async fn guard(self, request: Request, next: Next) -> Response {
        let Some(Caller::User(subject)) = request.extensions().get::<Caller>() else {
            return next.run(request).await;
        };
        match self.check(subject) {
            Ok(()) => next.run(request).await,
            Err(wait) => too_many_requests(wait),
        }
    }

    /// Counts one request of `key`; `Err` carries how long until the next one is allowed.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        if self.checked.fetch_add(1, Ordering::Relaxed) % FORGET_EVERY == FORGET_EVERY - 1 {
            self.limiter.retain_recent();
        }
        self.limiter
            .check_key(&key.to_owned())
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}

fn too_many_requests(wait: Duration) -> Response {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let mut response =
        ApiError::TooManyRequests(format!("rate limit exceeded; retry in {seconds} s"))
            .into_response();
    if let Ok(value) = HeaderValue::from_str(&seconds.max(1).to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::post;
    use tower::ServiceExt;

    async fn status(router: &Router, user: Option<&str>) -> (u16, Option<String>) {
        let mut request = Request::post("/p").body(Body::empty()).expect("request");
        if let Some(user) = user {
            request
                .extensions_mut()
                .insert(Caller::User(user.to_owned()));
        }
        let response = router.clone().oneshot(request).await.expect("response");
        let retry = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        (response.status().as_u16(), retry)
    }

    #[tokio::test]
    async fn each_user_gets_the_burst_then_429_with_retry_after() {
        let router = RateLimiter::new(RateLimit {
            per_second: 1,
            burst: 3,
        })
        .layer(Router::new().route("/p", post(|| async { "ok" })));
        for _ in 0..3 {
            assert_eq!(status(&router, Some("alice")).await, (200, None));
        }
        let (code, retry) = status(&router, Some("alice")).await;
        assert_eq!(code, 429);
        assert_eq!(retry.as_deref(), Some("1"));
        assert_eq!(
            status(&router, Some("bob")).await.0,
            200,
            "bob has his own budget"
        );
        for _ in 0..5 {
            assert_eq!(
                status(&router, None).await.0,
                200,
                "anonymous is not limited"
            );
        }
    }
}
