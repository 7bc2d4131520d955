//! Why a node could not be built.

use crate::change::ChangeError;

/// A node's parts do not fit together, or a consumer group could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// No authentication was chosen.
    #[error(
        "no authentication chosen: call .auth(Auth::disabled()) or .auth(Auth::jwt(..)) on the builder"
    )]
    AuthNotChosen,
    /// A message store was given without the change feed it writes to.
    #[error(
        "a message store was given without its change feed: messages would be stored and never delivered; \
         use .store(..) with a store that has its own feed, or add .change_feed(..) (e.g. the topic its CDC writes to)"
    )]
    StoreWithoutFeed,
    /// A change feed was given without the message store it is the feed of.
    #[error(
        "a change feed was given without the message store it belongs to: add .message_store(..)"
    )]
    FeedWithoutStore,
    /// A consumer group the strategy needs could not be opened.
    #[error("cannot open consumer group {group} of the change feed")]
    Feed {
        /// The group.
        group: String,
        /// Why.
        #[source]
        source: ChangeError,
    },
}
