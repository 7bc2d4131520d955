use axum::body::Body;
use axum::http::StatusCode;
use axum::routing::get;
use base64::engine::general_purpose::STANDARD;
use jsonwebtoken::{encode, get_current_timestamp, EncodingKey, Header};
use serde_json::json;
use tower::ServiceExt;

use std::sync::Arc;
use std::time::Duration;

use axum::http::header;
use axum::Router;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::Algorithm;
use serde_json::Value;

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
