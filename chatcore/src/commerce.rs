//! Notifications from documents: commerce (the `purchases`, `payments` and `shipments`
//! collections `purchases`, `payments` and `shipments`) and any collection a team adds.
//!
//! A [`NotificationRule`] turns a document of one collection into a notification payload and its
//! recipients; a [`NotificationHandler`] is a set of rules, and an
//! [`crate::pipeline::EventHandler`] run by a [`crate::pipeline::Pipeline`] over the
//! change feed of those collections. Documents that do not decode, or name no valid recipient, are
//! dropped as `invalid_format` (counted, acknowledged, never retried).
//!
//! The commerce documents are the payloads of [`crate::model`]; payments and shipments add the
//! recipient, which their payloads do not carry:
//!
//! | collection | document | notification | recipients |
//! | --- | --- | --- | --- |
//! | `purchases` | a [`PurchaseUpdate`] | `purchase_notification` | `shop_owner_id` and `buyer_id` |
//! | `payments` | `user_id` + a [`PaymentReminder`] | `payment_reminder_notification` | `user_id` |
//! | `shipments` | `user_id` + a [`ShippingUpdate`] | `shipping_update_notification` | `user_id` |
//!
//! Inserts and updates notify (an updated shipment is a shipping update); deletes do not. The
//! idempotency key is `{collection}:{_id}:{digest of the payload}`: a redelivered change is a
//! duplicate, a change of any payload field is a new notification. Timestamps may be RFC 3339
//! strings or BSON dates.

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::change::{ChangeEvent, Op};
use crate::forward::Delivery;
use crate::metrics::DropReason;
use crate::model::{
    check_id, Notification, NotificationType, PaymentReminder, PurchaseUpdate, ShippingUpdate,
};
use crate::pipeline::{EventHandler, Plan};

/// Collection of purchases.
pub const PURCHASES_COLLECTION: &str = "purchases";
/// Collection of payment reminders.
pub const PAYMENTS_COLLECTION: &str = "payments";
/// Collection of shipping updates.
pub const SHIPMENTS_COLLECTION: &str = "shipments";
/// The three commerce collections.
pub const COMMERCE_COLLECTIONS: [&str; 3] = [
    PURCHASES_COLLECTION,
    PAYMENTS_COLLECTION,
    SHIPMENTS_COLLECTION,
];

/// A payload addressed to one user: the document shape of `payments` and `shipments`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Addressed<T> {
    /// The recipient.
    pub user_id: String,
    /// The payload fields, beside `user_id` in the same document.
    #[serde(flatten)]
    pub payload: T,
}

/// The notification one document asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct Notifications {
    /// Who gets it.
    pub recipients: Vec<String>,
    /// The envelope's payload.
    pub payload: serde_json::Value,
    /// Events with the same lane key are delivered in order (e.g. the `order_id`).
    pub lane_key: String,
}

type Extract = dyn Fn(&serde_json::Value) -> Result<Notifications, String> + Send + Sync;

/// How the documents of one collection become notifications of one type.
#[derive(Clone)]
pub struct NotificationRule {
    collection: String,
    notification_type: NotificationType,
    extract: Arc<Extract>,
}

impl std::fmt::Debug for NotificationRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotificationRule")
            .field("collection", &self.collection)
            .field("notification_type", &self.notification_type)
            .finish_non_exhaustive()
    }
}

impl NotificationRule {
    /// Documents of `collection` decode as `D`; `extract` names the recipients, the lane key
    /// and the payload sent as a `notification_type` notification.
    ///
    /// ```
    /// use chatcore::commerce::NotificationRule;
    /// use chatcore::model::NotificationType;
    /// #[derive(serde::Deserialize, serde::Serialize)]
    /// struct ReviewRequest { review_id: String, reviewer_id: String, title: String }
    /// let rule = NotificationRule::new(
    ///     "reviews",
    ///     NotificationType::custom("review_request"),
    ///     |review: ReviewRequest| (vec![review.reviewer_id.clone()], review.review_id.clone(), review),
    /// );
    /// # let _ = rule;
    /// ```
    pub fn new<D, P>(
        collection: impl Into<String>,
        notification_type: NotificationType,
        extract: impl Fn(D) -> (Vec<String>, String, P) + Send + Sync + 'static,
    ) -> Self
    where
        D: DeserializeOwned,
        P: Serialize,
    {
        let extract = move |document: &serde_json::Value| {
            let decoded = D::deserialize(document).map_err(|e| e.to_string())?;
            let (recipients, lane_key, payload) = extract(decoded);
            let payload = serde_json::to_value(payload).map_err(|e| e.to_string())?;
            Ok(Notifications {
                recipients,
                payload,
                lane_key,
            })
        };
        Self {
            collection: collection.into(),
            notification_type,
            extract: Arc::new(extract),
        }
    }

    /// The collection this rule reads.
    pub fn collection(&self) -> &str {
        &self.collection
    }

    /// What a document of the collection asks for, after validating the recipients.
    pub fn notifications(&self, document: &serde_json::Value) -> Result<Notifications, String> {
        let mut found = (self.extract)(document)?;
        found.recipients.dedup();
        let mut seen = Vec::with_capacity(found.recipients.len());
        for recipient in found.recipients {
            check_id("user_id", &recipient).map_err(|e| e.to_string())?;
            if !seen.contains(&recipient) {
                seen.push(recipient);
            }
        }
        if seen.is_empty() {
            return Err("no recipient".to_owned());
        }
        found.recipients = seen;
        Ok(found)
    }

    /// `purchase_notification` to the shop owner and the buyer.
    pub fn purchases() -> Self {
        Self::new(
            PURCHASES_COLLECTION,
            NotificationType::PurchaseNotification,
            |purchase: PurchaseUpdate| {
                (
                    vec![purchase.shop_owner_id.clone(), purchase.buyer_id.clone()],
                    purchase.order_id.clone(),
                    purchase,
                )
            },
        )
    }

    /// `payment_reminder_notification` to the document's `user_id`.
    pub fn payments() -> Self {
        Self::new(
            PAYMENTS_COLLECTION,
            NotificationType::PaymentReminderNotification,
            |reminder: Addressed<PaymentReminder>| {
                let lane = reminder.payload.order_id.clone();
                (vec![reminder.user_id], lane, reminder.payload)
            },
        )
    }

    /// `shipping_update_notification` to the document's `user_id`.
    pub fn shipments() -> Self {
        Self::new(
            SHIPMENTS_COLLECTION,
            NotificationType::ShippingUpdateNotification,
            |update: Addressed<ShippingUpdate>| {
                let lane = update.payload.order_id.clone();
                (vec![update.user_id], lane, update.payload)
            },
        )
    }
}

/// Turns change events of its rules' collections into notifications: an
/// [`EventHandler`] for a notification consumer.
#[derive(Debug, Clone, Default)]
pub struct NotificationHandler {
    rules: Vec<NotificationRule>,
}

impl NotificationHandler {
    /// A handler with no rule (add some with [`NotificationHandler::with_rule`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// The commerce notifications: purchases, payment reminders and shipping updates.
    pub fn commerce() -> Self {
        Self::new()
            .with_rule(NotificationRule::purchases())
            .with_rule(NotificationRule::payments())
            .with_rule(NotificationRule::shipments())
    }

    /// Adds a rule (a later rule for the same collection is never consulted).
    pub fn with_rule(mut self, rule: NotificationRule) -> Self {
        self.rules.push(rule);
        self
    }

    /// The collections the rules read.
    pub fn collections(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(NotificationRule::collection)
    }
}

impl EventHandler for NotificationHandler {
    fn plan(&self, event: &ChangeEvent) -> Result<Plan, DropReason> {
        let Some(rule) = self.rules.iter().find(|r| r.collection == event.collection) else {
            return Err(DropReason::IgnoredOp);
        };
        if !matches!(event.op, Op::Create | Op::Update) {
            return Err(DropReason::IgnoredOp);
        }
        // An update may carry only what changed (Debezium's `capture.mode=change_streams`, or a
        // flattened partial update): no whole document, nothing to notify about.
        let partial = if event.op == Op::Update {
            DropReason::IgnoredOp
        } else {
            DropReason::InvalidFormat
        };
        let document = event.document.as_ref().ok_or(partial)?;
        let found = rule.notifications(document).map_err(|reason| {
            tracing::info!(collection = %event.collection, key = %event.key, %reason, "document dropped");
            partial
        })?;
        let id = document
            .get("message_id")
            .and_then(serde_json::Value::as_str)
            .unwrap_or(&event.key);
        let digest = Sha256::digest(found.payload.to_string().as_bytes());
        let digest: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        let event_key = format!("{}:{id}:{digest}", event.collection);
        let notification = Notification::new(rule.notification_type.clone(), &found.payload);
        let deliveries = found
            .recipients
            .into_iter()
            .map(|user_id| Delivery::Notify {
                user_id,
                notification: notification.clone(),
            })
            .collect();
        Ok(Plan {
            event_key,
            lane_key: format!("{}:{}", event.collection, found.lane_key),
            deliveries,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::SourcePosition;
    use serde_json::json;

    fn event(collection: &str, op: Op, document: serde_json::Value) -> ChangeEvent {
        ChangeEvent {
            op,
            collection: collection.into(),
            key: "k1".into(),
            document: Some(document),
            position: SourcePosition {
                partition: 0,
                offset: 0,
                token: None,
            },
            malformed: None,
        }
    }

    fn purchase() -> serde_json::Value {
        json!({"message_id": "p1", "order_id": "o1", "buyer_id": "buyer", "shop_owner_id": "shop",
               "product_name": "Lamp", "amount": 25, "currency": "EUR", "status": "completed",
               "purchased_at": "2026-11-01T10:00:00Z"})
    }

    fn recipients(plan: &Plan) -> Vec<(&str, serde_json::Value)> {
        plan.deliveries
            .iter()
            .map(|d| match d {
                Delivery::Notify {
                    user_id,
                    notification,
                } => (
                    user_id.as_str(),
                    serde_json::to_value(notification).expect("json"),
                ),
                other => panic!("not a notification: {other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_purchase_notifies_shop_owner_and_buyer_with_the_seed_payload() {
        let handler = NotificationHandler::commerce();
        let plan = handler
            .plan(&event("purchases", Op::Create, purchase()))
            .expect("plan");
        let sent = recipients(&plan);
        assert_eq!(
            sent.iter().map(|(u, _)| *u).collect::<Vec<_>>(),
            ["shop", "buyer"]
        );
        let envelope = &sent[0].1;
        assert_eq!(envelope["notification_type"], "purchase_notification");
        assert_eq!(
            envelope["payload"]["purchased_at"],
            "2026-11-01T10:00:00.000Z"
        );
        assert_eq!(envelope["payload"]["amount"], 25.0);
        assert!(envelope["payload"].get("message_id").is_none());
        assert!(
            plan.event_key.starts_with("purchases:p1:"),
            "{}",
            plan.event_key
        );
        // A redelivery has the same key; a status change a new one.
        let again = handler
            .plan(&event("purchases", Op::Update, purchase()))
            .expect("plan");
        assert_eq!(again.event_key, plan.event_key);
        let mut shipped = purchase();
        shipped["status"] = "refunded".into();
        let changed = handler
            .plan(&event("purchases", Op::Update, shipped))
            .expect("plan");
        assert_ne!(changed.event_key, plan.event_key);
    }

    #[test]
    fn payments_and_shipments_go_to_their_user_id_without_it_in_the_payload() {
        let handler = NotificationHandler::commerce();
        let payment = json!({"user_id": "u1", "order_id": "o1", "amount": 9.5, "currency": "EUR",
            "due_date": "2026-11-20T00:00:00Z", "days_overdue": 3, "message": "please pay"});
        let plan = handler
            .plan(&event("payments", Op::Create, payment))
            .expect("plan");
        let sent = recipients(&plan);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].0, "u1");
        assert_eq!(
            sent[0].1["notification_type"],
            "payment_reminder_notification"
        );
        assert_eq!(sent[0].1["payload"]["days_overdue"], 3);
        assert!(sent[0].1["payload"].get("user_id").is_none());

        let shipment = json!({"user_id": "u2", "order_id": "o1", "tracking_number": "T1",
            "status": "in_transit", "location": "Lyon", "estimated_delivery": "2026-11-30T12:00:00Z",
            "updated_at": "2026-11-27T08:00:00+01:00"});
        let plan = handler
            .plan(&event("shipments", Op::Update, shipment))
            .expect("plan");
        let sent = recipients(&plan);
        assert_eq!(sent[0].0, "u2");
        assert_eq!(
            sent[0].1["notification_type"],
            "shipping_update_notification"
        );
        assert_eq!(
            sent[0].1["payload"]["updated_at"],
            "2026-11-27T07:00:00.000Z"
        );
    }

    #[test]
    fn bad_documents_are_invalid_and_other_changes_ignored() {
        let handler = NotificationHandler::commerce();
        let mut no_buyer = purchase();
        no_buyer["buyer_id"] = "".into();
        let mut bad_date = purchase();
        bad_date["purchased_at"] = "yesterday".into();
        let mut no_amount = purchase();
        no_amount.as_object_mut().expect("object").remove("amount");
        for document in [
            no_buyer,
            bad_date,
            no_amount,
            json!({"order_id": "o1"}),
            json!([1, 2]),
        ] {
            assert_eq!(
                handler.plan(&event("purchases", Op::Create, document.clone())),
                Err(DropReason::InvalidFormat),
                "{document}"
            );
        }
        let payment_without_user = json!({"order_id": "o1", "amount": 9.5, "currency": "EUR",
            "due_date": "2026-11-20T00:00:00Z", "days_overdue": 3, "message": "m"});
        assert_eq!(
            handler.plan(&event("payments", Op::Create, payment_without_user)),
            Err(DropReason::InvalidFormat)
        );
        assert_eq!(
            handler.plan(&event("purchases", Op::Delete, purchase())),
            Err(DropReason::IgnoredOp)
        );
        // A partial update (only the changed fields) or one with no document is no notification.
        let partial = json!({"message_id": "6b0f", "status": "delivered"});
        assert_eq!(
            handler.plan(&event("shipments", Op::Update, partial)),
            Err(DropReason::IgnoredOp)
        );
        let mut no_document = event("shipments", Op::Update, json!({}));
        no_document.document = None;
        assert_eq!(handler.plan(&no_document), Err(DropReason::IgnoredOp));
        assert_eq!(
            handler.plan(&event("chat", Op::Create, purchase())),
            Err(DropReason::IgnoredOp)
        );
        let mut missing = event("purchases", Op::Create, purchase());
        missing.document = None;
        assert_eq!(handler.plan(&missing), Err(DropReason::InvalidFormat));
    }
}
