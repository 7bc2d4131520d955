//! Fuzzes the Debezium record decoder (`chatcore::debezium`) with whole Kafka records.
//!
//! Input layout: `KEY \0 VALUE`, split at the first NUL byte (JSON never contains a raw NUL).
//! Without a NUL the whole input is the value and the record has no key. An empty value is also
//! decoded as an absent value (`None`), which must be a tombstone.
//!
//! Properties checked, beyond "never panics":
//! - an absent or empty value is a `Tombstone`;
//! - every `Change` with a document whose document deserializes to a `ChatMessage` that passes
//!   `check` survives the relay's `encode_change` → JSON text → `decode_value` round trip: same
//!   op, same collection, and a document that deserializes to the same `ChatMessage`. The
//!   message compared is the one in its wire form (`ChatMessage` serializes `created_at` with
//!   millisecond precision, see `chatcore::model::rfc3339`), both when the relay encodes the
//!   message itself and when it passes the whole decoded document on (extra fields included).
//! - set `CHATCORE_FUZZ_STRICT_TIME=1` to also require the decoded message to be in wire form
//!   already, i.e. no sub-millisecond `created_at` survives decoding.
#![no_main]

use std::sync::OnceLock;

use chatcore::debezium::{decode_key, decode_value, encode_change, RecordValue};
use chatcore::model::{ChatMessage, DEFAULT_MAX_CONTENT_BYTES};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fn strict_time() -> bool {
    static STRICT: OnceLock<bool> = OnceLock::new();
    *STRICT.get_or_init(|| std::env::var_os("CHATCORE_FUZZ_STRICT_TIME").is_some_and(|v| v == "1"))
}

/// The message as it travels on the wire: serialized and read back with chatcore's own serde.
fn wire_form(message: &ChatMessage) -> ChatMessage {
    let json = serde_json::to_value(message).expect("a ChatMessage always serializes");
    serde_json::from_value(json).expect("a serialized ChatMessage always deserializes")
}

/// Encodes `document` as the relay does, decodes it back, and returns the decoded message.
fn round_trip(
    op: chatcore::change::Op,
    collection: &str,
    document: &Value,
    what: &str,
) -> ChatMessage {
    let encoded = encode_change(op, "chat_db", collection, Some(document), 1_700_000_000_000);
    let text = encoded.to_string();
    let decoded = decode_value(Some(text.as_bytes()))
        .unwrap_or_else(|e| panic!("{what}: the relay's own record does not decode: {e}\n{text}"));
    let RecordValue::Change {
        op: op_back,
        collection: collection_back,
        document: Some(doc_back),
    } = decoded
    else {
        panic!("{what}: the relay's own record decodes to {decoded:?}\n{text}");
    };
    assert_eq!(op_back, op, "{what}: op changed\n{text}");
    assert_eq!(
        collection_back.as_deref(),
        Some(collection),
        "{what}: collection changed\n{text}"
    );
    serde_json::from_value::<ChatMessage>(doc_back.clone()).unwrap_or_else(|e| {
        panic!("{what}: the re-decoded document is no longer a ChatMessage: {e}\n{doc_back}")
    })
}

fuzz_target!(|data: &[u8]| {
    let (key, value) = match data.iter().position(|&b| b == 0) {
        Some(at) => (Some(&data[..at]), &data[at + 1..]),
        None => (None, data),
    };

    if let Some(key) = key {
        if let Ok(id) = decode_key(key) {
            // A key that decodes is an id: decoding its own plain text again is stable for the
            // forms that are not JSON themselves.
            if serde_json::from_str::<Value>(&id).is_err() {
                assert_eq!(decode_key(id.as_bytes()).as_deref(), Ok(id.as_str()));
            }
        }
    }

    if value.is_empty() {
        assert_eq!(decode_value(None), Ok(RecordValue::Tombstone));
    }
    let Ok(record) = decode_value(Some(value)) else {
        return;
    };
    let RecordValue::Change {
        op,
        collection,
        document,
    } = record
    else {
        return;
    };
    let Some(document) = document else {
        return;
    };
    assert!(document.is_object(), "a decoded document is an object");
    assert!(
        document.get("_id").is_none(),
        "_id is exposed as message_id"
    );

    let Ok(message) = serde_json::from_value::<ChatMessage>(document.clone()) else {
        return;
    };
    if message.check(DEFAULT_MAX_CONTENT_BYTES).is_err() {
        return;
    }
    let wire = wire_form(&message);
    if strict_time() {
        assert_eq!(
            wire, message,
            "the decoded message is not in wire form (sub-millisecond created_at?)"
        );
    }
    let collection = collection.unwrap_or_else(|| "chat".to_owned());

    // 1. The relay encodes the stored message itself.
    let wire_json = serde_json::to_value(&wire).expect("serializes");
    let back = round_trip(op, &collection, &wire_json, "message");
    assert_eq!(back, wire, "message round trip changed the message");

    // 2. The relay passes the decoded document on as it is, extra fields and all.
    let back = round_trip(op, &collection, &document, "document");
    assert_eq!(
        wire_form(&back),
        wire,
        "document round trip changed the message"
    );
});
