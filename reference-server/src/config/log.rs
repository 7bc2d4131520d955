//! `LOG_LEVEL` and `LOG_FORMAT`.

use clap::ValueEnum;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Logging (flattened into [`super::Settings`] as `log`).
#[derive(Debug, Clone, clap::Args)]
pub struct LogSettings {
    /// Log filter (`trace`, `debug`, `info`, `warn`, `error`, or a tracing directive).
    #[arg(
        long = "log-level",
        id = "log_level",
        value_name = "LOG_LEVEL",
        global = true,
        env = "LOG_LEVEL",
        default_value = "info"
    )]
    pub level: String,
    /// Log output: `text` or `json`.
    #[arg(
        long = "log-format",
        id = "log_format",
        value_name = "LOG_FORMAT",
        global = true,
        env = "LOG_FORMAT",
        default_value = "text"
    )]
    pub format: LogFormat,
}
