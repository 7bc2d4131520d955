//! What a session sends: a frame's text, shared among every session of a broadcast, and the id
//! it is sent at most once by.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use bytes::Bytes;

use super::DedupId;

/// How the text is held. With `ws` it is kept as the websocket library writes it, so a session
/// hands a frame to its socket with a reference count and no conversion or UTF-8 check; without
/// it, as bytes checked to be UTF-8 when the text was built.
#[cfg(feature = "ws")]
type Repr = axum::extract::ws::Utf8Bytes;
#[cfg(not(feature = "ws"))]
type Repr = Bytes;

/// The UTF-8 text of a frame: cheap to clone (a reference count), never copied by a broadcast.
///
/// Built from a `String` without a copy, or from [`Bytes`] that are checked to be UTF-8;
/// [`FrameText::to_bytes`] gives the bytes back without a copy.
///
/// ```
/// use bytes::Bytes;
/// use chatcore::sockets::FrameText;
/// let text = FrameText::from(String::from(r#"{"content":"hi"}"#));
/// assert_eq!(text, r#"{"content":"hi"}"#);
/// assert_eq!(text.to_bytes(), Bytes::from_static(br#"{"content":"hi"}"#));
/// assert!(FrameText::try_from(Bytes::from_static(b"\xff")).is_err());
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct FrameText(Repr);

impl FrameText {
    /// Text from a static string.
    pub const fn from_static(text: &'static str) -> Self {
        #[cfg(feature = "ws")]
        {
            Self(Repr::from_static(text))
        }
        #[cfg(not(feature = "ws"))]
        {
            Self(Bytes::from_static(text.as_bytes()))
        }
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        #[cfg(feature = "ws")]
        {
            self.0.as_str()
        }
        #[cfg(not(feature = "ws"))]
        {
            // Checked when built, so this never falls back.
            std::str::from_utf8(&self.0).unwrap_or_default()
        }
    }

    /// The text's bytes, sharing its buffer.
    pub fn to_bytes(&self) -> Bytes {
        #[cfg(feature = "ws")]
        {
            Bytes::from(self.0.clone())
        }
        #[cfg(not(feature = "ws"))]
        {
            self.0.clone()
        }
    }

    /// The text as the websocket library writes it, sharing its buffer.
    #[cfg(feature = "ws")]
    pub(super) fn to_wire(&self) -> axum::extract::ws::Utf8Bytes {
        self.0.clone()
    }
}

impl From<String> for FrameText {
    /// Takes the string's buffer; no copy.
    fn from(text: String) -> Self {
        Self(Repr::from(text))
    }
}

impl From<&str> for FrameText {
    /// Copies the text.
    fn from(text: &str) -> Self {
        #[cfg(feature = "ws")]
        {
            Self(Repr::from(text))
        }
        #[cfg(not(feature = "ws"))]
        {
            Self(Bytes::copy_from_slice(text.as_bytes()))
        }
    }
}

impl TryFrom<Bytes> for FrameText {
    type Error = std::str::Utf8Error;

    /// Checks that `bytes` are UTF-8 and takes them; no copy.
    fn try_from(bytes: Bytes) -> Result<Self, Self::Error> {
        #[cfg(feature = "ws")]
        {
            Repr::try_from(bytes).map(Self)
        }
        #[cfg(not(feature = "ws"))]
        {
            std::str::from_utf8(&bytes)?;
            Ok(Self(bytes))
        }
    }
}

impl From<FrameText> for Bytes {
    fn from(text: FrameText) -> Self {
        #[cfg(feature = "ws")]
        {
            Bytes::from(text.0)
        }
        #[cfg(not(feature = "ws"))]
        {
            text.0
        }
    }
}

impl Deref for FrameText {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for FrameText {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<[u8]> for FrameText {
    fn as_ref(&self) -> &[u8] {
        self.as_str().as_bytes()
    }
}

impl fmt::Debug for FrameText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for FrameText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<str> for FrameText {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for FrameText {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for FrameText {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

/// The version of the frames a chat session gets: bare chat messages, or typed frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Protocol {
    /// Protocol 1 (the default, the original format): each frame a bare chat message.
    #[default]
    Bare,
    /// Protocol 2 (`protocol=2`): typed frames, `{"type": "message", "message": {...}}`,
    /// `{"type": "read", ...}`.
    Typed,
}

/// What a frame is for protocol-2 sessions.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum TypedText {
    /// The same text as every session (notification frames).
    #[default]
    Same,
    /// Protocol-2 sessions get this text instead (a chat message's typed frame).
    Other(FrameText),
    /// Only protocol-2 sessions get the frame (a `read` frame); protocol-1 sessions skip it.
    Only,
}

/// One outbound websocket text frame, cheap to clone for a broadcast.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The text.
    pub text: FrameText,
    /// When set, a session sends a frame with this id at most once.
    pub dedup_id: Option<DedupId>,
    /// What protocol-2 sessions get.
    pub typed: TypedText,
}

impl Frame {
    /// A frame without a dedup id.
    pub fn new(text: FrameText) -> Self {
        Self {
            text,
            dedup_id: None,
            typed: TypedText::Same,
        }
    }

    /// A frame a session sends at most once (chat messages, keyed by `message_id`).
    pub fn with_id(text: FrameText, id: &str) -> Self {
        Self {
            text,
            dedup_id: Some(DedupId::new(id)),
            typed: TypedText::Same,
        }
    }

    /// A frame only protocol-2 sessions get.
    pub fn typed_only(text: FrameText) -> Self {
        Self {
            text,
            dedup_id: None,
            typed: TypedText::Only,
        }
    }

    /// Protocol-2 sessions get `typed` instead of the text.
    pub fn with_typed(mut self, typed: FrameText) -> Self {
        self.typed = TypedText::Other(typed);
        self
    }

    /// The text a session of `protocol` sends, or `None` when the frame is not for it.
    ///
    /// ```
    /// use chatcore::sockets::{Frame, FrameText, Protocol};
    /// let message = Frame::new(FrameText::from("{}")).with_typed(FrameText::from("typed"));
    /// assert_eq!(message.text_for(Protocol::Bare).map(|t| t.as_str()), Some("{}"));
    /// assert_eq!(message.text_for(Protocol::Typed).map(|t| t.as_str()), Some("typed"));
    /// assert_eq!(Frame::typed_only(FrameText::from("r")).text_for(Protocol::Bare), None);
    /// ```
    pub fn text_for(&self, protocol: Protocol) -> Option<&FrameText> {
        match (protocol, &self.typed) {
            (Protocol::Typed, TypedText::Other(typed)) => Some(typed),
            (Protocol::Bare, TypedText::Only) => None,
            _ => Some(&self.text),
        }
    }
}

/// A frame as queued to sessions: one allocation per broadcast, shared by every session of it.
pub type SharedFrame = Arc<Frame>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_from_a_string_and_back_to_bytes_shares_the_buffer() {
        let text = String::from("a chat message");
        let buffer = text.as_ptr();
        let text = FrameText::from(text);
        assert_eq!(text.as_ptr(), buffer);
        assert_eq!(text.to_bytes().as_ptr(), buffer);
        assert_eq!(Bytes::from(text.clone()).as_ptr(), buffer);
        #[cfg(feature = "ws")]
        assert_eq!(text.to_wire().as_ptr(), buffer);
        assert_eq!(text, "a chat message");
    }

    #[test]
    fn bytes_are_taken_only_when_utf8() {
        let bytes = Bytes::from(String::from("é"));
        let buffer = bytes.as_ptr();
        let text = FrameText::try_from(bytes).expect("UTF-8");
        assert_eq!(text.as_ptr(), buffer);
        assert_eq!(text.as_str(), "é");
        assert!(FrameText::try_from(Bytes::from_static(&[0xc3])).is_err());
    }

    #[test]
    fn static_and_copied_text_compare_by_content() {
        let hi = FrameText::from_static("hi");
        assert_eq!(hi, FrameText::from("hi"));
        assert_eq!(format!("{hi} {hi:?}"), r#"hi "hi""#);
        let frame = Frame::with_id(hi.clone(), "m1");
        assert_eq!(frame.dedup_id, Some(DedupId::new("m1")));
        assert_eq!(
            frame,
            Frame::with_id(FrameText::from(String::from("hi")), "m1")
        );
        assert_eq!(Frame::new(hi).dedup_id, None);
    }
}
