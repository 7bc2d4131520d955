//! Authentication settings of `chat-server`: `AUTH_MODE` and the JWT keys, and the start-up
//! check that keeps an unauthenticated server off public addresses.
//!
//! | `AUTH_MODE` | client routes | start-up |
//! | --- | --- | --- |
//! | `jwt` | bearer tokens required ([`chatcore::auth`]) | needs `AUTH_JWT_SECRET` or `AUTH_JWKS_FILE` |
//! | `none` | open: anyone may act as any user | a warning is logged |
//! | unset | open | refused unless every listener is on a loopback address |

use std::net::SocketAddr;
use std::sync::Arc;

use chatcore::auth::{load_jwks, AuthConfig, AuthConfigError, Authenticator};

use crate::config::{AuthMode, ConfigError, Role, Settings};

fn auth_error(variable: &'static str, reason: impl std::fmt::Display) -> ConfigError {
    ConfigError::Auth {
        variable,
        reason: format!("{variable}: {reason}"),
    }
}

impl Settings {
    /// The authentication of the client routes `AUTH_MODE` names: JWT, or none.
    pub fn auth(&self) -> Result<chatcore::app::Auth, ConfigError> {
        Ok(match self.authenticator()? {
            Some(authenticator) => chatcore::app::Auth::jwt(authenticator),
            None => chatcore::app::Auth::disabled(),
        })
    }

    /// The authenticator of the client routes: `Some` with `AUTH_MODE=jwt`, `None` otherwise.
    /// Reads `AUTH_JWKS_FILE`; every problem is one line naming the variable at fault.
    pub fn authenticator(&self) -> Result<Option<Arc<Authenticator>>, ConfigError> {
        let secret = Self::present(&self.auth.jwt_secret);
        let jwks_file = Self::present(&self.auth.jwks_file);
        if self.auth.mode != Some(AuthMode::Jwt) {
            return match (secret, jwks_file) {
                (Some(_), _) => Err(ConfigError::Auth {
                    variable: "AUTH_MODE",
                    reason: "AUTH_JWT_SECRET is set but AUTH_MODE is not jwt".to_owned(),
                }),
                (_, Some(_)) => Err(ConfigError::Auth {
                    variable: "AUTH_MODE",
                    reason: "AUTH_JWKS_FILE is set but AUTH_MODE is not jwt".to_owned(),
                }),
                (None, None) => Ok(None),
            };
        }
        if secret.is_none() && jwks_file.is_none() {
            return Err(ConfigError::Auth {
                variable: "AUTH_JWT_SECRET",
                reason: "AUTH_MODE=jwt requires AUTH_JWT_SECRET (HS256) or AUTH_JWKS_FILE \
                         (RS256/ES256)"
                    .to_owned(),
            });
        }
        let mut config = AuthConfig::default().leeway(self.auth.leeway);
        if let Some(secret) = secret {
            config = config.hs256_secret(secret);
        }
        if let Some(path) = jwks_file {
            let jwks = load_jwks(path).map_err(|e| match e {
                AuthConfigError::ReadJwks { .. } => auth_error("AUTH_JWKS_FILE", e),
                other => auth_error("AUTH_JWKS_FILE", format!("{path}: {other}")),
            })?;
            config = config.jwks(jwks);
        }
        if let Some(issuer) = Self::present(&self.auth.issuer) {
            config = config.issuer(issuer.trim());
        }
        if let Some(audiences) = Self::present(&self.auth.audience) {
            for audience in audiences
                .split(',')
                .map(str::trim)
                .filter(|a| !a.is_empty())
            {
                config = config.audience(audience);
            }
        }
        let authenticator = Authenticator::new(config).map_err(|e| match e {
            AuthConfigError::WeakSecret(_) => auth_error("AUTH_JWT_SECRET", e),
            other => match jwks_file {
                Some(path) => auth_error("AUTH_JWKS_FILE", format!("{path}: {other}")),
                None => auth_error("AUTH_MODE", other),
            },
        })?;
        tracing::info!(?authenticator, "client routes require JWT bearer tokens");
        Ok(Some(Arc::new(authenticator)))
    }

    /// The start-up check of the roles that serve client routes (`all`, `persistence`,
    /// `chat-ws`, `notifications-ws`): without `AUTH_MODE`, every listener must be on a loopback
    /// address. Logs whether the client routes are authenticated.
    pub fn check_auth_exposure(&self, role: Role) -> Result<(), ConfigError> {
        if matches!(role, Role::Relay | Role::ChangeHandler | Role::Email) {
            return Ok(());
        }
        match self.auth.mode {
            Some(AuthMode::Jwt) => Ok(()),
            Some(AuthMode::None) => {
                tracing::warn!(
                    role = role.name(),
                    "AUTH_MODE=none: the client routes are unauthenticated, anyone can post, read \
                     and subscribe as any user"
                );
                Ok(())
            }
            None => {
                let exposed = [
                    ("LISTEN_ADDR", Some(self.server.listen_addr)),
                    ("INTERNAL_LISTEN_ADDR", self.server.internal_listen_addr),
                ]
                .into_iter()
                .find_map(|(name, addr)| addr.filter(|a| !is_loopback(a)).map(|a| (name, a)));
                match exposed {
                    Some((variable, addr)) => Err(ConfigError::Auth {
                        variable: "AUTH_MODE",
                        reason: format!(
                            "AUTH_MODE is unset and {variable} {addr} is not a loopback address: \
                             set AUTH_MODE=jwt (or AUTH_MODE=none to serve the client routes \
                             unauthenticated) explicitly"
                        ),
                    }),
                    None => {
                        tracing::info!(
                            role = role.name(),
                            "authentication is off (AUTH_MODE unset; listening on loopback only)"
                        );
                        Ok(())
                    }
                }
            }
        }
    }
}

fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn settings(flags: &[&str]) -> Settings {
        let mut args = vec!["chat-server"];
        args.extend_from_slice(flags);
        Settings::try_parse_from(args).expect("valid flags")
    }

    fn jwks_path() -> String {
        format!(
            "{}/../chatcore/tests/data/auth/jwks.json",
            env!("CARGO_MANIFEST_DIR")
        )
    }

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn unset_mode_is_refused_on_a_public_address_and_allowed_on_loopback() {
        let public = settings(&["--listen-addr", "0.0.0.0:8080"]);
        let error = public
            .check_auth_exposure(Role::All)
            .expect_err("public without AUTH_MODE");
        let line = error.to_string();
        assert!(
            line.contains("AUTH_MODE=jwt")
                && line.contains("AUTH_MODE=none")
                && line.contains("LISTEN_ADDR 0.0.0.0:8080"),
            "{line}"
        );
        assert!(!line.contains('\n'));
        let internal = settings(&["--internal-listen-addr", "10.0.1.11:9080"]);
        let line = internal
            .check_auth_exposure(Role::ChatWs)
            .expect_err("internal listener public")
            .to_string();
        assert!(
            line.contains("INTERNAL_LISTEN_ADDR 10.0.1.11:9080"),
            "{line}"
        );
        for addr in ["127.0.0.1:8080", "[::1]:8080", "127.0.0.2:0"] {
            settings(&["--listen-addr", addr])
                .check_auth_exposure(Role::All)
                .expect("loopback is fine");
        }
        for flags in [
            &["--listen-addr", "0.0.0.0:8080", "--auth-mode", "none"][..],
            &["--listen-addr", "0.0.0.0:8080", "--auth-mode", "jwt"][..],
        ] {
            settings(flags)
                .check_auth_exposure(Role::Persistence)
                .expect("explicit mode");
        }
        // Roles without client routes are not concerned.
        settings(&["--listen-addr", "0.0.0.0:8080"])
            .check_auth_exposure(Role::ChangeHandler)
            .expect("no client routes");
    }

    #[test]
    fn help_documents_the_auth_variables_and_hides_the_secret() {
        use clap::CommandFactory;
        let help = crate::Cli::command().render_long_help().to_string();
        for variable in [
            "AUTH_MODE",
            "AUTH_JWT_SECRET",
            "AUTH_JWKS_FILE",
            "AUTH_ISSUER",
            "AUTH_AUDIENCE",
            "AUTH_LEEWAY",
        ] {
            assert!(help.contains(&format!("[env: {variable}")), "{variable}");
        }
        assert!(
            help.contains("- jwt: ") && help.contains("- none: "),
            "{help}"
        );
        assert!(
            !help.contains("[env: AUTH_JWT_SECRET="),
            "secret value hidden"
        );
    }

    #[test]
    fn jwt_mode_needs_a_key_and_names_the_variable_at_fault() {
        let line = |flags: &[&str]| {
            settings(flags)
                .authenticator()
                .expect_err("refused")
                .to_string()
        };
        assert_eq!(
            line(&["--auth-mode", "jwt"]),
            "AUTH_MODE=jwt requires AUTH_JWT_SECRET (HS256) or AUTH_JWKS_FILE (RS256/ES256)"
        );
        let short = line(&["--auth-mode", "jwt", "--auth-jwt-secret", "short"]);
        assert!(short.starts_with("AUTH_JWT_SECRET: "), "{short}");
        assert!(
            !short.contains("short\""),
            "the secret is not echoed: {short}"
        );
        let missing = line(&[
            "--auth-mode",
            "jwt",
            "--auth-jwks-file",
            "/nonexistent/jwks.json",
        ]);
        assert!(
            missing.starts_with("AUTH_JWKS_FILE: cannot read /nonexistent/jwks.json: "),
            "{missing}"
        );
        let not_jwks = format!("{}/Cargo.toml", env!("CARGO_MANIFEST_DIR"));
        let invalid = line(&["--auth-mode", "jwt", "--auth-jwks-file", &not_jwks]);
        assert!(
            invalid.starts_with("AUTH_JWKS_FILE: ") && invalid.contains("not a JWK set"),
            "{invalid}"
        );
        assert!(!invalid.contains('\n'), "{invalid}");
        assert!(line(&["--auth-jwt-secret", SECRET]).contains("AUTH_MODE is not jwt"));
        assert!(line(&["--auth-mode", "none", "--auth-jwks-file", "x"])
            .contains("AUTH_MODE is not jwt"));
    }

    #[test]
    fn jwt_mode_builds_an_authenticator_from_the_secret_or_the_key_set() {
        assert!(settings(&[]).authenticator().expect("no auth").is_none());
        assert!(settings(&["--auth-mode", "none"])
            .authenticator()
            .expect("no auth")
            .is_none());
        let jwks = jwks_path();
        for flags in [
            &["--auth-mode", "jwt", "--auth-jwt-secret", SECRET][..],
            &["--auth-mode", "jwt", "--auth-jwks-file", &jwks][..],
            &[
                "--auth-mode",
                "jwt",
                "--auth-jwt-secret",
                SECRET,
                "--auth-jwks-file",
                &jwks,
                "--auth-issuer",
                "https://issuer.test/",
                "--auth-audience",
                "chat, chat-admin",
                "--auth-leeway",
                "5s",
            ][..],
        ] {
            let auth = settings(flags)
                .authenticator()
                .expect("valid")
                .expect("jwt");
            let debug = format!("{auth:?}");
            assert!(!debug.contains(SECRET), "{debug}");
        }
    }
}
