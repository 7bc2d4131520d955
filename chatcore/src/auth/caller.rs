//! Who is calling, and the authorization checks the route handlers make with it.

/// Who is calling. Route handlers take it as an extractor; an authentication layer inserts it
/// into the request extensions, and without one every caller is [`Caller::Anonymous`].
///
/// ```
/// use chatcore::auth::Caller;
/// let bob = Caller::User("bob".to_owned());
/// assert!(bob.require_participant("alice", "bob").is_ok());
/// assert!(bob.require_user("alice").is_err());
/// assert!(Caller::Anonymous.require_user("alice").is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Caller {
    /// No authentication is configured: every request is allowed.
    #[default]
    Anonymous,
    /// An authenticated user (the token's subject).
    User(String),
}

/// An authenticated caller acting for someone else (answered 403).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not allowed to act for user {user_id:?}")]
pub struct Forbidden {
    /// The user the caller tried to act for.
    pub user_id: String,
}

impl Caller {
    /// Allows the call when the caller is `user_id` (or authentication is off).
    pub fn require_user(&self, user_id: &str) -> Result<(), Forbidden> {
        match self {
            Self::Anonymous => Ok(()),
            Self::User(subject) if subject == user_id => Ok(()),
            Self::User(_) => Err(Forbidden {
                user_id: user_id.to_owned(),
            }),
        }
    }

    /// The authenticated subject, if any.
    pub fn subject(&self) -> Option<&str> {
        match self {
            Self::Anonymous => None,
            Self::User(subject) => Some(subject),
        }
    }

    /// Allows the call when the caller is one of the two participants (or authentication is off).
    pub fn require_participant(&self, a: &str, b: &str) -> Result<(), Forbidden> {
        self.require_user(a).or_else(|_| self.require_user(b))
    }
}

#[cfg(feature = "http")]
impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<Caller>()
            .cloned()
            .unwrap_or_default())
    }
}
