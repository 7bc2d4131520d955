//! Spawning the consumers of a strategy.

use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{Consumer, DeliveryConfig, KeyPrefixed, NotificationStrategy};
use crate::change::ChangeSource;
use crate::conversation::view::ActivityRecorder;
use crate::conversation::{ConversationStore, VIEW_CONSUMER_GROUP};
use crate::dedup::{DedupConfig, Deduplicator, EventStore};
use crate::forward::{Forwarder, StreamCloser, ThrottledForwarder};
use crate::metrics::Metrics;
use crate::pipeline::{ChatHandler, FailurePolicy, Pipeline, PipelineConfig, RetryPolicy};

/// The consumers a strategy runs, over sources opened by the caller: what a node's builder starts,
/// and what a change-handler service without websocket tiers starts by itself.
pub struct ConsumerSet {
    /// The chat consumer's feed.
    pub chat_source: Arc<dyn ChangeSource>,
    /// The notification consumer's feed (required by `separate` and `segregated`).
    pub notification_source: Option<Arc<dyn ChangeSource>>,
    /// Extra consumers (commerce, custom documents).
    pub consumers: Vec<Consumer>,
    /// Idempotency and throttle windows.
    pub event_store: Arc<dyn EventStore>,
    /// Where every consumer delivers.
    pub forwarder: Arc<dyn Forwarder>,
    /// Closes a conversation's chat sessions when the chat consumer gives up on a message
    /// (usually the same tiers the forwarder reaches).
    pub closer: Arc<dyn StreamCloser>,
    /// Groups and the conversation view: group messages notify every member, and with
    /// `view_source` the conversation list is kept up to date.
    pub conversations: Option<Arc<dyn ConversationStore>>,
    /// The conversation view consumer's feed (its own group, [`VIEW_CONSUMER_GROUP`]).
    pub view_source: Option<Arc<dyn ChangeSource>>,
}

impl ConsumerSet {
    /// Spawns the consumers of `strategy` on the current runtime; they stop when `shutdown` is
    /// cancelled. Without a notification source, `separate` and `segregated` fall back to
    /// `concurrent` (logged) rather than losing notifications.
    pub fn spawn(
        self,
        config: &DeliveryConfig,
        metrics: &Arc<Metrics>,
        shutdown: &CancellationToken,
    ) -> Vec<JoinHandle<()>> {
        let mut tasks = Vec::new();
        let mut run = |pipeline: Pipeline| tasks.push(tokio::spawn(pipeline.run(shutdown.clone())));
        let strategy = match (config.strategy, &self.notification_source) {
            (NotificationStrategy::Concurrent, _) | (_, Some(_)) => config.strategy,
            (other, None) => {
                tracing::error!(
                    ?other,
                    "no notification consumer feed: notifying from the chat consumer"
                );
                NotificationStrategy::Concurrent
            }
        };
        let chat_handler = ChatHandler {
            notify_receiver: strategy == NotificationStrategy::Concurrent,
            max_content_bytes: config.max_content_bytes,
            members: self.conversations.clone(),
            ..ChatHandler::default()
        };
        let dedup = |dedup: &DedupConfig| {
            Deduplicator::new(self.event_store.clone(), dedup.clone(), metrics.clone())
        };
        run(Pipeline::new(
            self.chat_source,
            Arc::new(chat_handler),
            dedup(&config.dedup),
            self.forwarder.clone(),
            config.pipeline.clone(),
            metrics.clone(),
        )
        .with_stream_closer(self.closer.clone()));
        if let Some(source) = self
            .notification_source
            .filter(|_| strategy.has_notification_consumer())
        {
            let (pipeline, dedup_config) = match strategy {
                NotificationStrategy::Segregated => (
                    config.notifications.pipeline.clone(),
                    &config.notifications.dedup,
                ),
                _ => (config.pipeline.clone(), &config.dedup),
            };
            let pipeline = PipelineConfig {
                name: "notifications".to_owned(),
                ..pipeline
            };
            let handler = KeyPrefixed::new(
                "notify:",
                ChatHandler {
                    forward_chat: false,
                    notify_receiver: true,
                    max_content_bytes: config.max_content_bytes,
                    members: self.conversations.clone(),
                },
            );
            let throttle = config.notifications.throttle_ttl;
            let forwarder: Arc<dyn Forwarder> = if throttle.is_zero() {
                self.forwarder.clone()
            } else {
                Arc::new(
                    ThrottledForwarder::new(
                        self.forwarder.clone(),
                        self.event_store.clone(),
                        throttle,
                    )
                    .counted(metrics.clone(), pipeline.name.clone()),
                )
            };
            run(Pipeline::new(
                source,
                Arc::new(handler),
                dedup(dedup_config),
                forwarder,
                pipeline,
                metrics.clone(),
            ));
        }
        if let (Some(source), Some(conversations)) = (self.view_source, &self.conversations) {
            let handler = KeyPrefixed::new(
                "view:",
                ChatHandler {
                    notify_receiver: false,
                    max_content_bytes: config.max_content_bytes,
                    ..ChatHandler::default()
                },
            );
            run(Pipeline::new(
                source,
                Arc::new(handler),
                dedup(&config.dedup),
                Arc::new(ActivityRecorder::new(conversations.clone())),
                // The view never skips a message: it retries (with backoff, capped) until its
                // store takes it, and on shutdown leaves the event for the next run.
                PipelineConfig {
                    name: VIEW_CONSUMER_GROUP.to_owned(),
                    retry: RetryPolicy {
                        max_retries: u32::MAX,
                        ..config.pipeline.retry.clone()
                    },
                    failure: FailurePolicy::LogAndSkip,
                    ..config.pipeline.clone()
                },
                metrics.clone(),
            ));
        }
        // Strategy `segregated`'s third group, the e-mail consumer, is one of these: a
        // `Consumer` with the e-mail forwarder and its own settings ([`crate::email`]).
        for consumer in self.consumers {
            let (pipeline, dedup_config) = consumer.settings.unwrap_or_else(|| {
                (
                    config.notifications.pipeline.clone(),
                    config.notifications.dedup.clone(),
                )
            });
            run(Pipeline::new(
                consumer.source,
                consumer.handler,
                dedup(&dedup_config),
                consumer.forwarder.unwrap_or_else(|| self.forwarder.clone()),
                PipelineConfig {
                    name: consumer.name,
                    ..pipeline
                },
                metrics.clone(),
            ));
        }
        tasks
    }
}
