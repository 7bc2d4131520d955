//! # chatcore
//!
//! Real-time chat and notifications, written once to a store and delivered from its change feed.
//!
//! A message is validated ([`model`]) and stored ([`store`]); the store's change feed
//! ([`change`]) drives the delivery [`pipeline`], which claims each event in an idempotency
//! store ([`dedup`]), forwards it concurrently to the chat tier (by [`stream_id`](mod@stream_id))
//! and the notification tier (by `user_id`) through a [`forward::Forwarder`], retries with
//! exponential backoff, and when retries run out closes the conversation's sockets
//! ([`sockets`]) so clients recover from the store. Notifications are kept in the recipient's
//! [`inbox`] before they are pushed; groups, read receipts and the conversation list are in
//! [`conversation`]. The HTTP routers, JWT authentication and the node's front door ([`app`])
//! come with the `server` feature. Every trait has an in-memory implementation
//! here; SQLite, Kafka, MongoDB and Redis live in their own crates (`chatcore-sqlite`,
//! `chatcore-kafka`, `chatcore-mongo`, `chatcore-redis`).
//!
//! ## Quick start
//!
//! A whole node (persistence, change handler, both websocket tiers) on the in-memory defaults,
//! merged into a team's own axum router and served with graceful shutdown:
//!
//! ```no_run
//! # #[cfg(feature = "server")]
//! # mod run {
//! use axum::routing::get;
//! use axum::Router;
//! use chatcore::app::{Auth, ChatApp};
//!
//! pub async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let app = ChatApp::builder().auth(Auth::disabled()).build().await?;
//!     let router = Router::new()
//!         .route("/team/hello", get(|| async { "hello" }))
//!         .merge(app.routes());
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//!     app.serve(listener, router)
//!         .with_graceful_shutdown(async { tokio::signal::ctrl_c().await.unwrap_or(()) })
//!         .await?;
//!     Ok(())
//! }
//! # }
//! # fn main() {}
//! ```
//!
//! `POST /chat/messages` then stores a message and every `GET /chat/subscribe` socket of its
//! conversation receives it; `GET /chat/messages?stream_id=&since=` pages the history.
//!
//! ## Cargo features
//!
//! | feature | what it adds | brings |
//! | --- | --- | --- |
//! | `server` (default) | all of the below | |
//! | `http` | the HTTP routers ([`http`]) | axum, tower, tower-http |
//! | `ws` | websocket sessions of the chat and notification tiers, and with `http` the node ([`app`]) | axum's `ws`, tokio-tungstenite |
//! | `auth-jwt` | JWT bearer-token verification | jsonwebtoken |
//! | `rate-limit` | per-caller limits on the client routes | governor |
//! | `openapi` | `/openapi.json` and schemas of the model (implies `ws`: it describes the websocket routes) | utoipa |
//! | `prometheus` | counts kept and rendered for `/metrics` ([`metrics`]) | prometheus-client |
//! | `http-client` | the forwarder to remote tiers | reqwest (rustls) |
//! | `smtp` | the SMTP e-mail sender | lettre (rustls) |
//! | `test-util` | helpers for tests of embedders and backend crates | |
//!
//! Without default features chatcore is the model, the traits, the in-memory implementations
//! and the pipeline: what a crate implementing [`store::MessageStore`],
//! [`change::ChangeSource`], [`dedup::EventStore`], [`inbox::InboxStore`] or
//! [`conversation::ConversationStore`] needs, and nothing that serves HTTP or sends mail.

#![warn(missing_docs)]
#![deny(unreachable_pub)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(all(feature = "http", feature = "ws"))]
#[cfg_attr(docsrs, doc(cfg(all(feature = "http", feature = "ws"))))]
pub mod app;
pub mod auth;
pub mod change;
pub mod commerce;
pub mod config;
pub mod consumers;
pub mod conversation;
pub mod dead_letter;
pub mod debezium;
pub mod dedup;
pub mod email;
pub mod error;
pub mod forward;
pub mod headers;
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub mod http;
pub mod inbox;
pub mod metrics;
pub mod model;
pub mod pipeline;
pub mod presence;
pub mod sockets;
pub mod store;
pub mod stream_id;
#[cfg(any(test, feature = "test-util"))]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub mod testing;
pub mod tier;

pub use change::{ChangeEvent, ChangeFeed, ChangeSource};
pub use conversation::ConversationStore;
pub use dedup::EventStore;
pub use error::Cause;
pub use forward::{Delivery, Forwarder};
pub use inbox::InboxStore;
pub use model::{ChatMessage, Notification};
pub use store::MessageStore;
pub use tier::Tier;

#[cfg(all(feature = "http", feature = "ws"))]
pub use app::{Auth, ChatApp};
