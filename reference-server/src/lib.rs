//! The reference deployment of chatcore: configuration, wiring and serving, shared by the
//! `chat-server` binary and its end-to-end tests. `chat-server <role>` runs one service of the
//! split topology, or all of them:
//!
//! - `all` (the default): every part in one process. The store is one durable SQLite file in
//!   `DATA_DIR` by default, MongoDB with `MONGO_URI`, or in memory with `STORE=memory`; the
//!   change feed is the store's own feed, or — with
//!   `CHAT_PERSISTENCE_CHANGE_KAFKA_BOOTSTRAP_SERVERS` — the store's changes relayed to Kafka in
//!   Debezium's shape and consumed back from the topic. The event store is Redis with
//!   `REDIS_ADDR`, in memory otherwise.
//! - `persistence`: the message API on MongoDB.
//! - `relay`: MongoDB's change stream → Kafka, in Debezium's shape (the connector's job).
//! - `change-handler`: Kafka → event store → HTTP forwarders to the websocket tiers.
//! - `chat-ws` and `notifications-ws`: the websocket tiers, taking deliveries on
//!   `INTERNAL_LISTEN_ADDR`.
//! - `email`: Kafka → event store → an e-mail to each offline receiver of a new chat message
//!   (MongoDB's `user_email` directory, SMTP), dead-letter topic after exhausted retries; see
//!   [`email`].
//!
//! Where routes are served, and how shutdown drains, is described in [`serving`]. The client
//! routes require JWT bearer tokens with `AUTH_MODE=jwt` ([`Settings::authenticator`]); without
//! `AUTH_MODE`, [`run`] refuses listeners off loopback ([`Settings::check_auth_exposure`]).

#![warn(missing_docs)]
#![deny(unreachable_pub)]

mod auth;
mod backends;
pub mod config;
pub mod email;
mod roles;
pub mod serving;
mod startup;

use std::future::Future;
use std::net::SocketAddr;

pub use config::{AuthMode, Cli, ConfigError, Role, Settings};
pub use email::{serve_email, EmailConsumer};
pub use roles::all::{build_app, build_app_with, serve, serve_app, serve_app_with};
pub use roles::change_handler::{serve_change_handler, ChangeHandler};
pub use roles::relay::serve_relay;
pub use roles::tiers::{serve_chat_ws, serve_notifications_ws, serve_persistence};
pub use serving::{Listeners, ServeOptions};

/// Serving failed.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The listener could not be bound or failed.
    #[error("listener {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The node's parts do not fit together, or its change feed cannot be opened.
    #[error(transparent)]
    Build(#[from] chatcore::app::BuildError),
    /// The role exists in the topology but this build does not run it yet.
    #[error("role {0} is not available in this version of chat-server")]
    Unavailable(&'static str),
}

/// Checks that the client routes are not served unauthenticated on a public address by accident
/// (see [`Settings::check_auth_exposure`]), binds `LISTEN_ADDR` (and `INTERNAL_LISTEN_ADDR` when
/// set) and runs `role` until `shutdown` resolves.
pub async fn run(
    role: Role,
    settings: Settings,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    settings.check_auth_exposure(role)?;
    let listeners = Listeners::bind(&settings).await?;
    match role {
        Role::All => serve(settings, listeners, shutdown).await,
        Role::Persistence => serve_persistence(settings, listeners, shutdown).await,
        Role::Relay => serve_relay(settings, listeners, shutdown).await,
        Role::ChangeHandler => serve_change_handler(settings, listeners, shutdown).await,
        Role::ChatWs => serve_chat_ws(settings, listeners, shutdown).await,
        Role::NotificationsWs => serve_notifications_ws(settings, listeners, shutdown).await,
        Role::Email => serve_email(settings, listeners, shutdown).await,
    }
}
