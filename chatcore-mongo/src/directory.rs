//! The user e-mail directory on `user_email`.

use std::time::Duration;

use async_trait::async_trait;
use chatcore::email::{DirectoryError, UserDirectory, UserEmail};
use mongodb::bson::doc;
use mongodb::options::IndexOptions;
use mongodb::{Collection, Database, IndexModel};

use crate::{bounded, CallError};

/// The collection: `{user_id, email, name}`, unique on `user_id`.
pub const USER_EMAIL_COLLECTION: &str = "user_email";

/// Finds recipients in `user_email`.
#[derive(Debug, Clone)]
pub struct MongoUserDirectory {
    users: Collection<UserEmail>,
    timeout: Duration,
}

/// The directory is unavailable: the driver's error kept as the source, a timeout as text.
fn unavailable(error: CallError) -> DirectoryError {
    match error {
        CallError::Driver(error) => DirectoryError::unavailable(error),
        timed_out @ CallError::TimedOut(_) => DirectoryError::unavailable(timed_out.to_string()),
    }
}

impl MongoUserDirectory {
    /// A directory on `database`.
    pub fn new(database: &Database, timeout: Duration) -> Self {
        Self {
            users: database.collection(USER_EMAIL_COLLECTION),
            timeout,
        }
    }

    /// Creates the unique index on `user_id` (idempotent).
    pub async fn create_indexes(&self) -> Result<(), DirectoryError> {
        let index = IndexModel::builder()
            .keys(doc! { "user_id": 1 })
            .options(IndexOptions::builder().unique(true).build())
            .build();
        bounded(self.timeout, self.users.create_index(index))
            .await
            .map(|_| ())
            .map_err(unavailable)
    }

    /// Adds or replaces a user's address.
    pub async fn upsert(&self, user: &UserEmail) -> Result<(), DirectoryError> {
        let write = self
            .users
            .replace_one(doc! { "user_id": &user.user_id }, user)
            .upsert(true);
        bounded(self.timeout, write)
            .await
            .map(|_| ())
            .map_err(unavailable)
    }
}

#[async_trait]
impl UserDirectory for MongoUserDirectory {
    async fn lookup(&self, user_id: &str) -> Result<Option<UserEmail>, DirectoryError> {
        bounded(
            self.timeout,
            self.users.find_one(doc! { "user_id": user_id }),
        )
        .await
        .map_err(unavailable)
    }
}
