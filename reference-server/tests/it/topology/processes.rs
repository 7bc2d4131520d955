//! Child processes of the topology test: `chat-server` roles, nginx and a Redis of its own, each
//! logging to a file that is printed when the test fails.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// How long a service may take to answer after it was started.
pub const START_WAIT: Duration = Duration::from_secs(60);

/// A port nothing listens on right now (bound and released: a small race, acceptable in tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free loopback port")
}

/// A running child process.
pub struct Process {
    /// Name in logs and messages.
    pub name: String,
    /// Its output.
    pub log: PathBuf,
    child: Child,
}

impl Process {
    /// Starts `program` with exactly `env` (plus PATH) and its output in `<dir>/<name>.log`.
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[String],
        env: &[(String, String)],
        dir: &Path,
    ) -> Self {
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = Command::new(program)
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({}): {e}", program.display()));
        Self {
            name: name.to_owned(),
            log,
            child,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id().expect("process still running")
    }

    /// SIGKILL: the process gets no chance to clean up.
    pub async fn kill(&mut self) {
        self.child.start_kill().expect("kill");
        let _ = self.child.wait().await;
    }

    /// SIGTERM, then the exit status (within `grace`).
    pub async fn terminate(&mut self, grace: Duration) -> ExitStatus {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(status.success(), "kill -TERM {}", self.name);
        tokio::time::timeout(grace, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("{} did not stop within {grace:?}", self.name))
            .expect("wait")
    }

    /// Fails when the process has exited.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{} exited early with {status}", self.name);
        }
    }

    /// The end of its log.
    pub fn tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

/// Waits until `GET url` answers 200, or fails naming `what` with its log.
pub async fn await_http_ok(http: &reqwest::Client, url: &str, process: &mut Process) {
    let deadline = tokio::time::Instant::now() + START_WAIT;
    loop {
        process.assert_running();
        if let Ok(response) = http.get(url).send().await {
            if response.status().is_success() {
                return;
            }
        }
        if tokio::time::Instant::now() > deadline {
            panic!(
                "{} did not answer {url} within {START_WAIT:?}:\n{}",
                process.name,
                process.tail(30)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until a Redis on `port` answers PING.
pub async fn await_redis(port: u16, process: &mut Process) {
    let deadline = tokio::time::Instant::now() + START_WAIT;
    loop {
        process.assert_running();
        if redis_ping(port).await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "redis did not come up:\n{}",
            process.tail(20)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn redis_ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    if stream.write_all(b"PING\r\n").await.is_err() {
        return false;
    }
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply).await.is_ok() && &reply == b"+PONG\r\n"
}
