//! The e-mail consumer on the change feed: [`EmailHandler`] plans, [`EmailForwarder`] sends.
//!
//! The consumer is an ordinary [`crate::pipeline::Pipeline`]: the handler plans a notification
//! for the receiver of each new chat message (and the shop owner of each new purchase), and the
//! forwarder "delivers" it as an e-mail. An SMTP or directory failure is an error, so the
//! pipeline retries it and finally runs its failure policy (e.g. a dead-letter topic); an
//! unknown recipient, an invalid address and an online receiver are counted and skipped, never
//! retried.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;

use crate::change::{ChangeEvent, Op};
use crate::forward::{Delivery, DeliveryReport, ForwardError, Forwarder};
use crate::metrics::{DropReason, EmailResult, Metrics};
use crate::model::{ChatMessage, Notification, NotificationType, PurchaseUpdate};
use crate::pipeline::{ChatHandler, EventHandler, Plan};
use crate::presence::Presence;
use crate::store::CHAT_COLLECTION;

use super::{EmailError, EmailMessage, EmailService, EmailServiceError};

/// The collection of purchases, whose new documents e-mail the shop owner.
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
            return Err(DropReason::IgnoredOp);
        }
        if event.collection == CHAT_COLLECTION {
            let message = self.chat.decode(event)?;
            // Group messages are not e-mailed: their members are notified on the notification
            // tier and find them in their conversation list.
            let receiver = message.receiver_id.clone().ok_or(DropReason::IgnoredOp)?;
            return Ok(Plan {
                event_key: format!("email:{}", message.event_key()),
                lane_key: receiver.clone(),
                deliveries: vec![Delivery::Notify {
                    user_id: receiver,
                    notification: Notification::chat(&message),
                }],
            });
        }
        if event.collection == PURCHASES_COLLECTION {
            let document = event.document.as_ref().ok_or(DropReason::InvalidFormat)?;
            let update =
                PurchaseUpdate::deserialize(document).map_err(|_| DropReason::InvalidFormat)?;
            if crate::model::check_id("order_id", &update.order_id).is_err()
                || crate::model::check_id("shop_owner_id", &update.shop_owner_id).is_err()
            {
                return Err(DropReason::InvalidFormat);
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
        Err(DropReason::IgnoredOp)
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
                self.count(EmailResult::Sent);
                tracing::info!(%user_id, subject = %email.subject, "e-mail sent");
                Ok(DeliveryReport {
                    delivered: 1,
                    failed: 0,
                })
            }
            Err(EmailServiceError::UnknownRecipient(_)) => {
                self.count(EmailResult::UnknownRecipient);
                tracing::warn!(%user_id, "no e-mail address for the recipient: skipped");
                Ok(DeliveryReport::default())
            }
            Err(EmailServiceError::Send(EmailError::Invalid(reason))) => {
                self.count(EmailResult::Invalid);
                tracing::warn!(%user_id, %reason, "e-mail cannot be sent: skipped");
                Ok(DeliveryReport::default())
            }
            Err(error) => {
                self.count(EmailResult::Failed);
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
                    self.count(EmailResult::ReceiverOnline);
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
}

#[cfg(test)]
mod tests;
