//! # chatcore-redis
//!
//! The Redis backend of chatcore (not implemented yet; it arrives with its own issue):
//!
//! - `RedisEventStore`: a [`chatcore::dedup::EventStore`] whose claim is one atomic
//!   `SET key processing NX PX lease`, completed with `DEDUPLICATION_TTL` and released only by its
//!   holder, under keys `eventstore:{EVENT_STORE_KEY_PREFIX}:{key}`;
//! - a notification throttle that lets the first event of a `stream_id` through per TTL.
//!
//! Until then, `chat-server` refuses `REDIS_ADDR` with a clear message and runs on the embedded
//! event store.

#![warn(missing_docs)]
