//! The fault injector: every period one component of the deployment is SIGKILLed and restarted
//! on the same port (every `chat-server` role, the Kafka broker, the MongoDB server, Redis,
//! nginx), or nginx is reloaded with one chat-ws removed and then re-added. The kinds come in a
//! shuffled round-robin, so a short soak still meets most of them; the instance is random.

use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::deployment::Deployment;

/// What was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    /// SIGKILL to a chat-ws.
    ChatWs,
    /// SIGKILL to a notifications-ws.
    NotificationsWs,
    /// SIGKILL to a persistence instance.
    Persistence,
    /// SIGKILL to a change handler.
    ChangeHandler,
    /// SIGKILL to the relay.
    Relay,
    /// SIGKILL to the Kafka broker.
    Kafka,
    /// SIGKILL to the MongoDB server.
    Mongo,
    /// SIGKILL to Redis.
    Redis,
    /// SIGKILL to nginx.
    Nginx,
    /// nginx reloaded without a chat-ws, then with it again.
    NginxReload,
}

const KINDS: [FaultKind; 10] = [
    FaultKind::ChatWs,
    FaultKind::NotificationsWs,
    FaultKind::Persistence,
    FaultKind::ChangeHandler,
    FaultKind::Relay,
    FaultKind::Kafka,
    FaultKind::Mongo,
    FaultKind::Redis,
    FaultKind::Nginx,
    FaultKind::NginxReload,
];

impl FaultKind {
    /// Name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Self::ChatWs => "chat-ws",
            Self::NotificationsWs => "notifications-ws",
            Self::Persistence => "persistence",
            Self::ChangeHandler => "change-handler",
            Self::Relay => "relay",
            Self::Kafka => "kafka",
            Self::Mongo => "mongo",
            Self::Redis => "redis",
            Self::Nginx => "nginx",
            Self::NginxReload => "nginx-reload",
        }
    }

    fn role(self) -> Option<&'static str> {
        match self {
            Self::ChatWs | Self::NginxReload => Some("chat-ws"),
            Self::NotificationsWs => Some("notifications-ws"),
            Self::Persistence => Some("persistence"),
            Self::ChangeHandler => Some("change-handler"),
            Self::Relay => Some("relay"),
            _ => None,
        }
    }
}

/// One injected fault.
#[derive(Debug, Clone)]
pub struct Fault {
    /// Its kind.
    pub kind: FaultKind,
    /// The component (`chat-ws-2`, `kafka`, …).
    pub target: String,
    /// When it was killed (or the reload began).
    pub at: Instant,
    /// How long until it was restarted and answering again.
    pub restarted_after: Duration,
}

/// A small deterministic generator (xorshift64*), seeded per run and printed, so a failing
/// sequence can be replayed with `SOAK_SEED`.
pub struct Rng(u64);

impl Rng {
    /// Seeded; 0 is replaced.
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    /// Next number below `n`.
    pub fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let value = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
        usize::try_from(value % u64::try_from(n).expect("n")).expect("index")
    }

    fn shuffled(&mut self) -> Vec<FaultKind> {
        let mut kinds = KINDS.to_vec();
        for i in (1..kinds.len()).rev() {
            kinds.swap(i, self.below(i + 1));
        }
        kinds
    }
}

/// Injects a fault every `every` until `stop`, returning what it did.
pub async fn inject(
    deployment: &mut Deployment,
    every: Duration,
    mut rng: Rng,
    started: Instant,
    stop: CancellationToken,
) -> Vec<Fault> {
    let mut faults = Vec::new();
    let mut order = Vec::new();
    loop {
        tokio::select! {
            () = stop.cancelled() => return faults,
            () = tokio::time::sleep(every) => {}
        }
        if order.is_empty() {
            order = match std::env::var("SOAK_FAULTS") {
                // A fixed cycle of kinds, e.g. `mongo,kafka`, to chase one.
                Ok(list) => list
                    .split(',')
                    .rev()
                    .map(|k| *KINDS.iter().find(|f| f.name() == k).expect("fault kind"))
                    .collect(),
                Err(_) => rng.shuffled(),
            };
        }
        let kind = order.pop().expect("a kind");
        deployment.assert_running();
        let fault = one(deployment, kind, &mut rng).await;
        println!(
            "soak: fault {} {} at +{:?}, back after {:?}",
            faults.len() + 1,
            fault.target,
            fault.at.duration_since(started),
            fault.restarted_after
        );
        faults.push(fault);
    }
}

async fn one(deployment: &mut Deployment, kind: FaultKind, rng: &mut Rng) -> Fault {
    let at = Instant::now();
    let target = match kind.role() {
        Some(role) => {
            let candidates: Vec<usize> = (0..deployment.roles.len())
                .filter(|&i| deployment.roles[i].role == role)
                .collect();
            let index = candidates[rng.below(candidates.len())];
            let name = deployment.roles[index].name.clone();
            if kind == FaultKind::NginxReload {
                deployment
                    .remove_and_readd(index, Duration::from_secs(3))
                    .await;
            } else {
                deployment.roles[index].kill().await;
                deployment.restart_role(index).await;
            }
            name
        }
        None if kind == FaultKind::Nginx => {
            deployment.balancer.kill().await;
            deployment.restart_balancer().await;
            "nginx".to_owned()
        }
        None => {
            let name = kind.name();
            let backend = deployment
                .backends
                .iter_mut()
                .find(|b| b.name() == name)
                .expect("backend");
            backend.kill().await;
            backend.start().await;
            name.to_owned()
        }
    };
    Fault {
        kind,
        target,
        at,
        restarted_after: at.elapsed(),
    }
}
