//! `RedisEventStore` and the throttle against a real Redis on loopback, started by
//! `scripts/services.sh` (`CHATCORE_TEST_REDIS`, and `CHATCORE_TEST_REDIS_SERVER` for the restart
//! test, which runs a Redis of its own).

use std::sync::Arc;
use std::time::Duration;

use chatcore::dedup::{
    Admission, Claim, ClaimToken, DedupConfig, Deduplicator, EventStore, Throttle,
    UnavailablePolicy,
};
use chatcore::metrics::Metrics;
use chatcore_redis::{RedisConfig, RedisEventStore};
use tokio::time::{timeout, Instant};

const WAIT: Duration = Duration::from_secs(10);

fn redis_url() -> String {
    std::env::var("CHATCORE_TEST_REDIS").expect("CHATCORE_TEST_REDIS: run scripts/test.sh")
}

/// A store with a prefix of its own, so tests never see each other's keys.
fn store() -> (RedisEventStore, String) {
    let prefix = format!("test-{}", ClaimToken::unique().as_str());
    let store =
        RedisEventStore::new(RedisConfig::new(redis_url(), prefix.clone())).expect("config");
    (store, prefix)
}

async fn raw() -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis_url())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect to the test Redis")
}

async fn exists(key: &str) -> bool {
    let mut connection = raw().await;
    redis::cmd("EXISTS")
        .arg(key)
        .query_async::<i64>(&mut connection)
        .await
        .expect("EXISTS")
        == 1
}

#[tokio::test]
#[ignore = "needs redis: run scripts/test.sh"]
async fn of_consumers_racing_on_one_key_exactly_one_proceeds() {
    let prefix = format!("race-{}", ClaimToken::unique().as_str());
    // Separate stores are separate connections, like separate consumer processes.
    let consumers: Vec<Arc<RedisEventStore>> = (0..8)
        .map(|_| {
            Arc::new(
                RedisEventStore::new(RedisConfig::new(redis_url(), prefix.clone()))
                    .expect("config"),
            )
        })
        .collect();
    for round in 0..200 {
        let key = format!("m{round}:s");
        let claims = consumers.iter().map(|store| {
            let store = Arc::clone(store);
            let key = key.clone();
            tokio::spawn(async move { store.claim(&key, Duration::from_secs(30)).await })
        });
        let mut acquired = 0;
        for claim in futures_join(claims).await {
            if matches!(claim, Claim::Acquired(_)) {
                acquired += 1;
            }
        }
        assert_eq!(acquired, 1, "round {round}");
    }
}

async fn futures_join(
    handles: impl Iterator<
        Item = tokio::task::JoinHandle<Result<Claim, chatcore::dedup::EventStoreError>>,
    >,
) -> Vec<Claim> {
    let mut claims = Vec::new();
    for handle in handles {
        claims.push(handle.await.expect("join").expect("claim"));
    }
    claims
}

#[tokio::test]
#[ignore = "needs redis: run scripts/test.sh"]
async fn a_completed_key_suppresses_duplicates_until_its_ttl_ends_and_not_after() {
    let (store, _) = store();
    let ttl = Duration::from_millis(400);
    let Claim::Acquired(token) = store
        .claim("k", Duration::from_secs(5))
        .await
        .expect("claim")
    else {
        panic!("a fresh key is claimable");
    };
    store.complete("k", &token, ttl).await.expect("complete");
    let completed_at = Instant::now();
    assert_eq!(
        store
            .claim("k", Duration::from_secs(5))
            .await
            .expect("claim"),
        Claim::Completed
    );
    timeout(WAIT, async {
        while exists(&store.redis_key("k")).await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the key expires");
    assert!(
        completed_at.elapsed() >= ttl - Duration::from_millis(5),
        "not before its TTL"
    );
    assert!(matches!(
        store
            .claim("k", Duration::from_secs(5))
            .await
            .expect("claim"),
        Claim::Acquired(_)
    ));
}

#[tokio::test]
#[ignore = "needs redis: run scripts/test.sh"]
async fn a_released_key_is_claimable_again_and_only_by_its_holder() {
    let (store, _) = store();
    let Claim::Acquired(first) = store
        .claim("k", Duration::from_secs(30))
        .await
        .expect("claim")
    else {
        panic!("claimable");
    };
    assert_eq!(
        store
            .claim("k", Duration::from_secs(30))
            .await
            .expect("claim"),
        Claim::InProgress
    );
    store.release("k", &first).await.expect("release");
    let Claim::Acquired(second) = store
        .claim("k", Duration::from_secs(30))
        .await
        .expect("claim")
    else {
        panic!("released keys are claimable");
    };
    // The first holder's stale release and completion do not touch the second claim.
    store.release("k", &first).await.expect("release");
    store
        .complete("k", &first, Duration::from_secs(30))
        .await
        .expect("complete");
    assert_eq!(
        store
            .claim("k", Duration::from_secs(30))
            .await
            .expect("claim"),
        Claim::InProgress
    );
    store
        .complete("k", &second, Duration::from_secs(30))
        .await
        .expect("complete");
    assert_eq!(
        store
            .claim("k", Duration::from_secs(30))
            .await
            .expect("claim"),
        Claim::Completed
    );
}

#[tokio::test]
#[ignore = "needs redis: run scripts/test.sh"]
async fn key_format_values_and_ttls_are_what_redis_shows() {
    let (store, prefix) = store();
    let key = "64b7f0c2a1b2c3d4e5f60718:7b28e95659ec2171";
    let redis_key = format!("eventstore:{prefix}:{key}");
    assert_eq!(store.redis_key(key), redis_key);
    let mut connection = raw().await;
    let Claim::Acquired(token) = store
        .claim(key, Duration::from_secs(60))
        .await
        .expect("claim")
    else {
        panic!("claimable");
    };
    let value: String = redis::cmd("GET")
        .arg(&redis_key)
        .query_async(&mut connection)
        .await
        .expect("GET");
    assert_eq!(value, format!("processing:{}", token.as_str()));
    let pttl: i64 = redis::cmd("PTTL")
        .arg(&redis_key)
        .query_async(&mut connection)
        .await
        .expect("PTTL");
    assert!((59_000..=60_000).contains(&pttl), "lease PTTL {pttl}");
    store
        .complete(key, &token, Duration::from_secs(300))
        .await
        .expect("complete");
    let value: String = redis::cmd("GET")
        .arg(&redis_key)
        .query_async(&mut connection)
        .await
        .expect("GET");
    assert_eq!(value, "done");
    let pttl: i64 = redis::cmd("PTTL")
        .arg(&redis_key)
        .query_async(&mut connection)
        .await
        .expect("PTTL");
    assert!(
        (299_000..=300_000).contains(&pttl),
        "DEDUPLICATION_TTL PTTL {pttl}"
    );
}

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

#[tokio::test]
#[ignore = "needs redis: run scripts/test.sh"]
async fn unreachable_redis_fail_open_processes_fail_closed_refuses_and_both_are_counted() {
    let addr = format!("127.0.0.1:{}", closed_port());
    let metrics = Arc::new(Metrics::new());
    let dedup = |policy| {
        let store = RedisEventStore::new(RedisConfig::new(addr.clone(), "down")).expect("config");
        let config = DedupConfig {
            on_unavailable: policy,
            ..DedupConfig::default()
        };
        Deduplicator::new(Arc::new(store), config, Arc::clone(&metrics))
    };
    let started = Instant::now();
    let open = dedup(UnavailablePolicy::FailOpen).admit("k").await;
    assert_eq!(
        open.ok(),
        Some(Admission::Process(None)),
        "fail-open processes"
    );
    let closed = dedup(UnavailablePolicy::FailClosed).admit("k").await;
    assert!(closed.is_err(), "fail-closed refuses");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "fails fast: {:?}",
        started.elapsed()
    );
    let text = metrics.render();
    assert!(
        text.contains(r#"chatcore_event_store_errors_total{policy="fail_open"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"chatcore_event_store_errors_total{policy="fail_closed"} 1"#),
        "{text}"
    );
}

/// A Redis of this test's own, so it can be stopped and started again.
struct OwnRedis {
    port: u16,
    child: tokio::process::Child,
}

impl OwnRedis {
    async fn start(port: u16) -> Self {
        let binary =
            std::env::var("CHATCORE_TEST_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
        let child = tokio::process::Command::new(binary)
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start redis-server");
        let url = format!("redis://127.0.0.1:{port}");
        timeout(WAIT, async {
            loop {
                if let Ok(client) = redis::Client::open(url.as_str()) {
                    if let Ok(mut c) = client.get_multiplexed_async_connection().await {
                        if redis::cmd("PING")
                            .query_async::<String>(&mut c)
                            .await
                            .is_ok()
                        {
                            return;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("own Redis answers");
        Self { port, child }
    }

    async fn stop(mut self) {
        self.child.kill().await.expect("kill");
    }
}

#[tokio::test]
#[ignore = "needs redis: run scripts/test.sh"]
async fn the_store_reconnects_by_itself_after_redis_restarts() {
    let port = closed_port();
    let redis = OwnRedis::start(port).await;
    let store = RedisEventStore::new(RedisConfig::new(format!("127.0.0.1:{port}"), "restart"))
        .expect("config");
    assert!(matches!(
        store.claim("before", Duration::from_secs(30)).await,
        Ok(Claim::Acquired(_))
    ));
    redis.stop().await;
    assert!(
        store
            .claim("during", Duration::from_secs(30))
            .await
            .is_err(),
        "down is an error, not a hang"
    );
    let redis = OwnRedis::start(port).await;
    let claim = timeout(WAIT, async {
        loop {
            if let Ok(claim) = store.claim("after", Duration::from_secs(30)).await {
                return claim;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("reconnected");
    assert!(matches!(claim, Claim::Acquired(_)));
    assert_eq!(redis.port, port);
    redis.stop().await;
}

#[tokio::test]
#[ignore = "needs redis: run scripts/test.sh"]
async fn the_throttle_passes_once_per_stream_per_ttl() {
    let (store, _) = store();
    let store = Arc::new(store);
    let ttl = Duration::from_millis(400);
    let throttle = Throttle::new(store.clone(), ttl);
    assert!(throttle.allow("7b28e95659ec2171").await.expect("allow"));
    assert!(
        !throttle.allow("7b28e95659ec2171").await.expect("allow"),
        "suppressed within the TTL"
    );
    assert!(
        throttle.allow("a83ab2505ace9a87").await.expect("allow"),
        "another stream passes"
    );
    let key = store.redis_key("throttle:7b28e95659ec2171");
    timeout(WAIT, async {
        while exists(&key).await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the window ends");
    assert!(
        throttle.allow("7b28e95659ec2171").await.expect("allow"),
        "passes again after the TTL"
    );
}
