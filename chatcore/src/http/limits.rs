//! Limits on what clients send.

#[cfg(feature = "rate-limit")]
use super::rate_limit::RateLimit;
use crate::model::DEFAULT_MAX_CONTENT_BYTES;

/// Limits on what clients send.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Maximum `content` size in bytes (`MAX_CONTENT_BYTES`).
    pub max_content_bytes: usize,
    /// Websockets one user may hold open in this process, both tiers together
    /// (`SOCKETS_PER_USER`); `None` for no cap. Over it a subscription is refused with 429.
    pub sockets_per_user: Option<usize>,
    /// Largest group (`MAX_GROUP_MEMBERS`, 256).
    pub max_group_members: usize,
    /// `POST /chat/messages` per user (`POST_RATE_LIMIT_*`); `None` for no limit.
    #[cfg(feature = "rate-limit")]
    #[cfg_attr(docsrs, doc(cfg(feature = "rate-limit")))]
    pub post_rate: Option<RateLimit>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_content_bytes: DEFAULT_MAX_CONTENT_BYTES,
            sockets_per_user: None,
            max_group_members: crate::conversation::DEFAULT_MAX_GROUP_MEMBERS,
            #[cfg(feature = "rate-limit")]
            post_rate: None,
        }
    }
}

impl Limits {
    /// The body limit that lets the largest valid content through even fully JSON-escaped.
    pub fn body_limit(&self) -> usize {
        self.max_content_bytes
            .saturating_mul(6)
            .saturating_add(16 * 1024)
    }
}
