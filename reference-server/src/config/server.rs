//! Listeners, the internal token, the node's name and the shutdown and header bounds.

use std::net::SocketAddr;
use std::time::Duration;

use chatcore::config::parse_duration;

/// Where and how a role serves HTTP (flattened into [`super::Settings`] as `server`).
#[derive(Debug, Clone, clap::Args)]
pub struct ServerSettings {
    /// Address the public HTTP and websocket listener binds (client routes only when
    /// `INTERNAL_LISTEN_ADDR` is set).
    #[arg(
        long,
        global = true,
        env = "LISTEN_ADDR",
        default_value = "127.0.0.1:8080"
    )]
    pub listen_addr: SocketAddr,
    /// Address of the listener for the balancer and the change handler: the internal routes
    /// (forward, close-stream, notifications) plus the client routes. Required by `chat-ws` and
    /// `notifications-ws`; in role `all` it moves the internal routes off `LISTEN_ADDR`.
    #[arg(long, global = true, env = "INTERNAL_LISTEN_ADDR")]
    pub internal_listen_addr: Option<SocketAddr>,
    /// Bearer token the internal routes require, and the change handler sends. Unset: no check
    /// (keep the internal listener on a private network).
    #[arg(long, global = true, env = "INTERNAL_TOKEN", hide_env_values = true)]
    pub internal_token: Option<String>,
    /// Name of this instance, sent as the `x-chatcore-node` header on every response.
    #[arg(long, global = true, env = "NODE_ID")]
    pub node_id: Option<String>,
    /// How long shutdown waits for connections and in-flight events.
    #[arg(
        long,
        global = true,
        env = "SHUTDOWN_TIMEOUT",
        default_value = "10s",
        value_parser = parse_duration
    )]
    pub shutdown_timeout: Duration,
    /// How long a role waits at start-up for MongoDB and the Kafka broker to answer (retrying
    /// with backoff, each failure logged) before it exits.
    #[arg(
        long,
        global = true,
        env = "STARTUP_TIMEOUT",
        default_value = "60s",
        value_parser = parse_duration
    )]
    pub startup_timeout: Duration,
    /// A connection that has not sent a complete request head within this time is closed.
    #[arg(
        long,
        global = true,
        env = "HEADER_READ_TIMEOUT",
        default_value = "10s",
        value_parser = parse_duration
    )]
    pub header_read_timeout: Duration,
}
