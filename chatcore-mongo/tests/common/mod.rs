//! What the MongoDB test binaries share: a wire server of a test's own.

use std::path::Path;
use std::time::Duration;

use tokio::time::timeout;

/// The MongoDB wire server of `scripts/services.sh` (`classpath`, its
/// `CHATCORE_TEST_MONGO_CLASSPATH`) on `port`, in memory or, with `h2_file`, on its persistent
/// H2 backend, once it accepts connections; killed when dropped.
pub async fn wire_server(
    classpath: &str,
    port: u16,
    h2_file: Option<&Path>,
) -> tokio::process::Child {
    let mut command = tokio::process::Command::new("java");
    command
        .args(["-Xmx256m", "-XX:TieredStopAtLevel=1", "-cp", classpath])
        .args(["MongoLauncher", &port.to_string()]);
    if let Some(file) = h2_file {
        command.arg(format!("h2:{}", file.display()));
    }
    let child = command
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start the MongoDB emulator");
    timeout(Duration::from_secs(60), async {
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the emulator listens");
    child
}
