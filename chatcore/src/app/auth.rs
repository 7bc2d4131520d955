//! The explicit choice of authentication for a node's client routes.

#[cfg(feature = "auth-jwt")]
use std::sync::Arc;

use axum::Router;

#[cfg(feature = "auth-jwt")]
use crate::auth::Authenticator;

/// How a node authenticates its client routes (persistence, both websocket tiers, the inbox; the
/// operational routes and the API description stay open). There is no default: a node is built
/// only once one is chosen, so an unauthenticated deployment is a decision, not an accident.
#[derive(Clone)]
#[non_exhaustive]
pub enum Auth {
    /// No authentication: every caller is anonymous and may act as any user. For embedded
    /// demos, tests, and services behind a gateway that authenticates for them.
    Disabled,
    /// JWT bearer tokens; the token's subject is the user a request may act as.
    #[cfg(feature = "auth-jwt")]
    #[cfg_attr(docsrs, doc(cfg(feature = "auth-jwt")))]
    Jwt(Arc<Authenticator>),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Disabled => f.write_str("Auth::Disabled"),
            #[cfg(feature = "auth-jwt")]
            Self::Jwt(_) => f.write_str("Auth::Jwt(..)"),
        }
    }
}

impl Auth {
    /// No authentication.
    pub fn disabled() -> Self {
        Self::Disabled
    }

    /// Bearer tokens verified by `authenticator`.
    #[cfg(feature = "auth-jwt")]
    #[cfg_attr(docsrs, doc(cfg(feature = "auth-jwt")))]
    pub fn jwt(authenticator: impl Into<Arc<Authenticator>>) -> Self {
        Self::Jwt(authenticator.into())
    }

    /// Guards every route of `router` (routes merged into it later are not covered).
    pub(crate) fn guard(&self, router: Router) -> Router {
        match self {
            Self::Disabled => router,
            #[cfg(feature = "auth-jwt")]
            Self::Jwt(authenticator) => crate::auth::require_auth(router, authenticator.clone()),
        }
    }
}
