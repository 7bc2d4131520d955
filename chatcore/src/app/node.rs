//! [`ChatApp`]: a running node, its routes and its shutdown.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::builder::{ChatAppBuilder, ForwarderLayer};
use super::{AppConfig, Auth, Serve};
use crate::change::ChangeSource;
use crate::consumers::{Consumer, ConsumerSet};
use crate::conversation::ConversationStore;
use crate::dedup::EventStore;
use crate::forward::{Forwarder, InProcessForwarder, InboxForwarder, StreamCloser};
use crate::http::{
    self, ChatTier, ChatTierState, ConversationsState, InternalState, NotificationTierState,
    OpsState, PersistenceState, ReadinessCheck,
};
use crate::inbox::InboxStore;
use crate::metrics::Metrics;
use crate::sockets::{
    CloseReason, LocalSocketRegistry, SocketQuota, SocketRegistry, SHUTDOWN_CLOSE_CODE,
};
use crate::store::MessageStore;
use crate::tier::Tier;

/// What the builder hands to [`ChatApp::start`], checked.
pub(super) struct NodeParts {
    pub(super) store: Arc<dyn MessageStore>,
    pub(super) chat_source: Arc<dyn ChangeSource>,
    pub(super) notification_source: Option<Arc<dyn ChangeSource>>,
    pub(super) view_source: Arc<dyn ChangeSource>,
    pub(super) conversations: Arc<dyn ConversationStore>,
    pub(super) event_store: Arc<dyn EventStore>,
    pub(super) inbox: Arc<dyn InboxStore>,
    pub(super) auth: Auth,
    pub(super) config: AppConfig,
    pub(super) consumers: Vec<Consumer>,
    pub(super) forwarder: Option<(Arc<dyn Forwarder>, Arc<dyn StreamCloser>)>,
    pub(super) forwarder_layer: Option<ForwarderLayer>,
    pub(super) readiness: Vec<(String, ReadinessCheck)>,
    pub(super) metrics: Arc<Metrics>,
}

/// A running node: its parts, its routes and its change handler.
///
/// ```no_run
/// use chatcore::app::{Auth, ChatApp};
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let app = ChatApp::builder().auth(Auth::disabled()).build().await?;
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
/// let routes = app.routes();
/// app.serve(listener, routes)
///     .with_graceful_shutdown(async { tokio::signal::ctrl_c().await.unwrap_or(()) })
///     .await?;
/// # Ok(())
/// # }
/// ```
pub struct ChatApp {
    metrics: Arc<Metrics>,
    store: Arc<dyn MessageStore>,
    conversations: Arc<dyn ConversationStore>,
    chat_sockets: Arc<LocalSocketRegistry>,
    notification_sockets: Arc<LocalSocketRegistry>,
    inbox: Arc<dyn InboxStore>,
    auth: Auth,
    config: AppConfig,
    socket_quota: SocketQuota,
    readiness: Vec<(String, ReadinessCheck)>,
    shutdown: CancellationToken,
    pipelines: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for ChatApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatApp")
            .field("auth", &self.auth)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Closes a node's websockets and stops its change handler; cheap to clone into a shutdown
/// future.
#[derive(Clone)]
pub(super) struct Closer {
    chat_sockets: Arc<LocalSocketRegistry>,
    notification_sockets: Arc<LocalSocketRegistry>,
    shutdown: CancellationToken,
}

impl Closer {
    pub(super) fn begin(&self) {
        let reason = CloseReason::new(SHUTDOWN_CLOSE_CODE, "server shutting down");
        self.chat_sockets.close_all(reason.clone());
        self.notification_sockets.close_all(reason);
        self.shutdown.cancel();
    }
}

impl ChatApp {
    /// Starts assembling a node.
    pub fn builder() -> ChatAppBuilder {
        ChatAppBuilder::default()
    }

    pub(super) fn start(parts: NodeParts) -> Self {
        let metrics = parts.metrics;
        let slow_clients = parts.config.session.slow_clients;
        let registry = |tier| {
            Arc::new(
                LocalSocketRegistry::new(tier, metrics.clone())
                    .with_slow_client_policy(slow_clients),
            )
        };
        let chat_sockets = registry(Tier::Chat);
        let notification_sockets = registry(Tier::Notifications);
        let (mut forwarder, closer) = parts.forwarder.unwrap_or_else(|| {
            (
                local_forwarder(&chat_sockets, &notification_sockets, &parts.inbox, &metrics),
                local_closer(&chat_sockets, &notification_sockets),
            )
        });
        if let Some(layer) = &parts.forwarder_layer {
            forwarder = layer(forwarder);
        }
        let shutdown = CancellationToken::new();
        let pipelines = ConsumerSet {
            chat_source: parts.chat_source,
            notification_source: parts.notification_source,
            consumers: parts.consumers,
            event_store: parts.event_store,
            forwarder,
            closer,
            conversations: Some(parts.conversations.clone()),
            view_source: Some(parts.view_source),
        }
        .spawn(&parts.config.delivery(), &metrics, &shutdown);
        let mut readiness = vec![
            (
                "store".to_owned(),
                http::store_readiness(parts.store.clone()),
            ),
            (
                "inbox".to_owned(),
                http::inbox_readiness(parts.inbox.clone()),
            ),
            (
                "conversations".to_owned(),
                http::conversations_readiness(parts.conversations.clone()),
            ),
        ];
        readiness.extend(parts.readiness);
        Self {
            metrics,
            store: parts.store,
            conversations: parts.conversations,
            chat_sockets,
            notification_sockets,
            inbox: parts.inbox,
            auth: parts.auth,
            socket_quota: SocketQuota::new(parts.config.limits.sockets_per_user),
            config: parts.config,
            readiness,
            shutdown,
            pipelines,
        }
    }

    /// Counters of every part.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The message store.
    pub fn store(&self) -> &Arc<dyn MessageStore> {
        &self.store
    }

    /// Groups, read markers and the conversation list.
    pub fn conversations(&self) -> &Arc<dyn ConversationStore> {
        &self.conversations
    }

    /// Chat sessions by `stream_id`.
    pub fn chat_sockets(&self) -> &Arc<LocalSocketRegistry> {
        &self.chat_sockets
    }

    /// Notification sessions by `user_id`.
    pub fn notification_sockets(&self) -> &Arc<LocalSocketRegistry> {
        &self.notification_sockets
    }

    /// The users' notification inboxes.
    pub fn inbox(&self) -> &Arc<dyn InboxStore> {
        &self.inbox
    }

    /// Every route of the node (client, internal and operational) with the common layers and no
    /// fallback, ready to be merged into a team's router. The internal routes (forwards to the
    /// tiers, close-stream, notification pushes) trust their caller: when the node is reachable
    /// from outside, serve [`client_routes`](Self::client_routes) publicly and
    /// [`internal_routes`](Self::internal_routes) on a private listener instead.
    pub fn routes(&self) -> Router {
        http::with_common_layers(self.client_routes().merge(self.internal_routes()))
    }

    /// The client-facing routes without layers: persistence, both websocket tiers, the inbox,
    /// the operational routes and `/openapi.json`; every route but the operational ones and the
    /// API description behind the node's [`Auth`].
    pub fn client_routes(&self) -> Router {
        let client = Router::new()
            .merge(http::persistence_router(PersistenceState {
                store: self.store.clone(),
                conversations: self.conversations.clone(),
                limits: self.config.limits.clone(),
                metrics: self.metrics.clone(),
            }))
            .merge(http::conversations_router(ConversationsState {
                store: self.store.clone(),
                conversations: self.conversations.clone(),
                chat_tier: Some(self.local_chat_tier()),
                limits: self.config.limits.clone(),
                metrics: self.metrics.clone(),
            }))
            .merge(http::chat_tier_router(ChatTierState {
                sockets: self.chat_sockets.clone(),
                store: self.store.clone(),
                conversations: self.conversations.clone(),
                session: self.config.session.clone(),
                quota: self.socket_quota.clone(),
            }))
            .merge(http::notification_tier_router(NotificationTierState {
                sockets: self.notification_sockets.clone(),
                inbox: self.inbox.clone(),
                metrics: self.metrics.clone(),
                session: self.config.session.clone(),
                quota: self.socket_quota.clone(),
            }));
        let routes = self.auth.guard(client).merge(http::ops_router(OpsState {
            metrics: self.metrics.clone(),
            readiness: self.readiness.clone(),
        }));
        #[cfg(feature = "openapi")]
        let routes = routes.merge(http::openapi_router());
        routes
    }

    /// Read frames and removed members' closes, straight to this node's chat registry.
    fn local_chat_tier(&self) -> ChatTier {
        let local = Arc::new(InProcessForwarder::new(
            self.chat_sockets.clone(),
            self.notification_sockets.clone(),
        ));
        ChatTier {
            forwarder: local.clone(),
            closer: local,
        }
    }

    /// The internal routes (forward, close-stream, notification pushes) over this node's
    /// registries, without layers; guard them with [`http::require_bearer`] or serve them on a
    /// private listener. Pushed notifications are kept in the inbox first.
    pub fn internal_routes(&self) -> Router {
        http::internal_router(InternalState {
            forwarder: local_forwarder(
                &self.chat_sockets,
                &self.notification_sockets,
                &self.inbox,
                &self.metrics,
            ),
            closer: local_closer(&self.chat_sockets, &self.notification_sockets),
            limits: self.config.limits.clone(),
        })
    }

    /// Serves `router` (usually [`routes`](Self::routes), merged with a team's own) on
    /// `listener`; with [`Serve::with_graceful_shutdown`] the node shuts down gracefully when
    /// the signal fires.
    pub fn serve(self, listener: TcpListener, router: Router) -> Serve {
        Serve::new(self, listener, router)
    }

    /// A token cancelled when the node begins to shut down.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    pub(super) fn closer(&self) -> Closer {
        Closer {
            chat_sockets: self.chat_sockets.clone(),
            notification_sockets: self.notification_sockets.clone(),
            shutdown: self.shutdown.clone(),
        }
    }

    /// Closes every websocket with 1001 and stops the change handler from taking new events.
    /// [`serve`](Self::serve) calls it when its shutdown signal fires; a server of one's own calls
    /// it before draining its connections, then [`shutdown`](Self::shutdown).
    pub fn begin_shutdown(&self) {
        self.closer().begin();
    }

    /// Shuts down and waits up to `grace` for in-flight events to finish and every websocket to
    /// be closed. Returns false when something was still busy at the deadline (unfinished events
    /// are not acknowledged and will be delivered again).
    pub async fn shutdown(self, grace: Duration) -> bool {
        self.begin_shutdown();
        let aborts: Vec<_> = self
            .pipelines
            .iter()
            .map(JoinHandle::abort_handle)
            .collect();
        let mut pipeline = futures::future::join_all(self.pipelines);
        // Sessions write their 1001 close frames on their own tasks: wait for them too, so a
        // process exiting right after this does not cut them off.
        let sessions = async {
            self.chat_sockets.drained().await;
            self.notification_sockets.drained().await;
        };
        let finished = async { tokio::join!(&mut pipeline, sessions) };
        match tokio::time::timeout(grace, finished).await {
            Ok(_) => true,
            Err(_) => {
                aborts.iter().for_each(tokio::task::AbortHandle::abort);
                false
            }
        }
    }
}

/// Closes conversations on this node's own chat registry.
fn local_closer(
    chat: &Arc<LocalSocketRegistry>,
    notifications: &Arc<LocalSocketRegistry>,
) -> Arc<dyn StreamCloser> {
    Arc::new(InProcessForwarder::new(chat.clone(), notifications.clone()))
}

/// Delivery to this node's own registries, every notification kept in the inbox first.
fn local_forwarder(
    chat: &Arc<LocalSocketRegistry>,
    notifications: &Arc<LocalSocketRegistry>,
    inbox: &Arc<dyn InboxStore>,
    metrics: &Arc<Metrics>,
) -> Arc<dyn Forwarder> {
    Arc::new(InboxForwarder::new(
        Arc::new(InProcessForwarder::new(chat.clone(), notifications.clone())),
        inbox.clone(),
        metrics.clone(),
    ))
}
