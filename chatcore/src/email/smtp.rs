//! The SMTP sender: lettre on tokio, with rustls and the webpki roots (no system OpenSSL).

use std::time::Duration;

use async_trait::async_trait;
use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::{EmailError, EmailMessage, EmailSender};

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
#[cfg_attr(docsrs, doc(cfg(feature = "smtp")))]
pub enum SmtpTls {
    /// Plain text, no TLS at all (`none`): only for a relay on a trusted network or a test sink.
    None,
    /// Plain connection upgraded with STARTTLS, which the server must offer (`starttls`, the
    /// default; port 587 unless set).
    #[default]
    StartTls,
    /// TLS from the first byte, "SMTPS" (`tls`; port 465 unless set).
    Tls,
}

impl SmtpTls {
    /// The port a mode uses when [`SmtpConfig::port`] is not set: 25, 587 or 465.
    pub fn default_port(self) -> u16 {
        match self {
            Self::None => 25,
            Self::StartTls => 587,
            Self::Tls => 465,
        }
    }
}

impl std::str::FromStr for SmtpTls {
    type Err = String;

    /// `none` (or `plain`), `starttls`, `tls` (or `smtps`), in any case.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim().to_ascii_lowercase().as_str() {
            "none" | "plain" => Ok(Self::None),
            "starttls" => Ok(Self::StartTls),
            "tls" | "smtps" => Ok(Self::Tls),
            other => Err(format!("{other:?} is not one of none, starttls, tls")),
        }
    }
}

/// Where and how to send mail.
#[derive(Debug, Clone)]
#[cfg_attr(docsrs, doc(cfg(feature = "smtp")))]
pub struct SmtpConfig {
    /// Server host name; also the name its TLS certificate must carry.
    pub host: String,
    /// Server port; `None`: the mode's default port ([`SmtpTls::default_port`]).
    pub port: Option<u16>,
    /// Connection security.
    pub tls: SmtpTls,
    /// User name and password for SMTP AUTH; `None`: no AUTH.
    pub credentials: Option<(String, String)>,
    /// Upper bound of one whole send, connection included.
    pub timeout: Duration,
    /// Sender address.
    pub from_address: String,
    /// Sender display name.
    pub from_name: Option<String>,
}

impl SmtpConfig {
    /// A configuration for `host` sending as `from_address`, STARTTLS, no AUTH, 10 s timeout.
    pub fn new(host: impl Into<String>, from_address: impl Into<String>) -> Self {
        Self {
            host: host.into(),
            port: None,
            tls: SmtpTls::default(),
            credentials: None,
            timeout: Duration::from_secs(10),
            from_address: from_address.into(),
            from_name: None,
        }
    }

    /// The port actually used.
    pub fn effective_port(&self) -> u16 {
        self.port.unwrap_or_else(|| self.tls.default_port())
    }
}

/// Sends e-mail over SMTP with lettre (tokio, rustls with the webpki roots: no system OpenSSL).
/// Opens one connection per e-mail.
#[derive(Clone)]
#[cfg_attr(docsrs, doc(cfg(feature = "smtp")))]
pub struct SmtpEmailSender {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    timeout: Duration,
}

impl std::fmt::Debug for SmtpEmailSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpEmailSender")
            .field("from", &self.from.to_string())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl SmtpEmailSender {
    /// Builds the transport; no connection is made until the first e-mail. Fails on an invalid
    /// sender address or host name.
    pub fn new(config: &SmtpConfig) -> Result<Self, EmailError> {
        let address: Address = config.from_address.trim().parse().map_err(|e| {
            EmailError::Invalid(format!("sender address {:?}: {e}", config.from_address))
        })?;
        let from = Mailbox::new(
            config
                .from_name
                .clone()
                .filter(|name| !name.trim().is_empty()),
            address,
        );
        let host = config.host.trim();
        if host.is_empty() {
            return Err(EmailError::Invalid("SMTP host is empty".to_owned()));
        }
        let invalid_host = |e: lettre::transport::smtp::Error| {
            EmailError::Invalid(format!("SMTP host {host:?}: {e}"))
        };
        let mut builder = match config.tls {
            SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host),
            SmtpTls::StartTls => {
                AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host).map_err(invalid_host)?
            }
            SmtpTls::Tls => {
                AsyncSmtpTransport::<Tokio1Executor>::relay(host).map_err(invalid_host)?
            }
        }
        .port(config.effective_port())
        .timeout(Some(config.timeout));
        if let Some((user, password)) = &config.credentials {
            builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
        }
        Ok(Self {
            transport: builder.build(),
            from,
            timeout: config.timeout,
        })
    }

    /// The sender mailbox, e.g. `Chat <noreply@example.com>`.
    pub fn from(&self) -> String {
        self.from.to_string()
    }
}

#[async_trait]
impl EmailSender for SmtpEmailSender {
    async fn send(&self, email: &EmailMessage) -> Result<(), EmailError> {
        let to: Address = email
            .to
            .trim()
            .parse()
            .map_err(|e| EmailError::Invalid(format!("recipient {:?}: {e}", email.to)))?;
        let message = lettre::Message::builder()
            .from(self.from.clone())
            .to(Mailbox::new(email.to_name.clone(), to))
            .subject(email.subject.clone())
            .header(ContentType::TEXT_PLAIN)
            .body(email.body.clone())
            .map_err(|e| EmailError::Invalid(e.to_string()))?;
        // lettre bounds each SMTP command; this bounds the whole exchange.
        match tokio::time::timeout(self.timeout, self.transport.send(message)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(EmailError::transport(error)),
            Err(_) => Err(EmailError::transport(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer within {:?}", self.timeout),
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::email::chat_email;
    use crate::email::fixtures::{message, user};

    #[test]
    fn smtp_settings_parse_and_refuse_what_cannot_work() {
        assert_eq!("none".parse::<SmtpTls>(), Ok(SmtpTls::None));
        assert_eq!("STARTTLS".parse::<SmtpTls>(), Ok(SmtpTls::StartTls));
        assert_eq!("tls".parse::<SmtpTls>(), Ok(SmtpTls::Tls));
        assert!("ssl3".parse::<SmtpTls>().is_err());
        assert_eq!(SmtpTls::default(), SmtpTls::StartTls);
        let mut config = SmtpConfig::new("mail.example.com", "noreply@example.com");
        assert_eq!(config.effective_port(), 587);
        config.tls = SmtpTls::Tls;
        assert_eq!(config.effective_port(), 465);
        config.port = Some(2525);
        assert_eq!(config.effective_port(), 2525);
        config.from_name = Some("Chat".into());
        let sender = SmtpEmailSender::new(&config).expect("valid");
        assert_eq!(sender.from(), "Chat <noreply@example.com>");
        config.from_address = "not an address".into();
        assert!(matches!(
            SmtpEmailSender::new(&config),
            Err(EmailError::Invalid(_))
        ));
    }

    #[tokio::test]
    async fn a_closed_smtp_port_is_a_transport_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        drop(listener);
        let config = SmtpConfig {
            port: Some(port),
            tls: SmtpTls::None,
            timeout: Duration::from_secs(2),
            ..SmtpConfig::new("127.0.0.1", "noreply@example.com")
        };
        let sender = SmtpEmailSender::new(&config).expect("valid");
        let email = chat_email(
            &message("alice", "bob", "hi"),
            &user("bob", "bob@example.com", "Bob"),
            None,
        );
        let error = sender.send(&email).await.expect_err("nothing listens");
        assert!(matches!(error, EmailError::Transport(_)), "{error}");
        assert!(
            std::error::Error::source(&error).is_some(),
            "the lettre error is kept"
        );
    }
}
