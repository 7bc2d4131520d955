//! Email: the [`EmailSender`] trait and an in-memory sender, and the [`UserDirectory`] that finds
//! recipients. The SMTP sender (lettre) and the templates arrive with the email consumer.

use std::sync::Mutex;

use async_trait::async_trait;

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
}
