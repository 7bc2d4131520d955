//! The two websocket tiers.

/// A websocket tier: where a delivery goes and which sessions a registry holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Tier {
    /// Chat sessions, keyed by `stream_id`.
    Chat,
    /// Notification sessions, keyed by `user_id`.
    Notifications,
}

impl Tier {
    /// Its name in metrics and logs: `chat` or `notifications`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Chat => "chat",
            Self::Notifications => "notifications",
        }
    }
}

impl std::fmt::Display for Tier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}
