//! The delivery pipeline: change feed → decode → claim → concurrent forward with retry →
//! failure policy → complete the claim → acknowledge the source.
//!
//! Events are spread over `lanes` worker tasks by their lane key (the `stream_id` for chat), so
//! conversations proceed concurrently while each conversation is processed strictly in order. An
//! event is acknowledged only once it is done: delivered, dropped as a duplicate or undecodable, or
//! its failure policy ran. On shutdown an event still retrying is abandoned unacknowledged and its
//! claim released, so the next consumer delivers it.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use futures::future::{join_all, BoxFuture};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::change::{ChangeEvent, ChangeSource, Op};
use crate::conversation::view::members_of;
use crate::conversation::ConversationStore;
use crate::dedup::{Admission, ClaimToken, Deduplicator};
use crate::forward::{Delivery, Forwarder, StreamCloser};
use crate::metrics::{DropReason, Metrics, Outcome};
use crate::model::{ChatMessage, Notification, DEFAULT_MAX_CONTENT_BYTES};
use crate::store::CHAT_COLLECTION;

/// Exponential backoff between delivery attempts (`MESSAGE_RETRY_*`).
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts after the first (`MESSAGE_RETRY_MAX_RETRIES`, 5).
    pub max_retries: u32,
    /// Wait before the first retry (`MESSAGE_RETRY_INITIAL_INTERVAL`, 100ms).
    pub initial_interval: Duration,
    /// Upper bound of any wait (`MESSAGE_RETRY_MAX_INTERVAL`, 30s).
    pub max_interval: Duration,
    /// Growth factor between waits (`MESSAGE_RETRY_MULTIPLIER`, 2.0).
    pub multiplier: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 5,
            initial_interval: Duration::from_millis(100),
            max_interval: Duration::from_secs(30),
            multiplier: 2.0,
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `retry` (0-based): `initial × multiplier^retry`, capped.
    ///
    /// ```
    /// use chatcore::pipeline::RetryPolicy;
    /// use std::time::Duration;
    /// let policy = RetryPolicy::default();
    /// assert_eq!(policy.delay(0), Duration::from_millis(100));
    /// assert_eq!(policy.delay(3), Duration::from_millis(800));
    /// assert_eq!(policy.delay(30), Duration::from_secs(30));
    /// ```
    pub fn delay(&self, retry: u32) -> Duration {
        let factor = self.multiplier.max(1.0).powi(retry.min(64) as i32);
        let millis = self.initial_interval.as_secs_f64() * factor;
        Duration::from_secs_f64(millis.min(self.max_interval.as_secs_f64()))
    }
}

/// What happens to an event whose retries ran out.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum FailurePolicy {
    /// Close the conversation's sockets so clients fall back to history (the default).
    #[default]
    CloseStream,
    /// Log and move on.
    LogAndSkip,
    /// Hand the event to a dead-letter sink (the e-mail consumer's policy). The event is
    /// acknowledged only once the sink has it; until then the pipeline keeps trying, with
    /// backoff, and on shutdown leaves it unacknowledged for the next consumer.
    DeadLetter(crate::dead_letter::DeadLetterTarget),
}

/// What an event asks the pipeline to do.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The idempotency key claimed in the event store.
    pub event_key: String,
    /// Events with the same lane key are processed in order (the `stream_id` for chat).
    pub lane_key: String,
    /// Deliveries to run concurrently.
    pub deliveries: Vec<Delivery>,
}

/// Turns change events into deliveries: the transform step between a source and the forwarders.
pub trait EventHandler: Send + Sync {
    /// Plans the work for `event`, or says why it is dropped. Called in feed order, so it must
    /// not wait on anything.
    fn plan(&self, event: &ChangeEvent) -> Result<Plan, DropReason>;

    /// Completes a plan with what needs a lookup (a group message's recipients), once the event
    /// is claimed and on its lane. An error is retried with backoff; the provided
    /// implementation returns the plan as it is.
    fn resolve<'a>(&'a self, event: &'a ChangeEvent, plan: Plan) -> BoxFuture<'a, Resolved> {
        let _ = event;
        Box::pin(async move { Ok(plan) })
    }
}

/// What [`EventHandler::resolve`] gives back: the completed plan, or why it cannot be completed
/// yet.
pub type Resolved = Result<Plan, crate::error::Cause>;

/// Chat messages inserted into the `chat` collection go to the chat tier (by `stream_id`) and, as
/// a `chat_notification`, to the receiver's notification tier (for a group message: to every
/// member but the sender, looked up in [`ChatHandler::members`]).
#[derive(Clone)]
pub struct ChatHandler {
    /// Forward to the chat tier.
    pub forward_chat: bool,
    /// Notify the receiver on the notification tier.
    pub notify_receiver: bool,
    /// Content limit applied to decoded messages.
    pub max_content_bytes: usize,
    /// Where a group's members are found; without it group messages notify nobody.
    pub members: Option<Arc<dyn ConversationStore>>,
}

impl std::fmt::Debug for ChatHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatHandler")
            .field("forward_chat", &self.forward_chat)
            .field("notify_receiver", &self.notify_receiver)
            .field("max_content_bytes", &self.max_content_bytes)
            .field("members", &self.members.is_some())
            .finish()
    }
}

impl Default for ChatHandler {
    fn default() -> Self {
        Self {
            forward_chat: true,
            notify_receiver: true,
            max_content_bytes: DEFAULT_MAX_CONTENT_BYTES,
            members: None,
        }
    }
}

impl ChatHandler {
    /// Decodes a chat message from an event's document.
    pub fn decode(&self, event: &ChangeEvent) -> Result<ChatMessage, DropReason> {
        let document = event.document.as_ref().ok_or(DropReason::InvalidFormat)?;
        // Deserialized from the borrowed tree: no copy of the whole document on the hot path.
        let message = ChatMessage::deserialize(document).map_err(|_| DropReason::InvalidFormat)?;
        message
            .check(self.max_content_bytes)
            .map_err(|_| DropReason::InvalidFormat)?;
        Ok(message)
    }
}

impl EventHandler for ChatHandler {
    fn resolve<'a>(&'a self, event: &'a ChangeEvent, plan: Plan) -> BoxFuture<'a, Resolved> {
        // Only a group message (no `receiver_id`) needs the lookup; a direct one is not decoded
        // a second time.
        let group = event.document.as_ref().is_some_and(|document| {
            document
                .get("receiver_id")
                .is_none_or(serde_json::Value::is_null)
        });
        match self.notify_receiver && self.members.is_some() && group {
            true => Box::pin(self.notify_members(event, plan)),
            false => Box::pin(async move { Ok(plan) }),
        }
    }

    fn plan(&self, event: &ChangeEvent) -> Result<Plan, DropReason> {
        if event.op != Op::Create || event.collection != CHAT_COLLECTION {
            return Err(DropReason::IgnoredOp);
        }
        let message = self.decode(event)?;
        let mut deliveries = Vec::with_capacity(2);
        if let (true, Some(receiver)) = (self.notify_receiver, &message.receiver_id) {
            deliveries.push(Delivery::Notify {
                user_id: receiver.clone(),
                notification: Notification::chat(&message),
            });
        }
        let event_key = message.event_key();
        let lane_key = message.stream_id.clone();
        if self.forward_chat {
            deliveries.push(Delivery::Chat(message));
        }
        Ok(Plan {
            event_key,
            lane_key,
            deliveries,
        })
    }
}

impl ChatHandler {
    /// Adds a chat notification for every member of a group message's group but its sender.
    async fn notify_members(&self, event: &ChangeEvent, mut plan: Plan) -> Resolved {
        let Ok(message) = self.decode(event) else {
            return Ok(plan);
        };
        let Some(conversations) = self.members.as_ref().filter(|_| message.is_group()) else {
            return Ok(plan);
        };
        let members = members_of(conversations.as_ref(), &message)
            .await
            .map_err(crate::error::Cause::new)?;
        let Some(members) = members else {
            tracing::warn!(stream_id = %message.stream_id, message_id = %message.message_id, "message of an unknown group: no chat notifications");
            return Ok(plan);
        };
        let notification = Notification::chat(&message);
        for member in members.into_iter().filter(|m| *m != message.sender_id) {
            plan.deliveries.push(Delivery::Notify {
                user_id: member,
                notification: notification.clone(),
            });
        }
        Ok(plan)
    }
}

/// Settings of a [`Pipeline`].
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// Consumer name, used in metrics and logs (e.g. `chat`).
    pub name: String,
    /// Worker lanes; events of one lane key always share a lane.
    pub lanes: usize,
    /// Events queued per lane before the pipeline stops reading.
    pub lane_queue: usize,
    /// Backoff between attempts.
    pub retry: RetryPolicy,
    /// What to do with chat deliveries whose retries ran out.
    pub failure: FailurePolicy,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            name: "chat".to_owned(),
            lanes: 32,
            lane_queue: 64,
            retry: RetryPolicy::default(),
            failure: FailurePolicy::default(),
        }
    }
}

/// A consumer: one change source, one handler, one event store, one forwarder.
pub struct Pipeline {
    shared: Arc<Shared>,
}

struct Shared {
    source: Arc<dyn ChangeSource>,
    handler: Arc<dyn EventHandler>,
    dedup: Deduplicator,
    forwarder: Arc<dyn Forwarder>,
    closer: Option<Arc<dyn StreamCloser>>,
    config: PipelineConfig,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

type Planned = Result<Plan, DropReason>;

enum Attempts {
    Delivered,
    /// The deliveries still failing, and the last error.
    Exhausted(Vec<Delivery>, String),
    Interrupted,
}

impl Pipeline {
    /// Assembles a consumer.
    pub fn new(
        source: Arc<dyn ChangeSource>,
        handler: Arc<dyn EventHandler>,
        dedup: Deduplicator,
        forwarder: Arc<dyn Forwarder>,
        config: PipelineConfig,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                source,
                handler,
                dedup,
                forwarder,
                closer: None,
                config,
                metrics,
            }),
        }
    }

    /// Closes the conversation's chat sessions through `closer` when the failure policy is
    /// [`FailurePolicy::CloseStream`] (without one, exhausted chat deliveries are logged and
    /// skipped).
    pub fn with_stream_closer(mut self, closer: Arc<dyn StreamCloser>) -> Self {
        // A pipeline is not shared before it runs, so this always succeeds.
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.closer = Some(closer);
        }
        self
    }

    /// Consumes the source until it ends or `shutdown` is cancelled, then lets every lane finish
    /// the event it is on (an event still retrying is abandoned unacknowledged).
    pub async fn run(self, shutdown: CancellationToken) {
        let lanes = self.shared.config.lanes.max(1);
        let mut workers = JoinSet::new();
        let mut senders = Vec::with_capacity(lanes);
        for _ in 0..lanes {
            let (tx, rx) = mpsc::channel(self.shared.config.lane_queue.max(1));
            senders.push(tx);
            workers.spawn(lane(Arc::clone(&self.shared), rx, shutdown.clone()));
        }
        let mut source_failures = 0;
        loop {
            let next = tokio::select! {
                () = shutdown.cancelled() => break,
                next = self.shared.source.next() => next,
            };
            match next {
                Ok(Some(event)) => {
                    source_failures = 0;
                    let planned = match &event.malformed {
                        Some(_) => Err(DropReason::InvalidFormat),
                        None => self.shared.handler.plan(&event),
                    };
                    let index = self.shared.lane_of(&event, &planned);
                    let send = senders[index].send((event, planned));
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        sent = send => if sent.is_err() { break },
                    }
                }
                Ok(None) => break,
                Err(error) => {
                    let wait = self.shared.config.retry.delay(source_failures);
                    source_failures += 1;
                    tracing::warn!(consumer = %self.shared.config.name, %error, ?wait, "change source failed; retrying");
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
        drop(senders);
        while workers.join_next().await.is_some() {}
        self.shared.source.close().await;
    }
}

/// Gives each notification without a source key the event's key, so the inbox keeps one entry
/// per event and recipient however often the event is redelivered or its forward retried.
fn keyed(mut deliveries: Vec<Delivery>, event_key: &str) -> Vec<Delivery> {
    for delivery in &mut deliveries {
        if let Delivery::Notify { notification, .. } = delivery {
            notification
                .source_key
                .get_or_insert_with(|| event_key.to_owned());
        }
    }
    deliveries
}

impl Shared {
    fn lane_of(&self, event: &ChangeEvent, planned: &Planned) -> usize {
        let key = planned.as_ref().map_or(&event.key, |plan| &plan.lane_key);
        let mut hasher = DefaultHasher::new();
        key.hash(&mut hasher);
        (hasher.finish() % self.config.lanes.max(1) as u64) as usize
    }

    fn name(&self) -> &str {
        &self.config.name
    }

    async fn process(&self, event: ChangeEvent, planned: Planned, shutdown: &CancellationToken) {
        let plan = match planned {
            Ok(plan) => plan,
            Err(reason) => {
                tracing::debug!(consumer = %self.name(), ?reason, key = %event.key, malformed = ?event.malformed, "event dropped");
                self.metrics.drop_event(self.name(), reason);
                self.acknowledge(&event).await;
                return;
            }
        };
        let span = tracing::info_span!("event", consumer = %self.name(), event_key = %plan.event_key, stream_id = %plan.lane_key);
        let event_key = plan.event_key.clone();
        async {
            let Some(token) = self.admit(&plan.event_key, shutdown).await else {
                return;
            };
            let Some(token) = token else {
                self.metrics.drop_event(self.name(), DropReason::Duplicate);
                self.acknowledge(&event).await;
                return;
            };
            let Some(plan) = self.resolve(&event, plan, shutdown).await else {
                self.dedup.abandon(&event_key, token.as_ref()).await;
                return;
            };
            let deliveries = keyed(plan.deliveries, &plan.event_key);
            match self.deliver(deliveries, shutdown).await {
                Attempts::Delivered => self.metrics.event(self.name(), Outcome::Success),
                Attempts::Exhausted(failed, error) => {
                    self.metrics.event(self.name(), Outcome::Failed);
                    if !self.failover(&event, &failed, &error, shutdown).await {
                        self.dedup.abandon(&plan.event_key, token.as_ref()).await;
                        return;
                    }
                }
                Attempts::Interrupted => {
                    self.dedup.abandon(&plan.event_key, token.as_ref()).await;
                    return;
                }
            }
            self.dedup.finish(&plan.event_key, token.as_ref()).await;
            self.acknowledge(&event).await;
        }
        .instrument(span)
        .await
    }

    /// Completes the plan ([`EventHandler::resolve`]), retrying with backoff; `None` when
    /// shutting down first.
    async fn resolve(
        &self,
        event: &ChangeEvent,
        plan: Plan,
        shutdown: &CancellationToken,
    ) -> Option<Plan> {
        let mut waits = 0;
        loop {
            let error = match self.handler.resolve(event, plan.clone()).await {
                Ok(plan) => return Some(plan),
                Err(error) => error,
            };
            let wait = self.config.retry.delay(waits);
            waits += 1;
            tracing::warn!(%error, ?wait, "cannot complete the event's deliveries; retrying");
            tokio::select! {
                () = shutdown.cancelled() => return None,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Claims the event key. `None`: shutting down; `Some(None)`: duplicate;
    /// `Some(Some(token))`: process (token absent when fail-open without a store).
    async fn admit(
        &self,
        key: &str,
        shutdown: &CancellationToken,
    ) -> Option<Option<Option<ClaimToken>>> {
        let mut waits = 0;
        loop {
            let wait = match self.dedup.admit(key).await {
                Ok(Admission::Process(token)) => return Some(Some(token)),
                Ok(Admission::Duplicate) => return Some(None),
                Ok(Admission::Busy) => self.config.retry.delay(waits),
                Err(refused) => {
                    tracing::warn!(%refused, "event not admitted; waiting");
                    self.config.retry.delay(waits)
                }
            };
            waits += 1;
            tokio::select! {
                () = shutdown.cancelled() => return None,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    async fn deliver(&self, mut pending: Vec<Delivery>, shutdown: &CancellationToken) -> Attempts {
        let retry = &self.config.retry;
        let mut last_error = String::new();
        for attempt in 0..=retry.max_retries {
            if attempt > 0 {
                self.metrics.retry(self.name());
                tokio::select! {
                    () = shutdown.cancelled() => return Attempts::Interrupted,
                    () = tokio::time::sleep(retry.delay(attempt - 1)) => {}
                }
            }
            (pending, last_error) = self.attempt(pending, attempt).await;
            if pending.is_empty() {
                return Attempts::Delivered;
            }
        }
        Attempts::Exhausted(pending, last_error)
    }

    /// Runs every pending delivery concurrently; returns those that failed and the last error.
    async fn attempt(&self, pending: Vec<Delivery>, attempt: u32) -> (Vec<Delivery>, String) {
        let results = join_all(pending.iter().map(|d| self.forwarder.forward(d))).await;
        let mut last_error = String::new();
        let failed = pending
            .into_iter()
            .zip(results)
            .filter_map(|(delivery, result)| match result {
                Ok(report) if report.is_complete() => None,
                Ok(report) => {
                    tracing::info!(attempt, tier = ?delivery.tier(), key = %delivery.routing_key(), delivered = report.delivered, failed = report.failed, "partial delivery");
                    last_error = format!(
                        "partial delivery: {} delivered, {} failed",
                        report.delivered, report.failed
                    );
                    Some(delivery)
                }
                Err(error) => {
                    tracing::info!(attempt, tier = ?delivery.tier(), key = %delivery.routing_key(), %error, "delivery failed");
                    last_error = error.to_string();
                    Some(delivery)
                }
            })
            .collect();
        (failed, last_error)
    }

    /// Runs the failure policy; false when shutdown interrupted it (the event stays
    /// unacknowledged).
    async fn failover(
        &self,
        event: &ChangeEvent,
        failed: &[Delivery],
        error: &str,
        shutdown: &CancellationToken,
    ) -> bool {
        self.metrics.failover(self.name());
        if let FailurePolicy::DeadLetter(target) = &self.config.failure {
            return self.dead_letter(target, event, error, shutdown).await;
        }
        for delivery in failed {
            match (delivery, &self.config.failure) {
                (Delivery::Chat(message), FailurePolicy::CloseStream) => {
                    let reason = "delivery failed: fetch history and reconnect";
                    let Some(closer) = &self.closer else {
                        tracing::error!(message_id = %message.message_id, "retries exhausted and no stream closer is configured: skipped");
                        continue;
                    };
                    match closer.close_stream(&message.stream_id, reason).await {
                        Ok(closed) => {
                            tracing::error!(message_id = %message.message_id, closed, "retries exhausted: closed the stream's sockets")
                        }
                        Err(error) => {
                            tracing::error!(message_id = %message.message_id, %error, "retries exhausted and closing the stream failed; clients recover on their next reconnect")
                        }
                    }
                }
                (delivery, _) => {
                    tracing::error!(tier = ?delivery.tier(), key = %delivery.routing_key(), "retries exhausted: skipped")
                }
            }
        }
        true
    }

    /// Writes a dead letter, trying again with backoff until the sink has it; false when
    /// shutdown came first.
    async fn dead_letter(
        &self,
        target: &crate::dead_letter::DeadLetterTarget,
        event: &ChangeEvent,
        error: &str,
        shutdown: &CancellationToken,
    ) -> bool {
        let failed = crate::dead_letter::FailedEvent {
            consumer: self.name(),
            event,
            error,
            attempts: self.config.retry.max_retries + 1,
        };
        let mut failures = 0;
        loop {
            match target.0.dead_letter(&failed).await {
                Ok(()) => {
                    tracing::error!(key = %event.key, %error, "retries exhausted: dead-lettered");
                    return true;
                }
                Err(sink_error) => {
                    let wait = self.config.retry.delay(failures);
                    failures += 1;
                    tracing::warn!(%sink_error, ?wait, "dead letter not written; retrying");
                    tokio::select! {
                        () = shutdown.cancelled() => return false,
                        () = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }

    async fn acknowledge(&self, event: &ChangeEvent) {
        if let Err(error) = self.source.done(&event.position).await {
            tracing::warn!(consumer = %self.name(), %error, "could not acknowledge event; it may be redelivered");
        }
    }
}

async fn lane(
    shared: Arc<Shared>,
    mut events: mpsc::Receiver<(ChangeEvent, Planned)>,
    shutdown: CancellationToken,
) {
    while let Some((event, planned)) = events.recv().await {
        if shutdown.is_cancelled() {
            break;
        }
        shared.process(event, planned, &shutdown).await;
    }
}

#[cfg(test)]
mod tests;
