//! Configuration of `chat-server`: every setting is an environment variable (the seed's names,
//! so an existing `.env` keeps working) and a CLI flag. Durations are Go-style (`100ms`, `30s`).
//!
//! [`Settings`] flattens one group per concern ([`ServerSettings`], [`AuthSettings`],
//! [`SocketSettings`], [`LimitSettings`], [`EventStoreSettings`], [`RetrySettings`],
//! [`LogSettings`], [`StoreSettings`], [`MongoSettings`], [`KafkaSettings`], [`TierSettings`],
//! [`EmailSettings`], [`NotificationSettings`], [`CommerceSettings`]). This module is plain
//! data, parsing and validation: it builds no backend; the roles do, from these settings.

mod auth;
mod cli;
mod commerce;
mod email;
mod error;
mod event_store;
mod kafka;
mod limits;
mod log;
mod notifications;
mod retry;
mod server;
mod settings;
mod sockets;
mod store;
mod tiers;

pub use auth::{AuthMode, AuthSettings};
pub use cli::{parse_error_line, Cli, Role};
pub use commerce::CommerceSettings;
pub use email::{EmailSettings, SmtpSettings};
pub use error::ConfigError;
pub use event_store::{EventStorePolicy, EventStoreSettings};
pub use kafka::KafkaSettings;
pub use limits::LimitSettings;
pub use log::{LogFormat, LogSettings};
pub use notifications::{NotificationSettings, Strategy};
pub use retry::RetrySettings;
pub use server::ServerSettings;
pub use settings::Settings;
pub use sockets::{SlowClients, SocketSettings};
pub use store::{MongoSettings, StoreKind, StoreSettings};
pub use tiers::TierSettings;
