//! The [`EmailSender`] trait and its error.

use std::error::Error;
use std::sync::Arc;

use async_trait::async_trait;

use super::EmailMessage;

/// Sending failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum EmailError {
    /// The address or message was refused before sending: trying again will not help.
    #[error("invalid email: {0}")]
    Invalid(String),
    /// The mail server could not be reached or refused the message: trying again later may
    /// help. Holds the cause, also reachable through [`Error::source`].
    #[error("mail transport failed: {0}")]
    Transport(#[source] Arc<dyn Error + Send + Sync>),
}

impl EmailError {
    /// A transport failure caused by `cause` (an error, or a message as `&str`/`String`).
    pub fn transport(cause: impl Into<Box<dyn Error + Send + Sync>>) -> Self {
        Self::Transport(Arc::from(cause.into()))
    }
}

/// Sends rendered emails.
///
/// # Example
///
/// A sender that hands e-mails to another system (here, it only counts them):
///
/// ```
/// use std::sync::atomic::{AtomicUsize, Ordering};
///
/// use async_trait::async_trait;
/// use chatcore::email::{EmailError, EmailMessage, EmailSender};
///
/// #[derive(Default)]
/// struct Counting(AtomicUsize);
///
/// #[async_trait]
/// impl EmailSender for Counting {
///     async fn send(&self, email: &EmailMessage) -> Result<(), EmailError> {
///         if !email.to.contains('@') {
///             return Err(EmailError::Invalid(format!("bad recipient {:?}", email.to)));
///         }
///         self.0.fetch_add(1, Ordering::Relaxed);
///         Ok(())
///     }
/// }
/// ```
#[async_trait]
pub trait EmailSender: Send + Sync {
    /// Sends one email.
    async fn send(&self, email: &EmailMessage) -> Result<(), EmailError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transport_error_keeps_its_cause() {
        let cause =
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        let error = EmailError::transport(cause);
        assert_eq!(
            error.to_string(),
            "mail transport failed: connection refused"
        );
        let source = error.source().expect("a source");
        assert_eq!(source.to_string(), "connection refused");
        let from_text = EmailError::transport("no answer");
        assert!(matches!(from_text, EmailError::Transport(_)));
    }
}
