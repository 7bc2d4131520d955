//! [`ChatAppBuilder`]: the one way to assemble a node.

use std::sync::Arc;

use crate::change::{ChangeFeed, ChangeSource};
use crate::consumers::CHAT_CONSUMER_GROUP;
use crate::consumers::{Consumer, NotificationStrategy, NOTIFICATIONS_GROUP_SUFFIX};
use crate::conversation::{ConversationStore, InMemoryConversations, VIEW_CONSUMER_GROUP};
use crate::dedup::{EventStore, InMemoryEventStore};
use crate::forward::{Forwarder, StreamCloser};
use crate::http::ReadinessCheck;
use crate::inbox::{InMemoryInbox, InboxStore};
use crate::metrics::Metrics;
use crate::store::{InMemoryMessageStore, MessageStore};

use super::node::{ChatApp, NodeParts};
use super::{AppConfig, Auth, BuildError};

/// A wrapper around the pipeline's forwarder, see [`ChatAppBuilder::layer_forwarder`].
pub type ForwarderLayer = Arc<dyn Fn(Arc<dyn Forwarder>) -> Arc<dyn Forwarder> + Send + Sync>;

/// Assembles a [`ChatApp`]; made by [`ChatApp::builder`].
///
/// Every part has an embedded default (the in-memory store and its feed, the in-memory event
/// store and inbox, delivery to the node's own tiers) except authentication, which must be
/// chosen. [`build`](Self::build) refuses parts that do not fit together.
///
/// ```
/// use chatcore::app::{Auth, ChatApp, NotificationStrategy};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), chatcore::app::BuildError> {
/// let app = ChatApp::builder()
///     .auth(Auth::disabled())
///     .strategy(NotificationStrategy::Separate)
///     .build()
///     .await?;
/// # drop(app);
/// # Ok(())
/// # }
/// ```
#[must_use = "a builder does nothing until .build() is awaited"]
pub struct ChatAppBuilder {
    store: Option<Arc<dyn MessageStore>>,
    feed: Option<Arc<dyn ChangeFeed>>,
    event_store: Option<Arc<dyn EventStore>>,
    inbox: Option<Arc<dyn InboxStore>>,
    conversations: Option<Arc<dyn ConversationStore>>,
    auth: Option<Auth>,
    config: AppConfig,
    group: String,
    consumers: Vec<Consumer>,
    forwarder: Option<(Arc<dyn Forwarder>, Arc<dyn StreamCloser>)>,
    forwarder_layer: Option<ForwarderLayer>,
    readiness: Vec<(String, ReadinessCheck)>,
    metrics: Option<Arc<Metrics>>,
}

impl std::fmt::Debug for ChatAppBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatAppBuilder")
            .field("auth", &self.auth)
            .field("config", &self.config)
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

impl Default for ChatAppBuilder {
    fn default() -> Self {
        Self {
            store: None,
            feed: None,
            event_store: None,
            inbox: None,
            conversations: None,
            auth: None,
            config: AppConfig::default(),
            group: CHAT_CONSUMER_GROUP.to_owned(),
            consumers: Vec::new(),
            forwarder: None,
            forwarder_layer: None,
            readiness: Vec::new(),
            metrics: None,
        }
    }
}

impl ChatAppBuilder {
    /// A message store together with its own change feed (the in-memory store, SQLite, a
    /// MongoDB store read through its change stream).
    pub fn store<S>(mut self, store: Arc<S>) -> Self
    where
        S: MessageStore + ChangeFeed + 'static,
    {
        self.store = Some(store.clone());
        self.feed = Some(store);
        self
    }

    /// The message store, when its change feed is another component (a Kafka topic written by
    /// CDC): give that with [`change_feed`](Self::change_feed), or the build is refused.
    pub fn message_store(mut self, store: Arc<dyn MessageStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// The change feed of the message store, when it is not the store itself.
    pub fn change_feed(mut self, feed: Arc<dyn ChangeFeed>) -> Self {
        self.feed = Some(feed);
        self
    }

    /// Idempotency and throttle windows (in memory by default).
    pub fn event_store(mut self, event_store: Arc<dyn EventStore>) -> Self {
        self.event_store = Some(event_store);
        self
    }

    /// The users' notification inboxes (in memory by default).
    pub fn inbox(mut self, inbox: Arc<dyn InboxStore>) -> Self {
        self.inbox = Some(inbox);
        self
    }

    /// Groups, read markers and the conversation list (in memory by default). Give the one of
    /// the message store's backend, so both survive a restart together.
    pub fn conversations(mut self, conversations: Arc<dyn ConversationStore>) -> Self {
        self.conversations = Some(conversations);
        self
    }

    /// Authentication of the client routes: required.
    pub fn auth(mut self, auth: Auth) -> Self {
        self.auth = Some(auth);
        self
    }

    /// Every setting at once.
    pub fn config(mut self, config: AppConfig) -> Self {
        self.config = config;
        self
    }

    /// How chat notifications are delivered.
    pub fn strategy(mut self, strategy: NotificationStrategy) -> Self {
        self.config.strategy = strategy;
        self
    }

    /// The chat consumer's group on the change feed (`chat-change-handler` by default); the
    /// notification consumer reads as `<group>-notifications`.
    pub fn consumer_group(mut self, group: impl Into<String>) -> Self {
        self.group = group.into();
        self
    }

    /// Adds a consumer of other documents (commerce, a team's own), delivered through the
    /// node's forwarder unless it has its own.
    pub fn consumer(mut self, consumer: Consumer) -> Self {
        self.consumers.push(consumer);
        self
    }

    /// Delivers through `tiers` (remote tiers, e.g. the HTTP forwarder) instead of the node's
    /// own, and closes conversations there when delivery gives up.
    pub fn forwarder<T>(mut self, tiers: Arc<T>) -> Self
    where
        T: Forwarder + StreamCloser + 'static,
    {
        self.forwarder = Some((tiers.clone(), tiers));
        self
    }

    /// Wraps whichever forwarder the pipeline uses (a layer, in tower's sense): auditing, extra
    /// targets, rate limits.
    ///
    /// ```
    /// use chatcore::app::{Auth, ChatApp};
    ///
    /// let builder = ChatApp::builder()
    ///     .auth(Auth::disabled())
    ///     .layer_forwarder(|inner| inner /* wrap it here */);
    /// # let _ = builder;
    /// ```
    pub fn layer_forwarder(
        mut self,
        layer: impl Fn(Arc<dyn Forwarder>) -> Arc<dyn Forwarder> + Send + Sync + 'static,
    ) -> Self {
        self.forwarder_layer = Some(Arc::new(layer));
        self
    }

    /// Adds a `/readyz` probe (the store's and the inbox's are always there).
    pub fn readiness(mut self, name: impl Into<String>, check: ReadinessCheck) -> Self {
        self.readiness.push((name.into(), check));
        self
    }

    /// Records into `metrics` (shared with parts outside the node) instead of its own.
    pub fn metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Checks the parts, opens the consumer groups the strategy needs and spawns the change
    /// handler on the current tokio runtime.
    pub async fn build(self) -> Result<ChatApp, BuildError> {
        let auth = self.auth.ok_or(BuildError::AuthNotChosen)?;
        let (store, feed): (Arc<dyn MessageStore>, Arc<dyn ChangeFeed>) =
            match (self.store, self.feed) {
                (Some(store), Some(feed)) => (store, feed),
                (None, None) => {
                    let store = Arc::new(InMemoryMessageStore::new());
                    (store.clone(), store)
                }
                (Some(_), None) => return Err(BuildError::StoreWithoutFeed),
                (None, Some(_)) => return Err(BuildError::FeedWithoutStore),
            };
        let chat_source = open(feed.as_ref(), &self.group).await?;
        let notification_source = match self.config.strategy.has_notification_consumer() {
            true => {
                let group = format!("{}{NOTIFICATIONS_GROUP_SUFFIX}", self.group);
                Some(open(feed.as_ref(), &group).await?)
            }
            false => None,
        };
        let view_source = open(
            feed.as_ref(),
            &format!("{}-{VIEW_CONSUMER_GROUP}", self.group),
        )
        .await?;
        Ok(ChatApp::start(NodeParts {
            store,
            chat_source,
            notification_source,
            view_source,
            conversations: self
                .conversations
                .unwrap_or_else(|| Arc::new(InMemoryConversations::new())),
            event_store: self
                .event_store
                .unwrap_or_else(|| Arc::new(InMemoryEventStore::new())),
            inbox: self.inbox.unwrap_or_else(|| Arc::new(InMemoryInbox::new())),
            auth,
            config: self.config,
            consumers: self.consumers,
            forwarder: self.forwarder,
            forwarder_layer: self.forwarder_layer,
            readiness: self.readiness,
            metrics: self.metrics.unwrap_or_default(),
        }))
    }
}

async fn open(feed: &dyn ChangeFeed, group: &str) -> Result<Arc<dyn ChangeSource>, BuildError> {
    feed.subscribe(group)
        .await
        .map_err(|source| BuildError::Feed {
            group: group.to_owned(),
            source,
        })
}
