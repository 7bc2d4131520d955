//! Checks and helpers for the tests of embedders and backend crates (feature `test-util`).
//!
//! Each suite runs every check an implementation of a trait must pass and panics with a message
//! naming the check that failed; the in-memory implementations pass them in this crate's own
//! tests, the backend crates run them against their real servers.

pub mod conversations;
pub mod inbox;
