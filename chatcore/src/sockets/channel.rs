//! The two ends of a session: the handle a registry keeps, and the receiver the session drains.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{mpsc, watch};

use super::{CloseReason, SharedFrame};

/// Identifies one session within a registry.
pub type SessionId = u64;

/// The registry's side of a session: where to queue frames and how to ask it to close.
#[derive(Debug)]
pub struct SessionHandle {
    id: SessionId,
    user: Option<std::sync::Arc<str>>,
    outbound: mpsc::Sender<SharedFrame>,
    close: watch::Sender<Option<CloseReason>>,
}

/// Why a frame was not queued to a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QueueError {
    /// The session's queue is full: it is too slow to keep up.
    #[error("the session's queue is full")]
    Full,
    /// The session has ended.
    #[error("the session has ended")]
    Closed,
}

impl SessionHandle {
    /// The session id.
    pub fn id(&self) -> SessionId {
        self.id
    }

    /// The user the session belongs to, when known.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// Marks the session as `user`'s, so [`SocketRegistry::close_user`](super::SocketRegistry::close_user)
    /// finds it.
    pub fn for_user(mut self, user: &str) -> Self {
        self.user = Some(std::sync::Arc::from(user));
        self
    }

    /// Queues `frame` without waiting.
    pub fn try_queue(&self, frame: SharedFrame) -> Result<(), QueueError> {
        self.outbound.try_send(frame).map_err(|error| match error {
            mpsc::error::TrySendError::Full(_) => QueueError::Full,
            mpsc::error::TrySendError::Closed(_) => QueueError::Closed,
        })
    }

    /// Asks the session to close with `reason`. The session sends its close frame before any
    /// frame still queued, even when the handle is dropped right after.
    pub fn request_close(&self, reason: CloseReason) {
        self.close.send_replace(Some(reason));
    }
}

/// The session's side: the queue to drain and the close signal to watch.
#[derive(Debug)]
pub struct SessionReceiver {
    /// Frames to send, in order.
    pub outbound: mpsc::Receiver<SharedFrame>,
    /// Becomes `Some` when the registry asks the session to close.
    pub close: watch::Receiver<Option<CloseReason>>,
}

static NEXT_SESSION_ID: AtomicU64 = AtomicU64::new(1);

/// Creates a connected handle/receiver pair with a queue of `capacity` frames (at least one).
///
/// ```
/// use std::sync::Arc;
/// use chatcore::sockets::{session_channel, Frame, FrameText, QueueError};
/// let (handle, mut receiver) = session_channel(1);
/// let frame = Arc::new(Frame::new(FrameText::from("hi")));
/// assert_eq!(handle.try_queue(frame.clone()), Ok(()));
/// assert_eq!(handle.try_queue(frame.clone()), Err(QueueError::Full));
/// assert_eq!(receiver.outbound.try_recv().map(|f| f.text.clone()), Ok("hi".into()));
/// drop(receiver);
/// assert_eq!(handle.try_queue(frame), Err(QueueError::Closed));
/// ```
pub fn session_channel(capacity: usize) -> (SessionHandle, SessionReceiver) {
    let (outbound_tx, outbound_rx) = mpsc::channel(capacity.max(1));
    let (close_tx, close_rx) = watch::channel(None);
    (
        SessionHandle {
            id: NEXT_SESSION_ID.fetch_add(1, Ordering::Relaxed),
            user: None,
            outbound: outbound_tx,
            close: close_tx,
        },
        SessionReceiver {
            outbound: outbound_rx,
            close: close_rx,
        },
    )
}
