//! Every record the real Debezium MongoDB connector wrote in `tests/data/debezium/` (see its
//! README: connector 3.6.1 on Kafka Connect 4.3.1, the shipped `deploy/debezium` configurations and
//! their variants), decoded by `chatcore::debezium` and planned by the chat and commerce handlers
//! all the way to the `ChatMessage` delivered to the chat tier and the notification payloads.

use std::path::PathBuf;

use chatcore::change::{ChangeEvent, Op, SourcePosition};
use chatcore::commerce::NotificationHandler;
use chatcore::debezium::{decode_key, decode_value, RecordValue};
use chatcore::forward::Delivery;
use chatcore::metrics::DropReason;
use chatcore::model::{ChatMessage, NotificationType};
use chatcore::pipeline::{ChatHandler, EventHandler, Plan};
use serde_json::{json, Value};

/// One record of a fixture: its decoded key and the event a Kafka source makes of it.
struct Record {
    key: String,
    event: ChangeEvent,
}

/// The records of `tests/data/debezium/<name>.records`, whose topic holds the collection the
/// name starts with.
fn fixture(name: &str) -> Vec<Record> {
    let topic_collection = name.split('-').next().unwrap_or_default();
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/debezium")
        .join(format!("{name}.records"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    bytes
        .split(|b| *b == b'\n')
        .filter(|line| !line.is_empty())
        .enumerate()
        .map(|(offset, line)| {
            let tab = line
                .iter()
                .position(|b| *b == b'\t')
                .expect("key<TAB>value");
            let (key, value) = (&line[..tab], &line[tab + 1..]);
            let key = decode_key(key).unwrap_or_else(|e| panic!("{name} key {offset}: {e}"));
            let value = (value != b"null").then_some(value);
            let decoded =
                decode_value(value).unwrap_or_else(|e| panic!("{name} value {offset}: {e}"));
            let (op, collection, document) = match decoded {
                RecordValue::Tombstone => (Op::Delete, None, None),
                RecordValue::Change {
                    op,
                    collection,
                    document,
                } => (op, collection, document),
                other => panic!("{name} value {offset}: unexpected {other:?}"),
            };
            let event = ChangeEvent {
                op,
                // A tombstone names none: the Kafka source takes its topic's collection.
                collection: collection.unwrap_or_else(|| topic_collection.to_owned()),
                key: key.clone(),
                document,
                position: SourcePosition {
                    partition: 0,
                    offset: i64::try_from(offset).expect("offset"),
                    token: None,
                },
                malformed: None,
            };
            Record { key, event }
        })
        .collect()
}

const OIDS: [&str; 3] = [
    "6b0f438e66d0efe952bb0001",
    "6b0f438e66d0efe952bb0002",
    "6b0f438e66d0efe952bb0003",
];

/// The three messages the capture wrote, as the chat tier must receive them.
fn messages() -> Vec<ChatMessage> {
    let message = |n: usize, (sender, receiver): (&str, &str), content: &str| ChatMessage {
        message_id: OIDS[n].into(),
        content: content.into(),
        created_at: format!("2026-12-01T10:00:0{n}.123Z").parse().expect("time"),
        stream_id: chatcore::stream_id::stream_id(sender, receiver),
        sender_id: sender.into(),
        receiver_id: Some(receiver.into()),
    };
    vec![
        message(0, ("alice", "bob"), "real debezium message 1"),
        message(1, ("user123", "user456"), "hello from another conversation"),
        message(2, ("alice", "bob"), "real debezium message 2 é👋"),
    ]
}

fn edited() -> ChatMessage {
    ChatMessage {
        content: "real debezium message 1, edited".into(),
        ..messages().remove(0)
    }
}

fn plan_chat(event: &ChangeEvent) -> Result<Plan, DropReason> {
    ChatHandler::default().plan(event)
}

/// What the chat tier gets, and that the receiver is notified of the same message.
fn delivered_message(event: &ChangeEvent) -> ChatMessage {
    let plan = plan_chat(event).unwrap_or_else(|r| panic!("{:?} dropped as {r:?}", event.document));
    let mut chat = None;
    let mut notified = None;
    for delivery in plan.deliveries {
        match delivery {
            Delivery::Chat(message) => chat = Some(message),
            Delivery::Notify {
                user_id,
                notification,
            } => notified = Some((user_id, notification)),
            other => panic!("unexpected delivery {other:?}"),
        }
    }
    let message = chat.expect("a chat delivery");
    let (user, notification) = notified.expect("a notification");
    assert_eq!(Some(user), message.receiver_id);
    assert_eq!(
        notification.notification_type,
        NotificationType::ChatNotification
    );
    assert_eq!(plan.lane_key, message.stream_id);
    message
}

fn ops(records: &[Record]) -> Vec<Op> {
    records.iter().map(|r| r.event.op).collect()
}

/// The envelope: three creates, the edit, the delete, keyed by Debezium's `{"id": ...}`.
fn check_envelope(name: &str, update_has_document: bool) {
    let records = fixture(name);
    assert_eq!(
        ops(&records),
        [Op::Create, Op::Create, Op::Create, Op::Update, Op::Delete],
        "{name}"
    );
    let keys: Vec<&str> = records.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(
        keys,
        [OIDS[0], OIDS[1], OIDS[2], OIDS[0], OIDS[1]],
        "{name}"
    );
    for (record, expected) in records.iter().zip(messages()) {
        assert_eq!(delivered_message(&record.event), expected, "{name}");
    }
    let update = &records[3].event;
    if update_has_document {
        let document = update.document.clone().expect("the full document");
        assert_eq!(
            serde_json::from_value::<ChatMessage>(document).expect("message"),
            edited()
        );
    } else {
        assert_eq!(
            update.document, None,
            "{name}: change_streams sends no after"
        );
    }
    assert_eq!(records[4].event.document, None);
    for record in &records[3..] {
        assert_eq!(
            plan_chat(&record.event).err(),
            Some(DropReason::IgnoredOp),
            "{name}: an edit or a delete is no new message"
        );
    }
}

#[test]
fn the_envelope_without_schema_delivers_each_message_once() {
    check_envelope("chat-envelope", true);
}

#[test]
fn the_envelope_with_schema_delivers_each_message_once() {
    check_envelope("chat-envelope-schema", true);
}

#[test]
fn the_envelope_of_change_streams_capture_has_updates_without_a_document() {
    check_envelope("chat-envelope-change-streams", false);
}

/// The shipped configuration: flattened, `__op` and `__collection`, keyed by `stream_id`.
fn check_shipped(name: &str) {
    let records = fixture(name);
    assert_eq!(
        ops(&records),
        [Op::Create, Op::Create, Op::Create, Op::Update],
        "{name}: the delete is dropped by the transform"
    );
    let keys: Vec<&str> = records.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "a83ab2505ace9a87",
            "7b28e95659ec2171",
            "a83ab2505ace9a87",
            "a83ab2505ace9a87"
        ],
        "{name}: keyed by the conversation"
    );
    for (record, expected) in records.iter().zip(messages()) {
        assert_eq!(delivered_message(&record.event), expected, "{name}");
    }
    assert_eq!(
        plan_chat(&records[3].event).err(),
        Some(DropReason::IgnoredOp)
    );
}

#[test]
fn the_shipped_flattened_configuration_delivers_each_message_keyed_by_stream() {
    check_shipped("chat-flattened");
}

#[test]
fn the_shipped_configuration_with_schemas_reads_connect_timestamps() {
    check_shipped("chat-flattened-schema");
}

#[test]
fn the_transform_defaults_take_every_record_as_a_create() {
    let records = fixture("chat-flattened-defaults");
    assert_eq!(records.len(), 5);
    for (record, expected) in records.iter().zip(messages()) {
        assert_eq!(record.key, expected.message_id);
        assert_eq!(delivered_message(&record.event), expected);
    }
    // Without `__op` the edit is indistinguishable from a new message: only deduplication of
    // its message id holds it back, which is why the server warns and the shipped config sets it.
    assert_eq!(records[3].event.op, Op::Create);
    assert_eq!(delivered_message(&records[3].event), edited());
    // The delete is a tombstone (a null value).
    assert_eq!(records[4].event.op, Op::Delete);
    assert_eq!(records[4].event.document, None);
    assert_eq!(
        plan_chat(&records[4].event).err(),
        Some(DropReason::IgnoredOp)
    );
}

fn check_rewrite(name: &str) {
    let records = fixture(name);
    assert_eq!(
        ops(&records),
        [Op::Create, Op::Create, Op::Create, Op::Update, Op::Delete],
        "{name}"
    );
    for (record, expected) in records.iter().zip(messages()) {
        assert_eq!(delivered_message(&record.event), expected, "{name}");
    }
    assert_eq!(
        records[3].event.document,
        Some(json!({"content": "real debezium message 1, edited", "message_id": OIDS[0]})),
        "{name}: a partial update"
    );
    assert_eq!(records[4].event.document, None);
    for record in &records[3..] {
        assert_eq!(
            plan_chat(&record.event).err(),
            Some(DropReason::IgnoredOp),
            "{name}: no message, not a bad one"
        );
    }
}

#[test]
fn partial_updates_and_rewritten_deletes_are_ignored_not_invalid() {
    check_rewrite("chat-flattened-rewrite");
}

#[test]
fn partial_updates_and_rewritten_deletes_with_schemas_are_ignored_not_invalid() {
    check_rewrite("chat-flattened-rewrite-schema");
}

/// The notifications of one commerce fixture: (recipient, type, payload) per record.
fn notifications(name: &str) -> Vec<Vec<(String, NotificationType, Value)>> {
    let handler = NotificationHandler::commerce();
    fixture(name)
        .iter()
        .map(|record| {
            let plan = handler
                .plan(&record.event)
                .unwrap_or_else(|r| panic!("{name}: {:?} dropped as {r:?}", record.event.document));
            plan.deliveries
                .into_iter()
                .map(|delivery| match delivery {
                    Delivery::Notify {
                        user_id,
                        notification,
                    } => (
                        user_id,
                        notification.notification_type,
                        notification.payload,
                    ),
                    other => panic!("{name}: a delivery other than a notification {other:?}"),
                })
                .collect()
        })
        .collect()
}

const COMMERCE_FORMS: [&str; 3] = ["flattened", "flattened-schema", "envelope"];

#[test]
fn purchases_in_every_form_notify_shop_owner_and_buyer() {
    let payload = json!({"order_id": "order-1", "buyer_id": "bob", "shop_owner_id": "carol",
        "product_name": "Teapot", "amount": 24.5, "currency": "EUR", "status": "paid",
        "purchased_at": "2026-12-01T09:30:00.000Z"});
    for form in COMMERCE_FORMS {
        let name = format!("purchases-{form}");
        let expected = vec![vec![
            (
                "carol".to_owned(),
                NotificationType::PurchaseNotification,
                payload.clone(),
            ),
            (
                "bob".to_owned(),
                NotificationType::PurchaseNotification,
                payload.clone(),
            ),
        ]];
        assert_eq!(notifications(&name), expected, "{name}");
    }
}

#[test]
fn payment_reminders_in_every_form_notify_their_user() {
    let payload = json!({"order_id": "order-2", "amount": 12.0, "currency": "EUR",
        "due_date": "2026-11-20T00:00:00.000Z", "days_overdue": 11, "message": "please pay"});
    for form in COMMERCE_FORMS {
        let name = format!("payments-{form}");
        let expected = vec![vec![(
            "bob".to_owned(),
            NotificationType::PaymentReminderNotification,
            payload.clone(),
        )]];
        assert_eq!(notifications(&name), expected, "{name}");
    }
}

#[test]
fn shipments_and_their_updates_in_every_form_notify_their_user() {
    let shipped = json!({"order_id": "order-1", "tracking_number": "TRK-1", "status": "in_transit",
        "location": "Lyon", "estimated_delivery": "2026-12-03T12:00:00.000Z",
        "updated_at": "2026-12-01T11:00:00.000Z"});
    let mut delivered = shipped.clone();
    delivered["status"] = "delivered".into();
    delivered["location"] = "Paris".into();
    delivered["updated_at"] = "2026-12-02T08:00:00.000Z".into();
    for form in COMMERCE_FORMS {
        let name = format!("shipments-{form}");
        let kind = NotificationType::ShippingUpdateNotification;
        let expected = vec![
            vec![("bob".to_owned(), kind.clone(), shipped.clone())],
            vec![("bob".to_owned(), kind, delivered.clone())],
        ];
        assert_eq!(notifications(&name), expected, "{name}");
        if form.starts_with("flattened") {
            assert!(
                fixture(&name).iter().all(|r| r.key == "order-1"),
                "{name}: keyed by order_id"
            );
        }
    }
}
