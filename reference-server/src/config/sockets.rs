//! Websocket sessions: keepalive, queues, slow clients, maximum age and the `WS_*` buffers and
//! frame limits.

use std::time::Duration;

use chatcore::config::parse_duration;
use chatcore::sockets::{
    SessionConfig, SlowClientPolicy, WebSocketSettings, WebSocketSettingsError,
};
use clap::ValueEnum;

use super::ConfigError;

/// `close` or `retry`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SlowClients {
    /// Close a session whose queue is full with 4001.
    Close,
    /// Count a failed delivery; the pipeline retries and eventually fails the stream over.
    Retry,
}

/// Websocket sessions (flattened into [`super::Settings`] as `sockets`).
#[derive(Debug, Clone, clap::Args)]
pub struct SocketSettings {
    /// Interval between server pings on every websocket.
    #[arg(
        long,
        global = true,
        env = "PING_INTERVAL",
        default_value = "30s",
        value_parser = parse_duration
    )]
    pub ping_interval: Duration,
    /// A websocket silent for this long is dropped.
    #[arg(
        long,
        global = true,
        env = "PONG_WAIT",
        default_value = "40s",
        value_parser = parse_duration
    )]
    pub pong_wait: Duration,
    /// Upper bound of one websocket write.
    #[arg(
        long,
        global = true,
        env = "WRITE_WAIT",
        default_value = "10s",
        value_parser = parse_duration
    )]
    pub write_wait: Duration,
    /// Frames queued per websocket before broadcasts to it count as failed.
    #[arg(
        long = "socket-queue-capacity",
        id = "socket_queue_capacity",
        value_name = "SOCKET_QUEUE_CAPACITY",
        global = true,
        env = "SOCKET_QUEUE_CAPACITY",
        default_value_t = 256
    )]
    pub queue_capacity: usize,
    /// What happens to a websocket whose queue is full: `close` it with 4001 (the client
    /// reconnects with since=) or count a failure and let the pipeline `retry`.
    #[arg(
        long,
        global = true,
        env = "SLOW_CLIENT_POLICY",
        value_enum,
        default_value = "close"
    )]
    pub slow_client_policy: SlowClients,
    /// A websocket open this long (less up to a tenth) is closed with 4002 so its client
    /// reconnects with since= — onto its key's current instance if the balancer's members
    /// changed meanwhile; 0s: never.
    #[arg(
        long,
        global = true,
        env = "SESSION_MAX_AGE",
        default_value = "1h",
        value_parser = parse_duration
    )]
    pub session_max_age: Duration,
    /// Bytes each websocket reads at a time: the read buffer an idle socket holds. A larger
    /// client message grows it while it is read.
    #[arg(
        long = "ws-read-buffer-size",
        id = "ws_read_buffer_size",
        value_name = "WS_READ_BUFFER_SIZE",
        global = true,
        env = "WS_READ_BUFFER_SIZE",
        default_value_t = chatcore::sockets::DEFAULT_READ_BUFFER_SIZE
    )]
    pub read_buffer_size: usize,
    /// Bytes of outgoing frames a websocket buffers before writing them out; frames queued
    /// together are written with one system call. Grown only as frames are written.
    #[arg(
        long = "ws-write-buffer-size",
        id = "ws_write_buffer_size",
        value_name = "WS_WRITE_BUFFER_SIZE",
        global = true,
        env = "WS_WRITE_BUFFER_SIZE",
        default_value_t = chatcore::sockets::DEFAULT_WRITE_BUFFER_SIZE
    )]
    pub write_buffer_size: usize,
    /// Upper bound of a websocket's outgoing buffer (larger than WS_WRITE_BUFFER_SIZE); unset:
    /// unbounded, the per-socket queue (SOCKET_QUEUE_CAPACITY) bounds it.
    #[arg(
        long = "ws-max-write-buffer-size",
        id = "ws_max_write_buffer_size",
        value_name = "WS_MAX_WRITE_BUFFER_SIZE",
        global = true,
        env = "WS_MAX_WRITE_BUFFER_SIZE"
    )]
    pub max_write_buffer_size: Option<usize>,
    /// Largest message a client may send on a websocket, in bytes; a larger one closes the
    /// socket with 1009. Unset: MAX_CONTENT_BYTES.
    #[arg(
        long = "ws-max-message-size",
        id = "ws_max_message_size",
        value_name = "WS_MAX_MESSAGE_SIZE",
        global = true,
        env = "WS_MAX_MESSAGE_SIZE"
    )]
    pub max_message_size: Option<usize>,
    /// Largest frame a client may send on a websocket, in bytes. Unset: WS_MAX_MESSAGE_SIZE.
    #[arg(
        long = "ws-max-frame-size",
        id = "ws_max_frame_size",
        value_name = "WS_MAX_FRAME_SIZE",
        global = true,
        env = "WS_MAX_FRAME_SIZE"
    )]
    pub max_frame_size: Option<usize>,
}

impl SocketSettings {
    /// The session configuration, checked; `max_content_bytes` is the default largest client
    /// message.
    pub fn session_config(&self, max_content_bytes: usize) -> Result<SessionConfig, ConfigError> {
        if self.queue_capacity == 0 {
            return Err(ConfigError::Invalid {
                variable: "SOCKET_QUEUE_CAPACITY",
                reason: "must be at least 1",
            });
        }
        Ok(SessionConfig {
            ping_interval: self.ping_interval,
            pong_wait: self.pong_wait,
            write_wait: self.write_wait,
            queue_capacity: self.queue_capacity,
            slow_clients: match self.slow_client_policy {
                SlowClients::Close => SlowClientPolicy::Close,
                SlowClients::Retry => SlowClientPolicy::Retry,
            },
            max_age: (!self.session_max_age.is_zero()).then_some(self.session_max_age),
            websocket: self.websocket_settings(max_content_bytes)?,
        })
    }

    /// The `WS_*` settings, checked.
    fn websocket_settings(
        &self,
        max_content_bytes: usize,
    ) -> Result<WebSocketSettings, ConfigError> {
        let max_message_size = self.max_message_size.unwrap_or(max_content_bytes);
        let settings = WebSocketSettings {
            read_buffer_size: self.read_buffer_size,
            write_buffer_size: self.write_buffer_size,
            max_write_buffer_size: self.max_write_buffer_size,
            max_message_size,
            max_frame_size: self.max_frame_size.unwrap_or(max_message_size),
        };
        settings.validate().map_err(|error| {
            let variable = match error {
                WebSocketSettingsError::Zero("read_buffer_size") => "WS_READ_BUFFER_SIZE",
                WebSocketSettingsError::Zero("max_frame_size") => "WS_MAX_FRAME_SIZE",
                WebSocketSettingsError::Zero(_) => "WS_MAX_MESSAGE_SIZE",
                WebSocketSettingsError::WriteBound { .. } => "WS_MAX_WRITE_BUFFER_SIZE",
            };
            ConfigError::Backend {
                variable,
                reason: error.to_string(),
            }
        })?;
        Ok(settings)
    }
}
