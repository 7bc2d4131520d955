//! The [`UserDirectory`] that finds recipients.

use std::error::Error;
use std::sync::Arc;

use async_trait::async_trait;

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
#[non_exhaustive]
pub enum DirectoryError {
    /// The directory could not be reached or did not answer. Holds the cause, also reachable
    /// through [`Error::source`].
    #[error("user directory unavailable: {0}")]
    Unavailable(#[source] Arc<dyn Error + Send + Sync>),
}

impl DirectoryError {
    /// The directory is unavailable because of `cause` (an error, or a message as
    /// `&str`/`String`).
    pub fn unavailable(cause: impl Into<Box<dyn Error + Send + Sync>>) -> Self {
        Self::Unavailable(Arc::from(cause.into()))
    }
}

/// Finds users' e-mail addresses.
///
/// # Example
///
/// A directory over a fixed table (a database-backed one maps its driver's errors with
/// [`DirectoryError::unavailable`]):
///
/// ```
/// use std::collections::HashMap;
///
/// use async_trait::async_trait;
/// use chatcore::email::{DirectoryError, UserDirectory, UserEmail};
///
/// struct Fixed(HashMap<String, UserEmail>);
///
/// #[async_trait]
/// impl UserDirectory for Fixed {
///     async fn lookup(&self, user_id: &str) -> Result<Option<UserEmail>, DirectoryError> {
///         Ok(self.0.get(user_id).cloned())
///     }
/// }
/// ```
#[async_trait]
pub trait UserDirectory: Send + Sync {
    /// The address of `user_id`, or `None` when the user is unknown.
    async fn lookup(&self, user_id: &str) -> Result<Option<UserEmail>, DirectoryError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unavailable_directory_keeps_its_cause() {
        let cause = std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out");
        let error = DirectoryError::unavailable(cause);
        assert_eq!(error.to_string(), "user directory unavailable: timed out");
        assert_eq!(error.source().expect("a source").to_string(), "timed out");
    }
}
