//! In-memory sender and directory: the embedded defaults, and test doubles with real behaviour.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use super::{DirectoryError, EmailError, EmailMessage, EmailSender, UserDirectory, UserEmail};

/// A directory in memory: the embedded default and a test double with real behaviour.
#[derive(Debug, Default)]
pub struct InMemoryUserDirectory {
    users: Mutex<HashMap<String, UserEmail>>,
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

    #[tokio::test]
    async fn the_directory_finds_what_was_upserted() {
        let directory = InMemoryUserDirectory::new();
        let bob = UserEmail {
            user_id: "bob".into(),
            email: "bob@example.com".into(),
            name: "Bob".into(),
        };
        directory.upsert(bob.clone());
        assert_eq!(directory.lookup("bob").await.expect("lookup"), Some(bob));
        assert_eq!(directory.lookup("carol").await.expect("lookup"), None);
    }
}
