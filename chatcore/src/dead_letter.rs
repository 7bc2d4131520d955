//! Dead letters: where a consumer whose failure policy is
//! [`crate::pipeline::FailurePolicy::DeadLetter`] puts an event whose retries ran out. The Kafka
//! implementation (a dead-letter topic with the original topic, partition, offset, error and
//! attempts as headers) lives in `chatcore-kafka`; [`InMemoryDeadLetters`] keeps them in memory.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::change::ChangeEvent;

/// An event whose retries ran out.
#[derive(Debug, Clone)]
pub struct FailedEvent<'a> {
    /// The consumer that gave up, e.g. `email`.
    pub consumer: &'a str,
    /// The event, as read from the change feed.
    pub event: &'a ChangeEvent,
    /// The last error.
    pub error: &'a str,
    /// Attempts made.
    pub attempts: u32,
}

/// A dead letter could not be written; the pipeline tries again and does not acknowledge the
/// event meanwhile.
#[derive(Debug, Clone, thiserror::Error)]
#[error("dead letter not written: {0}")]
pub struct DeadLetterError(#[source] pub crate::error::Cause);

/// Keeps events that exhausted their retries.
#[async_trait]
pub trait DeadLetterSink: Send + Sync {
    /// Stores one failed event durably before returning `Ok`.
    async fn dead_letter(&self, failed: &FailedEvent<'_>) -> Result<(), DeadLetterError>;
}

/// A shareable sink, compared by identity: the payload of
/// [`crate::pipeline::FailurePolicy::DeadLetter`].
#[derive(Clone)]
pub struct DeadLetterTarget(pub Arc<dyn DeadLetterSink>);

impl DeadLetterTarget {
    /// Wraps `sink`.
    pub fn new(sink: Arc<dyn DeadLetterSink>) -> Self {
        Self(sink)
    }
}

impl std::fmt::Debug for DeadLetterTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeadLetterTarget")
    }
}

impl PartialEq for DeadLetterTarget {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for DeadLetterTarget {}

/// A dead letter kept in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredDeadLetter {
    /// The consumer that gave up.
    pub consumer: String,
    /// The event.
    pub event: ChangeEvent,
    /// The last error.
    pub error: String,
    /// Attempts made.
    pub attempts: u32,
}

/// Dead letters in memory: the embedded default and a test double.
#[derive(Debug, Default)]
pub struct InMemoryDeadLetters {
    letters: Mutex<Vec<StoredDeadLetter>>,
}

impl InMemoryDeadLetters {
    /// None yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every dead letter so far, oldest first.
    pub fn letters(&self) -> Vec<StoredDeadLetter> {
        self.letters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[async_trait]
impl DeadLetterSink for InMemoryDeadLetters {
    async fn dead_letter(&self, failed: &FailedEvent<'_>) -> Result<(), DeadLetterError> {
        self.letters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(StoredDeadLetter {
                consumer: failed.consumer.to_owned(),
                event: failed.event.clone(),
                error: failed.error.to_owned(),
                attempts: failed.attempts,
            });
        Ok(())
    }
}
