//! The consumers of a node's change feed: the notification strategies, extra consumers of other
//! documents, and spawning them as pipelines.
//!
//! The same consumers run inside a whole node ([`crate::app`], feature `http` + `ws`) or in a
//! change-handler service of their own that forwards to remote tiers.

mod consumer;
mod set;
mod strategy;

pub use consumer::{Consumer, KeyPrefixed};
pub use set::ConsumerSet;
pub use strategy::{
    DeliveryConfig, NotificationStrategy, NotificationsConfig, CHAT_CONSUMER_GROUP,
    NOTIFICATIONS_GROUP_SUFFIX,
};
