//! Completion latency of the wait loop: stacks that finish creating or deleting at random moments,
//! on fakes under paused time, and how late deploy and destroy notice. Prints one JSON object.

use std::time::Duration;

use jiff::SignedDuration;
use provisioner_core::domain::{ClusterName, ClusterRequest, DeployRequest};
use provisioner_core::ports::Clock;
use provisioner_core::testing::{Call, StackBehaviour, World};
use serde_json::json;

const NOW: &str = "2026-11-23T12:00:00Z";
const CLUSTER: &str = "ci-bench";
const STACK: &str = "sliderule-cluster-ci-bench";
const TRIALS: usize = 500;

/// xorshift64*: a fixed seed makes every run measure the same moments.
struct Moments(u64);

impl Moments {
    /// A completion time between 30 s (no real stack changes faster) and 9 min (inside the
    /// 10-minute limit), to the millisecond.
    fn next(&mut self) -> Duration {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let unit = (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64;
        Duration::from_millis(30_000 + (unit * 510_000.0) as u64)
    }
}

#[derive(Clone, Copy)]
enum Operation {
    Deploy,
    Destroy,
}

/// One trial: (lag in seconds, DescribeStacks calls after the create or delete, seconds waited).
fn trial(operation: Operation, takes: Duration) -> (f64, usize, f64) {
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().expect("a runtime");
    runtime.block_on(async {
        let world = World::new(NOW);
        let cluster = ClusterName::parse(CLUSTER).expect("a valid name");
        let request = ClusterRequest::new(cluster.clone());
        world.stacks.set_behaviour(StackBehaviour {
            create_takes: takes,
            delete_takes: takes,
            ..StackBehaviour::default()
        });
        let started = world.clock.now();
        match operation {
            Operation::Deploy => {
                let deploy = DeployRequest { cluster, version: None, requested_by: None };
                world.provisioner.deploy(deploy, &world.invocation("bench")).await.expect("deploy succeeds");
            }
            Operation::Destroy => {
                world.stacks.seed(STACK, "CREATE_COMPLETE", None);
                world.provisioner.destroy(request, &world.invocation("bench")).await.expect("destroy succeeds");
            }
        }
        let waited = world.clock.now().duration_since(started);
        let lag = waited - SignedDuration::try_from(takes).expect("a short duration");
        let calls = world.stacks.calls();
        let started_change =
            calls.iter().position(|c| matches!(c, Call::CreateStack(_) | Call::DeleteStack(_))).expect("a change");
        let describes = calls[started_change..].iter().filter(|c| matches!(c, Call::DescribeStack(_))).count();
        (lag.as_secs_f64(), describes, waited.as_secs_f64())
    })
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let mut report = serde_json::Map::new();
    for (name, operation) in [("deploy", Operation::Deploy), ("destroy", Operation::Destroy)] {
        let mut moments = Moments(0x05EE_D0FB_3AC4);
        let mut lags = Vec::with_capacity(TRIALS);
        let mut rates = Vec::with_capacity(TRIALS);
        let (mut all_describes, mut all_waited) = (0, 0.0);
        for _ in 0..TRIALS {
            let (lag, describes, waited) = trial(operation, moments.next());
            lags.push(lag);
            rates.push(describes as f64 / (waited / 60.0));
            all_describes += describes;
            all_waited += waited;
        }
        lags.sort_by(f64::total_cmp);
        rates.sort_by(f64::total_cmp);
        report.insert(
            name.to_owned(),
            json!({
                "trials": TRIALS,
                "lag_seconds": {
                    "median": percentile(&lags, 0.5),
                    "p95": percentile(&lags, 0.95),
                    "max": percentile(&lags, 1.0),
                },
                "describe_calls_per_minute": {
                    "overall": all_describes as f64 / (all_waited / 60.0),
                    "median": percentile(&rates, 0.5),
                    "max": percentile(&rates, 1.0),
                },
            }),
        );
    }
    println!("{}", serde_json::Value::Object(report));
}
