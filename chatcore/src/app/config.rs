//! The settings of a node.

use crate::consumers::{DeliveryConfig, NotificationStrategy, NotificationsConfig};
use crate::dedup::DedupConfig;
use crate::http::Limits;
use crate::pipeline::PipelineConfig;
use crate::sockets::SessionConfig;

/// Settings of a node; every field has a default.
///
/// ```
/// use chatcore::app::{AppConfig, NotificationStrategy};
///
/// let config = AppConfig {
///     strategy: NotificationStrategy::Separate,
///     ..AppConfig::default()
/// };
/// # let _ = config;
/// ```
#[derive(Debug, Clone, Default)]
pub struct AppConfig {
    /// Client limits.
    pub limits: Limits,
    /// Websocket timing.
    pub session: SessionConfig,
    /// The change handler.
    pub pipeline: PipelineConfig,
    /// Idempotency TTLs and failure policy.
    pub dedup: DedupConfig,
    /// How chat notifications are delivered.
    pub strategy: NotificationStrategy,
    /// Settings of the notification consumers.
    pub notifications: NotificationsConfig,
}

impl AppConfig {
    /// What the node's consumers run with.
    pub fn delivery(&self) -> DeliveryConfig {
        DeliveryConfig {
            strategy: self.strategy,
            pipeline: self.pipeline.clone(),
            dedup: self.dedup.clone(),
            notifications: self.notifications.clone(),
            max_content_bytes: self.limits.max_content_bytes,
        }
    }
}
