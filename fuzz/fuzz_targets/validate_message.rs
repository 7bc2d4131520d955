//! Fuzzes request validation: the input is the JSON body of a posted message, read into a
//! `NewChatMessage` and validated with a small content limit.
//!
//! Properties checked, beyond "never panics":
//! - on `Ok`, the resolved `stream_id` is `stream_id(sender, receiver)`, and equals the supplied
//!   one if there was one; `content` is non-empty and at most the limit, in bytes; the parts are
//!   the ones posted;
//! - validation does not depend on the order of the participants (the stream id is symmetric);
//! - a message valid under the small limit is valid, identically, under the default limit;
//! - what the store makes of a valid message passes `ChatMessage::check`, and its wire form is
//!   the same message.
#![no_main]

use chatcore::model::{ChatMessage, NewChatMessage, DEFAULT_MAX_CONTENT_BYTES};
use chatcore::stream_id::{is_well_formed, stream_id};
use libfuzzer_sys::fuzz_target;

/// The small content limit, in bytes, so that the fuzzer reaches both sides of it easily.
const MAX: usize = 16;

fuzz_target!(|data: &[u8]| {
    let Ok(new) = serde_json::from_slice::<NewChatMessage>(data) else {
        return;
    };
    // A message without receiver_id is a group message: refused by `validate`.
    let Some(receiver) = new.receiver_id.clone() else {
        assert!(new.validate(MAX).is_err(), "a message without receiver_id validated");
        return;
    };

    let swapped = NewChatMessage {
        sender_id: receiver.clone(),
        receiver_id: Some(new.sender_id.clone()),
        ..new.clone()
    };
    let result = new.clone().validate(MAX);
    assert_eq!(
        result.is_ok(),
        swapped.validate(MAX).is_ok(),
        "validation depends on the order of the participants"
    );

    let Ok(valid) = result else {
        return;
    };
    let expected = stream_id(&new.sender_id, &receiver);
    assert_eq!(valid.stream_id(), expected);
    assert!(is_well_formed(valid.stream_id()));
    if let Some(given) = &new.stream_id {
        assert_eq!(given, &expected);
    }
    assert!(!valid.content().is_empty());
    assert!(valid.content().len() <= MAX, "content over the limit");
    assert_eq!(valid.content(), new.content);
    assert_eq!(valid.sender_id(), new.sender_id);
    assert_eq!(valid.receiver_id(), Some(receiver.as_str()));

    assert_eq!(
        new.clone().validate(DEFAULT_MAX_CONTENT_BYTES).as_ref(),
        Ok(&valid),
        "a larger limit changed the outcome"
    );

    let created_at = "2026-11-26T20:57:45.524123Z".parse().expect("a time");
    let stored = valid.into_stored("64b7f0c2a1b2c3d4e5f60718".to_owned(), created_at);
    assert_eq!(stored.check(MAX), Ok(()));
    let json = serde_json::to_value(&stored).expect("serializes");
    let back: ChatMessage = serde_json::from_value(json).expect("deserializes");
    assert_eq!(back, stored, "a stored message is not in wire form");
});
