//! Why a token or a key configuration is refused.

use jsonwebtoken::Algorithm;

use super::MIN_HS256_SECRET_BYTES;

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
