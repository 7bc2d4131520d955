//! `MESSAGE_RETRY_*`: the retries of the chat consumer, whose waits every consumer shares.

use std::time::Duration;

use chatcore::config::parse_duration;
use chatcore::pipeline::RetryPolicy;

use super::ConfigError;

/// Retries after a failed delivery (flattened into [`super::Settings`] as `retry`).
#[derive(Debug, Clone, clap::Args)]
pub struct RetrySettings {
    /// Retries after the first delivery attempt.
    #[arg(
        long = "message-retry-max-retries",
        id = "message_retry_max_retries",
        value_name = "MESSAGE_RETRY_MAX_RETRIES",
        global = true,
        env = "MESSAGE_RETRY_MAX_RETRIES",
        default_value_t = 5
    )]
    pub max_retries: u32,
    /// Wait before the first retry.
    #[arg(
        long = "message-retry-initial-interval",
        id = "message_retry_initial_interval",
        value_name = "MESSAGE_RETRY_INITIAL_INTERVAL",
        global = true,
        env = "MESSAGE_RETRY_INITIAL_INTERVAL",
        default_value = "100ms",
        value_parser = parse_duration
    )]
    pub initial_interval: Duration,
    /// Upper bound of the wait between retries.
    #[arg(
        long = "message-retry-max-interval",
        id = "message_retry_max_interval",
        value_name = "MESSAGE_RETRY_MAX_INTERVAL",
        global = true,
        env = "MESSAGE_RETRY_MAX_INTERVAL",
        default_value = "30s",
        value_parser = parse_duration
    )]
    pub max_interval: Duration,
    /// Growth factor of the wait between retries.
    #[arg(
        long = "message-retry-multiplier",
        id = "message_retry_multiplier",
        value_name = "MESSAGE_RETRY_MULTIPLIER",
        global = true,
        env = "MESSAGE_RETRY_MULTIPLIER",
        default_value_t = 2.0
    )]
    pub multiplier: f64,
}

impl RetrySettings {
    /// The retry policy of the chat consumer, checked.
    pub fn policy(&self) -> Result<RetryPolicy, ConfigError> {
        if !(self.multiplier.is_finite() && self.multiplier >= 1.0) {
            return Err(ConfigError::Invalid {
                variable: "MESSAGE_RETRY_MULTIPLIER",
                reason: "must be a number of at least 1.0",
            });
        }
        Ok(RetryPolicy {
            max_retries: self.max_retries,
            initial_interval: self.initial_interval,
            max_interval: self.max_interval,
            multiplier: self.multiplier,
        })
    }
}
