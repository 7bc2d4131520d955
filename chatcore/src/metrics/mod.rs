//! Counters, labelled as the Go service chatcore replaces labelled them: events that succeeded, failed or were dropped (by
//! reason), deliveries per tier, retries, failovers, event-store outages, open sockets, stored
//! messages, e-mails and inbox traffic.
//!
//! Every part of the library records into one [`Metrics`] through its methods. With the
//! `prometheus` feature the counts are kept and [`Metrics::render`] gives the Prometheus text
//! format (metric names under the `chatcore_` prefix); without it recording costs nothing and
//! nothing is kept, so a crate that only implements a trait pays for no exporter.

mod labels;
mod recorder;

pub use labels::{
    ClientFrameOutcome, ConversationChange, DeliveryResult, DropReason, EmailResult, Outcome,
};
pub use recorder::Metrics;
