//! Claims+completions per second against a real Redis (`CHATCORE_TEST_REDIS`).
//!
//! Two ways to remember that an event was processed, each on a fresh key per operation:
//!
//! - `chatcore_claim_complete`: `RedisEventStore::claim(key, lease)` — one atomic
//!   `SET key v NX PX lease GET` — then `complete(key, &token, ttl)` — one Lua `EVALSHA`.
//! - `seed_exists_set`: the seed's check-then-set, `EXISTS key` then `SET key 1 PX ttl`, on a plain
//!   `MultiplexedConnection`. It is racy: two consumers can both see `EXISTS` = 0 and both process
//!   the event. It is here only for comparison.
//!
//! Each is measured with 1 operation in flight (sequential) and with 64 in flight (one batch of 64
//! concurrent operations on one shared, cloned multiplexed connection, awaited with `join_all`).
//! One criterion iteration is one batch; `Throughput::Elements(batch)` makes criterion report
//! operations per second.
//!
//! Keys are `eventstore:{prefix}:{n}` with a random per-run prefix and a counter, and are built
//! before the timer starts, so every timed claim is a fresh one. Each timed operation reports
//! whether it took the fresh-key path (`Claim::Acquired`, or `EXISTS` = 0); after the timer stops
//! the count is asserted to equal the number of operations. Before any measurement, both paths are
//! checked once against Redis: a claim acquires, a second claim of a completed key returns
//! `Claim::Completed` and the key holds `done` with a TTL; the check-then-set path really stores
//! `1` with a TTL and then sees the key as existing.
//!
//! Without `CHATCORE_TEST_REDIS` the bench prints one line and exits 0.

use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chatcore::dedup::{Claim, EventStore, DEFAULT_CLAIM_LEASE, DEFAULT_DEDUPLICATION_TTL};
use chatcore_redis::{RedisConfig, RedisEventStore, DONE};
use criterion::{BenchmarkId, Criterion, Throughput};
use futures::future::join_all;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client};
use tokio::runtime::Runtime;

/// Operations in flight at once.
const IN_FLIGHT: [usize; 2] = [1, 64];
/// The production defaults: a claim's lease and how long a completed key suppresses duplicates.
const LEASE: Duration = DEFAULT_CLAIM_LEASE;
const TTL: Duration = DEFAULT_DEDUPLICATION_TTL;
/// Same response timeout as `RedisConfig::new`, so both paths give up alike.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);

/// A random hex id for this run, so keys never collide with earlier runs or other users.
fn run_id() -> String {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    hasher.write_u32(std::process::id());
    format!("{:016x}", hasher.finish())
}

/// Hands out fresh keys under one prefix.
struct Keys {
    prefix: String,
    next: u64,
}

impl Keys {
    fn new(prefix: String) -> Self {
        Self { prefix, next: 0 }
    }

    fn take(&mut self, count: usize) -> Vec<String> {
        (0..count)
            .map(|_| {
                self.next += 1;
                format!("{}{}", self.prefix, self.next)
            })
            .collect()
    }
}

/// chatcore's way. True when the claim was acquired (and then completed).
async fn claim_complete(store: &RedisEventStore, key: &str) -> bool {
    match store.claim(key, LEASE).await.expect("claim") {
        Claim::Acquired(token) => {
            store.complete(key, &token, TTL).await.expect("complete");
            true
        }
        _ => false,
    }
}

/// The seed's way. True when the key did not exist (and was then set).
async fn exists_then_set(connection: &MultiplexedConnection, key: &str) -> bool {
    let mut connection = connection.clone();
    let exists: bool = redis::cmd("EXISTS")
        .arg(key)
        .query_async(&mut connection)
        .await
        .expect("EXISTS");
    if exists {
        return false;
    }
    let () = redis::cmd("SET")
        .arg(key)
        .arg(1)
        .arg("PX")
        .arg(TTL.as_millis() as u64)
        .query_async(&mut connection)
        .await
        .expect("SET");
    true
}

/// Untimed, once: both paths do what the benchmark claims to measure.
async fn check_paths(
    store: &RedisEventStore,
    connection: &MultiplexedConnection,
    run: &str,
    seed_prefix: &str,
) {
    let key = format!("check-{run}");
    let Claim::Acquired(token) = store.claim(&key, LEASE).await.expect("claim") else {
        panic!("the first claim of a fresh key must be Acquired");
    };
    assert_eq!(
        store.claim(&key, LEASE).await.expect("claim"),
        Claim::InProgress,
        "a claimed, not yet completed key must be InProgress"
    );
    store.complete(&key, &token, TTL).await.expect("complete");
    assert_eq!(
        store.claim(&key, LEASE).await.expect("claim"),
        Claim::Completed,
        "a second claim of a completed key must be Completed"
    );
    assert_stored(connection, &store.redis_key(&key), DONE).await;
    assert!(claim_complete(store, &format!("check2-{run}")).await);

    let key = format!("{seed_prefix}check");
    assert!(
        exists_then_set(connection, &key).await,
        "a fresh key must not exist"
    );
    assert_stored(connection, &key, "1").await;
    assert!(
        !exists_then_set(connection, &key).await,
        "a set key must exist"
    );
}

/// `key` holds `value` and expires within the TTL.
async fn assert_stored(connection: &MultiplexedConnection, key: &str, value: &str) {
    let mut connection = connection.clone();
    let stored: Option<String> = redis::cmd("GET")
        .arg(key)
        .query_async(&mut connection)
        .await
        .expect("GET");
    assert_eq!(stored.as_deref(), Some(value), "value of {key}");
    let ttl_ms: i64 = redis::cmd("PTTL")
        .arg(key)
        .query_async(&mut connection)
        .await
        .expect("PTTL");
    assert!(
        ttl_ms > 0 && ttl_ms <= TTL.as_millis() as i64,
        "{key} must expire within the TTL, PTTL = {ttl_ms}"
    );
}

/// Runs `iters` batches of `in_flight` operations, timing only the operations, and asserts
/// afterwards that every one of them took the fresh-key path.
async fn timed_batches<F, Fut>(keys: &mut Keys, iters: u64, in_flight: usize, op: F) -> Duration
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let keys = keys.take(iters as usize * in_flight);
    let mut fresh = 0usize;
    let start = Instant::now();
    if in_flight == 1 {
        for key in keys {
            fresh += usize::from(op(key).await);
        }
    } else {
        let mut keys = keys.into_iter();
        for _ in 0..iters {
            let batch = join_all(keys.by_ref().take(in_flight).map(&op)).await;
            fresh += batch.into_iter().filter(|&f| f).count();
        }
    }
    let elapsed = start.elapsed();
    assert_eq!(
        fresh,
        iters as usize * in_flight,
        "every timed operation must be on a fresh key"
    );
    elapsed
}

fn bench_redis_dedup(c: &mut Criterion, url: &str) {
    let runtime = Runtime::new().expect("tokio runtime");
    let run = run_id();
    let seed_prefix = format!("eventstore:seed-bench-{run}:");
    let (store, connection) = runtime.block_on(async {
        let store = RedisEventStore::new(RedisConfig::new(url, format!("bench-{run}")))
            .expect("valid Redis address");
        store
            .ping()
            .await
            .unwrap_or_else(|e| panic!("Redis at {url} did not answer: {e}"));
        let connection = Client::open(url)
            .expect("valid Redis address")
            .get_multiplexed_async_connection_with_config(
                &AsyncConnectionConfig::new().set_response_timeout(Some(RESPONSE_TIMEOUT)),
            )
            .await
            .unwrap_or_else(|e| panic!("Redis at {url} did not answer: {e}"));
        check_paths(&store, &connection, &run, &seed_prefix).await;
        (store, connection)
    });

    // chatcore's keys are event keys; the store adds `eventstore:bench-{run}:`.
    let mut chatcore_keys = Keys::new(String::new());
    let mut seed_keys = Keys::new(seed_prefix);

    let mut group = c.benchmark_group("redis_dedup");
    for in_flight in IN_FLIGHT {
        group.throughput(Throughput::Elements(in_flight as u64));
        group.bench_function(
            BenchmarkId::new("chatcore_claim_complete", in_flight),
            |b| {
                b.iter_custom(|iters| {
                    runtime.block_on(timed_batches(&mut chatcore_keys, iters, in_flight, |key| {
                        let store = &store;
                        async move { claim_complete(store, &key).await }
                    }))
                })
            },
        );
        group.bench_function(BenchmarkId::new("seed_exists_set", in_flight), |b| {
            b.iter_custom(|iters| {
                runtime.block_on(timed_batches(&mut seed_keys, iters, in_flight, |key| {
                    let connection = &connection;
                    async move { exists_then_set(connection, &key).await }
                }))
            })
        });
    }
    group.finish();
}

fn main() {
    let Some(url) = std::env::var("CHATCORE_TEST_REDIS")
        .ok()
        .filter(|url| !url.is_empty())
    else {
        println!(
            "redis_dedup: CHATCORE_TEST_REDIS is not set; run `eval \"$(scripts/services.sh up)\"` first. Skipping."
        );
        return;
    };
    let mut criterion = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .configure_from_args();
    bench_redis_dedup(&mut criterion, &url);
    criterion.final_summary();
}
