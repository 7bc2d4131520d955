//! Frames clients send on their chat sockets (socket protocol 2): typing indicators, relayed to
//! the stream's other protocol-2 sessions on this instance, never stored and never through the
//! pipeline. Anything else a client sends is ignored and counted.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{Frame, FrameText, Protocol, SessionId, SocketRegistry};
use crate::metrics::ClientFrameOutcome;

/// Typing frames one session may relay per [`TYPING_WINDOW`]; the rest are dropped.
pub const TYPING_FRAMES_PER_WINDOW: usize = 2;
/// The window of [`TYPING_FRAMES_PER_WINDOW`].
pub const TYPING_WINDOW: Duration = Duration::from_secs(1);

/// Whether a user is typing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum TypingState {
    Start,
    Stop,
}

/// What a client may send. Fields the server does not expect (a `user_id` of the client's
/// choosing) are ignored: the sender is always the session's user.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ClientFrame {
    Typing { state: TypingState },
}

/// The `typing` frame of socket protocol 2.
#[derive(Serialize)]
struct TypingFrame<'a> {
    r#type: &'static str,
    stream_id: &'a str,
    user_id: &'a str,
    state: TypingState,
}

/// A session's typing rate: the times of its last relayed frames.
#[derive(Debug, Default)]
pub(super) struct TypingRate {
    relayed: [Option<Instant>; TYPING_FRAMES_PER_WINDOW],
}

impl TypingRate {
    /// True (and counted) when a frame at `now` is within the rate.
    fn admit(&mut self, now: Instant) -> bool {
        let slot = self
            .relayed
            .iter_mut()
            .find(|at| at.is_none_or(|at| now.duration_since(at) >= TYPING_WINDOW));
        match slot {
            Some(slot) => {
                *slot = Some(now);
                true
            }
            None => false,
        }
    }
}

/// The session a client frame came from.
pub(super) struct Sender<'a> {
    pub(super) registry: &'a dyn SocketRegistry,
    pub(super) key: &'a str,
    pub(super) id: SessionId,
    pub(super) user: Option<&'a str>,
    pub(super) protocol: Protocol,
}

/// Acts on a text frame from a client: a typing frame of a protocol-2 session with a user is
/// relayed (within its rate) to the key's other sessions, which only protocol-2 ones send;
/// anything else is ignored. Every frame is counted.
pub(super) fn handle_client_text(sender: &Sender<'_>, text: &str, rate: &mut TypingRate) {
    let outcome = match (sender.protocol, sender.user, serde_json::from_str(text)) {
        (Protocol::Typed, Some(user), Ok(ClientFrame::Typing { state })) => {
            match rate.admit(Instant::now()) {
                true => relay_typing(sender, user, state),
                false => ClientFrameOutcome::Throttled,
            }
        }
        _ => ClientFrameOutcome::Ignored,
    };
    sender.registry.count_client_frame(outcome);
}

fn relay_typing(sender: &Sender<'_>, user: &str, state: TypingState) -> ClientFrameOutcome {
    let frame = TypingFrame {
        r#type: "typing",
        stream_id: sender.key,
        user_id: user,
        state,
    };
    let Ok(text) = serde_json::to_string(&frame) else {
        return ClientFrameOutcome::Ignored;
    };
    let frame = Frame::typed_only(FrameText::from(text));
    sender.registry.relay(sender.key, sender.id, &frame);
    ClientFrameOutcome::Relayed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_typing_frames_per_second_pass() {
        let mut rate = TypingRate::default();
        let start = Instant::now();
        let admitted = (0..20)
            .filter(|i| rate.admit(start + Duration::from_millis(*i * 10)))
            .count();
        assert_eq!(admitted, 2, "20 frames in 200 ms");
        assert!(rate.admit(start + TYPING_WINDOW), "a second later, again");
        assert!(rate.admit(start + TYPING_WINDOW + Duration::from_millis(10)));
        assert!(!rate.admit(start + TYPING_WINDOW + Duration::from_millis(20)));
    }

    #[test]
    fn client_frames_parse_only_as_typing_and_ignore_a_chosen_user() {
        let frame: ClientFrame =
            serde_json::from_str(r#"{"type":"typing","state":"start","user_id":"mallory"}"#)
                .expect("typing");
        assert!(matches!(
            frame,
            ClientFrame::Typing {
                state: TypingState::Start
            }
        ));
        for bad in [
            r#"{"type":"typing","state":"maybe"}"#,
            r#"{"type":"message","content":"x"}"#,
            r#"{"state":"start"}"#,
            "not json",
        ] {
            assert!(serde_json::from_str::<ClientFrame>(bad).is_err(), "{bad}");
        }
    }
}
