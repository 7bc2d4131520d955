//! # Adding your own notification type
//!
//! A template to copy: a team's `review_request` notification, sent to a reviewer's notification
//! socket whenever a document lands in the team's `reviews` collection — the same way chatcore
//! sends purchase, payment-reminder and shipping notifications from the commerce collections.
//!
//! The whole addition is [`review_rule`]: a [`NotificationRule`] saying which collection to
//! read, what the notification is called, and who gets it. [`build_service`] runs it as one more
//! consumer of the node ([`ChatAppBuilder::consumer`](chatcore::app::ChatAppBuilder::consumer)); it gets idempotency, retries, metrics
//! (`consumer="reviews"`) and the `invalid_format` drop of bad documents like every other consumer.
//!
//! Here the `reviews` collection is an in-memory change feed the team's route appends to, so the
//! example runs with no database. In production the feed is MongoDB's change stream of the
//! collection:
//!
//! ```ignore
//! let reviews = chatcore_mongo::MongoChangeStream::open(&database, "reviews", "review-notifications", timeout).await?;
//! ```
//!
//! or a `chatcore_kafka::KafkaChangeSource` on the collection's Debezium topic.
//!
//! Run it with `cargo run -p chatcore-examples --example custom_notification`, subscribe
//! `ws://127.0.0.1:3000/notifications/subscribe?user_id=rita`, then
//! `curl -X POST 127.0.0.1:3000/team/reviews -H 'content-type: application/json' -d
//! '{"review_id":"r1","reviewer_id":"rita","author_id":"alex","title":"Fix login"}'`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use chatcore::app::{AppConfig, Auth, BuildError, ChatApp, Consumer};
use chatcore::change::{InMemoryChangeFeed, Op};
use chatcore::commerce::{NotificationHandler, NotificationRule};
use chatcore::model::NotificationType;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The team's collection.
pub const REVIEWS_COLLECTION: &str = "reviews";

/// A review request, as the `reviews` collection stores it; also the notification's payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReviewRequest {
    /// The review.
    pub review_id: String,
    /// Who is asked to review: the recipient.
    pub reviewer_id: String,
    /// Who asks.
    pub author_id: String,
    /// What to review.
    pub title: String,
}

/// The new notification type: `review_request` to the reviewer, in order per review.
pub fn review_rule() -> NotificationRule {
    NotificationRule::new(
        REVIEWS_COLLECTION,
        NotificationType::custom("review_request"),
        |review: ReviewRequest| {
            let recipients = vec![review.reviewer_id.clone()];
            let lane = review.review_id.clone();
            (recipients, lane, review)
        },
    )
}

/// A chatcore node with the `review_request` consumer, and the `reviews` feed.
pub struct ReviewService {
    /// The node: chat, notifications, and the reviews consumer.
    pub chat: ChatApp,
    /// The change feed of the `reviews` collection.
    pub reviews: Arc<InMemoryChangeFeed>,
}

impl ReviewService {
    /// chatcore's routes plus the team's `POST /team/reviews`.
    pub fn router(&self) -> Router {
        let team = Router::new()
            .route("/team/reviews", post(request_review))
            .with_state(self.reviews.clone());
        self.chat.routes().merge(team)
    }
}

/// Stores a review request: here, appends it to the `reviews` feed (in production, an insert into
/// the collection, whose change stream the consumer reads).
async fn request_review(
    State(reviews): State<Arc<InMemoryChangeFeed>>,
    Json(review): Json<Value>,
) -> StatusCode {
    let key = review["review_id"].as_str().unwrap_or_default().to_owned();
    reviews.append(Op::Create, REVIEWS_COLLECTION, &key, Some(review));
    StatusCode::ACCEPTED
}

/// Starts the node on the in-memory backends with the reviews consumer.
pub async fn build_service(config: AppConfig) -> Result<ReviewService, BuildError> {
    let reviews = Arc::new(InMemoryChangeFeed::default());
    let chat = ChatApp::builder()
        .config(config)
        .auth(Auth::disabled())
        .consumer(Consumer::new(
            "reviews",
            Arc::new(reviews.subscribe("review-notifications")),
            Arc::new(NotificationHandler::new().with_rule(review_rule())),
        ))
        .build()
        .await?;
    Ok(ReviewService { chat, reviews })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().init();
    let service = build_service(AppConfig::default()).await?;
    let addr = std::env::var("LISTEN_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".to_owned());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    tracing::info!(%addr, "listening");
    let router = service.router();
    service
        .chat
        .serve(listener, router)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
