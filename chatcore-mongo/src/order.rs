//! Per-stream order across processes: every chat document names its predecessor in its stream.
//!
//! History paging and `since=` read a stream in `_id` order, and the change stream delivers it in
//! commit order; the two must agree, or a client resuming with `since=` skips a message. Within
//! one process a per-stream lock keeps them equal, but several persistence processes can write
//! one stream (for a moment, whenever the balancer's membership changes), and ObjectIds made by
//! different processes in the same second sort by their random process bytes, not by time.
//!
//! So a new message's document carries `previous`: the `_id` of the stream's newest message (or
//! the `stream_id` itself for a stream's first message), under a unique index. Its `_id` is made
//! greater than that predecessor's. Two processes that both saw the same newest message cannot
//! both link to it: the second insert fails with a duplicate key, reads the new newest message
//! and links to that. A message is therefore only ever committed after its predecessor was, and
//! its id sorts after it: commit order, id order and the chain are one order. Messages are never
//! deleted from a stream (a deleted message would leave its successor's link dangling).

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use mongodb::bson::oid::ObjectId;
use mongodb::bson::Bson;

/// The document field naming a message's predecessor in its stream.
pub(crate) const PREVIOUS: &str = "previous";

/// Name of the unique (sparse) index on [`PREVIOUS`]; documents written before it existed have
/// no link and are not indexed.
pub(crate) const PREVIOUS_INDEX: &str = "previous_1";

/// The longest pause before an insert that lost the race for its stream's newest message tries
/// again (it keeps trying until the store's timeout).
const MAX_BACKOFF: Duration = Duration::from_millis(40);

/// Streams whose newest message one lock stripe remembers; past this the stripe forgets them all
/// (each is then read once from the store on its next insert).
const HEADS_PER_STRIPE: usize = 1024;

/// The newest message of a stream as this process last saw it: `None` for an empty stream.
pub(crate) type Head = Option<ObjectId>;

/// The newest message of the streams of one lock stripe, as this process last wrote or read it.
/// A stale entry is harmless: linking to a message that already has a successor fails with a
/// duplicate key, and the insert reads the stream's newest message again.
#[derive(Debug, Default)]
pub(crate) struct Heads(HashMap<String, Head>);

impl Heads {
    pub(crate) fn get(&self, stream_id: &str) -> Option<Head> {
        self.0.get(stream_id).copied()
    }

    pub(crate) fn remember(&mut self, stream_id: &str, head: Head) {
        if self.0.len() >= HEADS_PER_STRIPE && !self.0.contains_key(stream_id) {
            self.0.clear();
        }
        self.0.insert(stream_id.to_owned(), head);
    }

    pub(crate) fn forget(&mut self, stream_id: &str) {
        self.0.remove(stream_id);
    }
}

/// The value of [`PREVIOUS`] for a message following `head` in `stream_id`.
pub(crate) fn link(stream_id: &str, head: Head) -> Bson {
    match head {
        Some(id) => Bson::ObjectId(id),
        None => Bson::String(stream_id.to_owned()),
    }
}

/// An id for the message following `head`: a fresh ObjectId when it sorts after `head` (the
/// usual case), else one just past `head`.
pub(crate) fn next_id(head: Head) -> ObjectId {
    let fresh = ObjectId::new();
    match head {
        Some(head) if fresh <= head => successor(head, fresh),
        _ => fresh,
    }
}

/// An id greater than `head`: `head` plus one plus the low 16 bits of `fresh`'s counter, so two
/// processes stepping past the same head rarely pick the same id (a collision is only another
/// duplicate key, and another attempt).
fn successor(head: ObjectId, fresh: ObjectId) -> ObjectId {
    let mut wide = [0u8; 16];
    wide[4..].copy_from_slice(&head.bytes());
    let fresh = fresh.bytes();
    let step = 1 + u128::from(u16::from_be_bytes([fresh[10], fresh[11]]));
    let largest = (1u128 << 96) - 1;
    let next = u128::from_be_bytes(wide).saturating_add(step).min(largest);
    let mut bytes = [0u8; 12];
    bytes.copy_from_slice(&next.to_be_bytes()[4..]);
    ObjectId::from_bytes(bytes)
}

/// The pause before attempt `attempt + 1`: random, up to 2^attempt ms (at most [`MAX_BACKOFF`]),
/// so two writers that keep colliding drift apart.
pub(crate) fn backoff(attempt: u32) -> Duration {
    let bound = Duration::from_millis(1 << attempt.min(16)).min(MAX_BACKOFF);
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let micros = u64::try_from(bound.as_micros()).unwrap_or(u64::MAX).max(1);
    Duration::from_micros(random % micros)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_id_sorts_after_a_head_from_a_process_whose_clock_is_ahead() {
        let ahead = ObjectId::from_bytes([0xff, 0xff, 0xff, 0xf0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff]);
        let next = next_id(Some(ahead));
        assert!(next > ahead, "{next} after {ahead}");
        assert_eq!(&next.bytes()[..4], &ahead.bytes()[..4], "only just past it");
    }

    #[test]
    fn the_next_id_is_fresh_after_an_older_head_and_for_an_empty_stream() {
        let old = ObjectId::from_bytes([0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        let next = next_id(Some(old));
        assert!(next > old);
        assert!(next.timestamp().timestamp_millis() > 0x1000_0000_i64 * 1000);
        assert!(
            next_id(None) < next_id(None),
            "fresh ids of one process ascend"
        );
    }

    #[test]
    fn backoffs_are_bounded_and_grow() {
        assert!(backoff(0) < Duration::from_millis(1));
        assert!((0..64).all(|a| backoff(a) < MAX_BACKOFF));
        let late: Duration = (0..50).map(|_| backoff(10)).sum();
        assert!(
            late > Duration::from_millis(50),
            "{late:?}: not all near zero"
        );
    }

    #[test]
    fn links_name_the_predecessor_or_the_stream() {
        let id = ObjectId::new();
        assert_eq!(link("0123456789abcdef", Some(id)), Bson::ObjectId(id));
        assert_eq!(
            link("0123456789abcdef", None),
            Bson::String("0123456789abcdef".into())
        );
    }

    #[test]
    fn heads_forget_everything_past_their_bound_but_keep_updates() {
        let mut heads = Heads::default();
        for n in 0..HEADS_PER_STRIPE {
            heads.remember(&n.to_string(), None);
        }
        heads.remember("0", Some(ObjectId::new()));
        assert!(heads.get("1").is_some(), "an update is not a new stream");
        heads.remember("new", None);
        assert_eq!(heads.get("1"), None);
        assert_eq!(heads.get("new"), Some(None));
        heads.forget("new");
        assert_eq!(heads.get("new"), None);
    }
}
