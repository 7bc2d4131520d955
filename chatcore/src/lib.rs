//! # chatcore
//!
//! Real-time chat and notifications, written once to a store and delivered from its change feed.
//!
//! A message is validated ([`model`]) and stored ([`store`]); the store's change feed
//! ([`change`]) drives the delivery [`pipeline`], which claims each event in an idempotency
//! store ([`dedup`]), forwards it concurrently to the chat tier (by [`stream_id`]) and the
//! notification tier (by `user_id`) through a [`forward::Forwarder`], retries with exponential
//! backoff, and when retries run out closes the conversation's sockets ([`sockets`]) so clients
//! recover from the store. [`http`] exposes all of it as axum routers, [`auth`] guards the client
//! routes with JWT bearer tokens, and [`app`] assembles a whole node. Every trait has an in-memory implementation here; Kafka, MongoDB and Redis live in
//! their own crates.

#![warn(missing_docs)]

pub mod app;
pub mod auth;
pub mod change;
pub mod commerce;
pub mod config;
pub mod dead_letter;
pub mod debezium;
pub mod dedup;
pub mod email;
pub mod forward;
pub mod http;
pub mod metrics;
pub mod model;
pub mod pipeline;
pub mod presence;
pub mod rate_limit;
pub mod sockets;
pub mod store;
pub mod stream_id;
