//! The soak's own Kafka broker, MongoDB wire server and Redis, on ports of their own: each can
//! be SIGKILLed and restarted on the same port, and the broker and the database come back with
//! their data (Kafka on its log directory, formatted once; MongoDB on an H2 file).

use std::path::{Path, PathBuf};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;

use super::processes::{await_redis, free_port, Process, START_WAIT};

fn required_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: run scripts/soak.sh"))
}

/// The soak cluster's id (any 16 bytes, URL-safe base64).
const CLUSTER_ID: &str = "c29hay1jaGF0Y29yZS0xNg";

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| (*s).to_owned()).collect()
}

/// Which backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The Kafka broker (KRaft, broker and controller in one process).
    Kafka,
    /// mongo-java-server on its H2 backend.
    Mongo,
    /// Redis, the event store (it may lose its keys on restart).
    Redis,
}

/// One backend server: how to (re)start it and its current process.
pub struct Backend {
    /// Which one.
    pub kind: Kind,
    /// Its client port.
    pub port: u16,
    dir: PathBuf,
    program: PathBuf,
    args: Vec<String>,
    generation: usize,
    /// The running process; `None` between a kill and the restart.
    pub process: Option<Process>,
}

impl Backend {
    /// A Kafka broker with its log directory under `dir`, formatted now (once).
    pub async fn kafka(dir: &Path) -> Self {
        let home = PathBuf::from(required_env("CHATCORE_TEST_KAFKA_HOME"));
        let (port, controller) = (free_port(), free_port());
        let data = dir.join("kafka-data");
        let properties = dir.join("kafka.properties");
        std::fs::write(
            &properties,
            format!(
                "process.roles=broker,controller\nnode.id=1\n\
                 controller.quorum.bootstrap.servers=127.0.0.1:{controller}\n\
                 listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}\n\
                 advertised.listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}\n\
                 controller.listener.names=CONTROLLER\ninter.broker.listener.name=PLAINTEXT\n\
                 listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT\n\
                 log.dirs={data}\nnum.partitions=1\nauto.create.topics.enable=false\n\
                 offsets.topic.replication.factor=1\noffsets.topic.num.partitions=1\n\
                 transaction.state.log.replication.factor=1\ntransaction.state.log.min.isr=1\n\
                 share.coordinator.state.topic.replication.factor=1\n\
                 share.coordinator.state.topic.min.isr=1\ngroup.initial.rebalance.delay.ms=0\n\
                 log.segment.bytes=16777216\n",
                data = data.display()
            ),
        )
        .expect("kafka.properties");
        let classpath = format!("{}/jars/*", home.display());
        let log4j = format!(
            "-Dlog4j2.configurationFile={}/config/log4j2.properties",
            home.display()
        );
        let java = PathBuf::from("java");
        // Formatted once: every restart runs on the same log directory.
        let log = std::fs::File::create(dir.join("kafka-format.log")).expect("log file");
        let status = std::process::Command::new(&java)
            .args([
                "-Xmx256m",
                "-XX:TieredStopAtLevel=1",
                "-XX:+UseSerialGC",
                &log4j,
                "-cp",
                &classpath,
                "kafka.tools.StorageTool",
                "format",
                "--standalone",
                "--cluster-id",
                CLUSTER_ID,
                "--config",
                &properties.display().to_string(),
            ])
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .status()
            .expect("java");
        let formatted = std::fs::read_to_string(dir.join("kafka-format.log")).unwrap_or_default();
        assert!(
            status.success(),
            "formatting Kafka's storage failed:\n{formatted}"
        );
        let args = strings(&[
            "-Xms128m",
            "-Xmx384m",
            "-XX:+UseSerialGC",
            "-Djava.awt.headless=true",
            &log4j,
            "-cp",
            &classpath,
            "kafka.Kafka",
            &properties.display().to_string(),
        ]);
        Self::new(Kind::Kafka, port, dir, java, args)
    }

    /// A MongoDB wire server keeping its data (and oplog) in `dir/mongo.mv`.
    pub fn mongo(dir: &Path) -> Self {
        let port = free_port();
        let file = dir.join("mongo.mv");
        let args = strings(&[
            "-Xmx512m",
            "-XX:+UseSerialGC",
            "-cp",
            &required_env("CHATCORE_TEST_MONGO_CLASSPATH"),
            "MongoLauncher",
            &port.to_string(),
            &format!("h2:{}", file.display()),
        ]);
        Self::new(Kind::Mongo, port, dir, PathBuf::from("java"), args)
    }

    /// A Redis without persistence: a restart empties it.
    pub fn redis(dir: &Path) -> Self {
        let port = free_port();
        let args = strings(&[
            "--bind",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
        ]);
        let program = PathBuf::from(required_env("CHATCORE_TEST_REDIS_SERVER"));
        Self::new(Kind::Redis, port, dir, program, args)
    }

    fn new(kind: Kind, port: u16, dir: &Path, program: PathBuf, args: Vec<String>) -> Self {
        Self {
            kind,
            port,
            dir: dir.to_owned(),
            program,
            args,
            generation: 0,
            process: None,
        }
    }

    /// Name in logs and reports.
    pub fn name(&self) -> &'static str {
        match self.kind {
            Kind::Kafka => "kafka",
            Kind::Mongo => "mongo",
            Kind::Redis => "redis",
        }
    }

    /// Starts the server (again) on its port and waits until it serves requests.
    pub async fn start(&mut self) {
        let name = format!("{}.{}", self.name(), self.generation);
        self.generation += 1;
        let mut process = Process::spawn(&name, &self.program, &self.args, &[], &self.dir);
        match self.kind {
            Kind::Redis => await_redis(self.port, &mut process).await,
            Kind::Mongo => await_mongo(self.port, &mut process).await,
            Kind::Kafka => await_kafka(self.port, &mut process).await,
        }
        self.process = Some(process);
    }

    /// SIGKILL.
    pub async fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill().await;
        }
    }

    /// `host:port`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

async fn await_mongo(port: u16, process: &mut Process) {
    let uri =
        format!("mongodb://127.0.0.1:{port}/?directConnection=true&serverSelectionTimeoutMS=1000");
    let deadline = tokio::time::Instant::now() + START_WAIT;
    loop {
        process.assert_running();
        if let Ok(client) = mongodb::Client::with_uri_str(&uri).await {
            let admin = client.database("admin");
            let ping = admin.run_command(mongodb::bson::doc! { "ping": 1 });
            if matches!(
                tokio::time::timeout(Duration::from_secs(3), ping).await,
                Ok(Ok(_))
            ) {
                return;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "mongo did not come up:\n{}",
            process.tail(20)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn await_kafka(port: u16, process: &mut Process) {
    let deadline = tokio::time::Instant::now() + START_WAIT * 2;
    loop {
        process.assert_running();
        let bootstrap = format!("127.0.0.1:{port}");
        let answered = tokio::task::spawn_blocking(move || {
            let consumer: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", &bootstrap)
                .set("log_level", "0")
                .create()
                .ok()?;
            let metadata = consumer.fetch_metadata(None, Duration::from_secs(3)).ok()?;
            (!metadata.brokers().is_empty()).then_some(())
        })
        .await
        .ok()
        .flatten();
        if answered.is_some() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "kafka did not come up:\n{}",
            process.tail(30)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
