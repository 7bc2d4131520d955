//! The message store: `STORE`, `DATA_DIR` and MongoDB.

use std::path::PathBuf;
use std::time::Duration;

use chatcore::config::parse_duration;
use clap::ValueEnum;

use super::error::present;
use super::ConfigError;

/// `sqlite`, `memory` or `mongo` (`STORE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StoreKind {
    /// One durable SQLite file in `DATA_DIR`: messages, change feed and consumer positions.
    Sqlite,
    /// In memory: everything is lost when the process stops.
    Memory,
    /// MongoDB at `MONGO_URI`.
    Mongo,
}

/// The message store of role `all` (flattened into [`super::Settings`] as `store`).
#[derive(Debug, Clone, clap::Args)]
pub struct StoreSettings {
    /// The message store of role `all`: `sqlite` (durable, one file in `DATA_DIR`), `memory`
    /// (volatile, for tests and demos) or `mongo` (`MONGO_URI`). Unset: `mongo` when `MONGO_URI`
    /// is set, else `sqlite`.
    #[arg(
        long = "store",
        id = "store",
        value_name = "STORE",
        global = true,
        env = "STORE",
        value_enum
    )]
    pub kind: Option<StoreKind>,
    /// Directory of the SQLite store (`chatcore.db`), created if missing; one process at a time.
    #[arg(
        long,
        global = true,
        env = "DATA_DIR",
        default_value = "./chatcore-data"
    )]
    pub data_dir: PathBuf,
}

/// MongoDB: the message store of the split roles, the `user_email` directory, the inbox and the
/// change streams (flattened into [`super::Settings`] as `mongo`).
#[derive(Debug, Clone, clap::Args)]
pub struct MongoSettings {
    /// MongoDB connection string of the message store (and `STORE=mongo`, when `STORE` is
    /// unset).
    #[arg(
        long = "mongo-uri",
        id = "mongo_uri",
        value_name = "MONGO_URI",
        global = true,
        env = "MONGO_URI",
        hide_env_values = true
    )]
    pub uri: Option<String>,
    /// MongoDB database holding `chat`, `user_email` and the change checkpoints.
    #[arg(
        long = "mongo-database",
        id = "mongo_database",
        value_name = "MONGO_DATABASE",
        global = true,
        env = "MONGO_DATABASE",
        default_value = "chat_db"
    )]
    pub database: String,
    /// Upper bound of every MongoDB call (a store that does not answer is a 503, not a hang).
    #[arg(
        long = "mongo-timeout",
        id = "mongo_timeout",
        value_name = "MONGO_TIMEOUT",
        global = true,
        env = "MONGO_TIMEOUT",
        default_value = "3s",
        value_parser = parse_duration
    )]
    pub timeout: Duration,
}

impl StoreSettings {
    /// The message store `STORE` and `MONGO_URI` name together; contradictory combinations are
    /// refused with one line.
    pub fn resolve(&self, mongo: &MongoSettings) -> Result<StoreKind, ConfigError> {
        let mongo = present(&mongo.uri).is_some();
        match (self.kind, mongo) {
            (None, true) => Ok(StoreKind::Mongo),
            (None, false) => Ok(StoreKind::Sqlite),
            (Some(StoreKind::Mongo), false) => Err(ConfigError::Invalid {
                variable: "STORE",
                reason: "is mongo but MONGO_URI is not set",
            }),
            (Some(kind @ (StoreKind::Sqlite | StoreKind::Memory)), true) => {
                Err(ConfigError::Invalid {
                    variable: "STORE",
                    reason: if kind == StoreKind::Sqlite {
                        "is sqlite but MONGO_URI is set: unset one of them"
                    } else {
                        "is memory but MONGO_URI is set: unset one of them"
                    },
                })
            }
            (Some(kind), _) => Ok(kind),
        }
    }
}
