//! The conversation identifier shared by both participants.
//!
//! `stream_id = first 16 lowercase hex chars of SHA-256(min(a, b) ++ max(a, b))`, with byte-wise
//! ordering and no separator. Both clients compute it locally, Kafka partitions on it, and the L7
//! balancer hashes on it so a conversation's sockets and forwards meet on one websocket instance.

use sha2::{Digest, Sha256};

/// Number of hex characters in a stream id.
pub const STREAM_ID_LEN: usize = 16;

/// Computes the stream id of the conversation between `a` and `b`; argument order does not matter.
///
/// ```
/// use chatcore::stream_id::stream_id;
/// assert_eq!(stream_id("user123", "user456"), "7b28e95659ec2171");
/// assert_eq!(stream_id("user456", "user123"), stream_id("user123", "user456"));
/// ```
pub fn stream_id(a: &str, b: &str) -> String {
    let (low, high) = if a.as_bytes() <= b.as_bytes() {
        (a, b)
    } else {
        (b, a)
    };
    let mut hasher = Sha256::new();
    hasher.update(low.as_bytes());
    hasher.update(high.as_bytes());
    let digest = hasher.finalize();
    let mut out = String::with_capacity(STREAM_ID_LEN);
    for byte in &digest[..STREAM_ID_LEN / 2] {
        out.push(hex_digit(byte >> 4));
        out.push(hex_digit(byte & 0x0f));
    }
    out
}

/// True when `candidate` has the shape of a stream id: exactly 16 lowercase hex characters.
///
/// ```
/// use chatcore::stream_id::is_well_formed;
/// assert!(is_well_formed("7b28e95659ec2171"));
/// assert!(!is_well_formed("7B28E95659EC2171"));
/// ```
pub fn is_well_formed(candidate: &str) -> bool {
    candidate.len() == STREAM_ID_LEN
        && candidate
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn hex_digit(nibble: u8) -> char {
    char::from_digit(u32::from(nibble), 16).unwrap_or('0')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symmetric_and_sixteen_hex_chars() {
        let id = stream_id("alice", "bob");
        assert_eq!(id, stream_id("bob", "alice"));
        assert!(is_well_formed(&id));
    }

    #[test]
    fn byte_wise_order_not_locale_order() {
        // 'B' (0x42) sorts before 'a' (0x61) byte-wise.
        let mut hasher = Sha256::new();
        hasher.update(b"Ba");
        let expected: String = hasher.finalize()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(stream_id("a", "B"), expected);
    }
}
