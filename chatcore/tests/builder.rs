//! The front door: `ChatApp::builder()` refuses parts that do not fit together, and its routes
//! merge into a team's router that has a fallback of its own.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing::get;
use axum::Router;
use chatcore::app::{Auth, BuildError, ChatApp, NotificationStrategy};
use chatcore::change::{ChangeError, ChangeFeed, ChangeSource, InMemoryChangeFeed};
use chatcore::store::InMemoryMessageStore;
use tower::ServiceExt;

#[tokio::test]
async fn a_store_without_its_change_feed_is_refused() {
    let error = ChatApp::builder()
        .auth(Auth::disabled())
        .message_store(Arc::new(InMemoryMessageStore::new()))
        .build()
        .await
        .expect_err("a store without a feed must not build");
    assert!(matches!(error, BuildError::StoreWithoutFeed), "{error:?}");
    assert!(error.to_string().contains("change feed"), "{error}");
}

#[tokio::test]
async fn a_feed_without_its_store_is_refused() {
    let feed = Arc::new(InMemoryChangeFeed::default());
    let error = ChatApp::builder()
        .auth(Auth::disabled())
        .change_feed(Arc::new(feed))
        .build()
        .await
        .expect_err("a feed without a store must not build");
    assert!(matches!(error, BuildError::FeedWithoutStore), "{error:?}");
}

#[tokio::test]
async fn authentication_must_be_chosen() {
    let error = ChatApp::builder()
        .build()
        .await
        .expect_err("no auth chosen");
    assert!(matches!(error, BuildError::AuthNotChosen), "{error:?}");
    assert!(error.to_string().contains("Auth::disabled()"), "{error}");
}

/// A feed whose notification group cannot be opened.
struct ChatOnlyFeed(Arc<InMemoryMessageStore>);

#[async_trait::async_trait]
impl ChangeFeed for ChatOnlyFeed {
    async fn subscribe(&self, group: &str) -> Result<Arc<dyn ChangeSource>, ChangeError> {
        if group.ends_with("-notifications") {
            return Err(ChangeError::Unavailable("no such consumer group".into()));
        }
        self.0.subscribe(group).await
    }
}

#[tokio::test]
async fn a_strategy_whose_consumer_cannot_be_opened_is_refused() {
    let store = Arc::new(InMemoryMessageStore::new());
    let error = ChatApp::builder()
        .auth(Auth::disabled())
        .message_store(store.clone())
        .change_feed(Arc::new(ChatOnlyFeed(store)))
        .strategy(NotificationStrategy::Separate)
        .build()
        .await
        .expect_err("the notification group cannot be opened");
    match error {
        BuildError::Feed { group, .. } => assert_eq!(group, "chat-change-handler-notifications"),
        other => panic!("unexpected error {other:?}"),
    }
}

#[tokio::test]
async fn the_routes_merge_into_a_team_router_with_its_own_fallback() {
    let app = ChatApp::builder()
        .auth(Auth::disabled())
        .build()
        .await
        .expect("embedded defaults build");
    let team = Router::new()
        .route("/team/hello", get(|| async { "hello" }))
        .fallback(|| async { (StatusCode::IM_A_TEAPOT, "team fallback") });
    let router = team.merge(app.routes());
    for (path, status) in [
        ("/team/hello", StatusCode::OK),
        ("/healthz", StatusCode::OK),
        ("/nowhere", StatusCode::IM_A_TEAPOT),
    ] {
        let response = router
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).expect("request"))
            .await
            .expect("response");
        assert_eq!(response.status(), status, "{path}");
    }
    assert!(app.shutdown(std::time::Duration::from_secs(5)).await);
}
