//! The roles of `chat-server`: one module per service of the topology (the e-mail consumer is
//! in [`crate::email`]).

pub(crate) mod all;
pub(crate) mod change_handler;
pub(crate) mod relay;
pub(crate) mod tiers;
