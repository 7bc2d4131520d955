//! The [`EmailService`]: the directory, a sender and the templates put together.

use std::sync::Arc;

use crate::model::{ChatMessage, PurchaseUpdate};

use super::{
    chat_email, purchase_email, DirectoryError, EmailError, EmailMessage, EmailSender,
    UserDirectory, UserEmail,
};

/// Why an e-mail was not sent.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
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

    /// E-mails the receiver of `message` (a group message has none: unknown recipient); returns
    /// what was sent. The sender's display name is
    /// looked up too, best effort (its id when unknown or the directory fails).
    pub async fn send_chat(
        &self,
        message: &ChatMessage,
    ) -> Result<EmailMessage, EmailServiceError> {
        let receiver = message.receiver_id.as_deref().unwrap_or_default();
        let recipient = self.recipient(receiver).await?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::email::fixtures::{directory, message, purchase, Down, Unreachable};
    use crate::email::InMemoryEmailSender;

    #[tokio::test]
    async fn the_service_sends_to_the_directory_entry_and_classifies_failures() {
        let outbox = Arc::new(InMemoryEmailSender::new());
        let service = EmailService::new(directory(), outbox.clone());
        let sent = service
            .send_chat(&message("alice", "bob", "hi"))
            .await
            .expect("sent");
        assert_eq!(sent.subject, "New message from Alice");
        let sent = service.send_purchase(&purchase()).await.expect("sent");
        assert_eq!(sent.to, "owner@example.com");
        assert_eq!(outbox.sent().len(), 2);

        let unknown = service
            .send_chat(&message("alice", "carol", "hi"))
            .await
            .expect_err("carol is unknown");
        assert!(matches!(unknown, EmailServiceError::UnknownRecipient(ref id) if id == "carol"));
        assert!(!unknown.is_transient());
        let down = EmailService::new(directory(), Arc::new(Down))
            .send_chat(&message("alice", "bob", "hi"))
            .await
            .expect_err("transport down");
        assert!(down.is_transient(), "{down}");
        let unreachable = EmailService::new(Arc::new(Unreachable), outbox.clone())
            .send_chat(&message("alice", "bob", "hi"))
            .await
            .expect_err("directory down");
        assert!(unreachable.is_transient(), "{unreachable}");
        assert_eq!(outbox.sent().len(), 2, "nothing more was sent");
    }
}
