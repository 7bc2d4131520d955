//! JWK sets: parsing, and pinning each key to the one algorithm it verifies.

use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey};

use super::{AuthConfigError, MIN_RSA_BITS};

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
pub(super) struct PinnedKey {
    pub(super) key: DecodingKey,
    pub(super) algorithm: Algorithm,
}

/// Pins a key of the set to its algorithm. `Ok(None)` for keys this server does not verify
/// with (skipped, with a warning).
pub(super) fn pin_jwk(jwk: &Jwk, name: &str) -> Result<Option<PinnedKey>, AuthConfigError> {
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
