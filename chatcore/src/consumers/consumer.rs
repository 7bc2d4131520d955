//! Extra consumers of a node, and keys kept apart between consumers of the same events.

use std::sync::Arc;

use crate::change::{ChangeEvent, ChangeSource};
use crate::dedup::DedupConfig;
use crate::forward::Forwarder;
use crate::metrics::DropReason;
use crate::pipeline::{EventHandler, PipelineConfig, Plan, Resolved};
use futures::future::BoxFuture;

/// An extra consumer of a node: a change feed and the handler that turns its events into
/// deliveries (commerce, a team's own documents, the e-mail consumer). By default it runs with
/// the [`NotificationsConfig`](super::NotificationsConfig) settings and delivers through the node's forwarder; both can be
/// its own ([`Consumer::with_forwarder`], [`Consumer::with_settings`]).
#[derive(Clone)]
pub struct Consumer {
    /// Name in metrics and logs (`chatcore_events_total{consumer=...}`).
    pub name: String,
    /// Its change feed (its own consumer group or change stream).
    pub source: Arc<dyn ChangeSource>,
    /// What its events become.
    pub handler: Arc<dyn EventHandler>,
    /// Where it delivers instead of the node's forwarder (e.g. an e-mail forwarder).
    pub forwarder: Option<Arc<dyn Forwarder>>,
    /// Its own retry, failure policy and idempotency instead of [`NotificationsConfig`](super::NotificationsConfig)'s
    /// (e.g. the e-mail consumer's 10 retries, dead letters and 24 h TTL).
    pub settings: Option<(PipelineConfig, DedupConfig)>,
}

impl Consumer {
    /// `handler` over `source`, with the notification consumers' settings and the node's
    /// forwarder.
    pub fn new(
        name: impl Into<String>,
        source: Arc<dyn ChangeSource>,
        handler: Arc<dyn EventHandler>,
    ) -> Self {
        Self {
            name: name.into(),
            source,
            handler,
            forwarder: None,
            settings: None,
        }
    }

    /// Delivers through `forwarder` instead of the node's.
    pub fn with_forwarder(mut self, forwarder: Arc<dyn Forwarder>) -> Self {
        self.forwarder = Some(forwarder);
        self
    }

    /// Runs with its own pipeline and idempotency settings (the pipeline's name is replaced by
    /// the consumer's).
    pub fn with_settings(mut self, pipeline: PipelineConfig, dedup: DedupConfig) -> Self {
        self.settings = Some((pipeline, dedup));
        self
    }
}

/// Prefixes a handler's idempotency keys, so two consumers of the same events sharing an event
/// store (the chat and the notification consumer of one message) do not take each other's work
/// for duplicates.
#[derive(Debug, Clone)]
pub struct KeyPrefixed<H> {
    prefix: String,
    inner: H,
}

impl<H> KeyPrefixed<H> {
    /// Keys of `inner` become `{prefix}{key}`.
    pub fn new(prefix: impl Into<String>, inner: H) -> Self {
        Self {
            prefix: prefix.into(),
            inner,
        }
    }
}

impl<H: EventHandler> EventHandler for KeyPrefixed<H> {
    fn plan(&self, event: &ChangeEvent) -> Result<Plan, DropReason> {
        let mut plan = self.inner.plan(event)?;
        plan.event_key.insert_str(0, &self.prefix);
        Ok(plan)
    }

    fn resolve<'a>(&'a self, event: &'a ChangeEvent, plan: Plan) -> BoxFuture<'a, Resolved> {
        self.inner.resolve(event, plan)
    }
}
