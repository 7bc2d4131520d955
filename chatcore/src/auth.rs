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
//! use chatcore::http::Caller;
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

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, Request};
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::IntoResponse;
use axum::Router;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;

use crate::http::{ApiError, Caller};
use crate::model::check_id;

/// The default leeway granted to `exp` and `nbf` for clock skew.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);

/// The shortest HS256 secret accepted, in bytes (RFC 7518 §3.2: at least the hash size).
pub const MIN_HS256_SECRET_BYTES: usize = 32;

/// The smallest RSA modulus accepted, in bits.
pub const MIN_RSA_BITS: usize = 2048;

/// Tokens longer than this are refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// The query parameter carrying the token on websocket upgrades (browsers cannot set headers on
/// a websocket handshake).
pub const ACCESS_TOKEN_PARAM: &str = "access_token";

/// Why a token was refused. The messages name the failed check and never any key material, so
/// they are safe to answer to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The request carries no token.
    #[error("a bearer token is required (Authorization: Bearer <token>, or access_token=<token> on websocket upgrades)")]
    Missing,
    /// The `Authorization` header is present but is not `Bearer <token>`.
    #[error("the Authorization header must be \"Bearer <token>\"")]
    NotBearer,
    /// The token is given both in the header and in the query.
    #[error(
        "the token must be given once: in the Authorization header or in access_token, not both"
    )]
    Ambiguous,
    /// The token is not a well-formed JWT.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// The token's algorithm is not accepted (e.g. `none`), or no key of that kind is configured.
    #[error("token algorithm {0:?} is not accepted")]
    UnsupportedAlgorithm(String),
    /// The token names a critical header extension this server does not understand.
    #[error("token has critical header extensions this server does not support")]
    CriticalHeader,
    /// No configured key matches the token's `kid` (or the token has no `kid` and the key set
    /// has several keys).
    #[error("no key for this token's kid")]
    UnknownKey {
        /// The token's `kid`, if any.
        kid: Option<String>,
    },
    /// The key the token names is pinned to another algorithm than the token's.
    #[error("token algorithm {token:?} does not match its key's {key:?}")]
    AlgorithmMismatch {
        /// The algorithm of the key.
        key: Algorithm,
        /// The algorithm of the token's header.
        token: Algorithm,
    },
    /// The signature does not verify.
    #[error("invalid token signature")]
    InvalidSignature,
    /// `exp` is past (beyond the leeway).
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    #[error("token not yet valid")]
    NotYetValid,
    /// `iss` is not the configured issuer.
    #[error("wrong token issuer")]
    WrongIssuer,
    /// `aud` names none of the configured audiences.
    #[error("wrong token audience")]
    WrongAudience,
    /// A required claim is absent (or, for `exp`, `iss` and `aud`, not of the right type).
    #[error("missing or invalid {0} claim")]
    MissingClaim(String),
    /// A claim has the wrong type or an invalid value.
    #[error("invalid token claim {claim}: {reason}")]
    InvalidClaim {
        /// The claim.
        claim: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

impl From<AuthError> for ApiError {
    fn from(error: AuthError) -> Self {
        match error {
            AuthError::Ambiguous => ApiError::BadRequest(error.to_string()),
            other => ApiError::Unauthorized(other.to_string()),
        }
    }
}

/// A key configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    /// Neither a secret nor a JWK set is configured.
    #[error("no key configured: give an HS256 secret or a JWK set")]
    NoKeys,
    /// The HS256 secret is too short.
    #[error("the HS256 secret is {0} bytes; at least {MIN_HS256_SECRET_BYTES} are required")]
    WeakSecret(usize),
    /// The JWK set file cannot be read.
    #[error("cannot read {path}: {source}")]
    ReadJwks {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The JWK set is not valid JSON of a JWK set.
    #[error("not a JWK set: {0}")]
    InvalidJwks(String),
    /// A key of the set is invalid.
    #[error("key {kid}: {reason}")]
    InvalidKey {
        /// The key's `kid`, or its position in the set.
        kid: String,
        /// What is wrong.
        reason: String,
    },
    /// Two keys of the set share a `kid`.
    #[error("two keys share the kid {0:?}")]
    DuplicateKid(String),
    /// The JWK set holds no RS256 or ES256 signature key.
    #[error(
        "the JWK set has no usable key (RSA for RS256 or EC P-256 for ES256, \"use\": \"sig\")"
    )]
    NoUsableKey,
    /// A configured issuer or audience is empty.
    #[error("{0} must not be empty")]
    Empty(&'static str),
}

/// What an [`Authenticator`] accepts.
#[derive(Clone)]
pub struct AuthConfig {
    /// The HS256 shared secret.
    pub hs256_secret: Option<Vec<u8>>,
    /// Public keys for RS256 and ES256.
    pub jwks: Option<JwkSet>,
    /// The required `iss`, if any.
    pub issuer: Option<String>,
    /// Accepted audiences: when not empty, `aud` is required and must name at least one of them.
    /// When empty, `aud` is not checked.
    pub audiences: Vec<String>,
    /// Leeway granted to `exp` and `nbf` (whole seconds are used).
    pub leeway: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            hs256_secret: None,
            jwks: None,
            issuer: None,
            audiences: Vec::new(),
            leeway: DEFAULT_LEEWAY,
        }
    }
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field(
                "hs256_secret",
                &self.hs256_secret.as_ref().map(|_| "[redacted]"),
            )
            .field("jwks_keys", &self.jwks.as_ref().map(|set| set.keys.len()))
            .field("issuer", &self.issuer)
            .field("audiences", &self.audiences)
            .field("leeway", &self.leeway)
            .finish()
    }
}

impl AuthConfig {
    /// Accepts HS256 tokens signed with `secret`.
    pub fn hs256_secret(mut self, secret: impl AsRef<[u8]>) -> Self {
        self.hs256_secret = Some(secret.as_ref().to_vec());
        self
    }

    /// Accepts RS256 and ES256 tokens signed by the keys of `jwks`.
    pub fn jwks(mut self, jwks: JwkSet) -> Self {
        self.jwks = Some(jwks);
        self
    }

    /// Requires `iss` to be `issuer`.
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = Some(issuer.into());
        self
    }

    /// Adds an accepted audience; with at least one, `aud` is required.
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audiences.push(audience.into());
        self
    }

    /// Sets the leeway granted to `exp` and `nbf`.
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }
}

/// Parses a JWK set (`{"keys": [...]}`).
pub fn parse_jwks(text: &str) -> Result<JwkSet, AuthConfigError> {
    serde_json::from_str(text).map_err(|e| AuthConfigError::InvalidJwks(e.to_string()))
}

/// Reads and parses a JWK set file.
pub fn load_jwks(path: impl AsRef<Path>) -> Result<JwkSet, AuthConfigError> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|source| AuthConfigError::ReadJwks {
        path: path.display().to_string(),
        source,
    })?;
    parse_jwks(&text)
}

/// A verification key and the one algorithm it verifies.
#[derive(Clone)]
struct PinnedKey {
    key: DecodingKey,
    algorithm: Algorithm,
}

/// Verifies bearer tokens; see the [module documentation](self).
pub struct Authenticator {
    hs256: Option<PinnedKey>,
    by_kid: HashMap<String, PinnedKey>,
    /// The set's key when it has exactly one usable key: tokens without `kid` use it.
    sole: Option<PinnedKey>,
    /// Whether the set holds several keys (so a token without `kid` is ambiguous).
    has_jwks: bool,
    issuer: Option<String>,
    audiences: Vec<String>,
    leeway: Duration,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut kids: Vec<_> = self.by_kid.keys().collect();
        kids.sort();
        f.debug_struct("Authenticator")
            .field("hs256", &self.hs256.is_some())
            .field("kids", &kids)
            .field("issuer", &self.issuer)
            .field("audiences", &self.audiences)
            .field("leeway", &self.leeway)
            .finish()
    }
}

#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    crit: Option<Value>,
}

#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    sub: Option<Value>,
    #[serde(default)]
    iss: Option<Value>,
}

impl Authenticator {
    /// Checks the configuration and prepares its keys. Keys of the set that are not RS256 or
    /// ES256 signature keys (encryption keys, other curves, symmetric keys) are skipped with a
    /// warning; invalid keys, weak RSA keys and duplicate `kid`s are refused.
    pub fn new(config: AuthConfig) -> Result<Self, AuthConfigError> {
        if config.issuer.as_deref().is_some_and(str::is_empty) {
            return Err(AuthConfigError::Empty("the issuer"));
        }
        if config.audiences.iter().any(String::is_empty) {
            return Err(AuthConfigError::Empty("an audience"));
        }
        let hs256 = match &config.hs256_secret {
            Some(secret) if secret.len() < MIN_HS256_SECRET_BYTES => {
                return Err(AuthConfigError::WeakSecret(secret.len()))
            }
            Some(secret) => Some(PinnedKey {
                key: DecodingKey::from_secret(secret),
                algorithm: Algorithm::HS256,
            }),
            None => None,
        };
        let mut by_kid = HashMap::new();
        let mut usable = Vec::new();
        if let Some(jwks) = &config.jwks {
            for (index, jwk) in jwks.keys.iter().enumerate() {
                let name = jwk
                    .common
                    .key_id
                    .clone()
                    .unwrap_or_else(|| format!("#{index} (no kid)"));
                let Some(pinned) = pin_jwk(jwk, &name)? else {
                    continue;
                };
                if let Some(kid) = &jwk.common.key_id {
                    if by_kid.insert(kid.clone(), pinned.clone()).is_some() {
                        return Err(AuthConfigError::DuplicateKid(kid.clone()));
                    }
                }
                usable.push(pinned);
            }
            if usable.is_empty() {
                return Err(AuthConfigError::NoUsableKey);
            }
        }
        if hs256.is_none() && usable.is_empty() {
            return Err(AuthConfigError::NoKeys);
        }
        let has_jwks = !usable.is_empty();
        let sole = if usable.len() == 1 {
            usable.pop()
        } else {
            None
        };
        Ok(Self {
            hs256,
            by_kid,
            sole,
            has_jwks,
            issuer: config.issuer,
            audiences: config.audiences,
            leeway: config.leeway,
        })
    }

    /// Verifies `token` and returns its subject as [`Caller::User`].
    pub fn verify(&self, token: &str) -> Result<Caller, AuthError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::Malformed("token is too long"));
        }
        let mut parts = token.split('.');
        let (Some(header), Some(_), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Malformed("expected three dot-separated parts"));
        };
        let header = URL_SAFE_NO_PAD
            .decode(header)
            .map_err(|_| AuthError::Malformed("header is not base64url"))?;
        let header: RawHeader = serde_json::from_slice(&header)
            .map_err(|_| AuthError::Malformed("header is not a JSON object with alg"))?;
        if header.crit.is_some() {
            return Err(AuthError::CriticalHeader);
        }
        let algorithm = match header.alg.as_str() {
            "HS256" => Algorithm::HS256,
            "RS256" => Algorithm::RS256,
            "ES256" => Algorithm::ES256,
            other => return Err(AuthError::UnsupportedAlgorithm(other.to_owned())),
        };
        let key = self.select_key(algorithm, header.kid)?;
        let mut validation = Validation::new(key.algorithm);
        validation.leeway = self.leeway.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        let mut required = vec!["exp"];
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        if self.audiences.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&self.audiences);
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        let claims = jsonwebtoken::decode::<Claims>(token, &key.key, &validation)
            .map_err(|e| map_jwt_error(e.into_kind()))?
            .claims;
        // jsonwebtoken accepts an array `iss` when any element matches; RFC 7519 §4.1.1 makes it
        // one string, and a list would let a token name a foreign issuer beside ours.
        if matches!(&claims.iss, Some(iss) if !iss.is_string() && !iss.is_null()) {
            return Err(AuthError::InvalidClaim {
                claim: "iss",
                reason: "not a string".to_owned(),
            });
        }
        let subject = match claims.sub {
            None | Some(Value::Null) => return Err(AuthError::MissingClaim("sub".to_owned())),
            Some(Value::String(subject)) => subject,
            Some(_) => {
                return Err(AuthError::InvalidClaim {
                    claim: "sub",
                    reason: "not a string".to_owned(),
                })
            }
        };
        check_id("sub", &subject).map_err(|e| AuthError::InvalidClaim {
            claim: "sub",
            reason: e.to_string(),
        })?;
        Ok(Caller::User(subject))
    }

    /// The key a token with `algorithm` and `kid` must verify with: the key is chosen by `kid`
    /// (or the configuration), never by the token alone, and must be pinned to `algorithm`.
    fn select_key(
        &self,
        algorithm: Algorithm,
        kid: Option<String>,
    ) -> Result<&PinnedKey, AuthError> {
        if let Some(key) = kid.as_deref().and_then(|kid| self.by_kid.get(kid)) {
            return pinned(key, algorithm);
        }
        match algorithm {
            // An HS256 token is only ever checked against the configured secret (its kid, if
            // any, names no key of the set).
            Algorithm::HS256 => self
                .hs256
                .as_ref()
                .ok_or_else(|| AuthError::UnsupportedAlgorithm("HS256".to_owned())),
            _ if !self.has_jwks => Err(AuthError::UnsupportedAlgorithm(format!("{algorithm:?}"))),
            _ => match (kid, &self.sole) {
                (None, Some(key)) => pinned(key, algorithm),
                (kid, _) => Err(AuthError::UnknownKey { kid }),
            },
        }
    }
}

fn pinned(key: &PinnedKey, algorithm: Algorithm) -> Result<&PinnedKey, AuthError> {
    if key.algorithm == algorithm {
        Ok(key)
    } else {
        Err(AuthError::AlgorithmMismatch {
            key: key.algorithm,
            token: algorithm,
        })
    }
}

fn map_jwt_error(kind: ErrorKind) -> AuthError {
    match kind {
        ErrorKind::InvalidSignature => AuthError::InvalidSignature,
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
        ErrorKind::InvalidAudience => AuthError::WrongAudience,
        ErrorKind::MissingRequiredClaim(claim) => AuthError::MissingClaim(claim),
        ErrorKind::InvalidClaimFormat(claim) => AuthError::InvalidClaim {
            claim: match claim.as_str() {
                "exp" => "exp",
                "nbf" => "nbf",
                _ => "a registered claim",
            },
            reason: "not a number".to_owned(),
        },
        ErrorKind::Base64(_) => AuthError::Malformed("a part is not base64url"),
        ErrorKind::Json(_) | ErrorKind::Utf8(_) => {
            AuthError::Malformed("claims are not a JSON object")
        }
        // A key that cannot verify (checked when the authenticator is built), or any other
        // failure: the token is not accepted.
        _ => AuthError::InvalidSignature,
    }
}

/// Pins a key of the set to its algorithm. `Ok(None)` for keys this server does not verify
/// with (skipped, with a warning).
fn pin_jwk(jwk: &Jwk, name: &str) -> Result<Option<PinnedKey>, AuthConfigError> {
    let invalid = |reason: String| AuthConfigError::InvalidKey {
        kid: name.to_owned(),
        reason,
    };
    let skip = |reason: &str| {
        tracing::warn!(kid = name, reason, "JWK skipped");
        Ok(None)
    };
    if let Some(usage) = &jwk.common.public_key_use {
        if *usage != PublicKeyUse::Signature {
            return skip("not a signature key (\"use\" is not \"sig\")");
        }
    }
    let (algorithm, key) = match &jwk.algorithm {
        AlgorithmParameters::RSA(rsa) => {
            let modulus = URL_SAFE_NO_PAD
                .decode(&rsa.n)
                .map_err(|_| invalid("n is not base64url".to_owned()))?;
            let exponent = URL_SAFE_NO_PAD
                .decode(&rsa.e)
                .map_err(|_| invalid("e is not base64url".to_owned()))?;
            let significant = modulus.iter().skip_while(|b| **b == 0).count();
            if significant * 8 < MIN_RSA_BITS {
                return Err(invalid(format!(
                    "RSA modulus of {} bits; at least {MIN_RSA_BITS} are required",
                    significant * 8
                )));
            }
            if exponent.is_empty() || exponent.len() > 8 {
                return Err(invalid("invalid RSA exponent".to_owned()));
            }
            (
                Algorithm::RS256,
                DecodingKey::from_rsa_raw_components(&modulus, &exponent),
            )
        }
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
            let key = DecodingKey::from_ec_components(&ec.x, &ec.y)
                .map_err(|_| invalid("x or y is not base64url".to_owned()))?;
            (Algorithm::ES256, key)
        }
        AlgorithmParameters::EllipticCurve(_) => return skip("EC key on a curve other than P-256"),
        AlgorithmParameters::OctetKey(_) => return skip("symmetric key (use the HS256 secret)"),
        AlgorithmParameters::OctetKeyPair(_) => return skip("OKP key (EdDSA is not accepted)"),
        _ => return skip("unknown key type"),
    };
    if let Some(declared) = jwk.common.key_algorithm {
        let expected = match algorithm {
            Algorithm::RS256 => KeyAlgorithm::RS256,
            _ => KeyAlgorithm::ES256,
        };
        if declared != expected {
            let reason = format!("declares alg {declared:?}; only {expected:?} is accepted for it");
            return skip(&reason);
        }
    }
    // Building the verifier parses the key: an EC point off the curve is refused here rather
    // than failing every token later.
    if let Err(error) = jsonwebtoken::crypto::verify("", b"probe", &key, algorithm) {
        return Err(invalid(format!("unusable public key ({error})")));
    }
    Ok(Some(PinnedKey { key, algorithm }))
}

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
/// [`ACCESS_TOKEN_PARAM`] query parameter.
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
/// as [`Caller::User`], and a request without a valid token is answered 401 JSON with
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

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::StatusCode;
    use axum::routing::get;
    use base64::engine::general_purpose::STANDARD;
    use jsonwebtoken::{encode, get_current_timestamp, EncodingKey, Header};
    use serde_json::json;
    use tower::ServiceExt;

    use super::*;

    const SECRET: &[u8] = b"test-secret-of-at-least-32-bytes!!";

    fn data(name: &str) -> String {
        let path = format!("{}/tests/data/auth/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// The DER body of a PEM file (test data only).
    fn der(pem: &str) -> Vec<u8> {
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        STANDARD.decode(body).expect("PEM body")
    }

    fn rsa_key() -> EncodingKey {
        EncodingKey::from_rsa_der(&der(&data("rsa-test-private.pem")))
    }

    fn other_rsa_key() -> EncodingKey {
        EncodingKey::from_rsa_der(&der(&data("rsa-other-test-private.pem")))
    }

    fn ec_key() -> EncodingKey {
        EncodingKey::from_ec_der(&der(&data("ec-test-private.pem")))
    }

    fn jwks() -> JwkSet {
        parse_jwks(&data("jwks.json")).expect("test JWK set")
    }

    fn now() -> u64 {
        get_current_timestamp()
    }

    fn claims(sub: &str) -> Value {
        json!({"sub": sub, "exp": now() + 300, "iat": now()})
    }

    fn token(alg: Algorithm, kid: Option<&str>, claims: &Value, key: &EncodingKey) -> String {
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_owned);
        encode(&header, claims, key).expect("encode")
    }

    fn hs256(claims: &Value) -> String {
        token(
            Algorithm::HS256,
            None,
            claims,
            &EncodingKey::from_secret(SECRET),
        )
    }

    fn b64(value: &Value) -> String {
        URL_SAFE_NO_PAD.encode(value.to_string())
    }

    fn secret_auth() -> Authenticator {
        Authenticator::new(AuthConfig::default().hs256_secret(SECRET)).expect("valid config")
    }

    fn jwks_auth() -> Authenticator {
        Authenticator::new(AuthConfig::default().jwks(jwks())).expect("valid config")
    }

    fn user(name: &str) -> Result<Caller, AuthError> {
        Ok(Caller::User(name.to_owned()))
    }

    #[test]
    fn a_valid_hs256_token_gives_its_subject() {
        assert_eq!(
            secret_auth().verify(&hs256(&claims("alice"))),
            user("alice")
        );
    }

    #[test]
    fn valid_rs256_and_es256_tokens_verify_with_the_key_their_kid_names() {
        let auth = jwks_auth();
        let rs = token(
            Algorithm::RS256,
            Some("rsa-test-1"),
            &claims("alice"),
            &rsa_key(),
        );
        assert_eq!(auth.verify(&rs), user("alice"));
        let es = token(
            Algorithm::ES256,
            Some("ec-test-1"),
            &claims("bob"),
            &ec_key(),
        );
        assert_eq!(auth.verify(&es), user("bob"));
    }

    #[test]
    fn a_token_without_kid_uses_the_only_key_of_a_one_key_set_and_nothing_else() {
        let mut single = jwks();
        single
            .keys
            .retain(|k| k.common.key_id.as_deref() == Some("ec-test-1"));
        let auth = Authenticator::new(AuthConfig::default().jwks(single)).expect("config");
        let es = token(Algorithm::ES256, None, &claims("bob"), &ec_key());
        assert_eq!(auth.verify(&es), user("bob"));
        // The only key is EC: an RS256 token without kid cannot use it.
        let rs = token(Algorithm::RS256, None, &claims("bob"), &rsa_key());
        assert_eq!(
            auth.verify(&rs),
            Err(AuthError::AlgorithmMismatch {
                key: Algorithm::ES256,
                token: Algorithm::RS256
            })
        );
        // With two keys in the set a token must say which.
        assert_eq!(
            jwks_auth().verify(&es),
            Err(AuthError::UnknownKey { kid: None })
        );
    }

    #[test]
    fn forged_signatures_are_refused() {
        let forged_rs = token(
            Algorithm::RS256,
            Some("rsa-test-1"),
            &claims("alice"),
            &other_rsa_key(),
        );
        assert_eq!(
            jwks_auth().verify(&forged_rs),
            Err(AuthError::InvalidSignature)
        );
        let forged_hs = token(
            Algorithm::HS256,
            None,
            &claims("alice"),
            &EncodingKey::from_secret(b"another-secret-of-at-least-32-bytes"),
        );
        assert_eq!(
            secret_auth().verify(&forged_hs),
            Err(AuthError::InvalidSignature)
        );
        // A valid token whose claims were swapped for someone else's.
        let genuine = hs256(&claims("alice"));
        let mut parts: Vec<&str> = genuine.split('.').collect();
        let swapped = b64(&claims("mallory"));
        parts[1] = &swapped;
        assert_eq!(
            secret_auth().verify(&parts.join(".")),
            Err(AuthError::InvalidSignature)
        );
        let unsigned = format!("{}.{}.", parts[0], parts[1]);
        assert_eq!(
            secret_auth().verify(&unsigned),
            Err(AuthError::InvalidSignature)
        );
    }

    #[test]
    fn exp_is_required_and_checked_with_the_leeway_and_nbf_when_present() {
        let auth = secret_auth();
        let at = |exp: u64| json!({"sub": "alice", "exp": exp});
        assert_eq!(
            auth.verify(&hs256(&at(now() - 120))),
            Err(AuthError::Expired)
        );
        // Within the default 30 s leeway.
        assert_eq!(auth.verify(&hs256(&at(now() - 10))), user("alice"));
        let strict = Authenticator::new(
            AuthConfig::default()
                .hs256_secret(SECRET)
                .leeway(Duration::ZERO),
        )
        .expect("config");
        assert_eq!(
            strict.verify(&hs256(&at(now() - 10))),
            Err(AuthError::Expired)
        );
        assert_eq!(
            auth.verify(&hs256(&json!({"sub": "alice"}))),
            Err(AuthError::MissingClaim("exp".to_owned()))
        );
        assert_eq!(
            auth.verify(&hs256(&json!({"sub": "alice", "exp": "tomorrow"}))),
            Err(AuthError::MissingClaim("exp".to_owned()))
        );
        let early = json!({"sub": "alice", "exp": now() + 600, "nbf": now() + 120});
        assert_eq!(auth.verify(&hs256(&early)), Err(AuthError::NotYetValid));
        let started = json!({"sub": "alice", "exp": now() + 600, "nbf": now() - 5});
        assert_eq!(auth.verify(&hs256(&started)), user("alice"));
    }

    #[test]
    fn issuer_and_audience_are_required_and_checked_when_configured() {
        let auth = Authenticator::new(
            AuthConfig::default()
                .hs256_secret(SECRET)
                .issuer("https://issuer.test/")
                .audience("chat")
                .audience("chat-admin"),
        )
        .expect("config");
        let with = |extra: Value| {
            let mut claims = claims("alice");
            for (k, v) in extra.as_object().expect("object") {
                claims[k] = v.clone();
            }
            auth.verify(&hs256(&claims))
        };
        assert_eq!(
            with(json!({"iss": "https://issuer.test/", "aud": "chat"})),
            user("alice")
        );
        assert_eq!(
            with(json!({"iss": "https://issuer.test/", "aud": ["other", "chat-admin"]})),
            user("alice")
        );
        assert_eq!(
            with(json!({"iss": "https://evil.test/", "aud": "chat"})),
            Err(AuthError::WrongIssuer)
        );
        assert_eq!(
            with(json!({"iss": "https://issuer.test/", "aud": "billing"})),
            Err(AuthError::WrongAudience)
        );
        assert_eq!(
            with(json!({"iss": "https://issuer.test/", "aud": ["billing", "shop"]})),
            Err(AuthError::WrongAudience)
        );
        assert_eq!(
            with(json!({"aud": "chat"})),
            Err(AuthError::MissingClaim("iss".to_owned()))
        );
        // Found by the jwt_verify fuzz target: a list naming a foreign issuer beside ours.
        assert!(matches!(
            with(json!({"iss": ["https://evil.test/", "https://issuer.test/"], "aud": "chat"})),
            Err(AuthError::InvalidClaim { claim: "iss", .. })
        ));
        assert_eq!(
            with(json!({"iss": "https://issuer.test/"})),
            Err(AuthError::MissingClaim("aud".to_owned()))
        );
        // Not configured: not checked.
        let open = secret_auth();
        let mut other = claims("alice");
        other["iss"] = json!("https://anyone.test/");
        other["aud"] = json!("anything");
        assert_eq!(open.verify(&hs256(&other)), user("alice"));
    }

    #[test]
    fn the_subject_is_required_and_must_be_a_valid_id() {
        let auth = secret_auth();
        let exp = now() + 300;
        assert_eq!(
            auth.verify(&hs256(&json!({"exp": exp}))),
            Err(AuthError::MissingClaim("sub".to_owned()))
        );
        for sub in [json!(""), json!(42), json!("a\nb"), json!("x".repeat(257))] {
            assert!(
                matches!(
                    auth.verify(&hs256(&json!({"sub": sub, "exp": exp}))),
                    Err(AuthError::InvalidClaim { claim: "sub", .. })
                ),
                "{sub}"
            );
        }
        assert_eq!(
            auth.verify(&hs256(&json!({"sub": "x".repeat(256), "exp": exp}))),
            user(&"x".repeat(256))
        );
    }

    #[test]
    fn alg_none_and_other_algorithms_are_refused() {
        let claims = b64(&claims("alice"));
        for alg in ["none", "None", "NONE", "nOnE"] {
            let header = b64(&json!({"alg": alg, "typ": "JWT"}));
            for signature in ["", "c2lnbmF0dXJl"] {
                let forged = format!("{header}.{claims}.{signature}");
                for auth in [secret_auth(), jwks_auth()] {
                    assert_eq!(
                        auth.verify(&forged),
                        Err(AuthError::UnsupportedAlgorithm(alg.to_owned()))
                    );
                }
            }
        }
        let hs512 = token(
            Algorithm::HS512,
            None,
            &json!({"sub": "alice", "exp": now() + 60}),
            &EncodingKey::from_secret(SECRET),
        );
        assert_eq!(
            secret_auth().verify(&hs512),
            Err(AuthError::UnsupportedAlgorithm("HS512".to_owned()))
        );
        // RS256 with no key set configured.
        let rs = token(
            Algorithm::RS256,
            Some("rsa-test-1"),
            &json!({"sub": "a", "exp": now() + 60}),
            &rsa_key(),
        );
        assert_eq!(
            secret_auth().verify(&rs),
            Err(AuthError::UnsupportedAlgorithm("RS256".to_owned()))
        );
    }

    #[test]
    fn an_hs256_token_keyed_with_the_rsa_public_key_is_refused() {
        let public_pem = data("rsa-test-public.pem");
        let secrets = [public_pem.as_bytes().to_vec(), der(&public_pem)];
        let both = Authenticator::new(AuthConfig::default().hs256_secret(SECRET).jwks(jwks()))
            .expect("config");
        for secret in &secrets {
            let key = EncodingKey::from_secret(secret);
            let with_kid = token(Algorithm::HS256, Some("rsa-test-1"), &claims("alice"), &key);
            let without_kid = token(Algorithm::HS256, None, &claims("alice"), &key);
            let mismatch = Err(AuthError::AlgorithmMismatch {
                key: Algorithm::RS256,
                token: Algorithm::HS256,
            });
            assert_eq!(jwks_auth().verify(&with_kid), mismatch);
            assert_eq!(
                jwks_auth().verify(&without_kid),
                Err(AuthError::UnsupportedAlgorithm("HS256".to_owned()))
            );
            assert_eq!(both.verify(&with_kid), mismatch);
            assert_eq!(both.verify(&without_kid), Err(AuthError::InvalidSignature));
        }
    }

    #[test]
    fn an_unknown_kid_and_a_key_presented_with_another_algorithm_are_refused() {
        let auth = jwks_auth();
        let unknown = token(
            Algorithm::RS256,
            Some("rotated-away"),
            &claims("alice"),
            &rsa_key(),
        );
        assert_eq!(
            auth.verify(&unknown),
            Err(AuthError::UnknownKey {
                kid: Some("rotated-away".to_owned())
            })
        );
        // The RSA key's kid, an ES256 header (signed by the EC key): the RSA key only does RS256.
        let confused = token(
            Algorithm::ES256,
            Some("rsa-test-1"),
            &claims("alice"),
            &ec_key(),
        );
        assert_eq!(
            auth.verify(&confused),
            Err(AuthError::AlgorithmMismatch {
                key: Algorithm::RS256,
                token: Algorithm::ES256
            })
        );
        let confused = token(
            Algorithm::RS256,
            Some("ec-test-1"),
            &claims("alice"),
            &rsa_key(),
        );
        assert_eq!(
            auth.verify(&confused),
            Err(AuthError::AlgorithmMismatch {
                key: Algorithm::ES256,
                token: Algorithm::RS256
            })
        );
    }

    #[test]
    fn malformed_tokens_and_critical_headers_are_refused() {
        let auth = secret_auth();
        for bad in ["", "abc", "a.b", "a.b.c.d", "!!!.e30.", "e30.e30.e30"] {
            assert!(
                matches!(auth.verify(bad), Err(AuthError::Malformed(_))),
                "{bad:?}"
            );
        }
        let long = "a".repeat(MAX_TOKEN_BYTES + 1);
        assert_eq!(
            auth.verify(&long),
            Err(AuthError::Malformed("token is too long"))
        );
        let header = b64(&json!({"alg": "HS256", "crit": ["b64"], "b64": false}));
        let critical = format!("{header}.{}.sig", b64(&claims("alice")));
        assert_eq!(auth.verify(&critical), Err(AuthError::CriticalHeader));
    }

    #[test]
    fn refusal_messages_name_the_check_and_no_key_material() {
        let errors = [
            AuthError::Expired,
            AuthError::WrongAudience,
            AuthError::WrongIssuer,
            AuthError::InvalidSignature,
            AuthError::UnknownKey {
                kid: Some("k".to_owned()),
            },
        ];
        let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(messages[0], "token expired");
        assert_eq!(messages[1], "wrong token audience");
        let secret = String::from_utf8_lossy(SECRET).into_owned();
        let debug = format!(
            "{:?} {:?}",
            secret_auth(),
            AuthConfig::default().hs256_secret(SECRET)
        );
        assert!(!debug.contains(&secret), "{debug}");
        assert!(debug.contains("[redacted]"), "{debug}");
    }

    #[test]
    fn key_configurations_are_checked() {
        assert!(matches!(
            Authenticator::new(AuthConfig::default()),
            Err(AuthConfigError::NoKeys)
        ));
        assert!(matches!(
            Authenticator::new(AuthConfig::default().hs256_secret("too short")),
            Err(AuthConfigError::WeakSecret(9))
        ));
        assert!(matches!(
            Authenticator::new(AuthConfig::default().hs256_secret(SECRET).issuer("")),
            Err(AuthConfigError::Empty(_))
        ));
        let set = |keys: Value| parse_jwks(&json!({ "keys": keys }).to_string()).expect("set");
        let config = |keys: Value| Authenticator::new(AuthConfig::default().jwks(set(keys)));
        let rsa = jwks().keys[0].clone();
        let mut rsa_json = serde_json::to_value(&rsa).expect("json");
        let mut encryption = rsa_json.clone();
        encryption["use"] = json!("enc");
        assert!(matches!(
            config(json!([encryption])),
            Err(AuthConfigError::NoUsableKey)
        ));
        let mut rs512 = rsa_json.clone();
        rs512["alg"] = json!("RS512");
        assert!(matches!(
            config(json!([rs512])),
            Err(AuthConfigError::NoUsableKey)
        ));
        let symmetric = json!({"kty": "oct", "kid": "o", "k": "c2VjcmV0"});
        assert!(matches!(
            config(json!([symmetric])),
            Err(AuthConfigError::NoUsableKey)
        ));
        assert!(matches!(
            config(json!([rsa_json.clone(), rsa_json.clone()])),
            Err(AuthConfigError::DuplicateKid(kid)) if kid == "rsa-test-1"
        ));
        rsa_json["n"] = json!(URL_SAFE_NO_PAD.encode([0xc5_u8; 128]));
        assert!(matches!(
            config(json!([rsa_json])),
            Err(AuthConfigError::InvalidKey { reason, .. }) if reason.contains("1024 bits")
        ));
        let off_curve = json!({"kty": "EC", "kid": "bad", "crv": "P-256",
            "x": URL_SAFE_NO_PAD.encode([1_u8; 32]), "y": URL_SAFE_NO_PAD.encode([1_u8; 32])});
        assert!(matches!(
            config(json!([off_curve])),
            Err(AuthConfigError::InvalidKey { kid, .. }) if kid == "bad"
        ));
        assert!(matches!(
            parse_jwks("{\"not\": \"a set\"}"),
            Err(AuthConfigError::InvalidJwks(_))
        ));
        assert!(matches!(
            load_jwks("/nonexistent/jwks.json"),
            Err(AuthConfigError::ReadJwks { .. })
        ));
    }

    async fn call(
        router: &Router,
        request: axum::http::request::Builder,
    ) -> (StatusCode, Option<String>, String) {
        let response = router
            .clone()
            .oneshot(request.body(Body::empty()).expect("request"))
            .await
            .expect("response");
        let status = response.status();
        let challenge = response
            .headers()
            .get(header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .expect("body");
        (
            status,
            challenge,
            String::from_utf8_lossy(&body).into_owned(),
        )
    }

    #[tokio::test]
    async fn the_layer_takes_the_header_or_on_upgrades_the_query_and_answers_401_json() {
        let guarded = require_auth(
            Router::new().route(
                "/whoami",
                get(|caller: Caller| async move { format!("{caller:?}") }),
            ),
            Arc::new(secret_auth()),
        );
        let router = Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .merge(guarded);
        let alice = hs256(&claims("alice"));
        let get = |uri: &str| axum::http::Request::get(uri.to_owned());
        let upgrade = |uri: &str| get(uri).header(header::UPGRADE, "websocket");

        let (status, challenge, body) = call(&router, get("/whoami")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(challenge.as_deref(), Some("Bearer"));
        let json: Value = serde_json::from_str(&body).expect("JSON error");
        assert!(json["error"]
            .as_str()
            .is_some_and(|e| e.contains("bearer token is required")));

        let bearer = format!("Bearer {alice}");
        let (status, _, body) = call(
            &router,
            get("/whoami").header(header::AUTHORIZATION, &bearer),
        )
        .await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "User(\"alice\")"));
        let lower = format!("bearer {alice}");
        let (status, _, _) = call(
            &router,
            get("/whoami").header(header::AUTHORIZATION, &lower),
        )
        .await;
        assert_eq!(status, StatusCode::OK);

        let query = format!("/whoami?x=1&access_token={alice}");
        let (status, _, body) = call(&router, upgrade(&query)).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "User(\"alice\")"));
        // Only websocket upgrades may carry the token in the URL.
        let (status, _, _) = call(&router, get(&query)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, _, _) = call(
            &router,
            upgrade(&query).header(header::AUTHORIZATION, &bearer),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);

        for auth in [
            "Basic YWxpY2U6cHc=",
            "Bearer",
            "Bearer ",
            "Bearer not.a.token",
            alice.as_str(),
        ] {
            let (status, challenge, body) =
                call(&router, get("/whoami").header(header::AUTHORIZATION, auth)).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{auth}");
            assert_eq!(challenge.as_deref(), Some("Bearer"));
            assert!(serde_json::from_str::<Value>(&body).is_ok(), "{body}");
        }
        let expired = hs256(&json!({"sub": "alice", "exp": now() - 3600}));
        let (status, _, body) = call(
            &router,
            get("/whoami").header(header::AUTHORIZATION, format!("Bearer {expired}")),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body, r#"{"error":"token expired"}"#);

        let (status, _, body) = call(&router, get("/healthz")).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));
    }
}
