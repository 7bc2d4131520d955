//! Authentication of the client routes with JWT bearer tokens, end to end: a served
//! `chat-server` with `AUTH_MODE=jwt` (HS256 secret, or RS256/ES256 keys from a JWK set), real
//! HTTP and websocket clients, and the start-up rules of the binary (an unauthenticated server
//! only on loopback unless `AUTH_MODE` says otherwise).

use crate::common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use chatcore::stream_id::stream_id;
use common::{settings, TestServer, Ws, WAIT};
use jsonwebtoken::{encode, get_current_timestamp, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Error as WsError;

const SECRET: &str = "e2e-test-secret-0123456789abcdef0123";
const ISSUER: &str = "https://issuer.test/";
const AUDIENCE: &str = "chat";

fn data_dir() -> String {
    format!("{}/../chatcore/tests/data/auth", env!("CARGO_MANIFEST_DIR"))
}

/// The DER body of a PEM test key.
fn der(name: &str) -> Vec<u8> {
    let pem = std::fs::read_to_string(format!("{}/{name}", data_dir())).expect("test key");
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    STANDARD.decode(body).expect("PEM body")
}

fn claims(sub: &str) -> Value {
    let now = get_current_timestamp();
    json!({"sub": sub, "iat": now, "exp": now + 300, "iss": ISSUER, "aud": AUDIENCE})
}

fn sign(alg: Algorithm, kid: Option<&str>, claims: &Value, key: &EncodingKey) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    encode(&header, claims, key).expect("encode")
}

fn hs256(sub: &str) -> String {
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    sign(Algorithm::HS256, None, &claims(sub), &key)
}

fn rs256(claims: &Value) -> String {
    let key = EncodingKey::from_rsa_der(&der("rsa-test-private.pem"));
    sign(Algorithm::RS256, Some("rsa-test-1"), claims, &key)
}

fn es256(claims: &Value) -> String {
    let key = EncodingKey::from_ec_der(&der("ec-test-private.pem"));
    sign(Algorithm::ES256, Some("ec-test-1"), claims, &key)
}

async fn hs256_server() -> TestServer {
    let flags = ["--auth-mode", "jwt", "--auth-jwt-secret", SECRET];
    TestServer::start_with(settings(&flags), |backends| backends).await
}

async fn jwks_server() -> TestServer {
    let jwks = format!("{}/jwks.json", data_dir());
    let flags = [
        "--auth-mode",
        "jwt",
        "--auth-jwks-file",
        &jwks,
        "--auth-issuer",
        ISSUER,
        "--auth-audience",
        "other-service, chat",
    ];
    TestServer::start_with(settings(&flags), |backends| backends).await
}

/// Status, `WWW-Authenticate` and JSON body of a request with an optional bearer token.
async fn call(
    server: &TestServer,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Option<String>, Value) {
    let url = format!("{}{path}", server.base);
    let mut request = match method {
        "POST" => server.http.post(url),
        _ => server.http.get(url),
    };
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (
        status,
        challenge,
        response.json().await.unwrap_or(Value::Null),
    )
}

fn message(sender: &str, receiver: &str) -> Value {
    json!({"content": format!("from {sender}"), "sender_id": sender, "receiver_id": receiver})
}

fn history_path(a: &str, b: &str) -> String {
    format!(
        "/chat/messages?stream_id={}&sender_id={a}&receiver_id={b}",
        stream_id(a, b)
    )
}

fn chat_path(a: &str, b: &str) -> String {
    format!(
        "/chat/subscribe?stream_id={}&sender_id={a}&receiver_id={b}",
        stream_id(a, b)
    )
}

/// How a websocket handshake ended: open, or refused with a status and a JSON body.
enum Handshake {
    Open(Box<Ws>),
    Refused(u16, Value),
}

impl Handshake {
    fn open(self) -> Ws {
        match self {
            Self::Open(ws) => *ws,
            Self::Refused(status, body) => panic!("refused with {status}: {body}"),
        }
    }

    fn refused(self) -> (u16, Value) {
        match self {
            Self::Open(_) => panic!("the handshake should have been refused"),
            Self::Refused(status, body) => (status, body),
        }
    }
}

/// Opens `path_and_query` as a websocket, with the token in the query, in the header, or none.
async fn subscribe(
    server: &TestServer,
    path_and_query: &str,
    query_token: Option<&str>,
    header_token: Option<&str>,
) -> Handshake {
    let mut url = format!("{}{path_and_query}", server.ws_base);
    if let Some(token) = query_token {
        url.push_str(&format!("&access_token={token}"));
    }
    let mut request = url.into_client_request().expect("request");
    if let Some(token) = header_token {
        let value = format!("Bearer {token}").parse().expect("header value");
        request.headers_mut().insert("authorization", value);
    }
    match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
        .await
        .expect("handshake in time")
    {
        Ok((stream, _)) => Handshake::Open(Box::new(Ws(stream))),
        Err(WsError::Http(response)) => {
            let status = response.status().as_u16();
            let body = response
                .body()
                .as_deref()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or(Value::Null);
            Handshake::Refused(status, body)
        }
        Err(other) => panic!("websocket error: {other}"),
    }
}

fn error_text(body: &Value) -> &str {
    body["error"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn requests_without_a_valid_token_get_401_json_and_the_operational_routes_stay_open() {
    let server = hs256_server().await;
    let expired = {
        let mut claims = claims("alice");
        claims["exp"] = json!(get_current_timestamp() - 3600);
        sign(
            Algorithm::HS256,
            None,
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
    };
    let forged = sign(
        Algorithm::HS256,
        None,
        &claims("alice"),
        &EncodingKey::from_secret(b"not-the-server-secret-0123456789abcdef"),
    );
    for (token, expected) in [
        (None, "bearer token is required"),
        (Some("garbage"), "malformed token"),
        (Some(expired.as_str()), "token expired"),
        (Some(forged.as_str()), "invalid token signature"),
    ] {
        for (method, path, body) in [
            ("POST", "/chat/messages", Some(message("alice", "bob"))),
            ("POST", "/chat/persist", Some(message("alice", "bob"))),
            ("GET", history_path("alice", "bob").as_str(), None),
        ] {
            let (status, challenge, json) = call(&server, method, path, token, body).await;
            assert_eq!(status, 401, "{method} {path} {token:?}: {json}");
            assert_eq!(challenge.as_deref(), Some("Bearer"), "{method} {path}");
            assert!(error_text(&json).contains(expected), "{json}");
            assert!(!error_text(&json).contains(SECRET), "{json}");
        }
    }
    for path in ["/healthz", "/readyz"] {
        let (status, _, _) = call(&server, "GET", path, None, None).await;
        assert_eq!(status, 200, "{path}");
    }
    let metrics = server
        .http
        .get(format!("{}/metrics", server.base))
        .send()
        .await
        .expect("metrics");
    assert_eq!(metrics.status(), 200);
    // Nothing was stored by the refused posts.
    let alice = hs256("alice");
    let (status, _, page) = call(
        &server,
        "GET",
        &history_path("alice", "bob"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!((status, page["messages"].clone()), (200, json!([])));
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn a_token_acts_only_for_its_subject_when_posting_and_reading_history() {
    let server = hs256_server().await;
    let alice = hs256("alice");
    let (status, _, stored) = call(
        &server,
        "POST",
        "/chat/messages",
        Some(&alice),
        Some(message("alice", "bob")),
    )
    .await;
    assert_eq!(status, 201, "{stored}");
    assert_eq!(stored["sender_id"], "alice");
    for path in ["/chat/messages", "/chat/persist"] {
        let (status, _, json) = call(
            &server,
            "POST",
            path,
            Some(&alice),
            Some(message("bob", "alice")),
        )
        .await;
        assert_eq!(status, 403, "{path}: {json}");
        assert!(error_text(&json).contains("bob"), "{json}");
    }

    let (status, _, page) = call(
        &server,
        "GET",
        &history_path("alice", "bob"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["messages"], json!([stored]));
    let (status, _, page) = call(
        &server,
        "GET",
        &history_path("bob", "alice"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(
        (status, page["messages"].as_array().map(Vec::len)),
        (200, Some(1))
    );
    let (status, _, json) = call(
        &server,
        "GET",
        &history_path("carol", "dave"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(status, 403, "{json}");
    // The participants must be named, and must match the stream.
    let bare = format!("/chat/messages?stream_id={}", stream_id("alice", "bob"));
    let (status, _, _) = call(&server, "GET", &bare, Some(&alice), None).await;
    assert_eq!(status, 400);
    let mismatched = format!(
        "/chat/messages?stream_id={}&sender_id=alice&receiver_id=bob",
        stream_id("carol", "dave")
    );
    let (status, _, _) = call(&server, "GET", &mismatched, Some(&alice), None).await;
    assert_eq!(status, 400);
    // Only the one message alice was allowed to post is stored.
    let (_, _, page) = call(
        &server,
        "GET",
        &history_path("alice", "bob"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(page["messages"].as_array().map(Vec::len), Some(1));
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn subscriptions_need_the_subjects_own_conversation_or_notifications() {
    let server = hs256_server().await;
    let (alice, bob) = (hs256("alice"), hs256("bob"));

    // The token in the query (what a browser can do) and in the header.
    let mut alice_chat = subscribe(&server, &chat_path("alice", "bob"), Some(&alice), None)
        .await
        .open();
    let mut bob_chat = subscribe(&server, &chat_path("bob", "alice"), None, Some(&bob))
        .await
        .open();
    let mut bob_notifications = subscribe(
        &server,
        "/notifications/subscribe?user_id=bob",
        Some(&bob),
        None,
    )
    .await
    .open();
    let stream = stream_id("alice", "bob");
    server
        .await_sessions(&server.chat_sockets, &stream, 2)
        .await;
    server
        .await_sessions(&server.notification_sockets, "bob", 1)
        .await;

    // Someone else's data: 403 JSON before the upgrade, nothing registered.
    for (path, query, header) in [
        (chat_path("carol", "dave"), Some(&alice), None),
        (chat_path("carol", "dave"), None, Some(&alice)),
        (
            "/notifications/subscribe?user_id=bob".to_owned(),
            Some(&alice),
            None,
        ),
        (
            "/notifications/subscribe?user_id=bob".to_owned(),
            None,
            Some(&alice),
        ),
    ] {
        let (status, body) = subscribe(
            &server,
            &path,
            query.map(String::as_str),
            header.map(String::as_str),
        )
        .await
        .refused();
        assert_eq!(status, 403, "{path}: {body}");
        assert!(!error_text(&body).is_empty(), "{body}");
    }
    assert_eq!(server.chat_sockets_count(&stream_id("carol", "dave")), 0);
    // No token, or an invalid one: 401.
    for token in [None, Some("not.a.token")] {
        let (status, body) = subscribe(&server, &chat_path("alice", "bob"), token, None)
            .await
            .refused();
        assert_eq!(status, 401, "{token:?}: {body}");
    }
    // Given twice: 400.
    let (status, _) = subscribe(
        &server,
        &chat_path("alice", "bob"),
        Some(&alice),
        Some(&alice),
    )
    .await
    .refused();
    assert_eq!(status, 400);

    let (status, _, stored) = call(
        &server,
        "POST",
        "/chat/messages",
        Some(&alice),
        Some(message("alice", "bob")),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(alice_chat.next_json().await, stored);
    assert_eq!(bob_chat.next_json().await, stored);
    let envelope = bob_notifications.next_json().await;
    assert_eq!(envelope["notification_type"], "chat_notification");
    assert_eq!(envelope["payload"], stored);
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn internal_routes_are_not_behind_the_jwt_check() {
    let server = hs256_server().await;
    let alice = hs256("alice");
    let _socket = subscribe(&server, &chat_path("alice", "bob"), Some(&alice), None)
        .await
        .open();
    let stream = stream_id("alice", "bob");
    server
        .await_sessions(&server.chat_sockets, &stream, 1)
        .await;
    // No INTERNAL_TOKEN in this server: the internal route answers without any token.
    let (status, _, json) = call(
        &server,
        "POST",
        "/chat/close-stream",
        None,
        Some(json!({"stream_id": stream})),
    )
    .await;
    assert_eq!((status, json["closed"].as_u64()), (200, Some(1)), "{json}");
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn rs256_and_es256_tokens_from_the_jwk_set_with_issuer_and_audience() {
    let server = jwks_server().await;
    let alice = rs256(&claims("alice"));
    let bob = es256(&claims("bob"));
    let mut bob_chat = subscribe(&server, &chat_path("alice", "bob"), Some(&bob), None)
        .await
        .open();
    server
        .await_sessions(&server.chat_sockets, &stream_id("alice", "bob"), 1)
        .await;
    let (status, _, stored) = call(
        &server,
        "POST",
        "/chat/messages",
        Some(&alice),
        Some(message("alice", "bob")),
    )
    .await;
    assert_eq!(status, 201, "{stored}");
    assert_eq!(bob_chat.next_json().await, stored);
    let (status, _, _) = call(
        &server,
        "POST",
        "/chat/messages",
        Some(&bob),
        Some(message("alice", "bob")),
    )
    .await;
    assert_eq!(status, 403);

    let mut wrong_audience = claims("alice");
    wrong_audience["aud"] = json!("billing");
    let mut wrong_issuer = claims("alice");
    wrong_issuer["iss"] = json!("https://evil.test/");
    let public_pem = std::fs::read(format!("{}/rsa-test-public.pem", data_dir())).expect("pem");
    let confused = sign(
        Algorithm::HS256,
        Some("rsa-test-1"),
        &claims("alice"),
        &EncodingKey::from_secret(&public_pem),
    );
    let unknown_kid = sign(
        Algorithm::RS256,
        Some("retired"),
        &claims("alice"),
        &EncodingKey::from_rsa_der(&der("rsa-test-private.pem")),
    );
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(claims("alice").to_string())
    );
    for (token, expected) in [
        (rs256(&wrong_audience), "wrong token audience"),
        (es256(&wrong_issuer), "wrong token issuer"),
        (confused, "does not match its key"),
        (unknown_kid, "no key for this token's kid"),
        (none, "\"none\" is not accepted"),
        (hs256("alice"), "\"HS256\" is not accepted"),
    ] {
        let (status, challenge, json) = call(
            &server,
            "POST",
            "/chat/messages",
            Some(&token),
            Some(message("alice", "bob")),
        )
        .await;
        assert_eq!(status, 401, "{expected}: {json}");
        assert_eq!(challenge.as_deref(), Some("Bearer"));
        assert!(error_text(&json).contains(expected), "{expected}: {json}");
    }
    let (_, _, page) = call(
        &server,
        "GET",
        &history_path("alice", "bob"),
        Some(&bob),
        None,
    )
    .await;
    assert_eq!(
        page["messages"],
        json!([stored]),
        "only the allowed post is stored"
    );
    server.stop().await.expect("clean stop");
}

/// Runs the binary with only `vars` in its environment and returns its exit code and stderr.
fn chat_server(vars: &[(&str, &str)]) -> (Option<i32>, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_chat-server"))
        .env_clear()
        .env("STORE", "memory")
        .envs(vars.iter().copied())
        .output()
        .expect("run chat-server");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn the_binary_refuses_a_public_listener_without_auth_mode_and_bad_jwt_settings() {
    let jwks = format!("{}/jwks.json", data_dir());
    let not_jwks = format!("{}/Cargo.toml", env!("CARGO_MANIFEST_DIR"));
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[("LISTEN_ADDR", "0.0.0.0:0")],
            "AUTH_MODE is unset and LISTEN_ADDR 0.0.0.0:0 is not a loopback address: set AUTH_MODE=jwt",
        ),
        (
            &[("LISTEN_ADDR", "127.0.0.1:0"), ("INTERNAL_LISTEN_ADDR", "0.0.0.0:0")],
            "INTERNAL_LISTEN_ADDR 0.0.0.0:0 is not a loopback address",
        ),
        (
            &[("LISTEN_ADDR", "127.0.0.1:0"), ("AUTH_MODE", "jwt")],
            "AUTH_MODE=jwt requires AUTH_JWT_SECRET (HS256) or AUTH_JWKS_FILE (RS256/ES256)",
        ),
        (
            &[("LISTEN_ADDR", "127.0.0.1:0"), ("AUTH_MODE", "jwt"), ("AUTH_JWKS_FILE", "/nonexistent/jwks.json")],
            "AUTH_JWKS_FILE: cannot read /nonexistent/jwks.json",
        ),
        (
            &[("LISTEN_ADDR", "127.0.0.1:0"), ("AUTH_MODE", "jwt"), ("AUTH_JWKS_FILE", &not_jwks)],
            "AUTH_JWKS_FILE: ",
        ),
        (
            &[("LISTEN_ADDR", "127.0.0.1:0"), ("AUTH_MODE", "jwt"), ("AUTH_JWT_SECRET", "short")],
            "AUTH_JWT_SECRET: the HS256 secret is 5 bytes",
        ),
        (
            &[("LISTEN_ADDR", "127.0.0.1:0"), ("AUTH_JWKS_FILE", &jwks)],
            "AUTH_JWKS_FILE is set but AUTH_MODE is not jwt",
        ),
    ];
    for (vars, expected) in cases {
        let (code, stderr) = chat_server(vars);
        assert_eq!(code, Some(1), "{vars:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(
            stderr.starts_with("chat-server: ") && stderr.contains(expected),
            "{vars:?}: {stderr}"
        );
    }
}

/// Starts the binary with `vars`, waits for its listener, checks `/healthz`, returns its log,
/// then stops it.
fn start_and_probe(vars: &[(&str, &str)]) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_chat-server"))
        .env_clear()
        .env("STORE", "memory")
        .env("LOG_FORMAT", "json")
        .envs(vars.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn chat-server");
    let stdout = child.stdout.take().expect("stdout");
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut log = String::new();
    let deadline = std::time::Instant::now() + WAIT;
    let port = loop {
        let remaining = deadline.saturating_duration_since(std::time::Instant::now());
        let Ok(line) = lines_rx.recv_timeout(remaining) else {
            let _ = child.kill();
            panic!("no listener within {WAIT:?}; log so far:\n{log}");
        };
        log.push_str(&line);
        log.push('\n');
        let Ok(event) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        if event["fields"]["message"] == "chat-server listening" {
            let addr = event["fields"]["addr"].as_str().expect("addr").to_owned();
            break addr.rsplit(':').next().expect("port").to_owned();
        }
    };
    // The listener is on every interface; probe it on loopback only.
    let status = std::net::TcpStream::connect(format!("127.0.0.1:{port}")).map(|mut stream| {
        use std::io::{Read, Write};
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .expect("write");
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer.lines().next().unwrap_or_default().to_owned()
    });
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        status.as_deref().ok(),
        Some("HTTP/1.1 200 OK"),
        "healthz; log:\n{log}"
    );
    log
}

#[test]
fn the_binary_starts_with_auth_mode_none_on_a_public_address_and_says_so() {
    let log = start_and_probe(&[("LISTEN_ADDR", "0.0.0.0:0"), ("AUTH_MODE", "none")]);
    assert!(
        log.contains("\"level\":\"WARN\"")
            && log.contains("AUTH_MODE=none: the client routes are unauthenticated"),
        "{log}"
    );
    let log = start_and_probe(&[("LISTEN_ADDR", "127.0.0.1:0")]);
    assert!(
        log.contains("authentication is off (AUTH_MODE unset; listening on loopback only)"),
        "{log}"
    );
    let log = start_and_probe(&[
        ("LISTEN_ADDR", "0.0.0.0:0"),
        ("AUTH_MODE", "jwt"),
        ("AUTH_JWT_SECRET", SECRET),
    ]);
    assert!(
        log.contains("client routes require JWT bearer tokens"),
        "{log}"
    );
    assert!(!log.contains(SECRET), "the secret is never logged: {log}");
}

/// Sends `body` to `path` as the holder of `token`; returns status and JSON body.
async fn act(server: &TestServer, path: &str, token: &str, body: Option<Value>) -> (u16, Value) {
    let url = format!("{}{path}", server.base);
    let request = match body {
        Some(body) => server.http.post(url).json(&body),
        None => server.http.get(url),
    };
    let response = request.bearer_auth(token).send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn conversation_routes_act_only_as_the_token_subject_and_for_members() {
    let server = hs256_server().await;
    let (ann, bob, zed) = (hs256("ann"), hs256("bob"), hs256("zed"));
    let group = json!({"created_by": "ann", "members": ["ann", "bob", "cy"]});
    let (status, _) = act(&server, "/conversations", &bob, Some(group.clone())).await;
    assert_eq!(status, 403, "created_by must be the subject");
    let (status, created) = act(&server, "/conversations", &ann, Some(group)).await;
    assert_eq!(status, 201, "{created}");
    let id = created["stream_id"].as_str().expect("stream_id").to_owned();

    let post = |sender: &str| json!({"content": "hi", "sender_id": sender, "stream_id": id});
    let (status, message) = act(&server, "/chat/messages", &bob, Some(post("bob"))).await;
    assert_eq!(status, 201, "a member posts as itself");
    let (status, _) = act(&server, "/chat/messages", &bob, Some(post("ann"))).await;
    assert_eq!(status, 403, "not as another member");
    let (status, _) = act(&server, "/chat/messages", &zed, Some(post("zed"))).await;
    assert_eq!(status, 403, "nor a non-member as itself");

    let history = format!("/chat/messages?stream_id={id}");
    let (status, page) = act(&server, &history, &ann, None).await;
    assert_eq!(
        (status, page["messages"].as_array().map(Vec::len)),
        (200, Some(1)),
        "the subject reads"
    );
    assert_eq!(
        act(&server, &history, &zed, None).await.0,
        403,
        "a non-member does not"
    );
    let as_other = format!("{history}&user_id=bob");
    assert_eq!(
        act(&server, &as_other, &ann, None).await.0,
        403,
        "user_id must be the subject"
    );

    assert_eq!(
        act(&server, "/conversations?user_id=ann", &bob, None)
            .await
            .0,
        403
    );
    let (status, list) = act(&server, "/conversations?user_id=bob", &bob, None).await;
    assert_eq!(status, 200);
    assert!(
        list["conversations"]
            .as_array()
            .is_some_and(|l| l.iter().any(|c| c["stream_id"] == id.as_str())),
        "{list}"
    );
    assert_eq!(
        act(&server, &format!("/conversations/{id}"), &zed, None)
            .await
            .0,
        403
    );

    let receipt =
        |user: &str| json!({"stream_id": id, "user_id": user, "message_id": message["message_id"]});
    assert_eq!(
        act(&server, "/chat/read", &bob, Some(receipt("ann")))
            .await
            .0,
        403
    );
    let (status, state) = act(&server, "/chat/read", &ann, Some(receipt("ann"))).await;
    assert_eq!((status, state["unread"].as_u64()), (200, Some(0)));
    let change = json!({"by": "ann", "add": ["dee"]});
    let members = format!("/conversations/{id}/members");
    assert_eq!(
        act(&server, &members, &bob, Some(change.clone())).await.0,
        403,
        "by must be the subject"
    );
    assert_eq!(act(&server, &members, &ann, Some(change)).await.0, 200);

    let path = format!("/chat/subscribe?stream_id={id}");
    let (status, _) = subscribe(&server, &path, Some(&zed), None).await.refused();
    assert_eq!(status, 403, "a non-member's subscription");
    let mut socket = subscribe(&server, &path, None, Some(&bob)).await.open();
    server.await_sessions(&server.chat_sockets, &id, 1).await;
    let (status, stored) = act(&server, "/chat/messages", &ann, Some(post("ann"))).await;
    assert_eq!(status, 201);
    assert_eq!(
        socket.next_json().await,
        stored,
        "the member's socket, user from the token"
    );
    server.stop().await.expect("stops");
}
