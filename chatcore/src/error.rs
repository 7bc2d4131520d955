//! [`Cause`]: why a backend failed, kept with its chain of sources.

use std::error::Error;
use std::fmt;
use std::sync::Arc;

/// The cause of a backend failure (a driver's error, a timeout, a message), kept whole so that
/// `Error::source` walks to the driver's own error; cheap to clone, so the trait errors that carry
/// it stay `Clone`.
///
/// ```
/// use std::error::Error;
/// use chatcore::error::Cause;
/// use chatcore::store::StoreError;
///
/// let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
/// let error = StoreError::Unavailable(Cause::new(io));
/// assert_eq!(error.to_string(), "message store unavailable: refused");
/// assert!(error.source().is_some());
/// let from_text = StoreError::Backend("unreadable document".into());
/// assert_eq!(from_text.to_string(), "message store error: unreadable document");
/// ```
#[derive(Clone)]
pub struct Cause(Arc<dyn Error + Send + Sync>);

impl Cause {
    /// Keeps `error`.
    pub fn new(error: impl Error + Send + Sync + 'static) -> Self {
        Self(Arc::new(error))
    }

    /// The error kept.
    pub fn get(&self) -> &(dyn Error + Send + Sync + 'static) {
        self.0.as_ref()
    }
}

impl fmt::Debug for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl Error for Cause {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.0.source()
    }
}

/// A cause that is only a message.
#[derive(Debug)]
struct Message(String);

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Error for Message {}

impl From<String> for Cause {
    fn from(message: String) -> Self {
        Self::new(Message(message))
    }
}

impl From<&str> for Cause {
    fn from(message: &str) -> Self {
        Self::from(message.to_owned())
    }
}
