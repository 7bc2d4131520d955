//! The websocket session loop: a [`Subscription`] served on an axum websocket.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures::stream::SplitSink;
use futures::{SinkExt, StreamExt};
use tokio::time::{sleep_until, timeout, Instant};

use super::client_frame::{handle_client_text, Sender, TypingRate};
use super::sent::Sent;
use super::{
    CloseReason, Frame, Protocol, SessionId, SharedFrame, Subscription, MESSAGE_TOO_BIG_CLOSE_CODE,
    SESSION_EXPIRED_CLOSE_CODE, SHUTDOWN_CLOSE_CODE,
};
use crate::metrics::ClientFrameOutcome;

/// Frames a session writes before it looks at its close signal, timers and socket again.
const MAX_BATCH: usize = 64;

type Sink = SplitSink<WebSocket, Message>;

impl Subscription {
    /// Runs the session on `socket` until either side closes it or it fails: first `replay` (in
    /// order), then queued frames, each sent at most once per dedup id; pings every
    /// `ping_interval`; drops the client after `pong_wait` of silence. Frames found queued
    /// together are written with one flush.
    #[cfg_attr(docsrs, doc(cfg(feature = "ws")))]
    pub async fn run(mut self, socket: WebSocket, replay: Vec<Frame>) {
        let (mut sink, mut stream) = socket.split();
        let write_wait = self.config.write_wait;
        if !self.registered {
            let reason = CloseReason::new(SHUTDOWN_CLOSE_CODE, "server shutting down");
            let _ = send_close(&mut sink, &reason, write_wait).await;
            return;
        }
        let mut sent = Sent::new(self.config.queue_capacity.max(64) * 2, self.floor.take());
        let mut replay = replay.into_iter().map(Arc::new).peekable();
        while replay.peek().is_some() {
            let batch = replay.by_ref().take(MAX_BATCH);
            if !write_batch(&mut sink, &mut sent, batch, self.protocol, write_wait).await {
                return;
            }
        }
        let mut ping = tokio::time::interval_at(
            Instant::now() + self.config.ping_interval,
            self.config.ping_interval,
        );
        let silence = sleep_until(Instant::now() + self.config.pong_wait);
        tokio::pin!(silence);
        let expiry = expiry(self.config.max_age, self.id);
        tokio::pin!(expiry);
        // Registered once for the session's life rather than on every wake-up.
        let mut close_signal = self.receiver.close.clone();
        let close_requested = close_signal.changed();
        tokio::pin!(close_requested);
        let outbound = &mut self.receiver.outbound;
        let sender = Sender {
            registry: self.registry.as_ref(),
            key: &self.key,
            id: self.id,
            user: self.user.as_deref(),
            protocol: self.protocol,
        };
        let mut typing = TypingRate::default();
        loop {
            // Biased, close first: a session asked to close (shutdown, failover, too slow) sends
            // its close frame next instead of first draining its queue, and never misses it
            // because the registry dropped its queue meanwhile.
            tokio::select! {
                biased;
                changed = &mut close_requested => {
                    let reason = self.receiver.close.borrow().clone();
                    if let (Ok(()), Some(reason)) = (changed, reason) {
                        let _ = send_close(&mut sink, &reason, write_wait).await;
                    }
                    return;
                }
                () = &mut expiry => {
                    let reason = CloseReason::new(
                        SESSION_EXPIRED_CLOSE_CODE,
                        "session max age reached; reconnect with since=",
                    );
                    let _ = send_close(&mut sink, &reason, write_wait).await;
                    return;
                }
                frame = outbound.recv() => {
                    let Some(first) = frame else { return };
                    let queued = std::iter::from_fn(|| outbound.try_recv().ok());
                    let batch = std::iter::once(first).chain(queued).take(MAX_BATCH);
                    if !write_batch(&mut sink, &mut sent, batch, self.protocol, write_wait).await {
                        return;
                    }
                }
                _ = ping.tick() => {
                    let ping = Message::Ping(bytes::Bytes::new());
                    if !matches!(timeout(write_wait, sink.send(ping)).await, Ok(Ok(()))) {
                        return;
                    }
                }
                () = &mut silence => {
                    tracing::debug!(key = %self.key, "no pong within PONG_WAIT: dropping session");
                    return;
                }
                incoming = stream.next() => match incoming {
                    Some(Ok(Message::Close(_))) | None => return,
                    Some(Err(error)) => {
                        if is_too_big(error) {
                            let reason = CloseReason::new(MESSAGE_TOO_BIG_CLOSE_CODE, "message too big");
                            let _ = send_close(&mut sink, &reason, write_wait).await;
                        }
                        return;
                    }
                    Some(Ok(message)) => {
                        silence.as_mut().reset(Instant::now() + self.config.pong_wait);
                        match &message {
                            Message::Text(text) => handle_client_text(&sender, text.as_str(), &mut typing),
                            Message::Binary(_) => sender.registry.count_client_frame(ClientFrameOutcome::Ignored),
                            _ => {}
                        }
                    }
                },
            }
        }
    }

    /// Closes `socket` with `reason` instead of running the session (e.g. replay failed).
    #[cfg_attr(docsrs, doc(cfg(feature = "ws")))]
    pub async fn refuse(self, socket: WebSocket, reason: CloseReason) {
        let (mut sink, _) = socket.split();
        let _ = send_close(&mut sink, &reason, self.config.write_wait).await;
    }
}

/// Writes the frames of `batch` not sent before, as `protocol` has them, then flushes once; all
/// within `write_wait`.
async fn write_batch(
    sink: &mut Sink,
    sent: &mut Sent,
    batch: impl Iterator<Item = SharedFrame>,
    protocol: Protocol,
    write_wait: Duration,
) -> bool {
    let write = async {
        for frame in batch {
            let Some(text) = frame.text_for(protocol) else {
                continue;
            };
            if sent.first_time(&frame) {
                // A reference count: the text is already in the socket's representation.
                sink.feed(Message::Text(text.to_wire())).await?;
            }
        }
        sink.flush().await
    };
    matches!(timeout(write_wait, write).await, Ok(Ok(())))
}

/// True when the client's message was over the configured size limits.
fn is_too_big(error: axum::Error) -> bool {
    error
        .into_inner()
        .downcast_ref::<tokio_tungstenite::tungstenite::Error>()
        .is_some_and(|error| matches!(error, tokio_tungstenite::tungstenite::Error::Capacity(_)))
}

/// Resolves when session `id` has lived `max_age`, less its share of a tenth spread by id.
async fn expiry(max_age: Option<Duration>, id: SessionId) {
    let Some(max_age) = max_age else {
        return std::future::pending().await;
    };
    let spread = (max_age / 10).mul_f64((id % 1000) as f64 / 1000.0);
    tokio::time::sleep(max_age.saturating_sub(spread)).await;
}

async fn send_close(sink: &mut Sink, reason: &CloseReason, write_wait: Duration) -> bool {
    let frame = CloseFrame {
        code: reason.code,
        reason: Utf8Bytes::from(reason.sent_reason()),
    };
    matches!(
        timeout(write_wait, sink.send(Message::Close(Some(frame)))).await,
        Ok(Ok(()))
    )
}
