//! [`InboxForwarder`]: the layer in front of the notification tier's sockets that keeps every
//! notification in its recipient's inbox before pushing it.
//!
//! Why here: every path to a notification socket goes through a [`Forwarder`] on the tier that
//! holds the sockets — the in-process forwarder of an embedded node, and the internal push
//! routes of `notifications-ws`, which the change handler's [`super::HttpForwarder`] (and any
//! application) calls. Wrapping that one forwarder covers chat notifications under every
//! strategy, commerce and custom rules, and the push routes, and it sits inside any throttle,
//! so the inbox holds exactly what the throttle lets through.

use std::sync::Arc;

use async_trait::async_trait;

use super::{Delivery, DeliveryReport, ForwardError, Forwarder};
use crate::inbox::InboxStore;
use crate::metrics::Metrics;

/// Keeps each notification in the inbox, then forwards it carrying its `notification_id`.
/// Idempotent: a redelivered or retried notification with the same
/// [`crate::model::Notification::source_key`] is the same entry and the same frame (sessions
/// send a frame id once). A failed write is a [`ForwardError::Inbox`]: nothing is pushed and the
/// pipeline retries.
pub struct InboxForwarder {
    inner: Arc<dyn Forwarder>,
    inbox: Arc<dyn InboxStore>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for InboxForwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboxForwarder").finish_non_exhaustive()
    }
}

impl InboxForwarder {
    /// Keeps `inner`'s notifications in `inbox`, counting new entries in `metrics`.
    pub fn new(
        inner: Arc<dyn Forwarder>,
        inbox: Arc<dyn InboxStore>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            inner,
            inbox,
            metrics,
        }
    }
}

#[async_trait]
impl Forwarder for InboxForwarder {
    async fn forward(&self, delivery: &Delivery) -> Result<DeliveryReport, ForwardError> {
        let Delivery::Notify {
            user_id,
            notification,
        } = delivery
        else {
            return self.inner.forward(delivery).await;
        };
        let recorded = self
            .inbox
            .record(user_id, notification)
            .await
            .map_err(|e| ForwardError::Inbox(e.to_string()))?;
        if recorded.created {
            self.metrics.inbox_written(1);
        }
        tracing::debug!(%user_id, notification_id = %recorded.entry.notification_id, created = recorded.created, "notification kept");
        let kept = Delivery::Notify {
            user_id: user_id.clone(),
            notification: recorded.entry.envelope(),
        };
        self.inner.forward(&kept).await
    }
}
