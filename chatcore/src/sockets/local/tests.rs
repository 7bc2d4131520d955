//! Tests of the in-process registry.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::sockets::{session_channel, FrameText, FAILOVER_CLOSE_CODE};

fn registry() -> LocalSocketRegistry {
    LocalSocketRegistry::new(Tier::Chat, Arc::new(Metrics::new()))
}

fn frame(text: &'static str) -> Frame {
    Frame::new(FrameText::from_static(text))
}

#[test]
fn broadcast_reaches_every_session_of_the_key_only() {
    let registry = registry();
    let (a, mut a_rx) = session_channel(4);
    let (b, mut b_rx) = session_channel(4);
    let (other, mut other_rx) = session_channel(4);
    assert!(registry.register("s1", a));
    assert!(registry.register("s1", b));
    assert!(registry.register("s2", other));
    let report = registry.broadcast("s1", &frame("hi"));
    assert_eq!(
        report,
        DeliveryReport {
            delivered: 2,
            failed: 0
        }
    );
    assert_eq!(
        a_rx.outbound.try_recv().map(|f| f.text.clone()),
        Ok("hi".into())
    );
    assert_eq!(
        b_rx.outbound.try_recv().map(|f| f.text.clone()),
        Ok("hi".into())
    );
    assert!(other_rx.outbound.try_recv().is_err());
}

#[test]
fn a_full_queue_fails_without_blocking_and_a_dead_session_is_removed() {
    let registry = registry().with_slow_client_policy(SlowClientPolicy::Retry);
    let (slow, _slow_rx) = session_channel(1);
    let (dead, dead_rx) = session_channel(4);
    let (healthy, mut healthy_rx) = session_channel(4);
    registry.register("s", slow);
    registry.register("s", dead);
    registry.register("s", healthy);
    drop(dead_rx);
    let first = registry.broadcast("s", &frame("1"));
    assert_eq!(
        first,
        DeliveryReport {
            delivered: 2,
            failed: 1
        }
    );
    assert_eq!(registry.sessions("s"), 2, "dead session removed");
    let second = registry.broadcast("s", &frame("2"));
    assert_eq!(
        second,
        DeliveryReport {
            delivered: 1,
            failed: 1
        },
        "slow session's queue is full"
    );
    assert_eq!(
        healthy_rx.outbound.try_recv().map(|f| f.text.clone()),
        Ok("1".into())
    );
    assert_eq!(
        healthy_rx.outbound.try_recv().map(|f| f.text.clone()),
        Ok("2".into())
    );
}

#[test]
fn close_signals_sessions_and_close_all_refuses_new_ones() {
    let registry = registry();
    let (a, a_rx) = session_channel(4);
    registry.register("s", a);
    assert_eq!(registry.close("s", CloseReason::new(4000, "gave up")), 1);
    assert_eq!(
        a_rx.close.borrow().as_ref().map(|r| r.code),
        Some(FAILOVER_CLOSE_CODE)
    );
    assert_eq!(registry.close_all(CloseReason::new(1001, "bye")), 1);
    let (late, _late_rx) = session_channel(4);
    assert!(!registry.register("s", late));
}

#[test]
fn a_slow_session_is_closed_with_4001_and_the_next_broadcast_is_complete() {
    let metrics = Arc::new(Metrics::new());
    let registry = LocalSocketRegistry::new(Tier::Chat, metrics.clone());
    let (slow, slow_rx) = session_channel(1);
    let (healthy, mut healthy_rx) = session_channel(4);
    registry.register("s", slow);
    registry.register("s", healthy);
    assert_eq!(registry.broadcast("s", &frame("1")).failed, 0);
    let second = registry.broadcast("s", &frame("2"));
    assert_eq!(
        second,
        DeliveryReport {
            delivered: 1,
            failed: 1
        }
    );
    assert_eq!(
        slow_rx.close.borrow().as_ref().map(|r| r.code),
        Some(SLOW_CLIENT_CLOSE_CODE)
    );
    assert_eq!(registry.sessions("s"), 1, "the slow session is gone");
    let third = registry.broadcast("s", &frame("3"));
    assert_eq!(
        third,
        DeliveryReport {
            delivered: 1,
            failed: 0
        }
    );
    let texts: Vec<_> = std::iter::from_fn(|| healthy_rx.outbound.try_recv().ok())
        .map(|f| f.text.clone())
        .collect();
    assert_eq!(texts, vec!["1", "2", "3"]);
    assert!(metrics
        .render()
        .contains(r#"chatcore_deliveries_total{tier="chat",result="slow_client_closed"} 1"#));
}

#[tokio::test]
async fn drained_resolves_once_the_last_session_is_gone() {
    let registry = Arc::new(registry());
    let (a, _a_rx) = session_channel(4);
    let (b, _b_rx) = session_channel(4);
    let (a_id, b_id) = (a.id(), b.id());
    registry.register("s1", a);
    registry.register("s2", b);
    assert_eq!(registry.len(), 2);
    let waiter = tokio::spawn({
        let registry = registry.clone();
        async move { registry.drained().await }
    });
    registry.unregister("s1", a_id);
    tokio::task::yield_now().await;
    assert!(!waiter.is_finished(), "one session is still open");
    registry.unregister("s2", b_id);
    tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("drained after the last session")
        .expect("task");
    assert!(registry.is_empty());
}
