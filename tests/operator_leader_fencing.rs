//! Issue 12, leader loss with real processes against one kubesim (the operator as a child
//! process, the requests of each replica told apart by its User-Agent `kubedirector/V (IDENTITY)`
//! in kubesim's request counters):
//!
//! - a leader paused (SIGSTOP) past the lease duration is replaced by the standby; resumed
//!   (SIGCONT) it finds it cannot prove its lease and makes **no** write, not even the writes its
//!   actors had queued, and exits to be restarted as a candidate;
//! - a third party that takes the Lease over makes the leader step down at its next renewal,
//!   without fighting for the Lease; restarted, it waits as a standby and `/readyz` says so.
//!
//! (Lease expiry after a SIGKILLed leader: tests/operator_handover.rs.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod operator_support;

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::coordination::v1::Lease, apimachinery::pkg::apis::meta::v1::MicroTime, jiff::Timestamp,
};
use kube::api::{Api, PostParams};
use operator_support::{centos_cluster, configured_with, free_addr, signal, Env, ResourceKind, KD_NS, NS};
use serde_json::json;

/// Short lease timings so that the test waits seconds, not the default 15 s.
const ARGS: [&str; 6] = [
    "--leader-elect-lease-duration",
    "3s",
    "--leader-elect-renew-deadline",
    "2s",
    "--leader-elect-retry-period",
    "250ms",
];

fn args() -> Vec<String> {
    ARGS.iter().map(|a| a.to_string()).collect()
}

/// Requests (`verb resource` -> count) of the replicas whose identity starts with `prefix`.
fn requests_of(env: &Env, prefix: &str) -> BTreeMap<String, u64> {
    let needle = format!("({prefix}_");
    let mut out = BTreeMap::new();
    let snap = env.sim.as_ref().unwrap().metrics().snapshot();
    for (ua, counts) in &snap.by_user_agent {
        if ua.starts_with("kubedirector/") && ua.contains(&needle) {
            for (k, v) in counts {
                *out.entry(k.clone()).or_default() += v;
            }
        }
    }
    out
}

/// The requests among `m` that change something (pod execs included).
fn writes(m: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    m.iter()
        .filter(|(k, _)| {
            k.ends_with(" pods/exec") || !["get ", "list ", "watch "].iter().any(|p| k.starts_with(p))
        })
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

fn diff(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .filter_map(|(k, v)| {
            let d = v - before.get(k).copied().unwrap_or(0);
            (d > 0).then(|| (k.clone(), d))
        })
        .collect()
}

fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "never happened within {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}

fn holder(env: &Env) -> String {
    env.lease_holder().unwrap_or_default()
}

#[test]
fn a_paused_leader_is_replaced_and_writes_nothing_after_it_resumes() {
    let mut env = Env::start_process(&ARGS);
    wait_for("op leads", Duration::from_secs(60), || {
        holder(&env).starts_with("op_")
    });
    let standby_log = env.operator_log.with_file_name("standby.log");
    let mut standby = env.operator_process("standby", free_addr(), &args(), &standby_log);
    let pid = env.operator_pid().unwrap();

    // Pause the leader in the middle of its work on a new cluster.
    let before_create = writes(&requests_of(&env, "op"));
    env.create(
        &ResourceKind::Cluster,
        NS,
        centos_cluster("paused", &[("vanilla_centos", 3)]),
    );
    wait_for(
        "the leader starts on the cluster",
        Duration::from_secs(30),
        || !diff(&before_create, &writes(&requests_of(&env, "op"))).is_empty(),
    );
    assert!(signal(pid, "STOP"));
    let took = wait_for("the standby takes over", Duration::from_secs(30), || {
        holder(&env).starts_with("standby_")
    });
    println!("standby took over {took:?} after SIGSTOP of the leader (lease 3 s)");
    // The new leader converges the cluster and a scale-out made meanwhile.
    env.merge_patch(
        &ResourceKind::Cluster,
        NS,
        "paused",
        json!({"spec": {"roles": [{"id": "vanilla_centos", "members": 4,
            "resources": {"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "1", "memory": "1Gi"}}}]}}),
    );
    wait_for("converged by the new leader", Duration::from_secs(60), || {
        configured_with(&env, "paused", 4)
    });

    let before = requests_of(&env, "op");
    assert!(signal(pid, "CONT"));
    // Barrier: the old leader notices on its own clock and exits (to be restarted as a candidate).
    let exited = wait_for("the resumed leader exits", Duration::from_secs(30), || {
        env.operator_exited().is_some()
    });
    let after = requests_of(&env, "op");
    let log = std::fs::read_to_string(&env.operator_log).unwrap();
    let refused = log.matches("write refused").count();
    println!(
        "resumed leader: exited {exited:?} after SIGCONT, {refused} writes refused, requests after resuming: {:?}",
        diff(&before, &after)
    );
    assert!(
        writes(&diff(&before, &after)).is_empty(),
        "the resumed leader wrote: {:?}\n{log}",
        diff(&before, &after)
    );
    assert!(log.contains("leadership can no longer be proven"), "{log}");
    assert!(holder(&env).starts_with("standby_"));
    assert!(configured_with(&env, "paused", 4));
    let _ = standby.kill();
    let _ = standby.wait();
}

#[test]
fn a_leader_whose_lease_is_taken_by_a_third_party_steps_down_without_fighting() {
    let mut env = Env::start_process(&ARGS);
    wait_for("op leads", Duration::from_secs(60), || {
        holder(&env).starts_with("op_")
    });
    env.create(
        &ResourceKind::Cluster,
        NS,
        centos_cluster("taken", &[("vanilla_centos", 1)]),
    );
    wait_for("configured", Duration::from_secs(60), || {
        configured_with(&env, "taken", 1)
    });

    // A third party writes the Lease (a rogue replica, a hand edit): a fresh renewal by "intruder".
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), KD_NS);
    let mut lease = env.rt.block_on(leases.get("kubedirector-lock")).unwrap();
    let spec = lease.spec.as_mut().unwrap();
    spec.holder_identity = Some("intruder".into());
    spec.renew_time = Some(MicroTime(Timestamp::now()));
    spec.lease_duration_seconds = Some(3600);
    let before = requests_of(&env, "op");
    let taken = Instant::now();
    // A conflict means the leader renewed in between: read again and retry.
    loop {
        match env
            .rt
            .block_on(leases.replace("kubedirector-lock", &PostParams::default(), &lease))
        {
            Ok(_) => break,
            Err(kube::Error::Api(e)) if e.code == 409 => {
                let fresh = env.rt.block_on(leases.get("kubedirector-lock")).unwrap();
                lease.metadata.resource_version = fresh.metadata.resource_version;
            }
            Err(e) => panic!("{e}"),
        }
    }
    let exited = wait_for("the leader steps down", Duration::from_secs(20), || {
        env.operator_exited().is_some()
    });
    println!(
        "leader stepped down {exited:?} after its lease was taken ({:?} since the write)",
        taken.elapsed()
    );
    let after = requests_of(&env, "op");
    let lease_writes: BTreeMap<_, _> = writes(&diff(&before, &after))
        .into_iter()
        .filter(|(k, _)| k.ends_with(" leases"))
        .collect();
    assert!(
        lease_writes.is_empty(),
        "the leader fought for the lease: {lease_writes:?}"
    );
    assert_eq!(holder(&env), "intruder");
    let log = std::fs::read_to_string(&env.operator_log).unwrap();
    assert!(log.contains("leader lease taken over"), "{log}");

    // Restarted (as the kubelet does), it is a standby and says so.
    env.start_operator();
    env.eventually("a standby that says who leads", |e| {
        let (code, body) = e.http_get("/readyz");
        code == 200 && body.contains("standby: the leader lease is held by intruder")
    });
}
