//! Email: the [`EmailSender`] trait with an SMTP sender ([`SmtpEmailSender`], feature `smtp`)
//! and an in-memory one, the [`UserDirectory`] that finds recipients, the templates
//! ([`chat_email`], [`purchase_email`]), the [`EmailService`] that puts them together, the
//! internal routes `POST /email/chat` and `POST /email/purchased` ([`email_router`], feature
//! `http`), and the pieces of the e-mail consumer on the change feed ([`EmailHandler`],
//! [`EmailForwarder`]).
//!
//! The consumer is an ordinary [`crate::pipeline::Pipeline`]: [`EmailHandler`] plans a
//! notification for the receiver of each new chat message (and the shop owner of each new
//! purchase), and [`EmailForwarder`] "delivers" it as an e-mail. An SMTP or directory failure is
//! an error, so the pipeline retries it and finally runs its failure policy (a dead-letter topic,
//! say); an unknown recipient, an invalid address and an online receiver are counted and
//! skipped, never retried.
//!
//! The traits, the in-memory implementations, the templates, the service and the consumer need
//! no Cargo feature, so a crate implementing [`UserDirectory`] depends on chatcore without its
//! default features.

mod consumer;
mod directory;
mod memory;
mod message;
#[cfg(feature = "http")]
mod router;
mod sender;
mod service;
#[cfg(feature = "smtp")]
mod smtp;
mod templates;

#[cfg(test)]
mod fixtures;

pub use consumer::{
    EmailForwarder, EmailHandler, EMAIL_CONSUMER, EMAIL_DEDUPLICATION_TTL, EMAIL_MAX_RETRIES,
    PURCHASES_COLLECTION,
};
pub use directory::{DirectoryError, UserDirectory, UserEmail};
pub use memory::{InMemoryEmailSender, InMemoryUserDirectory};
pub use message::EmailMessage;
#[cfg(feature = "http")]
pub use router::{email_router, EmailState};
pub use sender::{EmailError, EmailSender};
pub use service::{EmailService, EmailServiceError};
#[cfg(feature = "smtp")]
pub use smtp::{SmtpConfig, SmtpEmailSender, SmtpTls};
pub use templates::{chat_email, purchase_email, MAX_QUOTED_CONTENT};
