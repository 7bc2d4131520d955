//! Fuzzes JWT verification (`chatcore::auth::Authenticator::verify`) with three authenticators,
//! all requiring the same issuer and audience:
//!
//! - `hs`: the HS256 secret only;
//! - `jwks`: the test JWK set only (`chatcore/tests/data/auth/jwks.json`: `rsa-test-1` RS256,
//!   `ec-test-1` ES256);
//! - `both`: the secret and the JWK set.
//!
//! Every input is verified twice:
//!
//! 1. **raw**: the input itself (lossily UTF-8) is the token. The seeds in
//!    `fuzz/corpus/jwt_verify/` are whole tokens, so this is where they start from.
//! 2. **structured**: the input drives an [`Unstructured`] that assembles
//!    `header.payload.signature`: header and payload are JSON objects written as text (so
//!    duplicate keys, odd numbers and non-objects are possible) from fragments the input picks
//!    (`alg` none/HS256/RS256/ES256/HS512/garbage, `kid` of the set's keys or unknown, `crit`,
//!    `jku`/`jwk`/`x5u`/`x5c`, huge or fractional `exp`/`nbf`, nested `aud` arrays, non-string
//!    `sub`, padding past the 8 KiB limit...), each part base64url or otherwise encoded, and a
//!    signature that is empty, garbage, or made over `header.payload` with the right secret,
//!    a wrong one, the RSA public key as an HMAC secret, HS512, or with a bit flipped. Times
//!    are relative to now, so the corpus stays meaningful as time passes. RSA and EC signing
//!    is too slow to do for every input: instead the input may pick one of a fixed set of
//!    tokens signed with the set's private keys (`rsa-test-1`, `ec-test-1`) or with an RSA key
//!    that is not in the set, covering each claim check and the key confusions, as it is or
//!    with one bit flipped.
//!
//! Properties checked, beyond "never panics":
//! - an accepted token yields `Caller::User` whose subject is a valid id: non-empty, at most
//!   256 bytes, no control character (checked here independently of `chatcore::model`);
//! - an accepted token is at most `MAX_TOKEN_BYTES`, has three parts, a header whose `alg` is
//!   HS256, RS256 or ES256 and without `crit`, and claims whose `sub` is that subject, whose
//!   `exp` is a number not past and `nbf` (if any) not in the future (beyond the leeway), whose
//!   `iss` is the configured issuer (a string, or an array naming it: jsonwebtoken's reading)
//!   and whose `aud` names the configured audience;
//! - structured tokens: `hs` accepts only tokens signed with the secret, `jwks` only tokens
//!   signed with the set's keys (no forgery, no key confusion);
//! - the three authenticators agree: `both` accepts exactly what `jwks` accepts plus what `hs`
//!   accepts when the token's `kid` names no key of the set, with the same subject.
//!
//! `CHATCORE_FUZZ_VERBOSE=1` prints each token and the three outcomes.
//!
//! The seeds were made once with Python (`hmac`, and `cryptography` with the test keys):
//! tokens signed with the secret below, with `rsa-test-1` and `ec-test-1`, an `alg: none`
//! token, a `kid` confusion and a few near misses. Their `exp` is in 2100.
#![no_main]

use std::collections::HashSet;
use std::sync::OnceLock;
use std::time::Instant;

use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use chatcore::auth::{parse_jwks, AuthConfig, Authenticator, DEFAULT_LEEWAY, MAX_TOKEN_BYTES};
use chatcore::auth::Caller;
use jsonwebtoken::{get_current_timestamp, Algorithm, EncodingKey};
use libfuzzer_sys::arbitrary::{Result as ArbResult, Unstructured};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// A throwaway HS256 secret (at least 32 bytes), used only here and in the seeds.
const SECRET: &[u8] = b"chatcore-fuzz-throwaway-hs256-secret";
const ISSUER: &str = "https://issuer.fuzz.test/";
const AUDIENCE: &str = "chatcore";

const JWKS: &str = include_str!("../../chatcore/tests/data/auth/jwks.json");
const RSA_PRIVATE: &str = include_str!("../../chatcore/tests/data/auth/rsa-test-private.pem");
const RSA_OTHER_PRIVATE: &str =
    include_str!("../../chatcore/tests/data/auth/rsa-other-test-private.pem");
const EC_PRIVATE: &str = include_str!("../../chatcore/tests/data/auth/ec-test-private.pem");
const RSA_PUBLIC: &str = include_str!("../../chatcore/tests/data/auth/rsa-test-public.pem");

/// Who made a structured token's signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signer {
    /// The configured HS256 secret.
    Secret,
    /// The private key of `rsa-test-1`.
    Rsa,
    /// The private key of `ec-test-1`.
    Ec,
    /// Anything else: no key, garbage, a wrong secret or key, another algorithm.
    Forged,
}

struct Fixture {
    hs: Authenticator,
    jwks: Authenticator,
    both: Authenticator,
    jwks_kids: HashSet<String>,
    secret: EncodingKey,
    wrong_secret: EncodingKey,
    rsa_public_pem_secret: EncodingKey,
    rsa_public_der_secret: EncodingKey,
    rsa: EncodingKey,
    rsa_other: EncodingKey,
    ec: EncodingKey,
    presigned: Vec<Presigned>,
}

/// A token signed with an RSA or EC key. Signing with those keys is slow (tens of milliseconds
/// in an instrumented build), so these are made once, the first time the input picks them,
/// instead of signing every input's own header and claims.
struct Presigned {
    header: String,
    claims: String,
    key: PresignKey,
    signer: Signer,
    token: OnceLock<String>,
    /// Set once the token, as it is, went through [`verify_all`].
    checked: OnceLock<()>,
}

#[derive(Clone, Copy)]
enum PresignKey {
    Rsa,
    RsaOther,
    Ec,
}

/// Far in the future and in the past: the pre-signed tokens stay what they are as time passes.
const FUTURE: u64 = 4_102_444_800; // 2100-01-01
const PAST: u64 = 1_700_000_000; // 2023-11-14

/// What the pre-signed tokens are: every claim check with each key, and key confusions.
fn presigned_tokens() -> Vec<Presigned> {
    let iss = json_string(ISSUER);
    let aud = json_string(AUDIENCE);
    let claims = |fields: &str| format!("{{{fields}}}");
    let valid = claims(&format!(
        "\"sub\":\"alice\",\"iss\":{iss},\"aud\":{aud},\"exp\":{FUTURE}"
    ));
    let variants = [
        valid.clone(),
        claims(&format!(
            "\"sub\":\"bob\",\"iss\":{iss},\"aud\":[\"billing\",{aud}],\"exp\":{FUTURE}.4,\"nbf\":{PAST}"
        )),
        claims(&format!("\"sub\":\"alice\",\"iss\":{iss},\"aud\":{aud},\"exp\":{PAST}")),
        claims(&format!(
            "\"sub\":\"alice\",\"iss\":{iss},\"aud\":{aud},\"exp\":{FUTURE},\"nbf\":{FUTURE}"
        )),
        claims(&format!(
            "\"sub\":\"alice\",\"iss\":\"https://evil.test/\",\"aud\":{aud},\"exp\":{FUTURE}"
        )),
        claims(&format!(
            "\"sub\":\"alice\",\"iss\":[\"https://evil.test/\",{iss}],\"aud\":{aud},\"exp\":{FUTURE}"
        )),
        claims(&format!("\"sub\":\"alice\",\"iss\":{iss},\"aud\":\"billing\",\"exp\":{FUTURE}")),
        claims(&format!("\"sub\":\"alice\",\"iss\":{iss},\"exp\":{FUTURE}")),
        claims(&format!("\"sub\":\"a\\nb\",\"iss\":{iss},\"aud\":{aud},\"exp\":{FUTURE}")),
        claims(&format!(
            "\"sub\":{},\"iss\":{iss},\"aud\":{aud},\"exp\":{FUTURE}",
            json_string(&"x".repeat(257))
        )),
        claims(&format!("\"sub\":42,\"iss\":{iss},\"aud\":{aud},\"exp\":{FUTURE}")),
        claims(&format!("\"iss\":{iss},\"aud\":{aud},\"exp\":{FUTURE}")),
        claims(&format!("\"sub\":\"alice\",\"iss\":{iss},\"aud\":{aud},\"exp\":\"{FUTURE}\"")),
    ];
    let mut all = Vec::new();
    let mut add = |header: &str, claims: &str, key: PresignKey, signer: Signer| {
        all.push(Presigned {
            header: header.to_owned(),
            claims: claims.to_owned(),
            key,
            signer,
            token: OnceLock::new(),
            checked: OnceLock::new(),
        })
    };
    for claims in &variants {
        add(
            r#"{"alg":"RS256","typ":"JWT","kid":"rsa-test-1"}"#,
            claims,
            PresignKey::Rsa,
            Signer::Rsa,
        );
        add(
            r#"{"alg":"ES256","typ":"JWT","kid":"ec-test-1"}"#,
            claims,
            PresignKey::Ec,
            Signer::Ec,
        );
    }
    // Without kid (the set has two keys), with the other key's kid, with a key of the token's
    // own, and signed by a key that is not in the set.
    add(r#"{"alg":"RS256"}"#, &valid, PresignKey::Rsa, Signer::Rsa);
    add(r#"{"alg":"ES256"}"#, &valid, PresignKey::Ec, Signer::Ec);
    add(
        r#"{"alg":"RS256","kid":"ec-test-1"}"#,
        &valid,
        PresignKey::Rsa,
        Signer::Rsa,
    );
    add(
        r#"{"alg":"ES256","kid":"rsa-test-1"}"#,
        &valid,
        PresignKey::Ec,
        Signer::Ec,
    );
    add(
        r#"{"alg":"RS256","kid":"rsa-test-1","jku":"https://attacker.test/jwks.json"}"#,
        &valid,
        PresignKey::RsaOther,
        Signer::Forged,
    );
    add(
        r#"{"alg":"RS256","kid":"rotated-away"}"#,
        &valid,
        PresignKey::RsaOther,
        Signer::Forged,
    );
    add(
        r#"{"alg":"RS256","kid":"rsa-test-1"}"#,
        &valid,
        PresignKey::RsaOther,
        Signer::Forged,
    );
    all
}

impl Presigned {
    fn token(&self, fx: &Fixture) -> &str {
        self.token.get_or_init(|| {
            let message = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(&self.header),
                URL_SAFE_NO_PAD.encode(&self.claims)
            );
            let signature = match self.key {
                PresignKey::Rsa => sign(&message, &fx.rsa, Algorithm::RS256),
                PresignKey::RsaOther => sign(&message, &fx.rsa_other, Algorithm::RS256),
                PresignKey::Ec => sign(&message, &fx.ec, Algorithm::ES256),
            };
            format!("{message}.{signature}")
        })
    }
}

/// The DER body of a PEM text.
fn der(pem: &str) -> Vec<u8> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    STANDARD.decode(body).expect("PEM body")
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let set = || parse_jwks(JWKS).expect("the test JWK set parses");
        let config = || AuthConfig::default().issuer(ISSUER).audience(AUDIENCE);
        let build = |config: AuthConfig| Authenticator::new(config).expect("valid configuration");
        let jwks_kids = set()
            .keys
            .iter()
            .filter_map(|k| k.common.key_id.clone())
            .collect();
        Fixture {
            hs: build(config().hs256_secret(SECRET)),
            jwks: build(config().jwks(set())),
            both: build(config().hs256_secret(SECRET).jwks(set())),
            jwks_kids,
            secret: EncodingKey::from_secret(SECRET),
            wrong_secret: EncodingKey::from_secret(b"not-the-secret-but-also-32-bytes-long"),
            rsa_public_pem_secret: EncodingKey::from_secret(RSA_PUBLIC.as_bytes()),
            rsa_public_der_secret: EncodingKey::from_secret(&der(RSA_PUBLIC)),
            rsa: EncodingKey::from_rsa_der(&der(RSA_PRIVATE)),
            rsa_other: EncodingKey::from_rsa_der(&der(RSA_OTHER_PRIVATE)),
            ec: EncodingKey::from_ec_der(&der(EC_PRIVATE)),
            presigned: presigned_tokens(),
        }
    })
}

/// `CHATCORE_FUZZ_VERBOSE=1` prints every token and what each authenticator made of it (to see
/// what a corpus file or a crashing input does).
fn verbose() -> bool {
    static VERBOSE: OnceLock<bool> = OnceLock::new();
    *VERBOSE.get_or_init(|| std::env::var_os("CHATCORE_FUZZ_VERBOSE").is_some_and(|v| v == "1"))
}

/// A valid id, checked independently of `chatcore::model::check_id`.
fn assert_valid_id(subject: &str) {
    assert!(!subject.is_empty(), "accepted an empty subject");
    assert!(
        subject.len() <= 256,
        "accepted a subject of {} bytes",
        subject.len()
    );
    assert!(
        !subject.chars().any(char::is_control),
        "accepted a subject with a control character: {subject:?}"
    );
}

/// `true` when `value` is the string `expected`, or an array with that string among its items.
fn names(value: &Value, expected: &str) -> bool {
    match value {
        Value::String(s) => s == expected,
        Value::Array(items) => items.iter().any(|v| v.as_str() == Some(expected)),
        _ => false,
    }
}

/// A JSON number as jsonwebtoken reads a NumericDate (fractions rounded).
fn seconds(value: &Value) -> Option<f64> {
    value.as_f64().map(f64::round)
}

/// Checks everything an accepted token must be. `before`/`after` bracket the verification.
fn check_accepted(token: &str, subject: &str, before: u64, after: u64) {
    assert_valid_id(subject);
    assert!(
        token.len() <= MAX_TOKEN_BYTES,
        "accepted an over-long token"
    );
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "accepted a token without three parts");
    let part = |i: usize| -> Value {
        let bytes = URL_SAFE_NO_PAD
            .decode(parts[i])
            .unwrap_or_else(|e| panic!("accepted a token whose part {i} is not base64url: {e}"));
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("accepted a token whose part {i} is not JSON: {e}"))
    };
    let header = part(0);
    let alg = header["alg"].as_str();
    assert!(
        matches!(alg, Some("HS256" | "RS256" | "ES256")),
        "accepted alg {:?}",
        header["alg"]
    );
    assert!(
        header.get("crit").is_none_or(Value::is_null),
        "accepted a critical header: {header}"
    );
    let claims = part(1);
    assert!(claims.is_object(), "accepted non-object claims: {claims}");
    assert_eq!(claims["sub"].as_str(), Some(subject), "subject is not sub");
    let leeway = DEFAULT_LEEWAY.as_secs() as f64;
    let exp = seconds(&claims["exp"])
        .unwrap_or_else(|| panic!("accepted a token without a numeric exp: {claims}"));
    assert!(
        exp >= 0.0 && exp >= before as f64 - leeway,
        "accepted an expired token: exp {exp}, now {before}"
    );
    match claims.get("nbf") {
        None | Some(Value::Null) => {}
        Some(nbf) => {
            let nbf = seconds(nbf).unwrap_or_else(|| panic!("accepted a non-numeric nbf: {nbf}"));
            assert!(
                nbf <= after as f64 + leeway,
                "accepted a token not yet valid: nbf {nbf}, now {after}"
            );
        }
    }
    assert!(
        names(&claims["iss"], ISSUER),
        "accepted iss {}",
        claims["iss"]
    );
    assert!(
        names(&claims["aud"], AUDIENCE),
        "accepted aud {}",
        claims["aud"]
    );
}

/// The `kid` of an accepted token's header.
fn header_kid(token: &str) -> Option<String> {
    let header = token.split('.').next()?;
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).ok()?).ok()?;
    header["kid"].as_str().map(str::to_owned)
}

/// Verifies `token` with the three authenticators and checks the properties. `signer` is who
/// signed a structured token (`None` for raw input).
fn verify_all(token: &str, signer: Option<Signer>) {
    let fx = fixture();
    let before = get_current_timestamp();
    let verify = |name: &str, auth: &Authenticator| {
        let start = Instant::now();
        let result = auth.verify(token);
        if verbose() {
            eprintln!("{name}: {result:?} in {:?}", start.elapsed());
        }
        match result {
            Ok(Caller::User(subject)) => Some(subject),
            Ok(other) => panic!("verify returned {other:?}"),
            Err(_) => None,
        }
    };
    if verbose() {
        eprintln!("token ({signer:?}): {token:?}");
    }
    let hs = verify("hs", &fx.hs);
    let jwks = verify("jwks", &fx.jwks);
    let both = verify("both", &fx.both);
    let after = get_current_timestamp();

    for subject in [&hs, &jwks, &both].into_iter().flatten() {
        check_accepted(token, subject, before, after);
    }
    if let Some(signer) = signer {
        if hs.is_some() {
            assert_eq!(
                signer,
                Signer::Secret,
                "hs accepted a token it did not sign"
            );
        }
        if jwks.is_some() {
            assert!(
                matches!(signer, Signer::Rsa | Signer::Ec),
                "jwks accepted a token signed by {signer:?}"
            );
        }
        if both.is_some() {
            assert_ne!(signer, Signer::Forged, "both accepted a forged token");
        }
    }
    // Whether a token is expired may change when the clock ticks between the three calls.
    if before == after {
        let hs_counts = hs
            .clone()
            .filter(|_| header_kid(token).is_none_or(|kid| !fx.jwks_kids.contains(&kid)));
        let expected = jwks.clone().or(hs_counts);
        assert_eq!(
            both, expected,
            "both disagrees with hs ({hs:?}) and jwks ({jwks:?})"
        );
    }
}

fn json_string(s: &str) -> String {
    Value::String(s.to_owned()).to_string()
}

/// One of `choices`, or (when the input says so) an arbitrary string as a JSON string.
fn pick(u: &mut Unstructured, choices: &[&str]) -> ArbResult<String> {
    if u.ratio(1, 8)? {
        return Ok(json_string(u.arbitrary::<&str>()?));
    }
    Ok((*u.choose(choices)?).to_owned())
}

/// A NumericDate as JSON text: relative to `now`, extreme, fractional or not a number.
fn time_value(u: &mut Unstructured, now: u64) -> ArbResult<String> {
    let relative = |delta: i64| (now as i64).saturating_add(delta).to_string();
    Ok(match u.int_in_range(0..=17)? {
        0 => relative(300),
        1 => relative(-3600),
        2 => relative(-31),
        3 => relative(-29),
        4 => relative(31),
        5 => relative(29),
        6 => relative(u.int_in_range(-100_000..=100_000)?),
        7 => relative(u.arbitrary()?),
        8 => u64::MAX.to_string(),
        9 => "18446744073709551616".to_owned(),
        10 => "1e400".to_owned(),
        11 => format!("{}.{}", now + 60, u.int_in_range(0..=999_999u32)?),
        12 => format!("{}e0", now + 60),
        13 => "-1".to_owned(),
        14 => "-0.0".to_owned(),
        15 => "\"tomorrow\"".to_owned(),
        16 => "null".to_owned(),
        _ => format!("[{}]", now + 300),
    })
}

/// Deeply nested arrays (serde_json's recursion limit is 128).
fn nested(depth: usize, inner: &str) -> String {
    format!("{}{inner}{}", "[".repeat(depth), "]".repeat(depth))
}

fn header_json(u: &mut Unstructured) -> ArbResult<String> {
    match u.int_in_range(0..=19)? {
        0 => return Ok(u.arbitrary::<&str>()?.to_owned()),
        1 => return Ok((*u.choose(&["[]", "null", "\"HS256\"", "{}", "{", ""])?).to_owned()),
        _ => {}
    }
    const ALGS: &[&str] = &[
        "\"HS256\"",
        "\"RS256\"",
        "\"ES256\"",
        "\"none\"",
        "\"None\"",
        "\"NONE\"",
        "\"HS384\"",
        "\"HS512\"",
        "\"RS512\"",
        "\"PS256\"",
        "\"ES384\"",
        "\"EdDSA\"",
        "\"hs256\"",
        "\"HS256 \"",
        "\"HS256\\u0000\"",
        "\"\"",
        "null",
        "256",
        "[\"HS256\"]",
        "{\"alg\":\"HS256\"}",
    ];
    const KIDS: &[&str] = &[
        "\"rsa-test-1\"",
        "\"ec-test-1\"",
        "\"rotated-away\"",
        "\"\"",
        "\"rsa-test-1 \"",
        "\"RSA-TEST-1\"",
        "\"rsa-test-1\\u0000\"",
        "\"../../etc/passwd\"",
        "1",
        "null",
        "[\"rsa-test-1\"]",
    ];
    let mut fields = Vec::new();
    if !u.ratio(1, 16)? {
        fields.push(format!("\"alg\":{}", pick(u, ALGS)?));
    }
    if u.ratio(1, 2)? {
        fields.push(format!("\"kid\":{}", pick(u, KIDS)?));
    }
    if u.ratio(1, 2)? {
        fields.push(format!(
            "\"typ\":{}",
            pick(u, &["\"JWT\"", "\"at+jwt\"", "\"jwt\"", "5"])?
        ));
    }
    if u.ratio(1, 8)? {
        let crit = pick(
            u,
            &["[\"b64\"]", "[]", "null", "\"exp\"", "[\"exp\"]", "{}"],
        )?;
        fields.push(format!("\"crit\":{crit}"));
        if u.ratio(1, 2)? {
            fields.push("\"b64\":false".to_owned());
        }
    }
    if u.ratio(1, 8)? {
        let key = *u.choose(&["jku", "x5u", "jwk", "x5c", "cty", "enc", "zip"])?;
        let value = match key {
            "jwk" => format!(
                "{{\"kty\":\"oct\",\"k\":\"{}\"}}",
                URL_SAFE_NO_PAD.encode(b"attacker")
            ),
            "x5c" => "[\"MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA\"]".to_owned(),
            _ => pick(u, &["\"https://attacker.test/jwks.json\"", "null", "1"])?,
        };
        fields.push(format!("\"{key}\":{value}"));
    }
    if u.ratio(1, 16)? {
        // A second alg: duplicate keys.
        fields.push(format!("\"alg\":{}", pick(u, ALGS)?));
    }
    if u.ratio(1, 16)? {
        fields.push(format!(
            "{}:{}",
            json_string(u.arbitrary::<&str>()?),
            json_string(u.arbitrary::<&str>()?)
        ));
    }
    if !fields.is_empty() {
        let at = u.choose_index(fields.len())?;
        fields.rotate_left(at);
    }
    Ok(format!("{{{}}}", fields.join(",")))
}

fn payload_json(u: &mut Unstructured, now: u64) -> ArbResult<String> {
    match u.int_in_range(0..=19)? {
        0 => return Ok(u.arbitrary::<&str>()?.to_owned()),
        1 => return Ok((*u.choose(&["[]", "null", "\"alice\"", "{}", "1", ""])?).to_owned()),
        _ => {}
    }
    let long_sub = json_string(&"x".repeat(256));
    let too_long_sub = json_string(&"x".repeat(257));
    let wide_sub = json_string(&"é".repeat(128));
    let too_wide_sub = json_string(&"é".repeat(129));
    let subs: &[&str] = &[
        "\"alice\"",
        "\"bob\"",
        "\"\"",
        &long_sub,
        &too_long_sub,
        &wide_sub,
        &too_wide_sub,
        "\"a\\nb\"",
        "\"a\\u007fb\"",
        "\"\\u0085\"",
        "\"a\\u0000\"",
        "\"\\u200b\"",
        "\"\\ud800\"",
        "\"al\\u0069ce\"",
        "42",
        "null",
        "true",
        "[\"alice\"]",
        "{\"id\":\"alice\"}",
    ];
    let issuer = json_string(ISSUER);
    let issuer_array = format!("[{issuer}]");
    let issuer_among = format!("[\"https://evil.test/\",{issuer}]");
    let issuer_nested = format!("[[{issuer}]]");
    let issuers: &[&str] = &[
        &issuer,
        &issuer_array,
        &issuer_among,
        &issuer_nested,
        "\"https://issuer.fuzz.test\"",
        "\"HTTPS://ISSUER.FUZZ.TEST/\"",
        "\"https://evil.test/\"",
        "[]",
        "1",
        "null",
    ];
    let audience = json_string(AUDIENCE);
    let audience_array = format!("[{audience}]");
    let audience_among = format!("[\"billing\",{audience}]");
    let audience_mixed = format!("[1,{audience}]");
    let audience_nested = format!("[[{audience}]]");
    let audience_object = format!("{{\"aud\":{audience}}}");
    let audiences: &[&str] = &[
        &audience,
        &audience_array,
        &audience_among,
        &audience_mixed,
        &audience_nested,
        &audience_object,
        "\"billing\"",
        "\"CHATCORE\"",
        "[]",
        "1",
        "null",
    ];

    let mut fields = Vec::new();
    if !u.ratio(1, 16)? {
        fields.push(format!("\"sub\":{}", pick(u, subs)?));
    }
    if !u.ratio(1, 16)? {
        fields.push(format!("\"exp\":{}", time_value(u, now)?));
    }
    if u.ratio(1, 4)? {
        fields.push(format!("\"nbf\":{}", time_value(u, now)?));
    }
    if u.ratio(1, 4)? {
        fields.push(format!("\"iat\":{}", time_value(u, now)?));
    }
    if !u.ratio(1, 16)? {
        fields.push(format!("\"iss\":{}", pick(u, issuers)?));
    }
    if !u.ratio(1, 16)? {
        let aud = if u.ratio(1, 16)? {
            nested(u.int_in_range(1..=300)?, &audience)
        } else {
            pick(u, audiences)?
        };
        fields.push(format!("\"aud\":{aud}"));
    }
    if u.ratio(1, 16)? {
        // A duplicate claim: which one counts?
        let claim = *u.choose(&["sub", "exp", "iss", "aud", "nbf"])?;
        let value = match claim {
            "sub" => pick(u, subs)?,
            "iss" => pick(u, issuers)?,
            "aud" => pick(u, audiences)?,
            _ => time_value(u, now)?,
        };
        fields.push(format!("\"{claim}\":{value}"));
    }
    if u.ratio(1, 16)? {
        // Padding around the 8 KiB token limit (base64 grows it by a third).
        let len = u.int_in_range(5_900..=6_300)?;
        fields.push(format!("\"pad\":\"{}\"", "p".repeat(len)));
    }
    if u.ratio(1, 16)? {
        fields.push(format!(
            "{}:{}",
            json_string(u.arbitrary::<&str>()?),
            json_string(u.arbitrary::<&str>()?)
        ));
    }
    if !fields.is_empty() {
        let at = u.choose_index(fields.len())?;
        fields.rotate_left(at);
    }
    Ok(format!("{{{}}}", fields.join(",")))
}

/// A token part: usually base64url without padding, sometimes another encoding or raw text.
fn encode_part(u: &mut Unstructured, json: &str) -> ArbResult<String> {
    Ok(match u.int_in_range(0..=15)? {
        0 => URL_SAFE.encode(json),
        1 => STANDARD.encode(json),
        2 => json.to_owned(),
        3 => format!(" {}", URL_SAFE_NO_PAD.encode(json)),
        _ => URL_SAFE_NO_PAD.encode(json),
    })
}

fn sign(message: &str, key: &EncodingKey, algorithm: Algorithm) -> String {
    jsonwebtoken::crypto::sign(message.as_bytes(), key, algorithm).expect("signing works")
}

/// Builds a token from the input; returns it with who signed it, or `None` when it is one that
/// was already checked.
fn structured(u: &mut Unstructured) -> ArbResult<Option<(String, Signer)>> {
    let fx = fixture();
    let now = get_current_timestamp();
    let header = header_json(u)?;
    let header = encode_part(u, &header)?;
    let payload = payload_json(u, now)?;
    let payload = encode_part(u, &payload)?;
    let message = format!("{header}.{payload}");
    let (signature, signer) = match u.int_in_range(0..=31)? {
        0 => (String::new(), Signer::Forged),
        1 => (
            URL_SAFE_NO_PAD.encode(u.arbitrary::<&[u8]>()?),
            Signer::Forged,
        ),
        2 => (u.arbitrary::<&str>()?.to_owned(), Signer::Forged),
        3 => (
            sign(&message, &fx.wrong_secret, Algorithm::HS256),
            Signer::Forged,
        ),
        4 => (
            sign(&message, &fx.rsa_public_pem_secret, Algorithm::HS256),
            Signer::Forged,
        ),
        5 => (
            sign(&message, &fx.rsa_public_der_secret, Algorithm::HS256),
            Signer::Forged,
        ),
        6 => (sign(&message, &fx.secret, Algorithm::HS512), Signer::Forged),
        7 | 8 => {
            // A token signed with an RSA or EC key, as it is (checked once: its outcome does
            // not change until 2100) or with one bit flipped.
            let presigned = u.choose(&fx.presigned)?;
            let token = presigned.token(fx);
            if u.ratio(1, 2)? {
                let mut token = token.as_bytes().to_vec();
                let bit = u.choose_index(token.len() * 8)?;
                token[bit / 8] ^= 1 << (bit % 8);
                let token = String::from_utf8_lossy(&token).into_owned();
                return Ok(Some((token, Signer::Forged)));
            }
            if presigned.checked.set(()).is_err() {
                return Ok(None);
            }
            return Ok(Some((token.to_owned(), presigned.signer)));
        }
        9 => {
            // A valid signature with one bit flipped.
            let mut bytes = URL_SAFE_NO_PAD
                .decode(sign(&message, &fx.secret, Algorithm::HS256))
                .expect("base64url");
            let bit = u.choose_index(bytes.len() * 8)?;
            bytes[bit / 8] ^= 1 << (bit % 8);
            (URL_SAFE_NO_PAD.encode(bytes), Signer::Forged)
        }
        _ => (sign(&message, &fx.secret, Algorithm::HS256), Signer::Secret),
    };
    let token = match u.int_in_range(0..=31)? {
        0 => format!("{message}.{signature}.{signature}"),
        1 => message,
        2 => format!("{message}.{signature}\n"),
        3 => format!("{message}.{signature}="),
        _ => format!("{message}.{signature}"),
    };
    Ok(Some((token, signer)))
}

fuzz_target!(|data: &[u8]| {
    verify_all(&String::from_utf8_lossy(data), None);

    let mut u = Unstructured::new(data);
    let start = Instant::now();
    let built = structured(&mut u);
    if verbose() {
        eprintln!("built in {:?}", start.elapsed());
    }
    if let Ok(Some((token, signer))) = built {
        verify_all(&token, Some(signer));
    }
});
