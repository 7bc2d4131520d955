//! The e-mail consumer as a pipeline: planning, presence, retries and dead letters.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use super::*;
use crate::email::fixtures::{directory, message, purchase, Down, Unreachable};
use crate::email::{EmailSender, InMemoryEmailSender};

fn chat_event(offset: i64, message: &ChatMessage) -> ChangeEvent {
    ChangeEvent {
        op: Op::Create,
        collection: CHAT_COLLECTION.to_owned(),
        key: message.stream_id.clone(),
        document: Some(serde_json::to_value(message).expect("json")),
        position: crate::change::SourcePosition {
            partition: 0,
            offset,
            token: None,
        },
        malformed: None,
    }
}

#[test]
fn the_email_handler_keys_its_events_apart_from_the_chat_consumer() {
    let handler = EmailHandler::default();
    let chat = message("alice", "bob", "hi");
    let plan = handler.plan(&chat_event(0, &chat)).expect("plan");
    assert_eq!(plan.event_key, format!("email:{}", chat.event_key()));
    assert_eq!(plan.deliveries.len(), 1);
    assert_eq!(plan.deliveries[0].routing_key(), "bob");
    let mut order = chat_event(1, &chat);
    order.collection = PURCHASES_COLLECTION.to_owned();
    order.document = Some(serde_json::to_value(purchase()).expect("json"));
    let plan = handler.plan(&order).expect("plan");
    assert_eq!(plan.event_key, "email:purchase:o-42");
    assert_eq!(plan.deliveries[0].routing_key(), "shop");
    let mut update = chat_event(2, &chat);
    update.op = Op::Update;
    assert_eq!(handler.plan(&update), Err(DropReason::IgnoredOp));
}

/// Users listed are online.
struct Online(Vec<&'static str>);

#[async_trait]
impl Presence for Online {
    async fn is_online(&self, user_id: &str) -> Result<bool, crate::presence::PresenceError> {
        Ok(self.0.contains(&user_id))
    }
}

/// Yields a fixed list of events, then ends; records what was acknowledged.
struct ListSource {
    events: Mutex<std::collections::VecDeque<ChangeEvent>>,
    done: Mutex<Vec<i64>>,
}

#[async_trait]
impl crate::change::ChangeSource for ListSource {
    async fn next(&self) -> Result<Option<ChangeEvent>, crate::change::ChangeError> {
        Ok(self.events.lock().expect("lock").pop_front())
    }
    async fn done(
        &self,
        position: &crate::change::SourcePosition,
    ) -> Result<(), crate::change::ChangeError> {
        self.done.lock().expect("lock").push(position.offset);
        Ok(())
    }
}

/// The e-mail consumer as the role builds it, on `source`, with `max_retries` quick retries
/// and dead letters going to `dead_letters`.
fn email_pipeline(
    source: Arc<ListSource>,
    sender: Arc<dyn EmailSender>,
    presence: Option<Arc<dyn Presence>>,
    dead_letters: Arc<dyn crate::dead_letter::DeadLetterSink>,
    max_retries: u32,
    metrics: Arc<Metrics>,
) -> crate::pipeline::Pipeline {
    use crate::pipeline::{FailurePolicy, Pipeline, PipelineConfig, RetryPolicy};
    Pipeline::new(
        source,
        Arc::new(EmailHandler::default()),
        crate::dedup::Deduplicator::new(
            Arc::new(crate::dedup::InMemoryEventStore::new()),
            crate::dedup::DedupConfig::default(),
            metrics.clone(),
        ),
        Arc::new(EmailForwarder::new(
            EmailService::new(directory(), sender),
            presence,
            metrics.clone(),
        )),
        PipelineConfig {
            name: "email".into(),
            lanes: 1,
            retry: RetryPolicy {
                max_retries,
                initial_interval: Duration::from_millis(1),
                max_interval: Duration::from_millis(2),
                multiplier: 2.0,
            },
            failure: FailurePolicy::DeadLetter(crate::dead_letter::DeadLetterTarget::new(
                dead_letters,
            )),
            ..PipelineConfig::default()
        },
        metrics,
    )
}

/// Runs an e-mail pipeline over `events` until they end; returns its metrics and the
/// acknowledged offsets.
async fn run_email_pipeline(
    events: Vec<ChangeEvent>,
    sender: Arc<dyn EmailSender>,
    presence: Option<Arc<dyn Presence>>,
    dead_letters: Arc<crate::dead_letter::InMemoryDeadLetters>,
) -> (Arc<Metrics>, Vec<i64>) {
    let metrics = Arc::new(Metrics::new());
    let source = Arc::new(ListSource {
        events: Mutex::new(events.into()),
        done: Mutex::default(),
    });
    let pipeline = email_pipeline(
        source.clone(),
        sender,
        presence,
        dead_letters,
        2,
        metrics.clone(),
    );
    pipeline
        .run(tokio_util::sync::CancellationToken::new())
        .await;
    let done = source.done.lock().expect("lock").clone();
    (metrics, done)
}

#[tokio::test]
async fn the_consumer_emails_offline_receivers_once_and_skips_the_rest() {
    let outbox = Arc::new(InMemoryEmailSender::new());
    let letters = Arc::new(crate::dead_letter::InMemoryDeadLetters::new());
    let to_bob = message("alice", "bob", "hi bob");
    let to_alice = ChatMessage {
        message_id: "m2".into(),
        ..message("bob", "alice", "hi alice")
    };
    let to_carol = ChatMessage {
        message_id: "m3".into(),
        ..message("alice", "carol", "hi carol")
    };
    // Bob twice (a redelivery), Alice is online, Carol is not in the directory.
    let events = vec![
        chat_event(0, &to_bob),
        chat_event(1, &to_bob),
        chat_event(2, &to_alice),
        chat_event(3, &to_carol),
    ];
    let (metrics, done) = run_email_pipeline(
        events,
        outbox.clone(),
        Some(Arc::new(Online(vec!["alice"]))),
        letters.clone(),
    )
    .await;
    let sent = outbox.sent();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].to, "bob@example.com");
    assert_eq!(done, [0, 1, 2, 3], "everything acknowledged");
    assert_eq!(metrics.email_count(EmailResult::Sent), 1);
    assert_eq!(metrics.email_count(EmailResult::ReceiverOnline), 1);
    assert_eq!(metrics.email_count(EmailResult::UnknownRecipient), 1);
    assert_eq!(metrics.dropped_count("email", DropReason::Duplicate), 1);
    assert!(letters.letters().is_empty());
    let retries = metrics.render();
    assert!(
        !retries.contains("chatcore_retries_total{consumer=\"email\"}"),
        "{retries}"
    );
}

#[tokio::test]
async fn an_smtp_failure_is_retried_then_dead_lettered_and_acknowledged() {
    let letters = Arc::new(crate::dead_letter::InMemoryDeadLetters::new());
    let to_bob = message("alice", "bob", "hi bob");
    let (metrics, done) = run_email_pipeline(
        vec![chat_event(7, &to_bob)],
        Arc::new(Down),
        None,
        letters.clone(),
    )
    .await;
    let letters = letters.letters();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].consumer, "email");
    assert_eq!(letters[0].attempts, 3);
    assert!(
        letters[0].error.contains("connection refused"),
        "{}",
        letters[0].error
    );
    assert_eq!(letters[0].event.position.offset, 7);
    assert_eq!(done, [7]);
    assert_eq!(metrics.email_count(EmailResult::Failed), 3);
}

#[tokio::test]
async fn an_unreachable_directory_is_an_error_the_consumer_retries() {
    let outbox = Arc::new(InMemoryEmailSender::new());
    let forwarder = EmailForwarder::new(
        EmailService::new(Arc::new(Unreachable), outbox.clone()),
        None,
        Arc::new(Metrics::new()),
    );
    let delivery = Delivery::Notify {
        user_id: "bob".into(),
        notification: Notification::chat(&message("alice", "bob", "hi")),
    };
    assert!(
        forwarder.forward(&delivery).await.is_err(),
        "an error, so the pipeline retries"
    );
    assert!(outbox.sent().is_empty());
}

/// Refuses the first `n` dead letters, then keeps them.
struct Flaky {
    refusals: std::sync::atomic::AtomicU32,
    kept: crate::dead_letter::InMemoryDeadLetters,
}

#[async_trait]
impl crate::dead_letter::DeadLetterSink for Flaky {
    async fn dead_letter(
        &self,
        failed: &crate::dead_letter::FailedEvent<'_>,
    ) -> Result<(), crate::dead_letter::DeadLetterError> {
        use std::sync::atomic::Ordering;
        if self
            .refusals
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(crate::dead_letter::DeadLetterError("broker down".into()));
        }
        self.kept.dead_letter(failed).await
    }
}

#[tokio::test]
async fn a_dead_letter_the_sink_refuses_is_tried_again_before_the_event_is_acknowledged() {
    let sink = Arc::new(Flaky {
        refusals: std::sync::atomic::AtomicU32::new(2),
        kept: crate::dead_letter::InMemoryDeadLetters::new(),
    });
    let source = Arc::new(ListSource {
        events: Mutex::new(vec![chat_event(3, &message("alice", "bob", "hi"))].into()),
        done: Mutex::default(),
    });
    let metrics = Arc::new(Metrics::new());
    email_pipeline(
        source.clone(),
        Arc::new(Down),
        None,
        sink.clone(),
        0,
        metrics,
    )
    .run(tokio_util::sync::CancellationToken::new())
    .await;
    assert_eq!(sink.kept.letters().len(), 1, "written on the third try");
    assert_eq!(sink.kept.letters()[0].attempts, 1);
    assert_eq!(*source.done.lock().expect("lock"), [3]);
}

#[tokio::test]
async fn shutdown_while_the_dead_letter_is_refused_leaves_the_event_unacknowledged() {
    let sink = Arc::new(Flaky {
        refusals: std::sync::atomic::AtomicU32::new(u32::MAX),
        kept: crate::dead_letter::InMemoryDeadLetters::new(),
    });
    let source = Arc::new(ListSource {
        events: Mutex::new(vec![chat_event(5, &message("alice", "bob", "hi"))].into()),
        done: Mutex::default(),
    });
    let metrics = Arc::new(Metrics::new());
    let shutdown = tokio_util::sync::CancellationToken::new();
    let run = tokio::spawn(
        email_pipeline(
            source.clone(),
            Arc::new(Down),
            None,
            sink.clone(),
            0,
            metrics.clone(),
        )
        .run(shutdown.clone()),
    );
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    while sink.refusals.load(std::sync::atomic::Ordering::SeqCst) > u32::MAX - 3 {
        assert!(
            tokio::time::Instant::now() < until,
            "the sink was never asked"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("stops")
        .expect("task");
    assert!(sink.kept.letters().is_empty());
    assert!(
        source.done.lock().expect("lock").is_empty(),
        "not acknowledged: the next consumer retries it"
    );
}
