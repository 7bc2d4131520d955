use super::*;

#[test]
fn delays_grow_by_the_multiplier_and_stop_at_the_cap() {
    let policy = RetryPolicy {
        max_retries: 5,
        initial_interval: Duration::from_millis(10),
        max_interval: Duration::from_millis(50),
        multiplier: 3.0,
    };
    let delays: Vec<_> = (0..4).map(|r| policy.delay(r).as_millis()).collect();
    assert_eq!(delays, [10, 30, 50, 50]);
}

fn event(op: Op, document: Option<serde_json::Value>) -> ChangeEvent {
    ChangeEvent {
        op,
        collection: CHAT_COLLECTION.to_owned(),
        key: "k".to_owned(),
        document,
        position: crate::change::SourcePosition {
            partition: 0,
            offset: 0,
            token: None,
        },
        malformed: None,
    }
}

#[test]
fn chat_handler_plans_both_tiers_and_drops_what_it_cannot_use() {
    let handler = ChatHandler::default();
    let message = serde_json::json!({
        "message_id": "m1", "content": "hi", "created_at": "2026-01-01T00:00:00Z",
        "stream_id": crate::stream_id::stream_id("a", "b"), "sender_id": "a", "receiver_id": "b"
    });
    let plan = handler
        .plan(&event(Op::Create, Some(message.clone())))
        .expect("plan");
    assert_eq!(plan.deliveries.len(), 2);
    assert_eq!(
        plan.event_key,
        format!("m1:{}", crate::stream_id::stream_id("a", "b"))
    );
    assert_eq!(
        handler.plan(&event(Op::Update, Some(message.clone()))),
        Err(DropReason::IgnoredOp)
    );
    assert_eq!(
        handler.plan(&event(Op::Create, Some(serde_json::json!({"x": 1})))),
        Err(DropReason::InvalidFormat)
    );
    let mut forged = message;
    forged["stream_id"] = "0000000000000000".into();
    assert_eq!(
        handler.plan(&event(Op::Create, Some(forged))),
        Err(DropReason::InvalidFormat)
    );
}

/// Yields a fixed list of events, then ends; records what was acknowledged.
struct ListSource {
    events: std::sync::Mutex<std::collections::VecDeque<ChangeEvent>>,
    done: std::sync::Mutex<Vec<i64>>,
}

#[async_trait::async_trait]
impl ChangeSource for ListSource {
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

/// Records every delivery.
#[derive(Default)]
struct Recorder(std::sync::Mutex<Vec<Delivery>>);

#[async_trait::async_trait]
impl Forwarder for Recorder {
    async fn forward(
        &self,
        delivery: &Delivery,
    ) -> Result<crate::forward::DeliveryReport, crate::forward::ForwardError> {
        self.0.lock().expect("lock").push(delivery.clone());
        Ok(crate::forward::DeliveryReport::default())
    }
}

#[tokio::test]
async fn a_poison_record_is_dropped_acknowledged_and_the_feed_moves_on() {
    let message = serde_json::json!({
        "message_id": "m1", "content": "hi", "created_at": "2026-01-01T00:00:00Z",
        "stream_id": crate::stream_id::stream_id("a", "b"), "sender_id": "a", "receiver_id": "b"
    });
    let position = |offset| crate::change::SourcePosition {
        partition: 0,
        offset,
        token: None,
    };
    let poison = ChangeEvent::malformed("k".into(), position(0), "not JSON");
    let mut valid = event(Op::Create, Some(message));
    valid.position = position(1);
    let mut duplicate = valid.clone();
    duplicate.position = position(2);
    let source = Arc::new(ListSource {
        events: std::sync::Mutex::new([poison, valid, duplicate].into()),
        done: std::sync::Mutex::default(),
    });
    let forwarder = Arc::new(Recorder::default());
    let metrics = Arc::new(Metrics::new());
    let dedup = Deduplicator::new(
        Arc::new(crate::dedup::InMemoryEventStore::new()),
        crate::dedup::DedupConfig::default(),
        metrics.clone(),
    );
    let pipeline = Pipeline::new(
        source.clone(),
        Arc::new(ChatHandler::default()),
        dedup,
        forwarder.clone(),
        PipelineConfig {
            lanes: 1,
            ..PipelineConfig::default()
        },
        metrics.clone(),
    );
    pipeline.run(CancellationToken::new()).await;
    assert_eq!(
        *source.done.lock().expect("lock"),
        [0, 1, 2],
        "all acknowledged, in order"
    );
    assert_eq!(metrics.dropped_count("chat", DropReason::InvalidFormat), 1);
    assert_eq!(metrics.dropped_count("chat", DropReason::Duplicate), 1);
    assert_eq!(metrics.event_count("chat", Outcome::Success), 1);
    assert_eq!(
        forwarder.0.lock().expect("lock").len(),
        2,
        "chat + notification, once"
    );
}

/// Groups in memory, whose first `failures` lookups fail as an unreachable backend does.
struct Flaky {
    inner: crate::conversation::InMemoryConversations,
    failures: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl ConversationStore for Flaky {
    async fn create_group(
        &self,
        group: crate::conversation::Conversation,
    ) -> Result<crate::conversation::Conversation, crate::conversation::ConversationError> {
        self.inner.create_group(group).await
    }
    async fn group(
        &self,
        stream_id: &str,
    ) -> Result<Option<crate::conversation::Conversation>, crate::conversation::ConversationError>
    {
        let left = self.failures.load(std::sync::atomic::Ordering::SeqCst);
        if left > 0 {
            self.failures
                .store(left - 1, std::sync::atomic::Ordering::SeqCst);
            return Err(crate::conversation::ConversationError::Unavailable(
                "down".into(),
            ));
        }
        self.inner.group(stream_id).await
    }
    async fn change_members(
        &self,
        stream_id: &str,
        change: &crate::conversation::ValidMembershipChange,
        max: usize,
    ) -> Result<crate::conversation::MembersChanged, crate::conversation::ConversationError> {
        self.inner.change_members(stream_id, change, max).await
    }
    async fn groups_of(
        &self,
        user_id: &str,
    ) -> Result<Vec<crate::conversation::Conversation>, crate::conversation::ConversationError>
    {
        self.inner.groups_of(user_id).await
    }
    async fn mark_read(
        &self,
        stream_id: &str,
        user_id: &str,
        message_id: &str,
    ) -> Result<crate::conversation::ReadMarker, crate::conversation::ConversationError> {
        self.inner.mark_read(stream_id, user_id, message_id).await
    }
    async fn read_marker(
        &self,
        stream_id: &str,
        user_id: &str,
    ) -> Result<Option<crate::conversation::ReadMarker>, crate::conversation::ConversationError>
    {
        self.inner.read_marker(stream_id, user_id).await
    }
    async fn record_activity(
        &self,
        members: &[String],
        message: &ChatMessage,
    ) -> Result<(), crate::conversation::ConversationError> {
        self.inner.record_activity(members, message).await
    }
    async fn activity(
        &self,
        user_id: &str,
        limit: usize,
    ) -> Result<Vec<crate::conversation::Activity>, crate::conversation::ConversationError> {
        self.inner.activity(user_id, limit).await
    }
    async fn activity_of(
        &self,
        user_id: &str,
        stream_id: &str,
    ) -> Result<Option<crate::conversation::Activity>, crate::conversation::ConversationError> {
        self.inner.activity_of(user_id, stream_id).await
    }
    async fn ping(&self) -> Result<(), crate::conversation::ConversationError> {
        Ok(())
    }
}

#[tokio::test]
async fn a_group_message_notifies_every_member_but_the_sender_after_failed_lookups() {
    let members: Vec<String> = ["ann", "bob", "cy"].map(String::from).into();
    let group = crate::conversation::NewGroup {
        created_by: "ann".into(),
        members,
        title: None,
    }
    .validate(8)
    .expect("valid")
    .into_conversation();
    let conversations = Arc::new(Flaky {
        inner: crate::conversation::InMemoryConversations::new(),
        failures: std::sync::atomic::AtomicUsize::new(2),
    });
    conversations
        .create_group(group.clone())
        .await
        .expect("create");
    let message = serde_json::json!({
        "message_id": "6560000000000000000000a1", "content": "hi all",
        "created_at": "2026-01-01T00:00:00Z", "stream_id": group.stream_id, "sender_id": "bob"
    });
    let source = Arc::new(ListSource {
        events: std::sync::Mutex::new([event(Op::Create, Some(message))].into()),
        done: std::sync::Mutex::default(),
    });
    let forwarder = Arc::new(Recorder::default());
    let metrics = Arc::new(Metrics::new());
    let dedup = Deduplicator::new(
        Arc::new(crate::dedup::InMemoryEventStore::new()),
        crate::dedup::DedupConfig::default(),
        metrics.clone(),
    );
    let handler = ChatHandler {
        members: Some(conversations.clone()),
        ..ChatHandler::default()
    };
    let retry = RetryPolicy {
        initial_interval: Duration::from_millis(1),
        ..RetryPolicy::default()
    };
    let pipeline = Pipeline::new(
        source.clone(),
        Arc::new(handler),
        dedup,
        forwarder.clone(),
        PipelineConfig {
            lanes: 1,
            retry,
            ..PipelineConfig::default()
        },
        metrics.clone(),
    );
    pipeline.run(CancellationToken::new()).await;
    assert_eq!(
        *source.done.lock().expect("lock"),
        [0],
        "acknowledged once done"
    );
    let delivered = forwarder.0.lock().expect("lock").clone();
    let mut notified: Vec<&str> = delivered
        .iter()
        .filter_map(|d| match d {
            Delivery::Notify { user_id, .. } => Some(user_id.as_str()),
            _ => None,
        })
        .collect();
    notified.sort();
    assert_eq!(notified, ["ann", "cy"], "every member but the sender, once");
    let chat = delivered
        .iter()
        .filter(|d| matches!(d, Delivery::Chat(m) if m.receiver_id.is_none()));
    assert_eq!(chat.count(), 1, "the group's sockets get it once");
    assert_eq!(
        conversations
            .failures
            .load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the failed lookups were retried"
    );
}
