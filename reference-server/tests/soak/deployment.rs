//! The split topology of the soak as separate processes: two `persistence`, two
//! `change-handler` (one consumer group), three `chat-ws`, two `notifications-ws` and the
//! `relay`, behind nginx with the repository's `deploy/nginx/chatcore.conf`, on the soak's own
//! Kafka, MongoDB and Redis. Every part can be killed and restarted on the same ports.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::backends::Backend;
use super::processes::{await_http_ok, free_port, Process, START_WAIT};

/// Token of the internal routes.
pub const TOKEN: &str = "soak-internal-token";

/// A `chat-server` process of one role.
pub struct Role {
    /// `chat-ws-1`, `persistence-0`, …
    pub name: String,
    /// The role argument.
    pub role: &'static str,
    /// `LISTEN_ADDR` port.
    pub port: u16,
    /// `INTERNAL_LISTEN_ADDR` port of the websocket tiers (the balancer-facing one).
    pub internal: Option<u16>,
    env: Vec<(String, String)>,
    generation: usize,
    /// The running process; `None` between a kill and the restart.
    pub process: Option<Process>,
}

impl Role {
    fn new(role: &'static str, index: usize, tier: bool, env: Vec<(String, String)>) -> Self {
        Self {
            name: format!("{role}-{index}"),
            role,
            port: free_port(),
            internal: tier.then(free_port),
            env,
            generation: 0,
            process: None,
        }
    }

    /// `host:port` nginx lists for it.
    pub fn member(&self) -> String {
        format!("127.0.0.1:{}", self.internal.unwrap_or(self.port))
    }

    fn spawn(&mut self, dir: &Path) {
        let mut vars = self.env.clone();
        vars.push(("LISTEN_ADDR".into(), format!("127.0.0.1:{}", self.port)));
        if let Some(internal) = self.internal {
            vars.push((
                "INTERNAL_LISTEN_ADDR".into(),
                format!("127.0.0.1:{internal}"),
            ));
        }
        vars.push(("NODE_ID".into(), self.name.clone()));
        let log = format!("{}.{}", self.name, self.generation);
        self.generation += 1;
        let binary = Path::new(env!("CARGO_BIN_EXE_chat-server"));
        self.process = Some(Process::spawn(
            &log,
            binary,
            &[self.role.to_owned()],
            &vars,
            dir,
        ));
    }

    async fn await_ready(&mut self, http: &reqwest::Client) {
        let url = match self.internal {
            Some(internal) => format!("http://127.0.0.1:{internal}/readyz"),
            None => format!("http://127.0.0.1:{}/healthz", self.port),
        };
        let process = self.process.as_mut().expect("started");
        await_http_ok(http, &url, process).await;
    }

    /// SIGKILL.
    pub async fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill().await;
        }
    }
}

/// nginx in the foreground, with the member lists it was last given.
pub struct Balancer {
    prefix: PathBuf,
    /// Public server port.
    pub public_port: u16,
    /// Internal server port.
    pub internal_port: u16,
    generation: usize,
    /// The running process; `None` between a kill and the restart.
    pub process: Option<Process>,
}

impl Balancer {
    fn new(dir: &Path) -> Self {
        let prefix = dir.join("nginx");
        std::fs::create_dir_all(prefix.join("chatcore.d")).expect("nginx dir");
        Self {
            prefix,
            public_port: free_port(),
            internal_port: free_port(),
            generation: 0,
            process: None,
        }
    }

    /// Writes the member lists (all of each tier, less chat-ws `without`).
    fn write_members(&self, roles: &[Role], without: Option<&str>) {
        let lines = |role: &str| -> String {
            roles
                .iter()
                .filter(|r| r.role == role && Some(r.name.as_str()) != without)
                .map(|r| format!("server {} max_fails=3 fail_timeout=10s;\n", r.member()))
                .collect()
        };
        let d = self.prefix.join("chatcore.d");
        let files = [
            ("chat-ws.upstream", lines("chat-ws")),
            ("notifications-ws.upstream", lines("notifications-ws")),
            ("persistence.upstream", lines("persistence")),
            (
                "public.listen",
                format!("listen 127.0.0.1:{};\n", self.public_port),
            ),
            (
                "internal.listen",
                format!("listen 127.0.0.1:{};\n", self.internal_port),
            ),
        ];
        for (name, text) in files {
            std::fs::write(d.join(name), text).expect("nginx include");
        }
    }

    fn write_main(&self) -> PathBuf {
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/nginx/chatcore.conf");
        let shipped = shipped.canonicalize().expect("deploy/nginx/chatcore.conf");
        let main = format!(
            // A master with one worker, as deployed: a reload starts new workers and lets the
            // old ones finish their connections. (The topology test's single-process mode
            // exits on a reload while websockets are open.) Workers run as the soak's user.
            "user {user};\n\
             worker_processes 1;\n\
             pid {prefix}/nginx.pid;\n\
             error_log {prefix}/error.log notice;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n\
                 access_log off;\n\
                 client_body_temp_path {prefix}/client_body;\n\
                 proxy_temp_path {prefix}/proxy;\n\
                 fastcgi_temp_path {prefix}/fastcgi;\n\
                 uwsgi_temp_path {prefix}/uwsgi;\n\
                 scgi_temp_path {prefix}/scgi;\n\
                 include {shipped};\n\
             }}\n",
            prefix = self.prefix.display(),
            shipped = shipped.display(),
            user = std::env::var("USER").unwrap_or_else(|_| "root".to_owned()),
        );
        let conf = self.prefix.join("nginx.conf");
        std::fs::write(&conf, main).expect("nginx.conf");
        conf
    }

    async fn start(&mut self, dir: &Path, http: &reqwest::Client) {
        let conf = self.write_main();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/services.sh");
        let args = vec![
            script.display().to_string(),
            "nginx-run".to_owned(),
            format!("{}/", self.prefix.display()),
            conf.display().to_string(),
        ];
        let name = format!("nginx.{}", self.generation);
        self.generation += 1;
        let mut process = Process::spawn(&name, Path::new("bash"), &args, &[], dir);
        let url = format!("http://127.0.0.1:{}/healthz", self.public_port);
        await_http_ok(http, &url, &mut process).await;
        self.process = Some(process);
    }

    /// SIGKILL to the master and its workers (old ones included).
    pub async fn kill(&mut self) {
        // Workers listed first, the master killed next (a live master replaces a killed
        // worker at once), then the workers.
        let workers = self.workers();
        if let Some(mut process) = self.process.take() {
            process.kill().await;
        }
        kill_all(&workers);
    }

    fn workers(&self) -> Vec<String> {
        match std::fs::read_to_string(self.prefix.join("nginx.pid")) {
            Ok(master) => children(master.trim()),
            Err(_) => Vec::new(),
        }
    }
}

fn kill_all(workers: &[String]) {
    {
        for worker in workers {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", worker])
                .status();
        }
        // Until they are gone (or zombies): their listening sockets close with them.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while workers.iter().any(|w| alive(w)) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Balancer {
    fn reloads(&self) -> usize {
        std::fs::read_to_string(self.prefix.join("error.log"))
            .unwrap_or_default()
            .matches("reconfiguring")
            .count()
    }

    /// Rewrites the member lists and reloads (SIGHUP), waiting until nginx says it reconfigured.
    async fn reload(&self, roles: &[Role], without: Option<&str>) {
        self.write_members(roles, without);
        let before = self.reloads();
        let pid = std::fs::read_to_string(self.prefix.join("nginx.pid")).expect("nginx.pid");
        let status = std::process::Command::new("kill")
            .args(["-HUP", pid.trim()])
            .status()
            .expect("kill -HUP");
        assert!(status.success(), "kill -HUP nginx");
        let deadline = tokio::time::Instant::now() + START_WAIT;
        while self.reloads() == before {
            assert!(
                tokio::time::Instant::now() < deadline,
                "nginx did not reload"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        // The master dies with its Process (kill on drop); its workers would not.
        if let Some(master) = self.process.take() {
            let workers = self.workers();
            drop(master); // SIGKILL (kill on drop)
            kill_all(&workers);
        }
    }
}

fn alive(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let state = stat
                .rsplit(')')
                .next()?
                .split_whitespace()
                .next()?
                .to_owned();
            Some(state != "Z")
        })
        .unwrap_or(false)
}

/// Pids whose parent is `parent`.
fn children(parent: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let pid = e.file_name().to_string_lossy().into_owned();
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // `pid (comm) state ppid ...`: comm may hold spaces, so read after the last ')'.
            let ppid = stat
                .rsplit(')')
                .next()?
                .split_whitespace()
                .nth(1)?
                .to_owned();
            (ppid == parent).then_some(pid)
        })
        .collect()
}

/// Every process of the soak.
pub struct Deployment {
    /// Configs, logs and data.
    pub dir: PathBuf,
    /// Kafka, MongoDB, Redis.
    pub backends: Vec<Backend>,
    /// Every `chat-server` process.
    pub roles: Vec<Role>,
    /// nginx.
    pub balancer: Balancer,
    http: reqwest::Client,
}

impl Deployment {
    /// Starts the backends, then the roles, then nginx, each waited for.
    pub async fn start(dir: PathBuf, http: reqwest::Client) -> Self {
        let mut kafka = Backend::kafka(&dir).await;
        let mut mongo = Backend::mongo(&dir);
        let mut redis = Backend::redis(&dir);
        let (k, m, r) = futures::join!(kafka.start(), mongo.start(), redis.start());
        let ((), (), ()) = (k, m, r);
        let balancer = Balancer::new(&dir);
        let common = vec![
            (
                "MONGO_URI".to_owned(),
                format!("mongodb://{}/?directConnection=true", mongo.address()),
            ),
            ("MONGO_DATABASE".into(), "soak".into()),
            (
                "CHAT_PERSISTENCE_CHANGE_KAFKA_BOOTSTRAP_SERVERS".into(),
                kafka.address(),
            ),
            (
                "CHAT_PERSISTENCE_CHANGE_KAFKA_CONSUMER_INFO_TOPIC_NAME".into(),
                "soak-chat".into(),
            ),
            (
                "CHAT_PERSISTENCE_CHANGE_KAFKA_CONSUMER_INFO_CONSUMER_NAME".into(),
                "soak-group".into(),
            ),
            ("INTERNAL_TOKEN".into(), TOKEN.into()),
            ("SHUTDOWN_TIMEOUT".into(), "5s".into()),
            ("LOG_LEVEL".into(), "info".into()),
            // Sessions left on an instance whose keys moved (after a restart or a reload)
            // reconnect within this, so the end of a short soak is reached.
            ("SESSION_MAX_AGE".into(), "40s".into()),
            ("POST_RATE_LIMIT_PER_SECOND".into(), "0".into()),
        ];
        let internal = format!("http://127.0.0.1:{}", balancer.internal_port);
        let handler = [
            ("REDIS_ADDR", format!("redis://{}", redis.address())),
            (
                "CHAT_MESSAGE_SOCKET_TRANSFER_OUTGOING_CONFIG_CLIENT_HOST",
                internal.clone(),
            ),
            ("GENERAL_NOTIFICATION_OUTGOING_CONFIG_CLIENT_HOST", internal),
            (
                "CHAT_MESSAGE_SOCKET_TRANSFER_OUTGOING_CONFIG_CLIENT_TIMEOUT",
                "3s".into(),
            ),
            (
                "GENERAL_NOTIFICATION_OUTGOING_CONFIG_CLIENT_TIMEOUT",
                "3s".into(),
            ),
            ("MESSAGE_RETRY_INITIAL_INTERVAL", "50ms".into()),
            ("MESSAGE_RETRY_MAX_INTERVAL", "1s".into()),
            ("MESSAGE_RETRY_MAX_RETRIES", "8".into()),
            ("DEDUPLICATION_LEASE", "5s".into()),
        ];
        let with = |extra: &[(&str, String)]| -> Vec<(String, String)> {
            let mut vars = common.clone();
            vars.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
            vars
        };
        let mut roles = Vec::new();
        for i in 0..3 {
            roles.push(Role::new("chat-ws", i, true, with(&[])));
        }
        for i in 0..2 {
            roles.push(Role::new("notifications-ws", i, true, with(&[])));
        }
        for i in 0..2 {
            roles.push(Role::new("persistence", i, false, with(&[])));
        }
        roles.push(Role::new("relay", 0, false, with(&[])));
        for i in 0..2 {
            roles.push(Role::new("change-handler", i, false, with(&handler)));
        }
        let mut deployment = Self {
            dir,
            backends: vec![kafka, mongo, redis],
            roles,
            balancer,
            http,
        };
        for role in &mut deployment.roles {
            role.spawn(&deployment.dir);
        }
        let http = deployment.http.clone();
        futures::future::join_all(deployment.roles.iter_mut().map(|r| r.await_ready(&http))).await;
        deployment.balancer.write_members(&deployment.roles, None);
        deployment.balancer.start(&deployment.dir, &http).await;
        deployment
    }

    /// `http://` base of nginx's public server.
    pub fn public(&self) -> String {
        format!("http://127.0.0.1:{}", self.balancer.public_port)
    }

    /// `ws://` base of nginx's public server.
    pub fn ws_public(&self) -> String {
        format!("ws://127.0.0.1:{}", self.balancer.public_port)
    }

    /// Restarts role `index` (after a kill) and waits until it answers.
    pub async fn restart_role(&mut self, index: usize) {
        let role = &mut self.roles[index];
        role.spawn(&self.dir);
        role.await_ready(&self.http).await;
    }

    /// Restarts nginx (after a kill) and waits until it answers.
    pub async fn restart_balancer(&mut self) {
        self.balancer.start(&self.dir, &self.http).await;
    }

    /// Reloads nginx without chat-ws `name`, gracefully restarts that instance (its clients
    /// reconnect to their keys' new owners, as deploy/nginx/chatcore.conf prescribes for a
    /// removal), then reloads with it added back.
    pub async fn remove_and_readd(&mut self, index: usize, away: Duration) {
        let name = self.roles[index].name.clone();
        self.balancer.reload(&self.roles, Some(&name)).await;
        if let Some(process) = self.roles[index].process.as_mut() {
            let status = process.terminate(Duration::from_secs(20)).await;
            assert!(status.success(), "{name} exit after SIGTERM: {status}");
        }
        self.roles[index].process = None;
        tokio::time::sleep(away).await;
        self.restart_role(index).await;
        self.balancer.reload(&self.roles, None).await;
    }

    /// Fails when a process that should run has exited.
    pub fn assert_running(&mut self) {
        let roles = self.roles.iter_mut().filter_map(|r| r.process.as_mut());
        let backends = self.backends.iter_mut().filter_map(|b| b.process.as_mut());
        for process in roles.chain(backends).chain(self.balancer.process.as_mut()) {
            process.assert_running();
        }
    }

    /// The logs' ends, for a failure message.
    pub fn tails(&self) -> String {
        let roles = self.roles.iter().filter_map(|r| r.process.as_ref());
        let backends = self.backends.iter().filter_map(|b| b.process.as_ref());
        let mut out = String::new();
        for process in roles.chain(backends).chain(self.balancer.process.as_ref()) {
            out.push_str(&format!("--- {} ---\n{}\n", process.name, process.tail(12)));
        }
        out
    }

    /// Stops everything (SIGKILL: the data is discarded anyway).
    pub async fn stop(&mut self) {
        for role in &mut self.roles {
            role.kill().await;
        }
        self.balancer.kill().await;
        for backend in &mut self.backends {
            backend.kill().await;
        }
    }
}
