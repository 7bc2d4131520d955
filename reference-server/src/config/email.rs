//! Role `email`: the SMTP server and sender (`SMTP_*`, `EMAIL_FROM_*`), the consumer group,
//! retries, idempotency and dead-letter topic of the e-mail consumer.

use std::time::Duration;

use chatcore::config::parse_duration;
use chatcore::email::{SmtpConfig, SmtpEmailSender, SmtpTls, EMAIL_CONSUMER};

use super::error::{present, required};
use super::ConfigError;

const ROLE: &str = "email";

fn parse_tls(text: &str) -> Result<SmtpTls, String> {
    text.parse()
}

/// The SMTP server and the sender of the e-mails (flattened into [`EmailSettings`] as `smtp`).
#[derive(Debug, Clone, clap::Args)]
pub struct SmtpSettings {
    /// SMTP server host (role `email`, required).
    #[arg(
        long = "smtp-host",
        id = "smtp_host",
        value_name = "SMTP_HOST",
        global = true,
        env = "SMTP_HOST"
    )]
    pub host: Option<String>,
    /// SMTP server port; unset: 25, 587 or 465 by `SMTP_TLS`.
    #[arg(
        long = "smtp-port",
        id = "smtp_port",
        value_name = "SMTP_PORT",
        global = true,
        env = "SMTP_PORT"
    )]
    pub port: Option<u16>,
    /// SMTP AUTH user; with `SMTP_PASSWORD`. Unset: no AUTH.
    #[arg(
        long = "smtp-username",
        id = "smtp_username",
        value_name = "SMTP_USERNAME",
        global = true,
        env = "SMTP_USERNAME"
    )]
    pub username: Option<String>,
    /// SMTP AUTH password.
    #[arg(
        long = "smtp-password",
        id = "smtp_password",
        value_name = "SMTP_PASSWORD",
        global = true,
        env = "SMTP_PASSWORD",
        hide_env_values = true
    )]
    pub password: Option<String>,
    /// Connection security: `starttls` (required STARTTLS), `tls` (implicit TLS, "SMTPS") or
    /// `none` (plain text: a trusted relay or a test sink only).
    #[arg(
        long = "smtp-tls",
        id = "smtp_tls",
        value_name = "SMTP_TLS",
        global = true,
        env = "SMTP_TLS",
        default_value = "starttls",
        value_parser = parse_tls
    )]
    pub tls: SmtpTls,
    /// Upper bound of one whole SMTP exchange.
    #[arg(
        long = "smtp-timeout",
        id = "smtp_timeout",
        value_name = "SMTP_TIMEOUT",
        global = true,
        env = "SMTP_TIMEOUT",
        default_value = "10s",
        value_parser = parse_duration
    )]
    pub timeout: Duration,
    /// Sender address of the e-mails (role `email`, required).
    #[arg(
        long = "email-from-address",
        id = "email_from_address",
        value_name = "EMAIL_FROM_ADDRESS",
        global = true,
        env = "EMAIL_FROM_ADDRESS"
    )]
    pub from_address: Option<String>,
    /// Sender display name.
    #[arg(
        long = "email-from-name",
        id = "email_from_name",
        value_name = "EMAIL_FROM_NAME",
        global = true,
        env = "EMAIL_FROM_NAME"
    )]
    pub from_name: Option<String>,
}

impl SmtpSettings {
    /// The SMTP configuration, checked: one error naming the variable at fault.
    pub fn config(&self) -> Result<SmtpConfig, ConfigError> {
        let host = required(&self.host, "SMTP_HOST", ROLE)?;
        if host.contains(char::is_whitespace) || host.contains('/') {
            return Err(ConfigError::Backend {
                variable: "SMTP_HOST",
                reason: format!("{host:?} is not a host name (no scheme, no port)"),
            });
        }
        if self.port == Some(0) {
            return Err(ConfigError::Invalid {
                variable: "SMTP_PORT",
                reason: "must be between 1 and 65535",
            });
        }
        let from = required(&self.from_address, "EMAIL_FROM_ADDRESS", ROLE)?;
        let credentials = match (present(&self.username), present(&self.password)) {
            (Some(user), Some(password)) => Some((user.to_owned(), password.to_owned())),
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigError::Missing {
                    variable: "SMTP_PASSWORD",
                    role: "email with SMTP_USERNAME",
                })
            }
            (None, Some(_)) => {
                return Err(ConfigError::Missing {
                    variable: "SMTP_USERNAME",
                    role: "email with SMTP_PASSWORD",
                })
            }
        };
        if self.timeout.is_zero() {
            return Err(ConfigError::Invalid {
                variable: "SMTP_TIMEOUT",
                reason: "must be more than 0s",
            });
        }
        let config = SmtpConfig {
            host: host.trim().to_owned(),
            port: self.port,
            tls: self.tls,
            credentials,
            timeout: self.timeout,
            from_address: from.trim().to_owned(),
            from_name: present(&self.from_name).map(str::to_owned),
        };
        // Building a sender parses the address and host as sending will (no connection is made).
        if let Err(error) = SmtpEmailSender::new(&config) {
            let text = error.to_string();
            let variable = if text.contains("sender address") {
                "EMAIL_FROM_ADDRESS"
            } else {
                "SMTP_HOST"
            };
            return Err(ConfigError::Backend {
                variable,
                reason: text,
            });
        }
        Ok(config)
    }
}

/// The settings of role `email` (flattened into [`super::Settings`] as `email`).
#[derive(Debug, Clone, clap::Args)]
pub struct EmailSettings {
    /// The SMTP server and the sender.
    #[command(flatten)]
    pub smtp: SmtpSettings,
    /// Consumer group of the e-mail consumer on the chat change topic.
    #[arg(
        long = "email-kafka-group",
        id = "email_kafka_group",
        value_name = "EMAIL_KAFKA_GROUP",
        global = true,
        env = "CHAT_EMAIL_KAFKA_CONSUMER_NAME",
        default_value = EMAIL_CONSUMER
    )]
    pub kafka_group: String,
    /// Topic of events whose e-mail failed after every retry; unset: `<topic>.email-dlq`.
    #[arg(
        long = "email-dead-letter-topic",
        id = "email_dead_letter_topic",
        value_name = "EMAIL_DEAD_LETTER_TOPIC",
        global = true,
        env = "EMAIL_DEAD_LETTER_TOPIC"
    )]
    pub dead_letter_topic: Option<String>,
    /// Retries of an e-mail after the first attempt (waits from `MESSAGE_RETRY_*`).
    #[arg(
        long = "email-retry-max-retries",
        id = "email_retry_max_retries",
        value_name = "EMAIL_RETRY_MAX_RETRIES",
        global = true,
        env = "EMAIL_RETRY_MAX_RETRIES",
        default_value_t = 10
    )]
    pub max_retries: u32,
    /// How long a processed e-mail event suppresses its redeliveries.
    #[arg(
        long = "email-deduplication-ttl",
        id = "email_deduplication_ttl",
        value_name = "EMAIL_DEDUPLICATION_TTL",
        global = true,
        env = "EMAIL_DEDUPLICATION_TTL",
        default_value = "24h",
        value_parser = parse_duration
    )]
    pub deduplication_ttl: Duration,
}

impl EmailSettings {
    /// The dead-letter topic: `EMAIL_DEAD_LETTER_TOPIC`, or `<topic>.email-dlq`.
    pub fn dead_letter_topic(&self, source_topic: &str) -> String {
        present(&self.dead_letter_topic)
            .map_or_else(|| format!("{source_topic}.email-dlq"), str::to_owned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn email(flags: &[&str]) -> EmailSettings {
        let mut args = vec!["chat-server", "email"];
        args.extend_from_slice(flags);
        crate::Cli::parse_from(args).settings.email
    }

    #[test]
    fn defaults_are_starttls_ten_retries_a_day_of_idempotency_and_a_dlq_beside_the_topic() {
        let settings = email(&[]);
        assert_eq!(settings.smtp.tls, SmtpTls::StartTls);
        assert_eq!(settings.max_retries, 10);
        assert_eq!(settings.deduplication_ttl, Duration::from_secs(86_400));
        assert_eq!(settings.kafka_group, "chat-email");
        assert_eq!(settings.smtp.timeout, Duration::from_secs(10));
        assert_eq!(
            settings.dead_letter_topic("chat.changes"),
            "chat.changes.email-dlq"
        );
        let named = email(&["--email-dead-letter-topic", "dlq"]);
        assert_eq!(named.dead_letter_topic("chat.changes"), "dlq");
    }

    #[test]
    fn smtp_settings_are_checked_naming_the_variable() {
        let error = |flags: &[&str]| email(flags).smtp.config().expect_err("invalid").to_string();
        assert_eq!(error(&[]), "SMTP_HOST is required by role email");
        assert_eq!(
            error(&["--smtp-host", "mail.example.com"]),
            "EMAIL_FROM_ADDRESS is required by role email"
        );
        let base = ["--smtp-host", "mail.example.com", "--email-from-address"];
        assert!(error(&[&base[..], &["nobody"]].concat()).starts_with("EMAIL_FROM_ADDRESS: "));
        assert!(
            error(&[&base[..], &["a@example.com", "--smtp-username", "u"]].concat())
                .starts_with("SMTP_PASSWORD is required")
        );
        assert!(
            error(&[&base[..], &["a@example.com", "--smtp-port", "0"]].concat())
                .starts_with("SMTP_PORT ")
        );
        assert!(
            error(&[&base[..], &["a@example.com", "--smtp-timeout", "0s"]].concat())
                .starts_with("SMTP_TIMEOUT ")
        );
        let host = error(&[
            "--smtp-host",
            "smtp://mail.example.com",
            "--email-from-address",
            "a@example.com",
        ]);
        assert!(host.starts_with("SMTP_HOST: "), "{host}");
        let config = email(
            &[
                &base[..],
                &[
                    "a@example.com",
                    "--email-from-name",
                    "Chat",
                    "--smtp-tls",
                    "tls",
                    "--smtp-username",
                    "u",
                    "--smtp-password",
                    "p",
                ],
            ]
            .concat(),
        )
        .smtp
        .config()
        .expect("valid");
        assert_eq!(config.effective_port(), 465);
        assert_eq!(config.credentials, Some(("u".into(), "p".into())));
        assert_eq!(config.from_name.as_deref(), Some("Chat"));
        let bad_tls = crate::Cli::try_parse_from(["chat-server", "email", "--smtp-tls", "ssl"])
            .expect_err("bad mode");
        assert!(crate::config::parse_error_line(&bad_tls).starts_with("SMTP_TLS (--smtp-tls)"));
    }

    #[test]
    fn help_lists_the_email_settings() {
        use clap::CommandFactory;
        let help = crate::Cli::command().render_long_help().to_string();
        for variable in [
            "SMTP_HOST",
            "SMTP_PORT",
            "SMTP_USERNAME",
            "SMTP_PASSWORD",
            "SMTP_TLS",
            "SMTP_TIMEOUT",
            "EMAIL_FROM_ADDRESS",
            "EMAIL_FROM_NAME",
            "CHAT_EMAIL_KAFKA_CONSUMER_NAME",
            "EMAIL_DEAD_LETTER_TOPIC",
            "EMAIL_RETRY_MAX_RETRIES",
            "EMAIL_DEDUPLICATION_TTL",
        ] {
            assert!(
                help.contains(&format!("[env: {variable}")),
                "{variable} missing from --help"
            );
        }
        assert!(help.contains("[default: starttls]"));
        assert!(help.contains("[default: chat-email]"));
    }
}
