//! The user e-mail directory on the `user_email` table.

use std::sync::Arc;

use async_trait::async_trait;
use chatcore::email::{DirectoryError, UserDirectory, UserEmail};
use rusqlite::OptionalExtension;
use tokio::sync::oneshot;

use crate::writer::Command;
use crate::{Shared, SqliteError};

/// Finds recipients in `user_email` (`user_id` unique).
#[derive(Debug, Clone)]
pub struct SqliteUserDirectory {
    shared: Arc<Shared>,
}

fn unavailable(error: SqliteError) -> DirectoryError {
    DirectoryError::unavailable(error)
}

impl SqliteUserDirectory {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// Adds or replaces a user's address (committed when this returns).
    pub async fn upsert(&self, user: &UserEmail) -> Result<(), DirectoryError> {
        let (reply, answer) = oneshot::channel();
        self.shared
            .writer
            .send(Command::Upsert {
                user: user.clone(),
                reply,
            })
            .map_err(unavailable)?;
        answer
            .await
            .map_err(|_| unavailable(SqliteError::WriterStopped))?
            .map_err(unavailable)
    }
}

#[async_trait]
impl UserDirectory for SqliteUserDirectory {
    async fn lookup(&self, user_id: &str) -> Result<Option<UserEmail>, DirectoryError> {
        let user_id = user_id.to_owned();
        self.shared
            .readers
            .run(move |c| {
                c.prepare_cached("SELECT user_id, email, name FROM user_email WHERE user_id = ?1")?
                    .query_row([user_id], |row| {
                        Ok(UserEmail {
                            user_id: row.get(0)?,
                            email: row.get(1)?,
                            name: row.get(2)?,
                        })
                    })
                    .optional()
            })
            .await
            .map_err(unavailable)
    }
}
