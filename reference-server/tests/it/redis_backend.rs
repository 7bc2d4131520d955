//! `chat-server` with `REDIS_ADDR`: the pipeline's idempotency keys live in the real Redis of
//! `scripts/services.sh`.

use crate::common;

use chatcore::stream_id::stream_id;
use common::{settings, TestServer};

#[tokio::test]
#[ignore = "needs redis: run scripts/test.sh"]
async fn delivered_messages_are_marked_done_in_redis_under_the_contract_key() {
    let url =
        std::env::var("CHATCORE_TEST_REDIS").expect("CHATCORE_TEST_REDIS: run scripts/test.sh");
    let prefix = format!("e2e-{}", chatcore::dedup::ClaimToken::unique().as_str());
    let server = TestServer::start_with(
        settings(&["--redis-addr", &url, "--event-store-key-prefix", &prefix]),
        |backends| backends,
    )
    .await;
    let mut socket = server.subscribe_chat("alice", "bob", None).await;
    let stored = server.send("via redis", "alice", "bob").await;
    assert_eq!(socket.next_json().await, stored);

    let key = format!(
        "eventstore:{prefix}:{}:{}",
        stored["message_id"].as_str().expect("id"),
        stream_id("alice", "bob")
    );
    let mut redis = redis::Client::open(url.as_str())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    // The key is completed right after delivery; wait for that rather than assume it.
    let value = tokio::time::timeout(common::WAIT, async {
        loop {
            let value: Option<String> = redis::cmd("GET")
                .arg(&key)
                .query_async(&mut redis)
                .await
                .expect("GET");
            if value.as_deref() == Some("done") {
                return value;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the event is completed in Redis");
    assert_eq!(value.as_deref(), Some("done"));
    let pttl: i64 = redis::cmd("PTTL")
        .arg(&key)
        .query_async(&mut redis)
        .await
        .expect("PTTL");
    assert!(
        (290_000..=300_000).contains(&pttl),
        "DEDUPLICATION_TTL of 5m, PTTL {pttl}"
    );
}
