//! Sending each message at most once per session: a frame's [`DedupId`] and the compact record
//! of the ids a session sent.
//!
//! The id's fingerprint is computed once, when the frame is built for a broadcast; sessions only
//! compare. A session keeps the greatest id it sent (message ids sort in store order) and a ring
//! of the fingerprints of its last sends: a frame above that id is new without any lookup (the
//! common case: live messages in order); only one at or below it (a retry's duplicate, a replay
//! overlap, an out-of-order arrival) is looked up in the ring.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use super::Frame;

/// The id a frame is sent at most once by (a chat message's `message_id`), with its fingerprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DedupId {
    id: Arc<str>,
    fingerprint: u64,
}

impl DedupId {
    /// Builds the id and computes its fingerprint.
    pub fn new(id: &str) -> Self {
        let mut hasher = DefaultHasher::new();
        id.hash(&mut hasher);
        Self {
            id: Arc::from(id),
            fingerprint: hasher.finish(),
        }
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.id
    }
}

/// What a session already sent: ids at or below `floor` (the client's `since=`), and its
/// recent sends.
#[derive(Debug)]
#[cfg_attr(not(feature = "ws"), allow(dead_code))]
pub(super) struct Sent {
    ids: SentIds,
    floor: Option<Arc<str>>,
}

#[cfg_attr(not(feature = "ws"), allow(dead_code))]
impl Sent {
    /// Remembers the last `capacity` ids sent, and skips every id at or below `floor`.
    pub(super) fn new(capacity: usize, floor: Option<Arc<str>>) -> Self {
        Self {
            ids: SentIds::new(capacity),
            floor,
        }
    }

    /// True when `frame` is to be sent (and is now recorded as sent).
    pub(super) fn first_time(&mut self, frame: &Frame) -> bool {
        let Some(id) = &frame.dedup_id else {
            return true;
        };
        let already_had = self
            .floor
            .as_ref()
            .is_some_and(|floor| id.as_str() <= &**floor);
        !already_had && self.ids.first_time(id)
    }
}

/// The ids one session sent: the greatest, and the fingerprints of the last `capacity`, in a
/// ring grown only as the session sends.
#[derive(Debug)]
struct SentIds {
    greatest: Option<Arc<str>>,
    ring: Vec<u64>,
    next: usize,
    capacity: usize,
}

impl SentIds {
    /// Remembers up to `capacity` ids (at least one).
    fn new(capacity: usize) -> Self {
        Self {
            greatest: None,
            ring: Vec::new(),
            next: 0,
            capacity: capacity.max(1),
        }
    }

    /// Records `id`; false when it was sent already (among the last `capacity`).
    fn first_time(&mut self, id: &DedupId) -> bool {
        let newest = self
            .greatest
            .as_ref()
            .is_none_or(|greatest| *id.id > **greatest);
        if !newest && self.ring.contains(&id.fingerprint) {
            return false;
        }
        if self.ring.len() < self.capacity {
            self.ring.push(id.fingerprint);
        } else {
            self.ring[self.next] = id.fingerprint;
            self.next = (self.next + 1) % self.capacity;
        }
        if newest {
            self.greatest = Some(Arc::clone(&id.id));
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sockets::FrameText;

    #[test]
    fn the_last_ids_are_refused_and_the_oldest_forgotten() {
        let mut sent = SentIds::new(2);
        let (a, b, c) = (DedupId::new("a"), DedupId::new("b"), DedupId::new("c"));
        assert!(sent.first_time(&a));
        assert!(!sent.first_time(&a));
        assert!(sent.first_time(&b));
        assert!(sent.first_time(&c));
        assert!(!sent.first_time(&c), "c is the greatest and in the ring");
        assert!(!sent.first_time(&b));
        assert!(sent.first_time(&a), "a was evicted");
    }

    #[test]
    fn an_id_below_the_greatest_is_sent_when_it_never_was() {
        let mut sent = SentIds::new(8);
        assert!(sent.first_time(&DedupId::new("m5")));
        assert!(sent.first_time(&DedupId::new("m3")), "out of order, new");
        assert!(!sent.first_time(&DedupId::new("m3")));
        assert!(!sent.first_time(&DedupId::new("m5")));
        assert!(sent.first_time(&DedupId::new("m6")));
    }

    #[test]
    fn frames_at_or_below_the_floor_and_repeats_are_skipped() {
        let text = FrameText::from_static("{}");
        let mut sent = Sent::new(8, Some(Arc::from("m2")));
        assert!(!sent.first_time(&Frame::with_id(text.clone(), "m1")));
        assert!(!sent.first_time(&Frame::with_id(text.clone(), "m2")));
        assert!(sent.first_time(&Frame::with_id(text.clone(), "m3")));
        assert!(!sent.first_time(&Frame::with_id(text.clone(), "m3")));
        assert!(
            sent.first_time(&Frame::new(text.clone())),
            "no id: always sent"
        );
        assert!(sent.first_time(&Frame::new(text)));
    }

    #[test]
    fn fingerprints_are_stable_and_distinguish_ids() {
        assert_eq!(DedupId::new("x"), DedupId::new("x"));
        assert_ne!(DedupId::new("x").fingerprint, DedupId::new("y").fingerprint);
    }
}
