//! HTTP header names shared by the routers and the HTTP forwarder.

/// Makes a retried POST return the first result instead of storing or delivering twice.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

/// Carries the routing key (`stream_id` or `user_id`), so an L7 balancer can hash on it as well
/// as on the query parameter.
pub const ROUTING_KEY_HEADER: &str = "x-routing-key";
