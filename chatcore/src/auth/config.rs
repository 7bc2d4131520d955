//! What an [`Authenticator`](super::Authenticator) accepts, and the limits it enforces.

use std::time::Duration;

use jsonwebtoken::jwk::JwkSet;

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

/// What an [`Authenticator`](crate::auth::Authenticator) accepts.
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
