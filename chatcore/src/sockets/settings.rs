//! Websocket protocol settings of a session: how much a socket buffers, and how large a message
//! a client may send.
//!
//! Chat traffic is small frames to many mostly idle sockets, so the defaults keep an idle
//! socket's buffers small: tungstenite's own defaults (128 KiB read buffer, allocated and
//! zero-filled before every read) cost more than everything else a session holds.

#[cfg(feature = "ws")]
use axum::extract::ws::WebSocketUpgrade;

use crate::model::DEFAULT_MAX_CONTENT_BYTES;

/// Default read buffer of a socket: clients send pongs and small control
/// messages; a larger message grows the buffer while it is read.
pub const DEFAULT_READ_BUFFER_SIZE: usize = 1024;

/// Default write buffer of a socket: frames queued together are written
/// with one system call until this many bytes are buffered. Grown only as frames are written.
pub const DEFAULT_WRITE_BUFFER_SIZE: usize = 4096;

/// Buffer sizes and incoming-message limits of every websocket session.
///
/// ```
/// use chatcore::sockets::WebSocketSettings;
/// let settings = WebSocketSettings::for_max_content(10_240);
/// assert_eq!(settings.max_message_size, 10_240);
/// assert!(settings.validate().is_ok());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebSocketSettings {
    /// Bytes read from the socket at a time; the buffer an idle socket holds (1 KiB).
    pub read_buffer_size: usize,
    /// Bytes of outgoing frames buffered before they are written out without waiting for a
    /// flush (4 KiB). Every batch of queued frames is flushed at its end anyway.
    pub write_buffer_size: usize,
    /// Upper bound of the outgoing buffer, frames not yet taken by the kernel included; `None`:
    /// unbounded (the per-session queue already bounds what a session holds).
    pub max_write_buffer_size: Option<usize>,
    /// Largest message a client may send, in bytes (by default the largest message content,
    /// [`DEFAULT_MAX_CONTENT_BYTES`]); a larger one closes the session with 1009.
    pub max_message_size: usize,
    /// Largest single frame a client may send, in bytes (as `max_message_size` by default).
    pub max_frame_size: usize,
}

impl Default for WebSocketSettings {
    fn default() -> Self {
        Self::for_max_content(DEFAULT_MAX_CONTENT_BYTES)
    }
}

/// A [`WebSocketSettings`] value the websocket library cannot work with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebSocketSettingsError {
    /// A size that must be positive is zero.
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    /// The write buffer bound does not leave room for the write buffer.
    #[error("max_write_buffer_size ({max}) must be larger than write_buffer_size ({buffer})")]
    WriteBound {
        /// The bound.
        max: usize,
        /// The write buffer size.
        buffer: usize,
    },
}

impl WebSocketSettings {
    /// The defaults, with incoming messages and frames limited to `max_content_bytes`.
    pub fn for_max_content(max_content_bytes: usize) -> Self {
        Self {
            read_buffer_size: DEFAULT_READ_BUFFER_SIZE,
            write_buffer_size: DEFAULT_WRITE_BUFFER_SIZE,
            max_write_buffer_size: None,
            max_message_size: max_content_bytes,
            max_frame_size: max_content_bytes,
        }
    }

    /// Checks what `apply` (feature `ws`) would otherwise have to correct.
    pub fn validate(&self) -> Result<(), WebSocketSettingsError> {
        for (name, value) in [
            ("read_buffer_size", self.read_buffer_size),
            ("max_message_size", self.max_message_size),
            ("max_frame_size", self.max_frame_size),
        ] {
            if value == 0 {
                return Err(WebSocketSettingsError::Zero(name));
            }
        }
        match self.max_write_buffer_size {
            Some(max) if max <= self.write_buffer_size => Err(WebSocketSettingsError::WriteBound {
                max,
                buffer: self.write_buffer_size,
            }),
            _ => Ok(()),
        }
    }

    /// Configures an upgrade with these settings. Values [`Self::validate`] refuses are raised
    /// to the nearest usable ones, so a session never fails on them.
    #[cfg(feature = "ws")]
    #[cfg_attr(docsrs, doc(cfg(feature = "ws")))]
    pub fn apply(&self, upgrade: WebSocketUpgrade) -> WebSocketUpgrade {
        let max_write = self
            .max_write_buffer_size
            .map_or(usize::MAX, |max| max.max(self.write_buffer_size + 1));
        upgrade
            .read_buffer_size(self.read_buffer_size.max(1))
            .write_buffer_size(self.write_buffer_size)
            .max_write_buffer_size(max_write)
            .max_message_size(self.max_message_size.max(1))
            .max_frame_size(self.max_frame_size.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_sizes_and_a_bound_below_the_buffer_are_refused() {
        let defaults = WebSocketSettings::default();
        assert_eq!(defaults.max_message_size, DEFAULT_MAX_CONTENT_BYTES);
        assert!(defaults.validate().is_ok());
        let zero = WebSocketSettings {
            read_buffer_size: 0,
            ..defaults
        };
        assert_eq!(
            zero.validate(),
            Err(WebSocketSettingsError::Zero("read_buffer_size"))
        );
        let bound = WebSocketSettings {
            max_write_buffer_size: Some(4096),
            ..defaults
        };
        assert!(matches!(
            bound.validate(),
            Err(WebSocketSettingsError::WriteBound { max: 4096, .. })
        ));
    }
}
