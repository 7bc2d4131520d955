//! Request limits: content size, sockets per user, group size and the post rate.

use chatcore::http::rate_limit::RateLimit;
use chatcore::http::Limits;

use super::ConfigError;

/// Limits of the client routes (flattened into [`super::Settings`] as `limits`).
#[derive(Debug, Clone, clap::Args)]
pub struct LimitSettings {
    /// Largest accepted message content, in bytes.
    #[arg(
        long,
        global = true,
        env = "MAX_CONTENT_BYTES",
        default_value_t = 65_536
    )]
    pub max_content_bytes: usize,
    /// Websockets one user may hold open on this instance (both tiers); 0 for no cap. Over it a
    /// subscription is answered 429.
    #[arg(long, global = true, env = "SOCKETS_PER_USER", default_value_t = 64)]
    pub sockets_per_user: usize,
    /// `POST /chat/messages` allowed per authenticated user and second; 0 for no limit. Over it
    /// the answer is 429 with `Retry-After`.
    #[arg(
        long,
        global = true,
        env = "POST_RATE_LIMIT_PER_SECOND",
        default_value_t = 10
    )]
    pub post_rate_limit_per_second: u32,
    /// Largest group: members a group may have (2 to this at creation).
    #[arg(
        long,
        global = true,
        env = "MAX_GROUP_MEMBERS",
        default_value_t = chatcore::conversation::DEFAULT_MAX_GROUP_MEMBERS
    )]
    pub max_group_members: usize,
    /// Posts a user may make at once before the per-second rate applies.
    #[arg(
        long,
        global = true,
        env = "POST_RATE_LIMIT_BURST",
        default_value_t = 20
    )]
    pub post_rate_limit_burst: u32,
}

impl LimitSettings {
    /// The library's limits, checked.
    pub fn limits(&self) -> Result<Limits, ConfigError> {
        if self.max_content_bytes == 0 {
            return Err(ConfigError::Invalid {
                variable: "MAX_CONTENT_BYTES",
                reason: "must be at least 1",
            });
        }
        if self.max_group_members < 2 {
            return Err(ConfigError::Invalid {
                variable: "MAX_GROUP_MEMBERS",
                reason: "must be at least 2",
            });
        }
        Ok(Limits {
            max_content_bytes: self.max_content_bytes,
            max_group_members: self.max_group_members,
            sockets_per_user: (self.sockets_per_user > 0).then_some(self.sockets_per_user),
            post_rate: (self.post_rate_limit_per_second > 0).then_some(RateLimit {
                per_second: self.post_rate_limit_per_second,
                burst: self.post_rate_limit_burst.max(1),
            }),
        })
    }
}
