//! Email: the [`EmailSender`] trait with an SMTP sender ([`SmtpEmailSender`], lettre on tokio with
//! rustls) and an in-memory one, the [`UserDirectory`] that finds recipients, the templates
//! ([`chat_email`], [`purchase_email`]), the [`EmailService`] that puts them together, the
//! internal routes `POST /email/chat` and `POST /email/purchased` ([`email_router`]), and the
//! pieces of the email consumer on the change feed ([`EmailHandler`], [`EmailForwarder`]).
//!
//! The consumer is an ordinary [`crate::pipeline::Pipeline`]: [`EmailHandler`] plans a
//! notification for the receiver of each new chat message (and the shop owner of each new
//! purchase), and [`EmailForwarder`] "delivers" it as an e-mail. An SMTP or directory failure is
//! an error, so the pipeline retries it and finally runs its failure policy (a dead-letter topic
//! in the reference server); an unknown recipient, an invalid address and an online receiver are
//! counted and skipped, never retried.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use serde::Deserialize;
use serde_json::json;

use crate::change::{ChangeEvent, Op};
use crate::forward::{Delivery, DeliveryReport, ForwardError, Forwarder};
use crate::http::{ApiError, JsonBody, Limits};
use crate::metrics::{DropReason, EmailResult, Metrics};
use crate::model::{ChatMessage, Notification, NotificationType, PurchaseUpdate};
use crate::pipeline::{ChatHandler, EventHandler, Plan};
use crate::presence::Presence;
use crate::store::CHAT_COLLECTION;

/// A rendered email ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailMessage {
    /// Recipient address.
    pub to: String,
    /// Recipient display name, if known.
    pub to_name: Option<String>,
    /// Subject line.
    pub subject: String,
    /// Plain-text body.
    pub body: String,
}

/// Sending failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EmailError {
    /// The address or message was refused before sending.
    #[error("invalid email: {0}")]
    Invalid(String),
    /// The mail server could not be reached or refused the message.
    #[error("mail transport failed: {0}")]
    Transport(String),
}

/// Sends rendered emails.
#[async_trait]
pub trait EmailSender: Send + Sync {
    /// Sends one email.
    async fn send(&self, email: &EmailMessage) -> Result<(), EmailError>;
}

/// A user's e-mail address, from the `user_email` collection (`{user_id, email, name}`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UserEmail {
    /// The user.
    pub user_id: String,
    /// Where to send.
    pub email: String,
    /// Display name.
    pub name: String,
}

/// Looking a recipient up failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("user directory unavailable: {0}")]
pub struct DirectoryError(pub String);

/// Finds users' e-mail addresses.
#[async_trait]
pub trait UserDirectory: Send + Sync {
    /// The address of `user_id`, or `None` when the user is unknown.
    async fn lookup(&self, user_id: &str) -> Result<Option<UserEmail>, DirectoryError>;
}

/// A directory in memory: the embedded default and a test double with real behaviour.
#[derive(Debug, Default)]
pub struct InMemoryUserDirectory {
    users: Mutex<std::collections::HashMap<String, UserEmail>>,
}

impl InMemoryUserDirectory {
    /// An empty directory.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces a user.
    pub fn upsert(&self, user: UserEmail) {
        self.users
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(user.user_id.clone(), user);
    }
}

#[async_trait]
impl UserDirectory for InMemoryUserDirectory {
    async fn lookup(&self, user_id: &str) -> Result<Option<UserEmail>, DirectoryError> {
        Ok(self
            .users
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(user_id)
            .cloned())
    }
}

/// Keeps sent emails in memory: the embedded default, and what tests read back.
#[derive(Debug, Default)]
pub struct InMemoryEmailSender {
    sent: Mutex<Vec<EmailMessage>>,
}

impl InMemoryEmailSender {
    /// An empty outbox.
    pub fn new() -> Self {
        Self::default()
    }

    /// Everything sent so far, oldest first.
    pub fn sent(&self) -> Vec<EmailMessage> {
        self.sent.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[async_trait]
impl EmailSender for InMemoryEmailSender {
    async fn send(&self, email: &EmailMessage) -> Result<(), EmailError> {
        if !email.to.contains('@') {
            return Err(EmailError::Invalid(format!("bad recipient {:?}", email.to)));
        }
        self.sent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(email.clone());
        Ok(())
    }
}

/// How the SMTP connection is secured (`SMTP_TLS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
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
    /// The port a mode uses when `SMTP_PORT` is not set: 25, 587 or 465.
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

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim().to_ascii_lowercase().as_str() {
            "none" | "plain" => Ok(Self::None),
            "starttls" => Ok(Self::StartTls),
            "tls" | "smtps" => Ok(Self::Tls),
            other => Err(format!("{other:?} is not one of none, starttls, tls")),
        }
    }
}

/// Where and how to send mail (`SMTP_*`, `EMAIL_FROM_*`).
#[derive(Debug, Clone)]
pub struct SmtpConfig {
    /// Server host name (`SMTP_HOST`); also the name its TLS certificate must carry.
    pub host: String,
    /// Server port (`SMTP_PORT`); `None`: the mode's default port.
    pub port: Option<u16>,
    /// Connection security (`SMTP_TLS`).
    pub tls: SmtpTls,
    /// User name and password for SMTP AUTH (`SMTP_USERNAME`, `SMTP_PASSWORD`); `None`: no AUTH.
    pub credentials: Option<(String, String)>,
    /// Upper bound of one whole send, connection included (`SMTP_TIMEOUT`).
    pub timeout: Duration,
    /// Sender address (`EMAIL_FROM_ADDRESS`).
    pub from_address: String,
    /// Sender display name (`EMAIL_FROM_NAME`).
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
            Ok(Err(error)) => Err(EmailError::Transport(error.to_string())),
            Err(_) => Err(EmailError::Transport(format!(
                "no answer within {:?}",
                self.timeout
            ))),
        }
    }
}

/// Longest message content quoted in a chat e-mail; longer content is cut with `…`.
pub const MAX_QUOTED_CONTENT: usize = 2000;

fn quote(content: &str) -> String {
    if content.len() <= MAX_QUOTED_CONTENT {
        return content.to_owned();
    }
    let mut end = MAX_QUOTED_CONTENT;
    while !content.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &content[..end])
}

/// The e-mail telling `recipient` (the receiver) about a new chat message: subject
/// `New message from {sender}`, where the sender is `sender_name` when known, else its id.
pub fn chat_email(
    message: &ChatMessage,
    recipient: &UserEmail,
    sender_name: Option<&str>,
) -> EmailMessage {
    let sender = sender_name
        .filter(|name| !name.trim().is_empty())
        .unwrap_or(&message.sender_id);
    let body = format!(
        "Hello {name},\n\n{sender} sent you a message:\n\n{content}\n\nSent at {at}. Open the chat to reply.\n",
        name = recipient.name,
        content = quote(&message.content),
        at = message.created_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    );
    EmailMessage {
        to: recipient.email.clone(),
        to_name: Some(recipient.name.clone()).filter(|n| !n.trim().is_empty()),
        subject: format!("New message from {sender}"),
        body,
    }
}

/// The e-mail telling `recipient` (the shop owner) about a purchase: subject
/// `New order {order_id}: {product_name}`.
pub fn purchase_email(update: &PurchaseUpdate, recipient: &UserEmail) -> EmailMessage {
    let body = format!(
        "Hello {name},\n\n{buyer} bought {product}.\n\nOrder: {order}\nAmount: {amount:.2} {currency}\nStatus: {status}\nPurchased at: {at}\n",
        name = recipient.name,
        buyer = update.buyer_id,
        product = update.product_name,
        order = update.order_id,
        amount = update.amount,
        currency = update.currency,
        status = update.status,
        at = update.purchased_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    );
    EmailMessage {
        to: recipient.email.clone(),
        to_name: Some(recipient.name.clone()).filter(|n| !n.trim().is_empty()),
        subject: format!("New order {}: {}", update.order_id, update.product_name),
        body,
    }
}

/// Why an e-mail was not sent.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EmailServiceError {
    /// The recipient has no entry in the user e-mail directory.
    #[error("no e-mail address for user {0:?}")]
    UnknownRecipient(String),
    /// The directory could not be asked.
    #[error(transparent)]
    Directory(#[from] DirectoryError),
    /// Rendering or sending failed.
    #[error(transparent)]
    Send(#[from] EmailError),
}

impl EmailServiceError {
    /// True when trying again later may succeed (directory or SMTP transport failures).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Directory(_) | Self::Send(EmailError::Transport(_))
        )
    }
}

impl From<EmailServiceError> for ApiError {
    fn from(error: EmailServiceError) -> Self {
        match &error {
            EmailServiceError::UnknownRecipient(_) => Self::NotFound(error.to_string()),
            EmailServiceError::Directory(_) => Self::Unavailable(error.to_string()),
            EmailServiceError::Send(_) => Self::Status {
                status: StatusCode::BAD_GATEWAY,
                message: error.to_string(),
            },
        }
    }
}

/// The directory, a sender and the templates: renders and sends the e-mails of the product.
#[derive(Clone)]
pub struct EmailService {
    directory: Arc<dyn UserDirectory>,
    sender: Arc<dyn EmailSender>,
}

impl std::fmt::Debug for EmailService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmailService").finish_non_exhaustive()
    }
}

impl EmailService {
    /// Looks recipients up in `directory` and sends through `sender`.
    pub fn new(directory: Arc<dyn UserDirectory>, sender: Arc<dyn EmailSender>) -> Self {
        Self { directory, sender }
    }

    async fn recipient(&self, user_id: &str) -> Result<UserEmail, EmailServiceError> {
        self.directory
            .lookup(user_id)
            .await?
            .ok_or_else(|| EmailServiceError::UnknownRecipient(user_id.to_owned()))
    }

    /// E-mails the receiver of `message`; returns what was sent. The sender's display name is
    /// looked up too, best effort (its id when unknown or the directory fails).
    pub async fn send_chat(
        &self,
        message: &ChatMessage,
    ) -> Result<EmailMessage, EmailServiceError> {
        let recipient = self.recipient(&message.receiver_id).await?;
        let sender_name = match self.directory.lookup(&message.sender_id).await {
            Ok(user) => user.map(|u| u.name),
            Err(error) => {
                tracing::debug!(%error, "sender name lookup failed; using the id");
                None
            }
        };
        let email = chat_email(message, &recipient, sender_name.as_deref());
        self.sender.send(&email).await?;
        Ok(email)
    }

    /// E-mails the shop owner of `update`; returns what was sent.
    pub async fn send_purchase(
        &self,
        update: &PurchaseUpdate,
    ) -> Result<EmailMessage, EmailServiceError> {
        let recipient = self.recipient(&update.shop_owner_id).await?;
        let email = purchase_email(update, &recipient);
        self.sender.send(&email).await?;
        Ok(email)
    }
}

/// State of the e-mail routes.
#[derive(Clone, Debug)]
pub struct EmailState {
    /// Renders and sends.
    pub service: EmailService,
    /// Limits applied to the chat messages posted.
    pub limits: Limits,
}

/// The internal e-mail routes: `POST /email/chat` (body a chat message; e-mails its
/// `receiver_id`) and `POST /email/purchased` (body a `PurchaseUpdate`; e-mails its
/// `shop_owner_id`). 201 `{"user_id", "subject"}` when sent, 400 on a bad body, 404 for an
/// unknown recipient, 502 when the mail server failed, 503 when the directory is unavailable;
/// every error as `{"error": ...}`. Mount it on an internal listener (behind `INTERNAL_TOKEN`).
pub fn email_router(state: EmailState) -> Router {
    let body_limit = state.limits.body_limit();
    Router::new()
        .route("/email/chat", post(email_chat))
        .route("/email/purchased", post(email_purchased))
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

fn sent(user_id: &str, email: &EmailMessage) -> Response {
    (
        StatusCode::CREATED,
        Json(json!({ "user_id": user_id, "subject": email.subject })),
    )
        .into_response()
}

async fn email_chat(
    State(state): State<EmailState>,
    JsonBody(message): JsonBody<ChatMessage>,
) -> Result<Response, ApiError> {
    message.check(state.limits.max_content_bytes)?;
    let email = state.service.send_chat(&message).await?;
    Ok(sent(&message.receiver_id, &email))
}

async fn email_purchased(
    State(state): State<EmailState>,
    JsonBody(update): JsonBody<PurchaseUpdate>,
) -> Result<Response, ApiError> {
    crate::model::check_id("order_id", &update.order_id)?;
    crate::model::check_id("shop_owner_id", &update.shop_owner_id)?;
    let email = state.service.send_purchase(&update).await?;
    Ok(sent(&update.shop_owner_id, &email))
}

/// The collection of purchases (CONTRACT §7), whose new documents e-mail the shop owner.
pub use crate::commerce::PURCHASES_COLLECTION;

/// Default consumer name (and Kafka group) of the e-mail consumer.
pub const EMAIL_CONSUMER: &str = "chat-email";

/// Default time a processed e-mail event suppresses its redeliveries: 24 hours.
pub const EMAIL_DEDUPLICATION_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// Default retries of the e-mail consumer after the first attempt.
pub const EMAIL_MAX_RETRIES: u32 = 10;

/// Plans e-mails from the change feed: a new chat message e-mails its receiver (as a
/// `chat_notification` for [`EmailForwarder`]), a new purchase e-mails its shop owner. Event
/// keys are `email:{message_id}:{stream_id}` and `email:purchase:{order_id}`, so an event store
/// shared with the chat consumer never mistakes one for the other.
#[derive(Debug, Clone, Default)]
pub struct EmailHandler {
    chat: ChatHandler,
}

impl EmailHandler {
    /// A handler checking chat content against `max_content_bytes`.
    pub fn new(max_content_bytes: usize) -> Self {
        Self {
            chat: ChatHandler {
                max_content_bytes,
                ..ChatHandler::default()
            },
        }
    }
}

impl EventHandler for EmailHandler {
    fn plan(&self, event: &ChangeEvent) -> Result<Plan, DropReason> {
        if event.op != Op::Create {
            return Err(DropReason::ignored_op);
        }
        if event.collection == CHAT_COLLECTION {
            let message = self.chat.decode(event)?;
            return Ok(Plan {
                event_key: format!("email:{}", message.event_key()),
                lane_key: message.receiver_id.clone(),
                deliveries: vec![Delivery::Notify {
                    user_id: message.receiver_id.clone(),
                    notification: Notification::chat(&message),
                }],
            });
        }
        if event.collection == PURCHASES_COLLECTION {
            let document = event.document.as_ref().ok_or(DropReason::invalid_format)?;
            let update =
                PurchaseUpdate::deserialize(document).map_err(|_| DropReason::invalid_format)?;
            if crate::model::check_id("order_id", &update.order_id).is_err()
                || crate::model::check_id("shop_owner_id", &update.shop_owner_id).is_err()
            {
                return Err(DropReason::invalid_format);
            }
            return Ok(Plan {
                event_key: format!("email:purchase:{}", update.order_id),
                lane_key: update.shop_owner_id.clone(),
                deliveries: vec![Delivery::Notify {
                    user_id: update.shop_owner_id.clone(),
                    notification: Notification::new(
                        NotificationType::PurchaseNotification,
                        &update,
                    ),
                }],
            });
        }
        Err(DropReason::ignored_op)
    }
}

/// Delivers notifications by e-mail: the "tier" of the e-mail consumer.
///
/// A `chat_notification` is e-mailed only when the receiver is offline (no notification socket,
/// per [`Presence`]; without a presence check everyone counts as offline, and so does a user whose
/// presence cannot be learned); a `purchase_notification` always. Other notification types are
/// skipped. Counted in `chatcore_emails_total{result}`.
///
/// Answers: `Ok` with `delivered: 1` when sent; `Ok` with nothing delivered for a skipped e-mail
/// (receiver online, unknown recipient, invalid address: retrying would not help); `Err` for a
/// directory or SMTP failure, which the pipeline retries.
#[derive(Clone)]
pub struct EmailForwarder {
    service: EmailService,
    presence: Option<Arc<dyn Presence>>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for EmailForwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmailForwarder")
            .field("presence", &self.presence.is_some())
            .finish_non_exhaustive()
    }
}

impl EmailForwarder {
    /// Sends through `service`; checks chat receivers' presence with `presence` when given.
    pub fn new(
        service: EmailService,
        presence: Option<Arc<dyn Presence>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            service,
            presence,
            metrics,
        }
    }

    fn count(&self, result: EmailResult) {
        self.metrics.email(result);
    }

    async fn online(&self, user_id: &str) -> bool {
        let Some(presence) = &self.presence else {
            return false;
        };
        match presence.is_online(user_id).await {
            Ok(online) => online,
            Err(error) => {
                tracing::warn!(%user_id, %error, "presence unknown: e-mailing as if offline");
                false
            }
        }
    }

    fn outcome(
        &self,
        user_id: &str,
        sent: Result<EmailMessage, EmailServiceError>,
    ) -> Result<DeliveryReport, ForwardError> {
        match sent {
            Ok(email) => {
                self.count(EmailResult::sent);
                tracing::info!(%user_id, subject = %email.subject, "e-mail sent");
                Ok(DeliveryReport {
                    delivered: 1,
                    failed: 0,
                })
            }
            Err(EmailServiceError::UnknownRecipient(_)) => {
                self.count(EmailResult::unknown_recipient);
                tracing::warn!(%user_id, "no e-mail address for the recipient: skipped");
                Ok(DeliveryReport::default())
            }
            Err(EmailServiceError::Send(EmailError::Invalid(reason))) => {
                self.count(EmailResult::invalid);
                tracing::warn!(%user_id, %reason, "e-mail cannot be sent: skipped");
                Ok(DeliveryReport::default())
            }
            Err(error) => {
                self.count(EmailResult::failed);
                Err(ForwardError::Transport(error.to_string()))
            }
        }
    }
}

#[async_trait]
impl Forwarder for EmailForwarder {
    async fn forward(&self, delivery: &Delivery) -> Result<DeliveryReport, ForwardError> {
        let Delivery::Notify {
            user_id,
            notification,
        } = delivery
        else {
            return Ok(DeliveryReport::default());
        };
        let decode = |e: serde_json::Error| ForwardError::Encode(e.to_string());
        match &notification.notification_type {
            NotificationType::ChatNotification => {
                let message = ChatMessage::deserialize(&notification.payload).map_err(decode)?;
                if self.online(user_id).await {
                    self.count(EmailResult::receiver_online);
                    tracing::debug!(%user_id, "receiver online: no e-mail");
                    return Ok(DeliveryReport::default());
                }
                let sent = self.service.send_chat(&message).await;
                self.outcome(user_id, sent)
            }
            NotificationType::PurchaseNotification => {
                let update = PurchaseUpdate::deserialize(&notification.payload).map_err(decode)?;
                let sent = self.service.send_purchase(&update).await;
                self.outcome(user_id, sent)
            }
            _ => Ok(DeliveryReport::default()),
        }
    }

    async fn close_stream(&self, _stream_id: &str, _reason: &str) -> Result<usize, ForwardError> {
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keeps_what_it_sends_and_refuses_bad_addresses() {
        let sender = InMemoryEmailSender::new();
        let email = EmailMessage {
            to: "bob@example.com".into(),
            to_name: Some("Bob".into()),
            subject: "New message".into(),
            body: "hi".into(),
        };
        sender.send(&email).await.expect("sent");
        assert_eq!(sender.sent(), vec![email.clone()]);
        let bad = EmailMessage {
            to: "nobody".into(),
            ..email
        };
        assert!(sender.send(&bad).await.is_err());
        assert_eq!(sender.sent().len(), 1);
    }

    fn user(id: &str, email: &str, name: &str) -> UserEmail {
        UserEmail {
            user_id: id.into(),
            email: email.into(),
            name: name.into(),
        }
    }

    fn message(sender: &str, receiver: &str, content: &str) -> ChatMessage {
        ChatMessage {
            message_id: "m1".into(),
            content: content.into(),
            created_at: "2026-01-02T03:04:05Z".parse().expect("time"),
            stream_id: crate::stream_id::stream_id(sender, receiver),
            sender_id: sender.into(),
            receiver_id: receiver.into(),
        }
    }

    fn purchase() -> PurchaseUpdate {
        PurchaseUpdate {
            order_id: "o-42".into(),
            buyer_id: "bob".into(),
            shop_owner_id: "shop".into(),
            product_name: "Teapot".into(),
            amount: 12.5,
            currency: "EUR".into(),
            status: "completed".into(),
            purchased_at: "2026-01-02T03:04:05Z".parse().expect("time"),
        }
    }

    #[test]
    fn the_chat_template_names_the_sender_and_quotes_the_message() {
        let email = chat_email(
            &message("alice", "bob", "see you at 5"),
            &user("bob", "bob@example.com", "Bob"),
            Some("Alice"),
        );
        assert_eq!(email.to, "bob@example.com");
        assert_eq!(email.to_name.as_deref(), Some("Bob"));
        assert_eq!(email.subject, "New message from Alice");
        assert!(email.body.starts_with("Hello Bob,\n"), "{}", email.body);
        assert!(email
            .body
            .contains("Alice sent you a message:\n\nsee you at 5\n"));
        assert!(email.body.contains("2026-01-02T03:04:05Z"));
        let anonymous = chat_email(
            &message("alice", "bob", "hi"),
            &user("bob", "bob@example.com", "Bob"),
            None,
        );
        assert_eq!(anonymous.subject, "New message from alice");
        let long = "é".repeat(MAX_QUOTED_CONTENT);
        let cut = chat_email(
            &message("alice", "bob", &long),
            &user("bob", "bob@example.com", "Bob"),
            None,
        );
        assert!(cut.body.contains('…'));
        assert!(cut.body.len() < long.len());
    }

    #[test]
    fn the_purchase_template_lists_the_order() {
        let email = purchase_email(&purchase(), &user("shop", "owner@example.com", "Owner"));
        assert_eq!(email.to, "owner@example.com");
        assert_eq!(email.subject, "New order o-42: Teapot");
        for line in [
            "Hello Owner,",
            "bob bought Teapot.",
            "Order: o-42",
            "Amount: 12.50 EUR",
            "Status: completed",
            "Purchased at: 2026-01-02T03:04:05Z",
        ] {
            assert!(email.body.contains(line), "{line:?} in {}", email.body);
        }
    }

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
        assert!(matches!(
            sender.send(&email).await,
            Err(EmailError::Transport(_))
        ));
    }

    /// Fails every send with a transport error.
    struct Down;

    #[async_trait]
    impl EmailSender for Down {
        async fn send(&self, _: &EmailMessage) -> Result<(), EmailError> {
            Err(EmailError::Transport("connection refused".into()))
        }
    }

    fn directory() -> Arc<InMemoryUserDirectory> {
        let directory = Arc::new(InMemoryUserDirectory::new());
        directory.upsert(user("bob", "bob@example.com", "Bob"));
        directory.upsert(user("alice", "alice@example.com", "Alice"));
        directory.upsert(user("shop", "owner@example.com", "Owner"));
        directory
    }

    async fn post(router: &Router, path: &str, body: serde_json::Value) -> (StatusCode, Value) {
        use tower::ServiceExt;
        let request = axum::http::Request::post(path)
            .header("content-type", "application/json")
            .body(axum::body::Body::from(body.to_string()))
            .expect("request");
        let response = router.clone().oneshot(request).await.expect("response");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    use serde_json::Value;

    #[tokio::test]
    async fn the_email_routes_answer_201_404_400_and_502() {
        let outbox = Arc::new(InMemoryEmailSender::new());
        let router = email_router(EmailState {
            service: EmailService::new(directory(), outbox.clone()),
            limits: Limits::default(),
        });
        let chat = serde_json::to_value(message("alice", "bob", "hi")).expect("json");
        let (status, body) = post(&router, "/email/chat", chat.clone()).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["subject"], "New message from Alice");
        let (status, _) = post(
            &router,
            "/email/purchased",
            serde_json::to_value(purchase()).expect("json"),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);
        let sent = outbox.sent();
        assert_eq!(sent.len(), 2);
        assert_eq!(sent[1].to, "owner@example.com");

        let stranger = serde_json::to_value(message("alice", "carol", "hi")).expect("json");
        let (status, body) = post(&router, "/email/chat", stranger).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body["error"].as_str().is_some_and(|e| e.contains("carol")));
        let (status, body) = post(&router, "/email/chat", json!({"content": "x"})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body["error"].is_string());
        let mut forged = chat.clone();
        forged["stream_id"] = "0000000000000000".into();
        assert_eq!(
            post(&router, "/email/chat", forged).await.0,
            StatusCode::BAD_REQUEST
        );

        let failing = email_router(EmailState {
            service: EmailService::new(directory(), Arc::new(Down)),
            limits: Limits::default(),
        });
        let (status, body) = post(&failing, "/email/chat", chat).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY);
        assert!(body["error"].is_string());
    }

    fn chat_event(offset: i64, message: &ChatMessage) -> ChangeEvent {
        ChangeEvent {
            op: Op::Create,
            collection: CHAT_COLLECTION.to_owned(),
            key: message.stream_id.clone(),
            document: Some(serde_json::to_value(message).expect("json")),
            position: crate::change::SourcePosition {
                partition: 0,
                offset,
                token: None,
            },
            malformed: None,
        }
    }

    #[test]
    fn the_email_handler_keys_its_events_apart_from_the_chat_consumer() {
        let handler = EmailHandler::default();
        let chat = message("alice", "bob", "hi");
        let plan = handler.plan(&chat_event(0, &chat)).expect("plan");
        assert_eq!(plan.event_key, format!("email:{}", chat.event_key()));
        assert_eq!(plan.deliveries.len(), 1);
        assert_eq!(plan.deliveries[0].routing_key(), "bob");
        let mut order = chat_event(1, &chat);
        order.collection = PURCHASES_COLLECTION.to_owned();
        order.document = Some(serde_json::to_value(purchase()).expect("json"));
        let plan = handler.plan(&order).expect("plan");
        assert_eq!(plan.event_key, "email:purchase:o-42");
        assert_eq!(plan.deliveries[0].routing_key(), "shop");
        let mut update = chat_event(2, &chat);
        update.op = Op::Update;
        assert_eq!(handler.plan(&update), Err(DropReason::ignored_op));
    }

    /// Users listed are online.
    struct Online(Vec<&'static str>);

    #[async_trait]
    impl Presence for Online {
        async fn is_online(&self, user_id: &str) -> Result<bool, crate::presence::PresenceError> {
            Ok(self.0.contains(&user_id))
        }
    }

    /// Yields a fixed list of events, then ends; records what was acknowledged.
    struct ListSource {
        events: Mutex<std::collections::VecDeque<ChangeEvent>>,
        done: Mutex<Vec<i64>>,
    }

    #[async_trait]
    impl crate::change::ChangeSource for ListSource {
        async fn next(&self) -> Result<Option<ChangeEvent>, crate::change::ChangeError> {
            Ok(self.events.lock().expect("lock").pop_front())
        }
        async fn done(
            &self,
            position: &crate::change::SourcePosition,
        ) -> Result<(), crate::change::ChangeError> {
            self.done.lock().expect("lock").push(position.offset);
            Ok(())
        }
    }

    /// The e-mail consumer as the role builds it, on `source`, with `max_retries` quick retries
    /// and dead letters going to `dead_letters`.
    fn email_pipeline(
        source: Arc<ListSource>,
        sender: Arc<dyn EmailSender>,
        presence: Option<Arc<dyn Presence>>,
        dead_letters: Arc<dyn crate::dead_letter::DeadLetterSink>,
        max_retries: u32,
        metrics: Arc<Metrics>,
    ) -> crate::pipeline::Pipeline {
        use crate::pipeline::{FailurePolicy, Pipeline, PipelineConfig, RetryPolicy};
        Pipeline::new(
            source,
            Arc::new(EmailHandler::default()),
            crate::dedup::Deduplicator::new(
                Arc::new(crate::dedup::InMemoryEventStore::new()),
                crate::dedup::DedupConfig::default(),
                metrics.clone(),
            ),
            Arc::new(EmailForwarder::new(
                EmailService::new(directory(), sender),
                presence,
                metrics.clone(),
            )),
            PipelineConfig {
                name: "email".into(),
                lanes: 1,
                retry: RetryPolicy {
                    max_retries,
                    initial_interval: Duration::from_millis(1),
                    max_interval: Duration::from_millis(2),
                    multiplier: 2.0,
                },
                failure: FailurePolicy::DeadLetter(crate::dead_letter::DeadLetterTarget::new(
                    dead_letters,
                )),
                ..PipelineConfig::default()
            },
            metrics,
        )
    }

    /// Runs an e-mail pipeline over `events` until they end; returns its metrics and the
    /// acknowledged offsets.
    async fn run_email_pipeline(
        events: Vec<ChangeEvent>,
        sender: Arc<dyn EmailSender>,
        presence: Option<Arc<dyn Presence>>,
        dead_letters: Arc<crate::dead_letter::InMemoryDeadLetters>,
    ) -> (Arc<Metrics>, Vec<i64>) {
        let metrics = Arc::new(Metrics::new());
        let source = Arc::new(ListSource {
            events: Mutex::new(events.into()),
            done: Mutex::default(),
        });
        let pipeline = email_pipeline(
            source.clone(),
            sender,
            presence,
            dead_letters,
            2,
            metrics.clone(),
        );
        pipeline
            .run(tokio_util::sync::CancellationToken::new())
            .await;
        let done = source.done.lock().expect("lock").clone();
        (metrics, done)
    }

    #[tokio::test]
    async fn the_consumer_emails_offline_receivers_once_and_skips_the_rest() {
        let outbox = Arc::new(InMemoryEmailSender::new());
        let letters = Arc::new(crate::dead_letter::InMemoryDeadLetters::new());
        let to_bob = message("alice", "bob", "hi bob");
        let to_alice = ChatMessage {
            message_id: "m2".into(),
            ..message("bob", "alice", "hi alice")
        };
        let to_carol = ChatMessage {
            message_id: "m3".into(),
            ..message("alice", "carol", "hi carol")
        };
        // Bob twice (a redelivery), Alice is online, Carol is not in the directory.
        let events = vec![
            chat_event(0, &to_bob),
            chat_event(1, &to_bob),
            chat_event(2, &to_alice),
            chat_event(3, &to_carol),
        ];
        let (metrics, done) = run_email_pipeline(
            events,
            outbox.clone(),
            Some(Arc::new(Online(vec!["alice"]))),
            letters.clone(),
        )
        .await;
        let sent = outbox.sent();
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert_eq!(sent[0].to, "bob@example.com");
        assert_eq!(done, [0, 1, 2, 3], "everything acknowledged");
        assert_eq!(metrics.email_count(EmailResult::sent), 1);
        assert_eq!(metrics.email_count(EmailResult::receiver_online), 1);
        assert_eq!(metrics.email_count(EmailResult::unknown_recipient), 1);
        assert_eq!(metrics.dropped_count("email", DropReason::duplicate), 1);
        assert!(letters.letters().is_empty());
        let retries = metrics.render();
        assert!(
            !retries.contains("chatcore_retries_total{consumer=\"email\"}"),
            "{retries}"
        );
    }

    #[tokio::test]
    async fn an_smtp_failure_is_retried_then_dead_lettered_and_acknowledged() {
        let letters = Arc::new(crate::dead_letter::InMemoryDeadLetters::new());
        let to_bob = message("alice", "bob", "hi bob");
        let (metrics, done) = run_email_pipeline(
            vec![chat_event(7, &to_bob)],
            Arc::new(Down),
            None,
            letters.clone(),
        )
        .await;
        let letters = letters.letters();
        assert_eq!(letters.len(), 1);
        assert_eq!(letters[0].consumer, "email");
        assert_eq!(letters[0].attempts, 3);
        assert!(
            letters[0].error.contains("connection refused"),
            "{}",
            letters[0].error
        );
        assert_eq!(letters[0].event.position.offset, 7);
        assert_eq!(done, [7]);
        assert_eq!(metrics.email_count(EmailResult::failed), 3);
    }

    /// A directory that cannot be reached.
    struct Unreachable;

    #[async_trait]
    impl UserDirectory for Unreachable {
        async fn lookup(&self, _: &str) -> Result<Option<UserEmail>, DirectoryError> {
            Err(DirectoryError("connection refused".into()))
        }
    }

    #[tokio::test]
    async fn an_unreachable_directory_is_503_on_the_route_and_retried_by_the_consumer() {
        let outbox = Arc::new(InMemoryEmailSender::new());
        let router = email_router(EmailState {
            service: EmailService::new(Arc::new(Unreachable), outbox.clone()),
            limits: Limits::default(),
        });
        let chat = serde_json::to_value(message("alice", "bob", "hi")).expect("json");
        let (status, body) = post(&router, "/email/chat", chat).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        let forwarder = EmailForwarder::new(
            EmailService::new(Arc::new(Unreachable), outbox.clone()),
            None,
            Arc::new(Metrics::new()),
        );
        let delivery = Delivery::Notify {
            user_id: "bob".into(),
            notification: Notification::chat(&message("alice", "bob", "hi")),
        };
        assert!(
            forwarder.forward(&delivery).await.is_err(),
            "an error, so the pipeline retries"
        );
        assert!(outbox.sent().is_empty());
    }

    /// Refuses the first `n` dead letters, then keeps them.
    struct Flaky {
        refusals: std::sync::atomic::AtomicU32,
        kept: crate::dead_letter::InMemoryDeadLetters,
    }

    #[async_trait]
    impl crate::dead_letter::DeadLetterSink for Flaky {
        async fn dead_letter(
            &self,
            failed: &crate::dead_letter::FailedEvent<'_>,
        ) -> Result<(), crate::dead_letter::DeadLetterError> {
            use std::sync::atomic::Ordering;
            if self
                .refusals
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                return Err(crate::dead_letter::DeadLetterError("broker down".into()));
            }
            self.kept.dead_letter(failed).await
        }
    }

    #[tokio::test]
    async fn a_dead_letter_the_sink_refuses_is_tried_again_before_the_event_is_acknowledged() {
        let sink = Arc::new(Flaky {
            refusals: std::sync::atomic::AtomicU32::new(2),
            kept: crate::dead_letter::InMemoryDeadLetters::new(),
        });
        let source = Arc::new(ListSource {
            events: Mutex::new(vec![chat_event(3, &message("alice", "bob", "hi"))].into()),
            done: Mutex::default(),
        });
        let metrics = Arc::new(Metrics::new());
        email_pipeline(
            source.clone(),
            Arc::new(Down),
            None,
            sink.clone(),
            0,
            metrics,
        )
        .run(tokio_util::sync::CancellationToken::new())
        .await;
        assert_eq!(sink.kept.letters().len(), 1, "written on the third try");
        assert_eq!(sink.kept.letters()[0].attempts, 1);
        assert_eq!(*source.done.lock().expect("lock"), [3]);
    }

    #[tokio::test]
    async fn shutdown_while_the_dead_letter_is_refused_leaves_the_event_unacknowledged() {
        let sink = Arc::new(Flaky {
            refusals: std::sync::atomic::AtomicU32::new(u32::MAX),
            kept: crate::dead_letter::InMemoryDeadLetters::new(),
        });
        let source = Arc::new(ListSource {
            events: Mutex::new(vec![chat_event(5, &message("alice", "bob", "hi"))].into()),
            done: Mutex::default(),
        });
        let metrics = Arc::new(Metrics::new());
        let shutdown = tokio_util::sync::CancellationToken::new();
        let run = tokio::spawn(
            email_pipeline(
                source.clone(),
                Arc::new(Down),
                None,
                sink.clone(),
                0,
                metrics.clone(),
            )
            .run(shutdown.clone()),
        );
        let until = tokio::time::Instant::now() + Duration::from_secs(10);
        while sink.refusals.load(std::sync::atomic::Ordering::SeqCst) > u32::MAX - 3 {
            assert!(
                tokio::time::Instant::now() < until,
                "the sink was never asked"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), run)
            .await
            .expect("stops")
            .expect("task");
        assert!(sink.kept.letters().is_empty());
        assert!(
            source.done.lock().expect("lock").is_empty(),
            "not acknowledged: the next consumer retries it"
        );
    }
}
