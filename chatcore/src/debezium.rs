//! Debezium MongoDB change events: decoding Kafka records into change parts, and encoding them
//! back (for the relay that publishes a change stream in Debezium's shape). Pure: no Kafka here.
//!
//! Accepted record values:
//! - the connector's envelope `{"op": "c"|"u"|"d"|"r", "after": "<extended JSON>", "before": ...,
//!   "source": {...}, "ts_ms": ...}`, bare or wrapped in `{"schema": ..., "payload": {...}}`, with
//!   `after` as a string of canonical or relaxed MongoDB extended JSON (or already an object);
//! - the flattened document of the `ExtractNewDocumentState` transform, bare or wrapped, with the
//!   `__op`, `__collection` and `__deleted` fields its `add.fields` and delete handling add. Its
//!   dates are epoch milliseconds: with a schema, the fields the schema names a Connect
//!   `Timestamp`; without one, the integers in the date fields of chatcore's documents
//!   ([`DATE_FIELDS`]). A record without `__op` is taken as a create (and the first one logs a
//!   WARN saying to set `add.fields=op`: without it an edit or a re-snapshot reads as a new
//!   message). A deleted record (`__deleted: true`) is a delete, whatever it still carries;
//! - a null value (a tombstone after a delete), which is skipped.
//!
//! Accepted keys: Debezium's `{"id": "<extended JSON of _id>"}`, bare or wrapped in
//! `{"schema", "payload"}`, a JSON string, or plain bytes.
//!
//! Extended JSON is normalized to plain JSON: `{"$oid": h}` → `h`, every `$date` form → an
//! RFC 3339 string, `$numberLong`/`$numberInt`/`$numberDouble` → numbers, and `_id` is exposed as
//! `message_id` when the document has none, so a stored chat document decodes to a
//! [`crate::model::ChatMessage`].

use std::sync::Once;

use chrono::{DateTime, TimeZone, Utc};
use serde_json::{json, Map, Value};

use crate::change::Op;

/// The fields of chatcore's documents that hold a date (the chat message's and the commerce
/// payloads' in [`crate::model`]). In a flattened record without a schema an integer in one of them is
/// epoch milliseconds, what `ExtractNewDocumentState` writes for a BSON date.
pub const DATE_FIELDS: [&str; 5] = [
    "created_at",
    "purchased_at",
    "due_date",
    "estimated_delivery",
    "updated_at",
];

/// The schema name Kafka Connect gives a timestamp (an `int64` of epoch milliseconds).
const CONNECT_TIMESTAMP: &str = "org.apache.kafka.connect.data.Timestamp";

/// Logs the missing-`__op` warning once per process.
static MISSING_OP: Once = Once::new();

/// Why a record could not be decoded; the consumer drops it as `invalid_format`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("undecodable change record: {0}")]
pub struct DecodeError(pub String);

fn fail(reason: impl Into<String>) -> DecodeError {
    DecodeError(reason.into())
}

/// A decoded record value.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum RecordValue {
    /// A null value: the tombstone Kafka log compaction uses after a delete. Skipped.
    Tombstone,
    /// A change to one document.
    Change {
        /// The operation.
        op: Op,
        /// The collection, when the record says (`source.collection` or `__collection`).
        collection: Option<String>,
        /// The document after the change as plain JSON; `None` for deletes.
        document: Option<Value>,
    },
}

/// Decodes a record key: Debezium's `{"id": ...}` (wrapped or not), a JSON string, or plain text.
///
/// ```
/// use chatcore::debezium::decode_key;
/// assert_eq!(decode_key(br#"{"id": "{\"$oid\": \"64b7f0c2a1b2c3d4e5f60718\"}"}"#).unwrap(),
///            "64b7f0c2a1b2c3d4e5f60718");
/// assert_eq!(decode_key(b"7b28e95659ec2171").unwrap(), "7b28e95659ec2171");
/// ```
pub fn decode_key(key: &[u8]) -> Result<String, DecodeError> {
    let text = std::str::from_utf8(key).map_err(|_| fail("key is not UTF-8"))?;
    let Ok(value) = serde_json::from_str::<Value>(text) else {
        return Ok(text.to_owned());
    };
    let value = unwrap_payload(value);
    match value {
        Value::String(s) => Ok(key_from_string(&s)),
        Value::Object(mut fields) => match fields.remove("id").or_else(|| fields.remove("_id")) {
            Some(Value::String(id)) => Ok(key_from_string(&id)),
            Some(other) => Ok(plain_scalar(normalize(other))),
            None => Err(fail("key object has no id")),
        },
        Value::Number(n) => Ok(n.to_string()),
        _ => Err(fail("key is neither a string nor an object with an id")),
    }
}

/// Debezium keys carry the `_id` as an extended-JSON string, e.g. `{"$oid": "..."}` or `"abc"`.
fn key_from_string(id: &str) -> String {
    match serde_json::from_str::<Value>(id) {
        Ok(value @ (Value::Object(_) | Value::String(_) | Value::Number(_))) => {
            plain_scalar(normalize(value))
        }
        _ => id.to_owned(),
    }
}

fn plain_scalar(value: Value) -> String {
    match value {
        Value::String(s) => s,
        other => other.to_string(),
    }
}

/// Decodes a record value; `None` (no value at all) is a tombstone.
pub fn decode_value(value: Option<&[u8]>) -> Result<RecordValue, DecodeError> {
    let Some(bytes) = value.filter(|b| !b.is_empty()) else {
        return Ok(RecordValue::Tombstone);
    };
    let parsed: Value = serde_json::from_slice(bytes).map_err(|e| fail(format!("value: {e}")))?;
    let timestamps = schema_timestamps(&parsed);
    let parsed = unwrap_payload(parsed);
    let Value::Object(fields) = parsed else {
        return match parsed {
            Value::Null => Ok(RecordValue::Tombstone),
            _ => Err(fail("value is not an object")),
        };
    };
    if fields.contains_key("op") && (fields.contains_key("after") || fields.contains_key("source"))
    {
        decode_envelope(fields)
    } else {
        decode_flattened(fields, timestamps.as_deref())
    }
}

/// The paths (`a.b` for nested structs) of the fields a Connect schema wrapper names a
/// `Timestamp`; `None` when the value carries no struct schema.
fn schema_timestamps(value: &Value) -> Option<Vec<String>> {
    let schema = value.get("schema")?;
    value.get("payload")?;
    (schema.get("type")? == "struct").then(|| {
        let mut paths = Vec::new();
        struct_timestamps(schema, "", &mut paths);
        paths
    })
}

fn struct_timestamps(schema: &Value, prefix: &str, paths: &mut Vec<String>) {
    let Some(fields) = schema.get("fields").and_then(Value::as_array) else {
        return;
    };
    for field in fields {
        let Some(name) = field.get("field").and_then(Value::as_str) else {
            continue;
        };
        let path = format!("{prefix}{name}");
        if field.get("name").and_then(Value::as_str) == Some(CONNECT_TIMESTAMP) {
            paths.push(path);
        } else if field.get("type").and_then(Value::as_str) == Some("struct") {
            struct_timestamps(field, &format!("{path}."), paths);
        }
    }
}

/// Turns the epoch-millisecond dates of a flattened document into RFC 3339 strings: the fields
/// its schema names `Timestamp`s, or without a schema the integers in [`DATE_FIELDS`].
fn flattened_dates(fields: &mut Map<String, Value>, timestamps: Option<&[String]>) {
    match timestamps {
        Some(paths) => {
            for path in paths {
                let mut names = path.split('.');
                let first = names.next().unwrap_or_default();
                let mut slot = fields.get_mut(first);
                for name in names {
                    slot = slot.and_then(|v| v.get_mut(name));
                }
                if let Some(value) = slot {
                    millis_to_rfc3339(value);
                }
            }
        }
        None => {
            for name in DATE_FIELDS {
                if let Some(value) = fields.get_mut(name) {
                    millis_to_rfc3339(value);
                }
            }
        }
    }
}

fn millis_to_rfc3339(value: &mut Value) {
    if let Some(at) = value
        .as_i64()
        .and_then(|ms| Utc.timestamp_millis_opt(ms).single())
    {
        *value = Value::String(crate::model::rfc3339::format(&at));
    }
}

/// Removes Kafka Connect's `{"schema": ..., "payload": ...}` wrapper if present.
fn unwrap_payload(value: Value) -> Value {
    match value {
        Value::Object(mut fields) if fields.contains_key("payload") && fields.len() <= 2 => {
            if fields.len() == 1 || fields.contains_key("schema") {
                fields.remove("payload").unwrap_or(Value::Null)
            } else {
                Value::Object(fields)
            }
        }
        other => other,
    }
}

fn parse_op(code: &str) -> Result<Op, DecodeError> {
    match code {
        "c" => Ok(Op::Create),
        "u" => Ok(Op::Update),
        "d" => Ok(Op::Delete),
        "r" => Ok(Op::Read),
        other => Err(fail(format!("unknown op {other:?}"))),
    }
}

fn decode_envelope(mut fields: Map<String, Value>) -> Result<RecordValue, DecodeError> {
    let op = match fields.get("op") {
        Some(Value::String(code)) => parse_op(code)?,
        _ => return Err(fail("op is not a string")),
    };
    let collection = fields
        .get("source")
        .and_then(|s| s.get("collection"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let document = match fields.remove("after") {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => {
            let parsed: Value = serde_json::from_str(&text)
                .map_err(|e| fail(format!("after is not extended JSON: {e}")))?;
            Some(document(parsed)?)
        }
        Some(object @ Value::Object(_)) => Some(document(object)?),
        Some(_) => return Err(fail("after is neither a string nor an object")),
    };
    if document.is_none() && matches!(op, Op::Create | Op::Read) {
        return Err(fail("a create or read without an after document"));
    }
    Ok(RecordValue::Change {
        op,
        collection,
        document,
    })
}

fn decode_flattened(
    mut fields: Map<String, Value>,
    timestamps: Option<&[String]>,
) -> Result<RecordValue, DecodeError> {
    // A boolean from the transform of today, the string "true" from older ones.
    let deleted = match fields.remove("__deleted") {
        Some(Value::Bool(deleted)) => deleted,
        Some(Value::String(text)) => text == "true",
        _ => false,
    };
    let op = match fields.remove("__op") {
        Some(Value::String(code)) => parse_op(&code)?,
        Some(_) => return Err(fail("__op is not a string")),
        None if deleted => Op::Delete,
        None => {
            MISSING_OP.call_once(|| {
                tracing::warn!(
                    "a flattened Debezium record has no __op: taken as a create, so an edit or a \
                     re-snapshot is delivered again once its deduplication has expired; set \
                     ExtractNewDocumentState's add.fields=op (deploy/debezium/chat.json does)"
                );
            });
            Op::Create
        }
    };
    let op = if deleted { Op::Delete } else { op };
    let collection = match fields.remove("__collection") {
        Some(Value::String(c)) => Some(c),
        _ => None,
    };
    fields.retain(|name, _| !name.starts_with("__"));
    if op == Op::Delete {
        return Ok(RecordValue::Change {
            op,
            collection,
            document: None,
        });
    }
    if fields.is_empty() {
        return Err(fail("empty document"));
    }
    flattened_dates(&mut fields, timestamps);
    Ok(RecordValue::Change {
        op,
        collection,
        document: Some(document(Value::Object(fields))?),
    })
}

/// Normalizes an extended-JSON document to plain JSON and exposes `_id` as `message_id` when it
/// has none: what every change source hands the pipeline, whether the document came from a
/// Debezium record or straight from a MongoDB change stream.
pub fn document(value: Value) -> Result<Value, DecodeError> {
    let Value::Object(mut fields) = normalize(value) else {
        return Err(fail("document is not an object"));
    };
    if !fields.contains_key("message_id") {
        if let Some(id) = fields.get("_id").cloned() {
            fields.insert("message_id".to_owned(), Value::String(plain_scalar(id)));
        }
    }
    fields.remove("_id");
    Ok(Value::Object(fields))
}

/// Turns MongoDB extended JSON (canonical or relaxed) into plain JSON.
///
/// ```
/// use chatcore::debezium::normalize;
/// use serde_json::json;
/// let doc = json!({"_id": {"$oid": "64b7f0c2a1b2c3d4e5f60718"},
///                  "at": {"$date": {"$numberLong": "1700000000000"}},
///                  "n": {"$numberLong": "42"}});
/// assert_eq!(normalize(doc), json!({"_id": "64b7f0c2a1b2c3d4e5f60718",
///                                   "at": "2023-11-14T22:13:20.000Z", "n": 42}));
/// ```
pub fn normalize(value: Value) -> Value {
    match value {
        Value::Object(fields) => normalize_object(fields),
        Value::Array(items) => Value::Array(items.into_iter().map(normalize).collect()),
        other => other,
    }
}

fn normalize_object(mut fields: Map<String, Value>) -> Value {
    if fields.len() == 1 {
        if let Some((name, inner)) = fields.iter().next() {
            if let Some(plain) = extended_scalar(name, inner) {
                return plain;
            }
        }
    }
    for (_, field) in fields.iter_mut() {
        *field = normalize(std::mem::take(field));
    }
    Value::Object(fields)
}

fn extended_scalar(name: &str, inner: &Value) -> Option<Value> {
    match (name, inner) {
        ("$oid", Value::String(hex)) => Some(Value::String(hex.clone())),
        ("$date", date) => {
            date_value(date).map(|d| Value::String(crate::model::rfc3339::format(&d)))
        }
        ("$numberLong" | "$numberInt", Value::String(n)) => n.parse::<i64>().ok().map(Value::from),
        ("$numberDouble", Value::String(n)) => n.parse::<f64>().ok().map(Value::from),
        ("$numberDecimal", Value::String(n)) => Some(Value::String(n.clone())),
        ("$symbol", Value::String(s)) => Some(Value::String(s.clone())),
        _ => None,
    }
}

fn date_value(date: &Value) -> Option<DateTime<Utc>> {
    match date {
        Value::String(text) => DateTime::parse_from_rfc3339(text)
            .ok()
            .map(|d| d.with_timezone(&Utc)),
        Value::Number(n) => n
            .as_i64()
            .and_then(|ms| Utc.timestamp_millis_opt(ms).single()),
        Value::Object(fields) => match fields.get("$numberLong") {
            Some(Value::String(ms)) => ms
                .parse::<i64>()
                .ok()
                .and_then(|ms| Utc.timestamp_millis_opt(ms).single()),
            _ => None,
        },
        _ => None,
    }
}

/// Encodes a change as the record value the Debezium MongoDB connector produces with the JSON
/// converter and schemas disabled: the envelope, with `after` a relaxed extended-JSON string in
/// which `message_id` is the `_id` ObjectId and `created_at` a `$date`. (What this project
/// publishes is keyed by `stream_id`, so the relay sets the key itself.)
pub fn encode_change(
    op: Op,
    database: &str,
    collection: &str,
    document: Option<&Value>,
    ts_ms: i64,
) -> Value {
    let code = match op {
        Op::Create => "c",
        Op::Update => "u",
        Op::Delete => "d",
        Op::Read => "r",
    };
    let after = document.map(|doc| Value::String(to_extended(doc).to_string()));
    json!({
        "op": code,
        "after": after,
        "before": null,
        "source": {
            "connector": "mongodb",
            "name": "chatcore",
            "db": database,
            "collection": collection,
            "ts_ms": ts_ms,
            "snapshot": "false",
        },
        "ts_ms": ts_ms,
    })
}

/// The relaxed extended JSON of a stored chat document: `message_id` becomes the `_id` ObjectId,
/// `created_at` a `$date`.
fn to_extended(document: &Value) -> Value {
    let Value::Object(fields) = document else {
        return document.clone();
    };
    let mut out = Map::new();
    for (name, value) in fields {
        match (name.as_str(), value) {
            ("message_id", Value::String(id)) => {
                out.insert("_id".to_owned(), json!({ "$oid": id }));
            }
            ("created_at", Value::String(at)) => {
                out.insert(name.clone(), json!({ "$date": at }));
            }
            _ => {
                out.insert(name.clone(), value.clone());
            }
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ChatMessage;

    const OID: &str = "64b7f0c2a1b2c3d4e5f60718";

    fn chat_after(created_at: &str) -> String {
        format!(
            r#"{{"_id": {{"$oid": "{OID}"}}, "content": "hi", "created_at": {created_at}, "stream_id": "a83ab2505ace9a87", "sender_id": "alice", "receiver_id": "bob"}}"#
        )
    }

    fn expect_message(record: RecordValue) -> ChatMessage {
        match record {
            RecordValue::Change {
                document: Some(doc),
                ..
            } => serde_json::from_value(doc).expect("a chat message"),
            other => panic!("expected a document, got {other:?}"),
        }
    }

    fn envelope(op: &str, after: Option<&str>) -> Value {
        json!({
            "op": op,
            "after": after,
            "before": null,
            "patch": null,
            "source": {"version": "2.7.0.Final", "connector": "mongodb", "name": "fulfillment",
                       "ts_ms": 1_700_000_000_000_i64, "snapshot": "false", "db": "chat_db",
                       "rs": "rs0", "collection": "chat", "ord": 1},
            "ts_ms": 1_700_000_000_123_i64
        })
    }

    #[test]
    fn a_plain_envelope_with_canonical_extended_json_decodes_to_the_message() {
        let after = chat_after(r#"{"$date": {"$numberLong": "1700000000000"}}"#);
        let value = envelope("c", Some(&after)).to_string();
        let record = decode_value(Some(value.as_bytes())).expect("decodes");
        let RecordValue::Change { op, collection, .. } = &record else {
            panic!("a change");
        };
        assert_eq!((*op, collection.as_deref()), (Op::Create, Some("chat")));
        let message = expect_message(record);
        assert_eq!(message.message_id, OID);
        assert_eq!(message.content, "hi");
        assert_eq!(message.created_at.timestamp_millis(), 1_700_000_000_000);
    }

    #[test]
    fn relaxed_date_forms_and_the_schema_wrapper_decode_alike() {
        for created_at in [
            r#"{"$date": "2023-11-14T22:13:20Z"}"#,
            r#"{"$date": 1700000000000}"#,
            r#""2023-11-14T22:13:20.000Z""#,
        ] {
            let after = chat_after(created_at);
            let wrapped = json!({"schema": {"type": "struct", "optional": false}, "payload": envelope("c", Some(&after))});
            let message = expect_message(
                decode_value(Some(wrapped.to_string().as_bytes())).expect("decodes"),
            );
            assert_eq!(
                message.created_at.timestamp_millis(),
                1_700_000_000_000,
                "{created_at}"
            );
        }
    }

    #[test]
    fn every_op_code_is_understood_and_deletes_have_no_document() {
        let after = chat_after(r#"{"$date": 1700000000000}"#);
        for (code, op) in [("c", Op::Create), ("u", Op::Update), ("r", Op::Read)] {
            let value = envelope(code, Some(&after)).to_string();
            assert!(
                matches!(decode_value(Some(value.as_bytes())), Ok(RecordValue::Change { op: o, .. }) if o == op)
            );
        }
        let delete = envelope("d", None).to_string();
        assert_eq!(
            decode_value(Some(delete.as_bytes())),
            Ok(RecordValue::Change {
                op: Op::Delete,
                collection: Some("chat".into()),
                document: None
            })
        );
        let bogus = envelope("x", Some(&after)).to_string();
        assert!(decode_value(Some(bogus.as_bytes())).is_err());
    }

    #[test]
    fn the_flattened_extract_new_document_state_form_decodes() {
        let flat = json!({
            "_id": OID, "content": "hi", "created_at": 1_700_000_000_000_i64,
            "stream_id": "a83ab2505ace9a87", "sender_id": "alice", "receiver_id": "bob",
            "__op": "c", "__collection": "chat"
        });
        let record = decode_value(Some(flat.to_string().as_bytes())).expect("decodes");
        let RecordValue::Change {
            document: Some(doc),
            collection,
            op,
        } = record
        else {
            panic!("a change");
        };
        assert_eq!((op, collection.as_deref()), (Op::Create, Some("chat")));
        assert_eq!(doc["message_id"], OID);
        assert!(doc.get("__op").is_none());
        let message: ChatMessage = serde_json::from_value(doc).expect("a chat message");
        assert_eq!(message.created_at.timestamp_millis(), 1_700_000_000_000);
        for deleted in [
            json!({"__deleted": true}),
            json!({"__deleted": true, "__op": "d"}),
        ] {
            assert!(matches!(
                decode_value(Some(deleted.to_string().as_bytes())),
                Ok(RecordValue::Change {
                    op: Op::Delete,
                    document: None,
                    ..
                })
            ));
        }
        let deleted = json!({"_id": OID, "__deleted": "true"});
        assert!(matches!(
            decode_value(Some(deleted.to_string().as_bytes())),
            Ok(RecordValue::Change {
                op: Op::Delete,
                document: None,
                ..
            })
        ));
    }

    #[test]
    fn a_schema_names_the_timestamps_even_nested_and_outside_the_known_fields() {
        let ms = 1_700_000_000_000_i64;
        let ts = |field: &str| json!({"type": "int64", "optional": true, "name": CONNECT_TIMESTAMP, "version": 1, "field": field});
        let record = json!({
            "schema": {"type": "struct", "optional": false, "fields": [
                {"type": "string", "optional": true, "field": "_id"},
                ts("seen_at"),
                {"type": "int64", "optional": true, "field": "created_at"},
                {"type": "struct", "optional": true, "field": "meta", "fields": [ts("at")]}
            ]},
            "payload": {"_id": OID, "seen_at": ms, "created_at": 7, "meta": {"at": ms}, "__op": "c"}
        });
        let RecordValue::Change {
            document: Some(doc),
            ..
        } = decode_value(Some(record.to_string().as_bytes())).expect("decodes")
        else {
            panic!("a document");
        };
        assert_eq!(doc["seen_at"], "2023-11-14T22:13:20.000Z");
        assert_eq!(doc["meta"]["at"], "2023-11-14T22:13:20.000Z");
        assert_eq!(doc["created_at"], 7, "the schema says it is a plain number");
    }

    #[test]
    fn tombstones_are_skipped_and_garbage_is_an_error_not_a_panic() {
        assert_eq!(decode_value(None), Ok(RecordValue::Tombstone));
        assert_eq!(decode_value(Some(b"")), Ok(RecordValue::Tombstone));
        assert_eq!(decode_value(Some(b"null")), Ok(RecordValue::Tombstone));
        for garbage in [
            &b"{not json"[..],
            b"[1,2]",
            b"42",
            br#"{"op": "c", "after": "{broken"}"#,
            br#"{"op": "c", "after": 5, "source": {}}"#,
            br#"{"op": "c", "after": null, "source": {}}"#,
            br#"{"op": 1, "after": "{}"}"#,
            b"\xff\xfe",
            br#"{}"#,
        ] {
            assert!(decode_value(Some(garbage)).is_err(), "{garbage:?}");
        }
    }

    #[test]
    fn keys_in_every_shape() {
        let oid_key = format!(r#"{{"id": "{{\"$oid\": \"{OID}\"}}"}}"#);
        assert_eq!(decode_key(oid_key.as_bytes()).as_deref(), Ok(OID));
        let wrapped = json!({"schema": {"type": "struct"}, "payload": {"id": format!("{{\"$oid\": \"{OID}\"}}")}});
        assert_eq!(
            decode_key(wrapped.to_string().as_bytes()).as_deref(),
            Ok(OID)
        );
        let string_id = json!({"id": "\"custom-id\""}).to_string();
        assert_eq!(decode_key(string_id.as_bytes()).as_deref(), Ok("custom-id"));
        let number_id = json!({"id": "{\"$numberLong\": \"7\"}"}).to_string();
        assert_eq!(decode_key(number_id.as_bytes()).as_deref(), Ok("7"));
        assert_eq!(
            decode_key(b"\"a83ab2505ace9a87\"").as_deref(),
            Ok("a83ab2505ace9a87")
        );
        assert_eq!(
            decode_key(b"a83ab2505ace9a87").as_deref(),
            Ok("a83ab2505ace9a87")
        );
        assert!(decode_key(b"{\"no\": 1}").is_err());
        assert!(decode_key(b"\xff").is_err());
    }

    #[test]
    fn what_the_relay_encodes_decodes_back_to_the_same_message() {
        let message = ChatMessage {
            message_id: OID.into(),
            content: "héllo 👋".into(),
            created_at: "2026-11-26T20:57:45.524Z".parse().expect("time"),
            stream_id: "a83ab2505ace9a87".into(),
            sender_id: "alice".into(),
            receiver_id: Some("bob".into()),
        };
        let document = serde_json::to_value(&message).expect("json");
        let value = encode_change(Op::Create, "chat_db", "chat", Some(&document), 1);
        let record = decode_value(Some(value.to_string().as_bytes())).expect("decodes");
        assert_eq!(expect_message(record), message);
    }
}
