//! # chatcore-mongo
//!
//! The MongoDB backend of chatcore (not implemented yet; it arrives with its own issue):
//!
//! - `MongoMessageStore`: a [`chatcore::store::MessageStore`] on the `chat` collection with
//!   ObjectId message ids and the `{stream_id: 1, _id: 1}` index;
//! - `MongoChangeStream`: a [`chatcore::change::ChangeSource`] over change streams that
//!   checkpoints resume tokens only once the pipeline is done with an event;
//! - `UserEmailDirectory`: recipients of email notifications from `user_email`.
//!
//! Until then, `chat-server` refuses `MONGO_URI` with a clear message and runs on the embedded
//! store.

#![warn(missing_docs)]
