//! The domain model: chat messages and their validation, commerce payloads, and the notification
//! envelope sent on the notification tier.

use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};
use serde::{Deserialize, Serialize};

use crate::stream_id::stream_id;

/// Default upper bound of a message's `content`, in bytes (`MAX_CONTENT_BYTES`).
pub const DEFAULT_MAX_CONTENT_BYTES: usize = 65_536;
/// Upper bound of any user or stream identifier, in bytes.
pub const MAX_ID_BYTES: usize = 256;

/// A stored chat message, exactly as it travels on the wire and over the websockets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChatMessage {
    /// Unique, time-ordered identifier assigned by the store.
    pub message_id: String,
    /// The text; may be whitespace only, never empty.
    pub content: String,
    /// When the store accepted the message (RFC 3339, UTC).
    #[serde(with = "rfc3339")]
    pub created_at: DateTime<Utc>,
    /// The conversation, see [`crate::stream_id`].
    pub stream_id: String,
    /// Author of the message.
    pub sender_id: String,
    /// The other participant of a direct conversation; absent for a group message (every member
    /// of the group receives it, see [`crate::conversation`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receiver_id: Option<String>,
}

impl ChatMessage {
    /// The idempotency key of this message's delivery: `message_id:stream_id`.
    pub fn event_key(&self) -> String {
        format!("{}:{}", self.message_id, self.stream_id)
    }

    /// Checks the invariants a message must hold when it arrives from outside the store (forward
    /// requests, decoded change events): valid ids and a `stream_id` matching its participants
    /// (a group message: a well-formed `stream_id`).
    pub fn check(&self, max_content_bytes: usize) -> Result<(), ValidationError> {
        check_id("message_id", &self.message_id)?;
        check_content(&self.content, max_content_bytes)?;
        match &self.receiver_id {
            Some(receiver_id) => {
                check_participants(&self.sender_id, receiver_id)?;
                check_stream(Some(&self.stream_id), &self.sender_id, receiver_id).map(|_| ())
            }
            None => {
                check_id("sender_id", &self.sender_id)?;
                check_group_stream(&self.stream_id)
            }
        }
    }

    /// True for a message of a group conversation (it has no `receiver_id`).
    pub fn is_group(&self) -> bool {
        self.receiver_id.is_none()
    }
}

/// A message as a client posts it, before validation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NewChatMessage {
    /// The text: not empty (whitespace only is allowed), at most `MAX_CONTENT_BYTES` bytes of
    /// UTF-8.
    #[cfg_attr(feature = "openapi", schema(min_length = 1))]
    pub content: String,
    /// Author: 1 to 256 bytes, no control characters.
    #[cfg_attr(
        feature = "openapi",
        schema(
            min_length = 1,
            max_length = 256,
            pattern = r"^[^\x00-\x1f\x7f-\x9f]+$"
        )
    )]
    pub sender_id: String,
    /// Recipient of a direct message: 1 to 256 bytes, no control characters. Absent for a
    /// message to a group, which names the group's `stream_id` instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(
            min_length = 1,
            max_length = 256,
            pattern = r"^[^\x00-\x1f\x7f-\x9f]+$"
        )
    )]
    pub receiver_id: Option<String>,
    /// Optional for a direct message: when present it must equal the stream id computed from the
    /// two participants. Required for a group message: the group's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(pattern = "^[0-9a-f]{16}$"))]
    pub stream_id: Option<String>,
}

impl NewChatMessage {
    /// Validates the message (non-empty content within the limit, ids of 1 to 256 bytes without control characters, a `stream_id` that matches the participants) and returns it with its `stream_id` resolved.
    ///
    /// ```
    /// use chatcore::model::NewChatMessage;
    /// let msg = NewChatMessage {
    ///     content: "hi".into(),
    ///     sender_id: "user123".into(),
    ///     receiver_id: Some("user456".into()),
    ///     stream_id: None,
    /// };
    /// let valid = msg.validate(65_536).unwrap();
    /// assert_eq!(valid.stream_id(), "7b28e95659ec2171");
    /// ```
    ///
    /// A message without `receiver_id` is a group message: it is refused here with
    /// [`ValidationError::MissingId`]`("receiver_id")`; see [`NewChatMessage::validate_for_group`].
    pub fn validate(self, max_content_bytes: usize) -> Result<ValidMessage, ValidationError> {
        let receiver_id = self.receiver_id.unwrap_or_default();
        check_participants(&self.sender_id, &receiver_id)?;
        let stream_id = check_stream(self.stream_id.as_deref(), &self.sender_id, &receiver_id)?;
        check_content(&self.content, max_content_bytes)?;
        Ok(ValidMessage {
            content: self.content,
            sender_id: self.sender_id,
            receiver_id: Some(receiver_id),
            stream_id,
        })
    }

    /// True when the message names no `receiver_id`: a message to a group.
    pub fn is_group(&self) -> bool {
        self.receiver_id.is_none()
    }

    /// Validates a message to `group` (which the caller looked up by the message's `stream_id`):
    /// content and sender as [`validate`](Self::validate) checks them, no `receiver_id`, the
    /// group's `stream_id`, and a sender who is one of its members.
    pub fn validate_for_group(
        self,
        max_content_bytes: usize,
        group: &crate::conversation::Conversation,
    ) -> Result<ValidMessage, ValidationError> {
        check_id("sender_id", &self.sender_id)?;
        if self.receiver_id.is_some() {
            return Err(ValidationError::ReceiverInGroup);
        }
        if self.stream_id.as_deref() != Some(group.stream_id.as_str()) {
            return Err(ValidationError::MissingId("stream_id"));
        }
        check_content(&self.content, max_content_bytes)?;
        if !group.has_member(&self.sender_id) {
            return Err(ValidationError::NotAMember(self.sender_id));
        }
        Ok(ValidMessage {
            content: self.content,
            sender_id: self.sender_id,
            receiver_id: None,
            stream_id: group.stream_id.clone(),
        })
    }
}

/// A message that passed validation; only this type can be handed to a [`crate::store::MessageStore`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidMessage {
    content: String,
    sender_id: String,
    receiver_id: Option<String>,
    stream_id: String,
}

impl ValidMessage {
    /// The message text.
    pub fn content(&self) -> &str {
        &self.content
    }
    /// The author.
    pub fn sender_id(&self) -> &str {
        &self.sender_id
    }
    /// The recipient of a direct message; `None` for a group message.
    pub fn receiver_id(&self) -> Option<&str> {
        self.receiver_id.as_deref()
    }
    /// The recomputed conversation id.
    pub fn stream_id(&self) -> &str {
        &self.stream_id
    }

    /// Stamps the message with the identity and time the store assigned. The time is truncated
    /// to milliseconds, the precision of the wire format, so a message round-trips exactly.
    pub fn into_stored(self, message_id: String, created_at: DateTime<Utc>) -> ChatMessage {
        ChatMessage {
            message_id,
            content: self.content,
            created_at: created_at.trunc_subsecs(3),
            stream_id: self.stream_id,
            sender_id: self.sender_id,
            receiver_id: self.receiver_id,
        }
    }
}

/// Why a message or a subscription was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValidationError {
    /// `content` was the empty string.
    #[error("content must not be empty")]
    EmptyContent,
    /// `content` exceeded the configured byte limit.
    #[error("content is {actual} bytes, more than the limit of {limit}")]
    ContentTooLarge {
        /// Size of the content.
        actual: usize,
        /// The configured limit.
        limit: usize,
    },
    /// A required identifier was empty or missing.
    #[error("{0} must not be empty")]
    MissingId(&'static str),
    /// An identifier exceeded [`MAX_ID_BYTES`].
    #[error("{0} is longer than {MAX_ID_BYTES} bytes")]
    IdTooLong(&'static str),
    /// An identifier contained a control character.
    #[error("{0} must not contain control characters")]
    ControlCharacter(&'static str),
    /// The supplied `stream_id` does not belong to the two participants.
    #[error(
        "stream_id {given:?} does not match sender_id and receiver_id (expected {expected:?})"
    )]
    StreamIdMismatch {
        /// What the client sent.
        given: String,
        /// What the participants hash to.
        expected: String,
    },
    /// A group's `stream_id` is not 16 lowercase hex characters.
    #[error("stream_id must be 16 lowercase hex characters")]
    MalformedStreamId,
    /// A message to a group named a `receiver_id`.
    #[error("a message to a group has no receiver_id")]
    ReceiverInGroup,
    /// The acting user is not a member of the group (answered 403).
    #[error("{0:?} is not a member of this conversation")]
    NotAMember(String),
    /// A group or membership change is outside the limits (answered 400).
    #[error("{0}")]
    InvalidGroup(String),
}

/// Checks one identifier: non-empty, at most [`MAX_ID_BYTES`], no control characters.
pub fn check_id(field: &'static str, value: &str) -> Result<(), ValidationError> {
    if value.is_empty() {
        return Err(ValidationError::MissingId(field));
    }
    if value.len() > MAX_ID_BYTES {
        return Err(ValidationError::IdTooLong(field));
    }
    if value.chars().any(char::is_control) {
        return Err(ValidationError::ControlCharacter(field));
    }
    Ok(())
}

fn check_participants(sender_id: &str, receiver_id: &str) -> Result<(), ValidationError> {
    check_id("sender_id", sender_id)?;
    check_id("receiver_id", receiver_id)
}

fn check_content(content: &str, max_content_bytes: usize) -> Result<(), ValidationError> {
    if content.is_empty() {
        return Err(ValidationError::EmptyContent);
    }
    if content.len() > max_content_bytes {
        return Err(ValidationError::ContentTooLarge {
            actual: content.len(),
            limit: max_content_bytes,
        });
    }
    Ok(())
}

/// Recomputes the stream id of two (already checked) participants and compares it with the one
/// supplied, if any. Returns the recomputed id.
pub fn check_stream(
    given: Option<&str>,
    sender_id: &str,
    receiver_id: &str,
) -> Result<String, ValidationError> {
    let expected = stream_id(sender_id, receiver_id);
    match given {
        Some(given) if given != expected => Err(ValidationError::StreamIdMismatch {
            given: given.to_owned(),
            expected,
        }),
        _ => Ok(expected),
    }
}

/// Checks the `stream_id` of a group message: 16 lowercase hex characters.
pub fn check_group_stream(stream_id: &str) -> Result<(), ValidationError> {
    match crate::stream_id::is_well_formed(stream_id) {
        true => Ok(()),
        false => Err(ValidationError::MalformedStreamId),
    }
}

/// A purchase state change, notified to the shop owner and the buyer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PurchaseUpdate {
    /// The order.
    pub order_id: String,
    /// Who bought.
    pub buyer_id: String,
    /// Who sold.
    pub shop_owner_id: String,
    /// What was bought.
    pub product_name: String,
    /// Price paid.
    pub amount: f64,
    /// ISO 4217 currency code.
    pub currency: String,
    /// Order status, e.g. `completed`.
    pub status: String,
    /// When the purchase happened.
    #[serde(with = "rfc3339")]
    pub purchased_at: DateTime<Utc>,
}

/// A reminder that a payment is due or overdue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PaymentReminder {
    /// The order.
    pub order_id: String,
    /// Amount due.
    pub amount: f64,
    /// ISO 4217 currency code.
    pub currency: String,
    /// When payment is due.
    #[serde(with = "rfc3339")]
    pub due_date: DateTime<Utc>,
    /// Days past the due date (0 when not yet due).
    pub days_overdue: i64,
    /// Human-readable reminder.
    pub message: String,
}

/// A shipment tracking update.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ShippingUpdate {
    /// The order.
    pub order_id: String,
    /// Carrier tracking number.
    pub tracking_number: String,
    /// Shipment status, e.g. `in_transit`.
    pub status: String,
    /// Where the parcel is.
    pub location: String,
    /// Expected delivery time.
    #[serde(with = "rfc3339")]
    pub estimated_delivery: DateTime<Utc>,
    /// When this update was produced.
    #[serde(with = "rfc3339")]
    pub updated_at: DateTime<Utc>,
}

/// The kinds of notification carried on the notification tier: the four of the contract, and
/// any type a team adds ([`NotificationType::custom`]). On the wire each is its name, e.g.
/// `"chat_notification"` or `"review_request"`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum NotificationType {
    /// A chat message for a user who may not have the conversation open.
    ChatNotification,
    /// A [`PurchaseUpdate`].
    PurchaseNotification,
    /// A [`PaymentReminder`].
    PaymentReminderNotification,
    /// A [`ShippingUpdate`].
    ShippingUpdateNotification,
    /// A type of the embedding application, serialized as its bare name. Build it with
    /// [`NotificationType::custom`], which maps the contract's names to their own variants.
    #[serde(untagged)]
    Custom(String),
}

/// On the wire a notification type is a plain string: the four built-in names, or a custom one.
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for NotificationType {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(
                "`chat_notification`, `purchase_notification`, `payment_reminder_notification`, \
                 `shipping_update_notification`, or a type the embedding application added",
            ))
            .examples([
                "chat_notification",
                "purchase_notification",
                "payment_reminder_notification",
                "shipping_update_notification",
            ])
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for NotificationType {}

impl NotificationType {
    /// A notification type named `name`: one of the contract's four when it is one of their
    /// names, otherwise a custom type.
    ///
    /// ```
    /// use chatcore::model::NotificationType;
    /// let review = NotificationType::custom("review_request");
    /// assert_eq!(serde_json::to_value(&review).unwrap(), "review_request");
    /// assert_eq!(NotificationType::custom("chat_notification"), NotificationType::ChatNotification);
    /// ```
    pub fn custom(name: impl Into<String>) -> Self {
        let name = name.into();
        match name.as_str() {
            "chat_notification" => Self::ChatNotification,
            "purchase_notification" => Self::PurchaseNotification,
            "payment_reminder_notification" => Self::PaymentReminderNotification,
            "shipping_update_notification" => Self::ShippingUpdateNotification,
            _ => Self::Custom(name),
        }
    }

    /// The wire name, e.g. `chat_notification`.
    pub fn as_str(&self) -> &str {
        match self {
            Self::ChatNotification => "chat_notification",
            Self::PurchaseNotification => "purchase_notification",
            Self::PaymentReminderNotification => "payment_reminder_notification",
            Self::ShippingUpdateNotification => "shipping_update_notification",
            Self::Custom(name) => name,
        }
    }
}

/// The envelope of every frame on the notification socket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Notification {
    /// What the payload is.
    pub notification_type: NotificationType,
    /// When the notification was produced.
    #[serde(with = "rfc3339")]
    pub timestamp: DateTime<Utc>,
    /// The typed payload, as JSON.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub payload: serde_json::Value,
    /// The recipient's inbox entry: set once the notification is kept, so a
    /// client can mark it read or resume after it with `since=`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(pattern = "^[0-9a-f]{24}$"))]
    pub notification_id: Option<String>,
    /// The idempotency key of what produced it (the change event's key, or a push route's
    /// `Idempotency-Key`): the inbox keeps one entry per source key and recipient, however often
    /// it is delivered. Never on the wire of the socket.
    #[serde(skip)]
    pub source_key: Option<String>,
}

impl Notification {
    /// Wraps a chat message for its receiver's notification socket.
    pub fn chat(message: &ChatMessage) -> Self {
        Self::new(NotificationType::ChatNotification, message)
    }

    /// Wraps any serializable payload with the current time.
    pub fn new(notification_type: NotificationType, payload: &impl Serialize) -> Self {
        Self {
            notification_type,
            timestamp: Utc::now(),
            payload: serde_json::to_value(payload).unwrap_or(serde_json::Value::Null),
            notification_id: None,
            source_key: None,
        }
    }

    /// Sets the source key the inbox deduplicates on, see [`Notification::source_key`].
    pub fn with_source_key(mut self, key: impl Into<String>) -> Self {
        self.source_key = Some(key.into());
        self
    }
}

/// Serde helpers for RFC 3339 UTC timestamps with millisecond precision and a `Z` suffix.
pub mod rfc3339 {
    use super::*;
    use serde::{Deserializer, Serializer};

    /// Formats a timestamp, e.g. `2026-11-26T20:36:57.123Z`.
    pub fn format(value: &DateTime<Utc>) -> String {
        value.to_rfc3339_opts(SecondsFormat::Millis, true)
    }

    /// Serializes as [`format()`] does.
    pub fn serialize<S: Serializer>(value: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(value))
    }

    /// Accepts any RFC 3339 timestamp, converts it to UTC and keeps millisecond precision, the
    /// precision of the wire format, so a value reads back exactly as it is written.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let text = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&text)
            .map(|t| t.with_timezone(&Utc).trunc_subsecs(3))
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(content: &str, sender: &str, receiver: &str) -> NewChatMessage {
        NewChatMessage {
            content: content.into(),
            sender_id: sender.into(),
            receiver_id: Some(receiver.into()),
            stream_id: None,
        }
    }

    #[test]
    fn whitespace_only_content_is_allowed() {
        assert!(new("   \n\t", "a", "b").validate(10).is_ok());
    }

    #[test]
    fn empty_content_and_ids_are_refused() {
        assert_eq!(
            new("", "a", "b").validate(10),
            Err(ValidationError::EmptyContent)
        );
        assert_eq!(
            new("x", "", "b").validate(10),
            Err(ValidationError::MissingId("sender_id"))
        );
        assert_eq!(
            new("x", "a", "").validate(10),
            Err(ValidationError::MissingId("receiver_id"))
        );
    }

    #[test]
    fn limits_are_in_bytes() {
        assert!(new("é", "a", "b").validate(2).is_ok());
        assert!(matches!(
            new("éé", "a", "b").validate(3),
            Err(ValidationError::ContentTooLarge {
                actual: 4,
                limit: 3
            })
        ));
        let long_id = "x".repeat(MAX_ID_BYTES + 1);
        assert_eq!(
            new("x", &long_id, "b").validate(10),
            Err(ValidationError::IdTooLong("sender_id"))
        );
        assert_eq!(
            new("x", "a\u{7}", "b").validate(10),
            Err(ValidationError::ControlCharacter("sender_id"))
        );
    }

    #[test]
    fn mismatched_stream_id_is_refused_and_matching_accepted() {
        let mut msg = new("x", "user123", "user456");
        msg.stream_id = Some("0000000000000000".into());
        assert!(matches!(
            msg.clone().validate(10),
            Err(ValidationError::StreamIdMismatch { .. })
        ));
        msg.stream_id = Some("7b28e95659ec2171".into());
        assert_eq!(
            msg.validate(10).map(|v| v.stream_id().to_owned()),
            Ok("7b28e95659ec2171".to_owned())
        );
    }

    #[test]
    fn timestamps_read_back_exactly_as_written() {
        let json = r#"{"message_id":"m","content":"c","created_at":"2023-11-14T22:13:20.0001234+01:00","stream_id":"s","sender_id":"a","receiver_id":"b"}"#;
        let message: ChatMessage = serde_json::from_str(json).expect("parses");
        let written = serde_json::to_string(&message).expect("serializes");
        assert!(
            written.contains(r#""created_at":"2023-11-14T21:13:20.000Z""#),
            "{written}"
        );
        let again: ChatMessage = serde_json::from_str(&written).expect("parses");
        assert_eq!(again, message);
    }

    #[test]
    fn envelope_uses_the_wire_names() {
        let stored = new("hi", "a", "b")
            .validate(10)
            .map(|v| v.into_stored("m1".into(), Utc::now()))
            .expect("valid");
        let json = serde_json::to_value(Notification::chat(&stored)).expect("serializable");
        assert_eq!(json["notification_type"], "chat_notification");
        assert_eq!(json["payload"]["message_id"], "m1");
        assert!(json["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
    }

    #[test]
    fn custom_types_are_bare_names_and_the_contract_names_stay_their_variants() {
        for (kind, name) in [
            (NotificationType::ChatNotification, "chat_notification"),
            (
                NotificationType::PurchaseNotification,
                "purchase_notification",
            ),
            (
                NotificationType::PaymentReminderNotification,
                "payment_reminder_notification",
            ),
            (
                NotificationType::ShippingUpdateNotification,
                "shipping_update_notification",
            ),
            (NotificationType::custom("review_request"), "review_request"),
        ] {
            assert_eq!(serde_json::to_value(&kind).expect("serializes"), name);
            let back: NotificationType =
                serde_json::from_value(serde_json::json!(name)).expect("parses");
            assert_eq!(back, kind);
            assert_eq!(kind.as_str(), name);
        }
    }
}
