//! `AUTH_*`: how the client routes authenticate. Turned into an authenticator by
//! `Settings::authenticator` (beside the start-up exposure check).

use std::time::Duration;

use chatcore::config::parse_duration;
use clap::ValueEnum;

/// `jwt` or `none`: how the client routes authenticate (`AUTH_MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuthMode {
    /// JWT bearer tokens (`AUTH_JWT_SECRET` and/or `AUTH_JWKS_FILE`); the subject is the user.
    Jwt,
    /// No authentication, chosen explicitly: anyone may act as any user.
    None,
}

/// Authentication of the client routes (flattened into [`super::Settings`] as `auth`).
#[derive(Debug, Clone, clap::Args)]
pub struct AuthSettings {
    /// Authentication of the client routes: `jwt` (bearer tokens) or `none` (anyone may act as
    /// any user). Unset: none, and `chat-server` refuses to start unless every listener is on a
    /// loopback address.
    #[arg(
        long = "auth-mode",
        id = "auth_mode",
        value_name = "AUTH_MODE",
        global = true,
        env = "AUTH_MODE",
        value_enum
    )]
    pub mode: Option<AuthMode>,
    /// HS256 shared secret of the JWTs (its bytes as given; at least 32). Prefer the environment
    /// variable to the flag, which other local users can see.
    #[arg(
        long = "auth-jwt-secret",
        id = "auth_jwt_secret",
        value_name = "AUTH_JWT_SECRET",
        global = true,
        env = "AUTH_JWT_SECRET",
        hide_env_values = true
    )]
    pub jwt_secret: Option<String>,
    /// JWK set file (`{"keys": [...]}`) with the public keys of RS256 and ES256 JWTs, chosen by
    /// the token's `kid`. Read at start-up.
    #[arg(
        long = "auth-jwks-file",
        id = "auth_jwks_file",
        value_name = "AUTH_JWKS_FILE",
        global = true,
        env = "AUTH_JWKS_FILE"
    )]
    pub jwks_file: Option<String>,
    /// Required `iss` claim of the JWTs; unset: not checked.
    #[arg(
        long = "auth-issuer",
        id = "auth_issuer",
        value_name = "AUTH_ISSUER",
        global = true,
        env = "AUTH_ISSUER"
    )]
    pub issuer: Option<String>,
    /// Accepted `aud` values, comma-separated: a JWT must name at least one. Unset: not checked.
    #[arg(
        long = "auth-audience",
        id = "auth_audience",
        value_name = "AUTH_AUDIENCE",
        global = true,
        env = "AUTH_AUDIENCE"
    )]
    pub audience: Option<String>,
    /// Clock-skew leeway of the JWTs' `exp` and `nbf`.
    #[arg(
        long = "auth-leeway",
        id = "auth_leeway",
        value_name = "AUTH_LEEWAY",
        global = true,
        env = "AUTH_LEEWAY",
        default_value = "30s",
        value_parser = parse_duration
    )]
    pub leeway: Duration,
}
