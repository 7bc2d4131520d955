//! The websocket tiers as the change handler reaches them over HTTP.

use std::time::Duration;

use chatcore::config::parse_duration;

/// Addresses of the remote websocket tiers (flattened into [`super::Settings`] as `tiers`).
#[derive(Debug, Clone, clap::Args)]
pub struct TierSettings {
    /// Base URL of the chat websocket tier (roles `change-handler`, and `persistence` for read
    /// frames and removed members' closes).
    #[arg(
        long,
        global = true,
        env = "CHAT_MESSAGE_SOCKET_TRANSFER_OUTGOING_CONFIG_CLIENT_HOST"
    )]
    pub chat_ws_url: Option<String>,
    /// Request timeout towards the chat websocket tier.
    #[arg(
        long,
        global = true,
        env = "CHAT_MESSAGE_SOCKET_TRANSFER_OUTGOING_CONFIG_CLIENT_TIMEOUT",
        default_value = "5s",
        value_parser = parse_duration
    )]
    pub chat_ws_timeout: Duration,
    /// Base URL of the notification websocket tier (role `change-handler`).
    #[arg(
        long,
        global = true,
        env = "GENERAL_NOTIFICATION_OUTGOING_CONFIG_CLIENT_HOST"
    )]
    pub notifications_ws_url: Option<String>,
    /// Request timeout towards the notification websocket tier.
    #[arg(
        long,
        global = true,
        env = "GENERAL_NOTIFICATION_OUTGOING_CONFIG_CLIENT_TIMEOUT",
        default_value = "5s",
        value_parser = parse_duration
    )]
    pub notifications_ws_timeout: Duration,
}
