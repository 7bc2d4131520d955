//! A whole node: persistence, change handler, chat and notification tiers and the operational
//! routes in one process, on whichever backends it is given, assembled by
//! [`ChatApp::builder`].
//!
//! With no store given it is the embedded mode: a POST goes to the in-memory store, whose change
//! feed drives the same pipeline a CDC feed would, which forwards to the node's own tiers.

mod auth;
mod builder;
mod config;
mod error;
mod node;
mod serve;

pub use auth::Auth;
pub use builder::{ChatAppBuilder, ForwarderLayer};
pub use config::AppConfig;
pub use error::BuildError;
pub use node::ChatApp;
pub use serve::{Serve, DEFAULT_GRACE};

pub use crate::consumers::{
    Consumer, ConsumerSet, DeliveryConfig, KeyPrefixed, NotificationStrategy, NotificationsConfig,
    CHAT_CONSUMER_GROUP, NOTIFICATIONS_GROUP_SUFFIX,
};
