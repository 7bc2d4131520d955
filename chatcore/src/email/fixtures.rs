//! Test fixtures shared by the e-mail tests.

use std::sync::Arc;

use async_trait::async_trait;

use crate::model::{ChatMessage, PurchaseUpdate};

use super::{
    DirectoryError, EmailError, EmailMessage, EmailSender, InMemoryUserDirectory, UserDirectory,
    UserEmail,
};

pub(crate) fn user(id: &str, email: &str, name: &str) -> UserEmail {
    UserEmail {
        user_id: id.into(),
        email: email.into(),
        name: name.into(),
    }
}

pub(crate) fn message(sender: &str, receiver: &str, content: &str) -> ChatMessage {
    ChatMessage {
        message_id: "m1".into(),
        content: content.into(),
        created_at: "2026-01-02T03:04:05Z".parse().expect("time"),
        stream_id: crate::stream_id::stream_id(sender, receiver),
        sender_id: sender.into(),
        receiver_id: Some(receiver.into()),
    }
}

pub(crate) fn purchase() -> PurchaseUpdate {
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

/// Bob, Alice and the shop owner.
pub(crate) fn directory() -> Arc<InMemoryUserDirectory> {
    let directory = Arc::new(InMemoryUserDirectory::new());
    directory.upsert(user("bob", "bob@example.com", "Bob"));
    directory.upsert(user("alice", "alice@example.com", "Alice"));
    directory.upsert(user("shop", "owner@example.com", "Owner"));
    directory
}

/// Fails every send with a transport error.
pub(crate) struct Down;

#[async_trait]
impl EmailSender for Down {
    async fn send(&self, _: &EmailMessage) -> Result<(), EmailError> {
        Err(EmailError::transport("connection refused"))
    }
}

/// A directory that cannot be reached.
pub(crate) struct Unreachable;

#[async_trait]
impl UserDirectory for Unreachable {
    async fn lookup(&self, _: &str) -> Result<Option<UserEmail>, DirectoryError> {
        Err(DirectoryError::unavailable("connection refused"))
    }
}
