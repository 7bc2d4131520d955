//! The integration tests of `chat-server`, in one test binary (one link, shared helpers): the
//! embedded node on every backend combination, each role, the split topology behind nginx, crash
//! safety, the real Debezium connector. Tests that need a service are ignored unless run with
//! `--include-ignored` (`scripts/test.sh` starts the services). Run a group with its module
//! name as the filter, e.g. `cargo test -p reference-server --test it -- embedded::`.

#[path = "topology/clients.rs"]
mod clients;
mod common;
#[path = "topology/processes.rs"]
mod processes;

mod auth;
mod change_handler;
mod change_handler_strategies;
mod commerce;
mod conversations;
mod crash;
mod debezium;
mod delivery;
mod email;
mod embedded;
mod http_forwarder;
mod inbox;
mod limits;
mod redis_backend;
mod roles;
mod sockets;
mod strategies;
mod topology;
