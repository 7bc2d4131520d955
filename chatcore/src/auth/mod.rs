//! Authentication of the client routes with JWT bearer tokens.
//!
//! An [`Authenticator`] verifies a token and turns its subject (`sub`) into
//! [`Caller::User`]; [`require_auth`] puts it in front of a router. The route handlers then
//! authorize with the caller ([`Caller::require_user`], [`Caller::require_participant`]): a
//! valid token acting on someone else's data is a 403, a missing or invalid one a 401.
//!
//! Keys and algorithms:
//!
//! - **HS256** with a shared secret ([`AuthConfig::hs256_secret`], at least 32 bytes as RFC 7518
//!   §3.2 requires);
//! - **RS256** (RSA keys of at least 2048 bits) and **ES256** (EC P-256 keys) with the public keys
//!   of a JWK set ([`AuthConfig::jwks`], [`load_jwks`]). A token names its key with the `kid`
//!   header; a token without `kid` may use the set's key when the set has exactly one usable
//!   key.
//!
//! Every key is pinned to one algorithm: the secret only verifies HS256, an RSA key only RS256,
//! a P-256 key only ES256, whatever the token's header says. So `alg: none` is refused, and so is
//! the classic confusion where an HS256 token is "signed" with an RSA public key used as the HMAC
//! secret. Keys embedded in or referenced by the token (`jwk`, `jku`, `x5u`, `x5c`) are never
//! used. The claims checked are the signature, `exp` (required), `nbf` (when present), `iss` and
//! `aud` when configured (then required), and `sub` (required, an id as
//! [`crate::model::check_id`] defines it), with a small leeway for clock skew.
//!
//! ```
//! use std::sync::Arc;
//! use axum::{routing::get, Router};
//! use chatcore::auth::{require_auth, AuthConfig, Authenticator};
//! use chatcore::auth::Caller;
//!
//! let auth = Authenticator::new(
//!     AuthConfig::default()
//!         .hs256_secret("an example secret of at least 32 bytes!")
//!         .issuer("https://login.example.com/"),
//! )
//! .expect("valid configuration");
//! let app = require_auth(
//!     Router::new().route("/whoami", get(|caller: Caller| async move { format!("{caller:?}") })),
//!     Arc::new(auth),
//! );
//! # let _ = app;
//! ```
//!
//! The JWK set is read once, when the authenticator is built: key rotation means restarting the
//! service with the new set (publish the new key in the set before tokens use it).

mod caller;
#[cfg(feature = "auth-jwt")]
mod config;
#[cfg(feature = "auth-jwt")]
mod error;
#[cfg(feature = "auth-jwt")]
mod jwks;
#[cfg(all(feature = "auth-jwt", feature = "http"))]
mod layer;
#[cfg(all(test, feature = "auth-jwt", feature = "http"))]
mod tests;
#[cfg(feature = "auth-jwt")]
mod verify;

pub use caller::{Caller, Forbidden};
#[cfg(feature = "auth-jwt")]
pub use config::{
    AuthConfig, ACCESS_TOKEN_PARAM, DEFAULT_LEEWAY, MAX_TOKEN_BYTES, MIN_HS256_SECRET_BYTES,
    MIN_RSA_BITS,
};
#[cfg(feature = "auth-jwt")]
pub use error::{AuthConfigError, AuthError};
#[cfg(feature = "auth-jwt")]
pub use jwks::{load_jwks, parse_jwks};
#[cfg(all(feature = "auth-jwt", feature = "http"))]
pub use layer::{request_token, require_auth};
#[cfg(feature = "auth-jwt")]
pub use verify::Authenticator;
