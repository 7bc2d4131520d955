//! Websocket sessions and the registry that routes frames to them.
//!
//! Each session has a bounded outbound queue drained by its own task, so a broadcast only ever
//! does a non-blocking `try_send` per session: a slow or dead client costs the others nothing. A
//! session whose queue is gone is removed on the next broadcast and by its own task on exit.
//!
//! The per-frame path is kept cheap: a broadcast shares one encoded frame among its sessions (one
//! reference count each), a session sends each message at most once without hashing its id, and
//! writes every frame it finds queued with a single flush.
//!
//! The registry ([`SocketRegistry`], [`LocalSocketRegistry`]), frames, close reasons and the
//! per-user quota need no feature; serving a `Subscription` on a websocket needs `ws`.

mod channel;
#[cfg(feature = "ws")]
mod client_frame;
mod close;
mod config;
mod frame;
mod local;
mod quota;
mod registry;
mod report;
mod sent;
#[cfg(feature = "ws")]
mod session;
mod settings;
#[cfg(feature = "ws")]
mod subscription;

pub use channel::{session_channel, QueueError, SessionHandle, SessionId, SessionReceiver};
#[cfg(feature = "ws")]
#[cfg_attr(docsrs, doc(cfg(feature = "ws")))]
pub use client_frame::{TYPING_FRAMES_PER_WINDOW, TYPING_WINDOW};
pub use close::{
    CloseReason, FAILOVER_CLOSE_CODE, INTERNAL_ERROR_CLOSE_CODE, MAX_CLOSE_REASON_BYTES,
    MESSAGE_TOO_BIG_CLOSE_CODE, REMOVED_FROM_GROUP_CLOSE_CODE, SESSION_EXPIRED_CLOSE_CODE,
    SHUTDOWN_CLOSE_CODE, SLOW_CLIENT_CLOSE_CODE,
};
pub use config::{SessionConfig, DEFAULT_QUEUE_CAPACITY};
pub use frame::{Frame, FrameText, Protocol, SharedFrame, TypedText};
pub use local::{LocalSocketRegistry, SlowClientPolicy};
pub use quota::{QuotaGuard, SocketQuota};
pub use registry::SocketRegistry;
pub use report::DeliveryReport;
pub use sent::DedupId;
pub use settings::{
    WebSocketSettings, WebSocketSettingsError, DEFAULT_READ_BUFFER_SIZE, DEFAULT_WRITE_BUFFER_SIZE,
};
#[cfg(feature = "ws")]
#[cfg_attr(docsrs, doc(cfg(feature = "ws")))]
pub use subscription::Subscription;
