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

/// A loopback port nothing listens on right now, below the kernel's range of ephemeral ports, and
/// never the same twice in one test process.
///
/// Below the ephemeral range because the tests kill processes and restart them on the same port:
/// a port from that range (what binding port 0 returns) can meanwhile become the local end of an
/// outgoing connection (a client reconnecting to Kafka, nginx to an upstream, …), and the
/// restarted server then fails to bind it and exits (it happened to a Kafka broker in the soak).
/// Bound and released to check it is free: a small race with other processes, acceptable here.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Mutex;
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    static CALLS: AtomicU32 = AtomicU32::new(0);
    let (low, high) = below_ephemeral_range();
    let span = u32::from(high - low);
    let seed = std::process::id().wrapping_mul(2_654_435_761).wrapping_add(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.subsec_nanos())
            .unwrap_or(0),
    );
    let mut given = GIVEN
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    for _ in 0..10_000 {
        let call = CALLS.fetch_add(1, Ordering::Relaxed);
        let offset = seed.wrapping_add(call.wrapping_mul(7_919)) % span;
        let port = low + offset as u16;
        if given.contains(&port) {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.push(port);
            return port;
        }
    }
    panic!("no free loopback port in {low}..{high}");
}

/// `(low, high)`: up to 12 000 ports just below the kernel's ephemeral range (32768 by default).
fn below_ephemeral_range() -> (u16, u16) {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    let high = ephemeral_low.max(2_048);
    (high.saturating_sub(12_000).max(1_024), high)
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
            panic!(
                "{} exited early with {status}:\n{}",
                self.name,
                self.tail(30)
            );
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

/// The soak's Kafka broker once failed to restart on its port: the port came from the ephemeral
/// range and an outgoing connection had taken it meanwhile. Ports handed out now stay below that
/// range, are free, and are never handed out twice.
#[test]
fn free_ports_are_below_the_ephemeral_range_distinct_and_bindable() {
    let (_, ephemeral_low) = below_ephemeral_range();
    let ports: Vec<u16> = (0..200).map(|_| free_port()).collect();
    let mut distinct = ports.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), ports.len(), "a port was handed out twice");
    for port in ports {
        assert!(port < ephemeral_low, "{port} is in the ephemeral range");
        assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok());
    }
}
