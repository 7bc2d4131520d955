//! The whole split topology as separate processes on loopback: `persistence`, `relay`,
//! `change-handler`, three `chat-ws`, one `notifications-ws`, nginx with the repository's
//! `deploy/nginx/chatcore.conf`, and a Redis of the test's own (so stopping it disturbs no other
//! test); Kafka and MongoDB are the ones `scripts/services.sh` started, with a topic, consumer
//! group and database of this run's own.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::processes::{await_http_ok, await_redis, free_port, Process};

/// Token the internal routes require in this topology.
pub const TOKEN: &str = "topology-internal-token";

/// How long a role may take to stop gracefully.
pub const STOP_WAIT: Duration = Duration::from_secs(20);

fn required_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: run scripts/test.sh"))
}

/// A `chat-server` instance with its two listeners.
pub struct Instance {
    /// The process.
    pub process: Process,
    /// `NODE_ID`.
    pub node: String,
    /// `http://` base of `LISTEN_ADDR`.
    pub public: String,
    /// `http://` base of `INTERNAL_LISTEN_ADDR` (the balancer-facing address).
    pub internal: String,
}

/// Every process of the topology.
pub struct Cluster {
    /// Where configs and logs go.
    pub dir: PathBuf,
    /// `http://` base of nginx's public server.
    pub public: String,
    /// `ws://` base of nginx's public server.
    pub ws_public: String,
    /// `http://` base of nginx's internal server.
    pub internal: String,
    /// The chat tier.
    pub chat_ws: Vec<Instance>,
    /// The notification tier.
    pub notifications_ws: Instance,
    /// The message API: two instances, each conversation's writes hashed onto one of them.
    pub persistence: Vec<Process>,
    /// MongoDB change stream → Kafka.
    pub relay: Process,
    /// Kafka → Redis → forwards through nginx; `None` while it is down.
    pub change_handler: Option<Process>,
    /// The balancer.
    pub nginx: Process,
    /// The event store; `None` once stopped.
    pub redis: Option<Process>,
    change_handler_port: u16,
    relay_port: u16,
    persistence_ports: [u16; 2],
    common: Vec<(String, String)>,
    redis_port: u16,
    http: reqwest::Client,
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_chat-server"))
}

impl Cluster {
    /// Starts everything and waits until each part answers.
    pub async fn start(http: reqwest::Client) -> Self {
        let unique = chatcore::dedup::ClaimToken::unique();
        let unique = unique.as_str().replace('-', "_");
        let dir = std::env::temp_dir().join(format!("chatcore-topology-{unique}"));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let common = env(&[
            ("MONGO_URI", &required_env("CHATCORE_TEST_MONGO_URI")),
            ("MONGO_DATABASE", &format!("topology_{unique}")),
            (
                "CHAT_PERSISTENCE_CHANGE_KAFKA_BOOTSTRAP_SERVERS",
                &required_env("CHATCORE_TEST_KAFKA"),
            ),
            (
                "CHAT_PERSISTENCE_CHANGE_KAFKA_CONSUMER_INFO_TOPIC_NAME",
                &format!("topology-{unique}"),
            ),
            (
                "CHAT_PERSISTENCE_CHANGE_KAFKA_CONSUMER_INFO_CONSUMER_NAME",
                &format!("topology-group-{unique}"),
            ),
            ("INTERNAL_TOKEN", TOKEN),
            ("SHUTDOWN_TIMEOUT", "5s"),
            ("LOG_LEVEL", "info"),
        ]);

        let redis_port = free_port();
        let mut redis = start_redis(redis_port, &dir);
        await_redis(redis_port, &mut redis).await;

        let mut chat_ws = Vec::new();
        for i in 0..3 {
            chat_ws.push(start_instance(
                "chat-ws",
                &format!("chat-ws-{i}"),
                &common,
                &dir,
            ));
        }
        let notifications_ws =
            start_instance("notifications-ws", "notifications-ws-0", &common, &dir);
        let (public_port, internal_port) = (free_port(), free_port());
        // Read frames and removed members' closes go through nginx's internal server.
        let internal = format!("http://127.0.0.1:{internal_port}");
        let persistence_ports = [free_port(), free_port()];
        let persistence: Vec<Process> = persistence_ports
            .iter()
            .enumerate()
            .map(|(i, port)| {
                let node = format!("persistence-{i}");
                role(
                    "persistence",
                    &node,
                    *port,
                    &[
                        ("NODE_ID", &node),
                        (
                            "CHAT_MESSAGE_SOCKET_TRANSFER_OUTGOING_CONFIG_CLIENT_HOST",
                            &internal,
                        ),
                    ],
                    &common,
                    &dir,
                )
            })
            .collect();
        let relay_port = free_port();
        let relay = role("relay", "relay", relay_port, &[], &common, &dir);

        let nginx = start_nginx(
            &dir,
            public_port,
            internal_port,
            &chat_ws,
            &notifications_ws,
            &persistence_ports,
        );
        let mut cluster = Self {
            dir,
            public: format!("http://127.0.0.1:{public_port}"),
            ws_public: format!("ws://127.0.0.1:{public_port}"),
            internal: format!("http://127.0.0.1:{internal_port}"),
            chat_ws,
            notifications_ws,
            persistence,
            relay,
            change_handler: None,
            nginx,
            redis: Some(redis),
            change_handler_port: free_port(),
            relay_port,
            persistence_ports,
            common,
            redis_port,
            http,
        };
        cluster.await_ready().await;
        cluster.start_change_handler().await;
        cluster
    }

    async fn await_ready(&mut self) {
        let http = self.http.clone();
        for instance in self
            .chat_ws
            .iter_mut()
            .chain(std::iter::once(&mut self.notifications_ws))
        {
            let url = format!("{}/readyz", instance.internal);
            await_http_ok(&http, &url, &mut instance.process).await;
        }
        let url = format!("{}/healthz", self.public);
        await_http_ok(&http, &url, &mut self.nginx).await;
        for (process, port) in self.persistence.iter_mut().zip(&self.persistence_ports) {
            let url = format!("http://127.0.0.1:{port}/chat/messages?stream_id=0000000000000000");
            await_http_ok(&http, &url, process).await;
        }
        // The relay serves once its change stream is open: nothing stored later can be missed.
        let url = format!("http://127.0.0.1:{}/healthz", self.relay_port);
        await_http_ok(&http, &url, &mut self.relay).await;
    }

    /// Starts (or restarts) the change handler and waits until it answers.
    pub async fn start_change_handler(&mut self) {
        let internal = self.internal.clone();
        let redis = format!("redis://127.0.0.1:{}", self.redis_port);
        let mut process = role(
            "change-handler",
            &format!("change-handler-{}", chrono::Utc::now().timestamp_millis()),
            self.change_handler_port,
            &[
                ("REDIS_ADDR", &redis),
                (
                    "CHAT_MESSAGE_SOCKET_TRANSFER_OUTGOING_CONFIG_CLIENT_HOST",
                    &internal,
                ),
                (
                    "GENERAL_NOTIFICATION_OUTGOING_CONFIG_CLIENT_HOST",
                    &internal,
                ),
                (
                    "CHAT_MESSAGE_SOCKET_TRANSFER_OUTGOING_CONFIG_CLIENT_TIMEOUT",
                    "3s",
                ),
                ("GENERAL_NOTIFICATION_OUTGOING_CONFIG_CLIENT_TIMEOUT", "3s"),
                ("MESSAGE_RETRY_INITIAL_INTERVAL", "50ms"),
                ("MESSAGE_RETRY_MAX_INTERVAL", "1s"),
                ("MESSAGE_RETRY_MAX_RETRIES", "8"),
                // A killed handler's claims block its events for this long.
                ("DEDUPLICATION_LEASE", "3s"),
            ],
            &self.common,
            &self.dir,
        );
        let url = format!("http://127.0.0.1:{}/healthz", self.change_handler_port);
        await_http_ok(&self.http, &url, &mut process).await;
        self.change_handler = Some(process);
    }

    /// SIGKILL to the change handler.
    pub async fn kill_change_handler(&mut self) {
        if let Some(mut process) = self.change_handler.take() {
            process.kill().await;
        }
    }

    /// SIGKILL to the event store.
    pub async fn stop_redis(&mut self) {
        if let Some(mut redis) = self.redis.take() {
            redis.kill().await;
        }
    }

    /// The change handler's `/metrics` text.
    pub async fn change_handler_metrics(&self) -> String {
        let url = format!("http://127.0.0.1:{}/metrics", self.change_handler_port);
        match self.http.get(url).send().await {
            Ok(response) => response.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// Fails when a process that should run has exited.
    pub fn assert_running(&mut self) {
        for instance in &mut self.chat_ws {
            instance.process.assert_running();
        }
        self.notifications_ws.process.assert_running();
        for process in &mut self.persistence {
            process.assert_running();
        }
        self.relay.assert_running();
        self.nginx.assert_running();
        if let Some(handler) = &mut self.change_handler {
            handler.assert_running();
        }
    }

    /// The logs' ends, for a failure message.
    pub fn tails(&self) -> String {
        let mut out = String::new();
        let processes = self
            .chat_ws
            .iter()
            .map(|i| &i.process)
            .chain([&self.notifications_ws.process])
            .chain(&self.persistence)
            .chain([&self.relay])
            .chain(self.change_handler.iter())
            .chain([&self.nginx]);
        for process in processes {
            out.push_str(&format!("--- {} ---\n{}\n", process.name, process.tail(15)));
        }
        out
    }
}

fn role(
    role: &str,
    name: &str,
    port: u16,
    extra: &[(&str, &str)],
    common: &[(String, String)],
    dir: &Path,
) -> Process {
    let mut vars = common.to_vec();
    vars.push(("LISTEN_ADDR".to_owned(), format!("127.0.0.1:{port}")));
    vars.extend(env(extra));
    Process::spawn(name, binary(), &[role.to_owned()], &vars, dir)
}

fn start_instance(
    role_name: &str,
    node: &str,
    common: &[(String, String)],
    dir: &Path,
) -> Instance {
    let (public, internal) = (free_port(), free_port());
    let internal_addr = format!("127.0.0.1:{internal}");
    let process = role(
        role_name,
        node,
        public,
        &[("INTERNAL_LISTEN_ADDR", &internal_addr), ("NODE_ID", node)],
        common,
        dir,
    );
    Instance {
        process,
        node: node.to_owned(),
        public: format!("http://127.0.0.1:{public}"),
        internal: format!("http://{internal_addr}"),
    }
}

fn start_redis(port: u16, dir: &Path) -> Process {
    let server = required_env("CHATCORE_TEST_REDIS_SERVER");
    let args: Vec<String> = [
        "--bind",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--save",
        "",
        "--appendonly",
        "no",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    Process::spawn("redis", Path::new(&server), &args, &[], dir)
}

fn members(addresses: impl Iterator<Item = String>) -> String {
    addresses
        .map(|addr| format!("server {addr} max_fails=3 fail_timeout=10s;\n"))
        .collect()
}

/// Writes a main configuration that includes the repository's `deploy/nginx/chatcore.conf` and
/// this run's member lists, and starts nginx in the foreground with `scripts/services.sh
/// nginx-run`.
fn start_nginx(
    dir: &Path,
    public_port: u16,
    internal_port: u16,
    chat_ws: &[Instance],
    notifications_ws: &Instance,
    persistence_ports: &[u16],
) -> Process {
    let prefix = dir.join("nginx");
    let conf_dir = prefix.join("chatcore.d");
    std::fs::create_dir_all(&conf_dir).expect("nginx dir");
    let strip = |base: &str| base.trim_start_matches("http://").to_owned();
    let files = [
        (
            "chat-ws.upstream",
            members(chat_ws.iter().map(|i| strip(&i.internal))),
        ),
        (
            "notifications-ws.upstream",
            members(std::iter::once(strip(&notifications_ws.internal))),
        ),
        (
            "persistence.upstream",
            members(persistence_ports.iter().map(|p| format!("127.0.0.1:{p}"))),
        ),
        (
            "public.listen",
            format!("listen 127.0.0.1:{public_port};\n"),
        ),
        (
            "internal.listen",
            format!("listen 127.0.0.1:{internal_port};\n"),
        ),
    ];
    for (name, text) in files {
        std::fs::write(conf_dir.join(name), text).expect("nginx include");
    }
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/nginx/chatcore.conf");
    let shipped = shipped.canonicalize().expect("deploy/nginx/chatcore.conf");
    let main = format!(
        // One process running as the test's user: no workers dropping to another user that
        // cannot use the temp dirs, and nothing orphaned if the test is killed.
        "master_process off;\n\
         pid {prefix}/nginx.pid;\n\
         error_log {prefix}/error.log info;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n\
             access_log {prefix}/access.log;\n\
             client_body_temp_path {prefix}/client_body;\n\
             proxy_temp_path {prefix}/proxy;\n\
             fastcgi_temp_path {prefix}/fastcgi;\n\
             uwsgi_temp_path {prefix}/uwsgi;\n\
             scgi_temp_path {prefix}/scgi;\n\
             include {shipped};\n\
         }}\n",
        prefix = prefix.display(),
        shipped = shipped.display(),
    );
    let conf = prefix.join("nginx.conf");
    std::fs::write(&conf, main).expect("nginx.conf");
    // Started by the project's script, which execs Debian's nginx in the foreground.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/services.sh");
    let args = vec![
        script.display().to_string(),
        "nginx-run".to_owned(),
        format!("{}/", prefix.display()),
        conf.display().to_string(),
    ];
    Process::spawn("nginx", Path::new("bash"), &args, &[], dir)
}
