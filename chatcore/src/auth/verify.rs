//! The token verifier.

use std::collections::HashMap;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;

use super::jwks::{pin_jwk, PinnedKey};
use super::{
    AuthConfig, AuthConfigError, AuthError, Caller, MAX_TOKEN_BYTES, MIN_HS256_SECRET_BYTES,
};
use crate::model::check_id;

/// Verifies bearer tokens; see the [module documentation](crate::auth).
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
