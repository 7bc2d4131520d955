//! The command line: the role to run and the [`Settings`], and one-line parse errors.

use clap::{Parser, Subcommand};

use super::Settings;

/// `chat-server`: the reference deployment of chatcore.
#[derive(Debug, Parser)]
#[command(name = "chat-server", version, about)]
pub struct Cli {
    /// Which service to run; `all` (the default) runs every part in one process.
    #[command(subcommand)]
    pub role: Option<Role>,
    /// Settings shared by every role.
    #[command(flatten)]
    pub settings: Settings,
}

/// The services of the seed, each runnable on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Subcommand)]
pub enum Role {
    /// Persistence API, change handler, chat and notification tiers in one process (the
    /// default).
    All,
    /// The message API (`POST`/`GET /chat/messages`) on MongoDB (`MONGO_URI` required).
    Persistence,
    /// Publishes the MongoDB change stream of `chat` to Kafka in Debezium's shape (`MONGO_URI`
    /// and `CHAT_PERSISTENCE_CHANGE_KAFKA_BOOTSTRAP_SERVERS` required).
    Relay,
    /// Kafka change feed → event store → HTTP forwarders to the chat and notification tiers
    /// (`CHAT_PERSISTENCE_CHANGE_KAFKA_BOOTSTRAP_SERVERS`, `CHAT_MESSAGE_SOCKET_TRANSFER_...` and
    /// `GENERAL_NOTIFICATION_..._CLIENT_HOST` required).
    ChangeHandler,
    /// Chat websockets by `stream_id`; deliveries arrive on `INTERNAL_LISTEN_ADDR` (required, with
    /// `MONGO_URI` for `since=` replays).
    ChatWs,
    /// Notification websockets by `user_id`; deliveries arrive on `INTERNAL_LISTEN_ADDR`
    /// (required).
    NotificationsWs,
    /// Kafka change feed → an e-mail to each offline receiver of a new chat message, through
    /// the `user_email` directory and SMTP; dead-letter topic after exhausted retries
    /// (`CHAT_PERSISTENCE_CHANGE_KAFKA_BOOTSTRAP_SERVERS`, `MONGO_URI`, `SMTP_HOST` and
    /// `EMAIL_FROM_ADDRESS` required).
    Email,
}

impl Role {
    /// The role's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Persistence => "persistence",
            Self::Relay => "relay",
            Self::ChangeHandler => "change-handler",
            Self::ChatWs => "chat-ws",
            Self::NotificationsWs => "notifications-ws",
            Self::Email => "email",
        }
    }
}

impl Cli {
    /// Parses the command line and environment. Help and version are printed and exit 0; any
    /// other error exits 2 after one line naming the environment variable and flag at fault.
    pub fn parse_or_exit() -> Self {
        match Self::try_parse() {
            Ok(cli) => cli,
            Err(error) if !error.use_stderr() => error.exit(),
            Err(error) => {
                eprintln!("chat-server: {}", parse_error_line(&error));
                std::process::exit(2)
            }
        }
    }
}

/// One line for a command-line or environment error: `NAME (--flag): invalid value "x": why`.
pub fn parse_error_line(error: &clap::Error) -> String {
    use clap::error::{ContextKind, ContextValue};
    use clap::CommandFactory;
    let context = |kind| match error.get(kind) {
        Some(ContextValue::String(text)) => Some(text.clone()),
        Some(ContextValue::StyledStr(text)) => Some(text.to_string()),
        _ => None,
    };
    let Some(flag) = context(ContextKind::InvalidArg) else {
        let text = error.render().to_string();
        let first = text.lines().next().unwrap_or("invalid command line");
        return first.trim_start_matches("error: ").to_owned();
    };
    let long = flag.split_whitespace().next().unwrap_or(&flag).to_owned();
    let command = Cli::command();
    let env = command
        .get_arguments()
        .find(|arg| arg.get_long().is_some_and(|l| format!("--{l}") == long))
        .and_then(|arg| arg.get_env())
        .map(|env| env.to_string_lossy().into_owned());
    let name = match env {
        Some(env) => format!("{env} ({long})"),
        None => long,
    };
    let value = context(ContextKind::InvalidValue).unwrap_or_default();
    let reason = std::error::Error::source(error)
        .map(|cause| cause.to_string())
        .unwrap_or_else(|| error.kind().to_string());
    format!("{name}: invalid value {value:?}: {reason}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_malformed_value_is_one_line_naming_the_variable() {
        let error =
            Cli::try_parse_from(["chat-server", "chat-ws", "--ping-interval", "30 seconds"])
                .expect_err("bad duration");
        let line = parse_error_line(&error);
        assert!(
            line.starts_with("PING_INTERVAL (--ping-interval): invalid value \"30 seconds\": "),
            "{line}"
        );
        assert!(!line.contains('\n'), "{line}");
        let error = Cli::try_parse_from(["chat-server", "--listen-addr", "nowhere"])
            .expect_err("bad address");
        assert!(parse_error_line(&error).starts_with("LISTEN_ADDR (--listen-addr)"));
    }

    #[test]
    fn help_documents_every_variable_with_its_default() {
        use clap::CommandFactory;
        let help = Cli::command().render_long_help().to_string();
        for variable in [
            "LISTEN_ADDR",
            "INTERNAL_LISTEN_ADDR",
            "INTERNAL_TOKEN",
            "NODE_ID",
            "SHUTDOWN_TIMEOUT",
            "STARTUP_TIMEOUT",
            "MAX_GROUP_MEMBERS",
            "PING_INTERVAL",
            "PONG_WAIT",
            "WRITE_WAIT",
            "MONGO_URI",
            "MONGO_DATABASE",
            "REDIS_ADDR",
            "REDIS_PASSWORD",
            "REDIS_DB",
            "DEDUPLICATION_TTL",
            "EVENT_STORE_KEY_PREFIX",
            "MESSAGE_RETRY_MAX_RETRIES",
            "MESSAGE_RETRY_INITIAL_INTERVAL",
            "MESSAGE_RETRY_MAX_INTERVAL",
            "MESSAGE_RETRY_MULTIPLIER",
            "CHAT_PERSISTENCE_CHANGE_KAFKA_BOOTSTRAP_SERVERS",
            "CHAT_PERSISTENCE_CHANGE_KAFKA_CONSUMER_INFO_TOPIC_NAME",
            "CHAT_PERSISTENCE_CHANGE_KAFKA_CONSUMER_INFO_CONSUMER_NAME",
            "CHAT_MESSAGE_SOCKET_TRANSFER_OUTGOING_CONFIG_CLIENT_HOST",
            "CHAT_MESSAGE_SOCKET_TRANSFER_OUTGOING_CONFIG_CLIENT_TIMEOUT",
            "GENERAL_NOTIFICATION_OUTGOING_CONFIG_CLIENT_HOST",
            "GENERAL_NOTIFICATION_OUTGOING_CONFIG_CLIENT_TIMEOUT",
            "LOG_LEVEL",
        ] {
            assert!(
                help.contains(&format!("[env: {variable}")),
                "{variable} missing from --help"
            );
        }
        for default in [
            "[default: 5m]",
            "[default: 100ms]",
            "[default: 30s]",
            "[default: 2]",
            "[default: chat.changes]",
        ] {
            assert!(help.contains(default), "{default} missing from --help");
        }
        for role in [
            "persistence",
            "relay",
            "change-handler",
            "chat-ws",
            "notifications-ws",
            "email",
        ] {
            assert!(help.contains(role), "role {role} missing from --help");
        }
    }

    #[test]
    fn every_setting_has_a_long_flag_and_one_environment_variable_of_its_own() {
        use clap::CommandFactory;
        let command = Cli::command();
        let mut envs = std::collections::HashSet::new();
        let mut longs = std::collections::HashSet::new();
        for arg in command.get_arguments() {
            let long = arg.get_long();
            if matches!(long, Some("help" | "version")) {
                continue;
            }
            let long = long.unwrap_or_else(|| panic!("{:?} has no long flag", arg.get_id()));
            let env = arg
                .get_env()
                .unwrap_or_else(|| panic!("--{long} has no environment variable"));
            assert!(longs.insert(long), "--{long} twice");
            assert!(envs.insert(env.to_owned()), "{env:?} twice");
        }
        assert!(envs.len() > 70, "{} settings", envs.len());
    }
}
