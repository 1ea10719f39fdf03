//! The SIGKILL scenario of issue 12, one seed at a time (tests/operator_faults_kill.rs runs a few
//! seeds, examples/fault_sweep.rs many): kubesim in-process, `kubedirector run` as a child
//! process, a cluster with a logging setup package created, configured, scaled out, scaled in and
//! deleted, and the operator SIGKILLed (then started again, as the kubelet would) at points the
//! seed picks: after a random number of operator requests counted by kubesim (creation,
//! scale-out, scale-in, deletion) or a random delay after the first setup exec started
//! (configuration, so the kill lands while `--configure` runs). The final state is compared with
//! [`super::final_state`]: converged, nothing duplicated or leaked, foreign objects untouched,
//! `--configure` once per container, nothing left after deletion.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test harness code

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use serde_json::{json, Value};

use super::{configured_with, final_state, serve_files, setup_package, Env, ResourceKind, NS};

/// splitmix64: a tiny seeded generator whose sequence never changes with a dependency update.
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }
}

/// Where a kill lands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// After N operator requests once the cluster was created (StatefulSets, Services, status).
    Creation,
    /// N ms after the first setup exec started (`--configure` runs 1 s).
    Configuration,
    /// After N operator requests once a worker was added.
    ScaleOut,
    /// After N operator requests once a worker was removed (`--delnodes` included).
    ScaleIn,
    /// After N operator requests once the cluster was deleted.
    Deletion,
}

/// Every phase, in scenario order.
pub const PHASES: [Phase; 5] = [
    Phase::Creation,
    Phase::Configuration,
    Phase::ScaleOut,
    Phase::ScaleIn,
    Phase::Deletion,
];

/// The kills of a seed: phase and offset (requests, or ms for [`Phase::Configuration`]).
pub fn plan(seed: u64) -> Vec<(Phase, u64)> {
    let mut rng = Rng::new(seed);
    let mut kills: Vec<(Phase, u64)> = Vec::new();
    for phase in PHASES {
        let hit = rng.next_u64().is_multiple_of(2);
        let offset = match phase {
            Phase::Creation => rng.between(1, 4),
            Phase::Configuration => rng.between(0, 1500),
            Phase::ScaleOut => rng.between(1, 6),
            Phase::ScaleIn => rng.between(1, 4),
            Phase::Deletion => rng.between(1, 3),
        };
        if hit {
            kills.push((phase, offset));
        }
    }
    if kills.is_empty() {
        let phase = PHASES[(rng.next_u64() % PHASES.len() as u64) as usize];
        kills.push((phase, 1));
    }
    kills
}

/// What one seed did and found.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The seed.
    pub seed: u64,
    /// One line per kill: phase, trigger, when.
    pub kills: Vec<String>,
    /// Phases in which a kill landed before the phase's work was done.
    pub killed_in: Vec<Phase>,
    /// Differences from the expected final states (empty: pass).
    pub problems: Vec<String>,
    /// Operator exits nobody asked for (restarted, as the kubelet would).
    pub unexpected_exits: Vec<String>,
    /// Wall time of the seed.
    pub elapsed: Duration,
    /// Operator requests (writes and execs) of the whole run.
    pub requests: u64,
    /// Set when the machine cannot run the scenario (no bubblewrap): why.
    pub skipped: Option<String>,
}

/// Lease timings of the scenario's operators: a SIGKILLed leader is replaced within ~3 s.
pub const OPERATOR_ARGS: [&str; 8] = [
    "--leader-elect-lease-duration",
    "3s",
    "--leader-elect-renew-deadline",
    "2s",
    "--leader-elect-retry-period",
    "250ms",
    "--configure-wait-seconds",
    "5",
];

const CLUSTER: &str = "kill";

/// Operator requests that change something, pod execs included (events and leases left out).
fn activity(env: &Env) -> u64 {
    env.sim
        .as_ref()
        .unwrap()
        .metrics()
        .snapshot()
        .by_client_verb_resource
        .iter()
        .filter_map(|(k, v)| k.strip_prefix("kubedirector ").map(|k| (k, *v)))
        .filter(|(k, _)| {
            k.ends_with(" pods/exec")
                || !(k.ends_with(" events")
                    || k.ends_with(" leases")
                    || k.starts_with("list ")
                    || k.starts_with("watch ")
                    || k.starts_with("get "))
        })
        .map(|(_, v)| v)
        .sum()
}

fn app(url: &str) -> Value {
    super::two_role_app("kdkill", url)
}

fn roles(workers: i64) -> Value {
    let res =
        json!({"limits": {"memory": "256Mi", "cpu": "500m"}, "requests": {"memory": "256Mi", "cpu": "500m"}});
    json!([{"id": "head", "members": 1, "resources": res}, {"id": "worker", "members": workers, "resources": res}])
}

/// Each member pod's startscript calls (`/var/log/kdtest/calls.log`, read with one exec).
fn calls(env: &Env) -> BTreeMap<String, Vec<String>> {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Api, AttachParams};
    use tokio::io::AsyncReadExt;
    let api: Api<Pod> = Api::namespaced(env.client.clone(), NS);
    let mut out = BTreeMap::new();
    for m in super::members(env, CLUSTER) {
        let pod = m["pod"].as_str().unwrap_or_default().to_string();
        let text = env.rt.block_on(async {
            let mut p = api
                .exec(
                    &pod,
                    vec!["sh", "-c", "cat /var/log/kdtest/calls.log 2>/dev/null"],
                    &AttachParams::default().container("app").stderr(false),
                )
                .await
                .ok()?;
            let mut s = String::new();
            p.stdout()?.read_to_string(&mut s).await.ok()?;
            p.join().await.ok()?;
            Some(s)
        });
        out.insert(
            pod,
            text.unwrap_or_default().lines().map(str::to_string).collect(),
        );
    }
    out
}

struct Run<'a> {
    env: Env,
    out: &'a mut Outcome,
}

impl Run<'_> {
    /// The kubelet's part: an operator process that ended by itself is started again.
    fn keep_running(&mut self) {
        if let Some(status) = self.env.operator_exited() {
            self.out
                .unexpected_exits
                .push(format!("operator exited: {status}"));
            self.env.kill_operator();
            self.env.start_operator();
        }
    }

    /// Polls `cond` for up to `limit` (restarting an operator that died); whether it held.
    fn wait(&mut self, limit: Duration, mut cond: impl FnMut(&Env) -> bool) -> bool {
        let start = Instant::now();
        while start.elapsed() < limit {
            if cond(&self.env) {
                return true;
            }
            self.keep_running();
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    fn kill(&mut self, phase: Phase, what: String) {
        self.env.kill_operator();
        self.out.kills.push(format!("{phase:?}: SIGKILL {what}"));
        self.env.start_operator();
    }

    /// Kills once `activity` passed `base + n`, unless `done` holds first (then no kill: the
    /// phase ended sooner than the seed's kill point).
    fn kill_after_requests(&mut self, phase: Phase, base: u64, n: u64, done: impl Fn(&Env) -> bool) {
        let mut hit = false;
        let settled = self.wait(Duration::from_secs(90), |env| {
            hit = activity(env) >= base + n;
            hit || done(env)
        });
        if hit {
            self.kill(phase, format!("after {n} operator requests"));
            self.out.killed_in.push(phase);
        } else if settled {
            self.out
                .kills
                .push(format!("{phase:?}: phase done before {n} requests, no kill"));
        }
    }

    fn converge(&mut self, what: &str, limit: Duration, cond: impl Fn(&Env) -> bool) {
        if !self.wait(limit, cond) {
            self.out
                .problems
                .push(format!("not converged within {limit:?}: {what}"));
        }
    }
}

/// Runs the scenario for `seed`.
pub fn run(seed: u64) -> Outcome {
    let started = Instant::now();
    let mut out = Outcome {
        seed,
        ..Outcome::default()
    };
    let probe = std::env::temp_dir().join("kd-kill-probe");
    if !kubesim::sandbox::Runtime::new(probe).is_ok_and(|r| r.available()) {
        out.skipped = Some("bubblewrap/nsenter not available, in-pod exec cannot run".into());
        return out;
    }
    let plan = plan(seed);
    let at = |p: Phase| plan.iter().find(|(q, _)| *q == p).map(|(_, n)| *n);
    let dir = tempfile::tempdir().unwrap();
    let pkg = setup_package(
        dir.path(),
        "kill",
        "#!/bin/sh\nmkdir -p /var/log/kdtest\necho \"$*\" >> /var/log/kdtest/calls.log\n\
         if [ \"$1\" = --configure ]; then sleep 1; fi\nexit 0\n",
    );
    let base_url = serve_files(vec![("/kill.tgz", pkg)]);
    let env = Env::start_process(&OPERATOR_ARGS);
    let mut run = Run { env, out: &mut out };
    let foreign = final_state::plant_foreign(&run.env, NS, CLUSTER);
    run.env
        .create(&ResourceKind::App, NS, app(&format!("{base_url}/kill.tgz")));

    // Creation and configuration.
    let base = activity(&run.env);
    let exec_base = final_state::operator_execs(&run.env);
    run.env.create(
        &ResourceKind::Cluster,
        NS,
        json!({"apiVersion": "kubedirector.hpe.com/v1beta1", "kind": "KubeDirectorCluster",
               "metadata": {"name": CLUSTER, "namespace": NS},
               "spec": {"app": "kdkill", "roles": roles(1)}}),
    );
    let configured = |n: usize| move |env: &Env| configured_with(env, CLUSTER, n);
    if let Some(n) = at(Phase::Creation) {
        run.kill_after_requests(Phase::Creation, base, n, configured(2));
    }
    if let Some(ms) = at(Phase::Configuration) {
        let started_exec = run.wait(Duration::from_secs(90), |env| {
            final_state::operator_execs(env) > exec_base
        });
        if started_exec && !configured_with(&run.env, CLUSTER, 2) {
            std::thread::sleep(Duration::from_millis(ms));
            let mid = !configured_with(&run.env, CLUSTER, 2);
            run.kill(
                Phase::Configuration,
                format!("{ms} ms after the first setup exec"),
            );
            if mid {
                run.out.killed_in.push(Phase::Configuration);
            }
        } else {
            run.out
                .kills
                .push("Configuration: configured before a kill point, no kill".into());
        }
    }
    run.converge("created and configured", Duration::from_secs(90), configured(2));

    // Scale out by one worker.
    let base = activity(&run.env);
    run.env.merge_patch(
        &ResourceKind::Cluster,
        NS,
        CLUSTER,
        json!({"spec": {"roles": roles(2)}}),
    );
    if let Some(n) = at(Phase::ScaleOut) {
        run.kill_after_requests(Phase::ScaleOut, base, n, configured(3));
    }
    run.converge("scaled out", Duration::from_secs(90), configured(3));
    // Every container so far (the added worker leaves again below) configured once.
    let so_far = calls(&run.env);
    run.out
        .problems
        .extend(final_state::configure_once_problems(&so_far));

    // Scale in again.
    let base = activity(&run.env);
    run.env.merge_patch(
        &ResourceKind::Cluster,
        NS,
        CLUSTER,
        json!({"spec": {"roles": roles(1)}}),
    );
    let expected = final_state::Expected {
        ns: NS,
        cluster: CLUSTER,
        roles: &[("head", 1), ("worker", 1)],
        pvcs: false,
    };
    let converged = |env: &Env| final_state::problems(env, &expected).is_empty();
    if let Some(n) = at(Phase::ScaleIn) {
        run.kill_after_requests(Phase::ScaleIn, base, n, converged);
    }
    run.converge("scaled in", Duration::from_secs(90), converged);
    run.out
        .problems
        .extend(final_state::problems(&run.env, &expected));
    run.out.problems.extend(foreign.problems(&run.env));
    let calls = calls(&run.env);
    run.out
        .problems
        .extend(final_state::configure_once_problems(&calls));
    for (pod, lines) in &calls {
        for l in lines {
            let known = ["--configure", "--addnodes", "--delnodes"]
                .iter()
                .any(|p| l.starts_with(p));
            if !known {
                run.out
                    .problems
                    .push(format!("pod {pod}: unexpected startscript call {l:?}"));
            }
        }
    }

    // Deletion.
    let uid = run
        .env
        .get(&ResourceKind::Cluster, NS, CLUSTER)
        .and_then(|c| c["metadata"]["uid"].as_str().map(str::to_string))
        .unwrap_or_default();
    let base = activity(&run.env);
    run.env.delete(&ResourceKind::Cluster, NS, CLUSTER);
    let gone = |env: &Env| final_state::gone_problems(env, NS, CLUSTER, &uid).is_empty();
    if let Some(n) = at(Phase::Deletion) {
        run.kill_after_requests(Phase::Deletion, base, n, gone);
    }
    run.converge("deleted", Duration::from_secs(60), gone);
    run.out
        .problems
        .extend(final_state::gone_problems(&run.env, NS, CLUSTER, &uid));
    run.out.problems.extend(foreign.problems(&run.env));
    run.out.requests = activity(&run.env);
    if !run.out.problems.is_empty() {
        let log = std::fs::read_to_string(&run.env.operator_log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        run.out.problems.push(format!(
            "operator log (last 40 lines, newest first):\n    {}",
            tail.join("\n    ")
        ));
        run.out.problems.push(run.env.dump());
    }
    drop(run);
    out.elapsed = started.elapsed();
    out
}

/// One line for a seed: `seed N: pass|FAIL|skipped in Xs (kills...)`.
pub fn summary(o: &Outcome) -> String {
    let verdict = match (&o.skipped, o.problems.is_empty()) {
        (Some(why), _) => format!("skipped ({why})"),
        (None, true) => "pass".to_string(),
        (None, false) => "FAIL".to_string(),
    };
    format!(
        "seed {}: {verdict} in {:.1}s, {} operator requests; {}{}",
        o.seed,
        o.elapsed.as_secs_f64(),
        o.requests,
        o.kills.join("; "),
        if o.unexpected_exits.is_empty() {
            String::new()
        } else {
            format!("; unexpected exits: {}", o.unexpected_exits.join(", "))
        }
    )
}
