//! Following progress: the operator's readiness and the clusters' convergence, read from
//! kubesim's store in-process (no API requests).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::bail;
use kubesim::{ResourceKey, Sim};
use serde_json::Value;

use crate::process::Operator;
use crate::{poll_every, step_timeout, BENCH_CLIENT, NS};

/// Waits until the operator holds the lease, its watches are synced (`/readyz`) and its watch
/// of kdclusters is open.
pub(crate) fn wait_ready(sim: &Sim, addr: SocketAddr, operator: &mut Operator) -> anyhow::Result<Duration> {
    let t0 = Instant::now();
    loop {
        if operator.exited() {
            bail!("the operator stopped during start-up");
        }
        let watching = sim
            .metrics()
            .snapshot()
            .by_client_verb_resource
            .iter()
            .any(|(k, _)| {
                let mut p = k.splitn(3, ' ');
                let (c, v, res) = (p.next(), p.next(), p.next());
                c != Some(BENCH_CLIENT) && v == Some("watch") && res == Some("kubedirectorclusters")
            });
        if watching && http_status(addr, "/readyz") == Some(200) {
            // Let the remaining watches open.
            std::thread::sleep(Duration::from_millis(500));
            return Ok(t0.elapsed());
        }
        if t0.elapsed() > Duration::from_secs(30) {
            bail!("the operator did not become ready within 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Status code of `GET path` on the operator's HTTP server.
pub(crate) fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    http_get(addr, path)?.split_whitespace().nth(1)?.parse().ok()
}

/// The whole response (status line, headers, body) of `GET path` on the operator's HTTP server.
pub(crate) fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// When each cluster got there, measured from the step's start.
#[derive(Debug, Default)]
pub(crate) struct StepTimes {
    /// The cluster is `configured` with every member configured.
    pub(crate) configured: Vec<Duration>,
    /// Every member pod of the cluster is Ready (kubesim's side: scheduler, StatefulSet
    /// controller, kubelet); sampled less often than `configured`.
    pub(crate) pods_ready: Vec<Duration>,
    /// Latencies of `GET /healthz` on kubesim during the step (how long kubesim takes to answer
    /// any HTTP request, watch streams included, while its controllers are busy).
    pub(crate) probe: Vec<Duration>,
}

/// Waits until every cluster is `configured` with `members` members, all configured; returns the
/// time (since `t0`) at which each one first was, and when its pods were all Ready. Reads
/// kubesim's store directly (no API requests).
pub(crate) fn wait_configured(
    sim: &Sim,
    operator: &mut Operator,
    names: &[String],
    members: usize,
    t0: Instant,
    clusters: usize,
) -> anyhow::Result<StepTimes> {
    let key = ResourceKey::new("kubedirector.hpe.com", "v1beta1", "kubedirectorclusters");
    let pods_key = ResourceKey::core("pods");
    let store = sim.store();
    let mut done: BTreeMap<String, Duration> = BTreeMap::new();
    let mut ready: BTreeMap<String, Duration> = BTreeMap::new();
    let mut probe = Vec::new();
    let mut round = 0u64;
    loop {
        round += 1;
        let now = t0.elapsed();
        // Look at the stored objects in place (copying 1,000 big statuses per round costs CPU).
        let newly = std::cell::RefCell::new(Vec::new());
        store.list_where(&key, Some(NS), |c| {
            if let Some(name) = c["metadata"]["name"].as_str() {
                if !done.contains_key(name) && settled(&c["status"], members) {
                    newly.borrow_mut().push(name.to_string());
                }
            }
            false
        });
        for name in newly.into_inner() {
            done.insert(name, now);
        }
        // Pods are many and big: look at them every fifth round only.
        if round % 5 == 1 {
            let t = Instant::now();
            if http_status(sim.addr(), "/healthz") == Some(200) {
                probe.push(t.elapsed());
            }
        }
        if round % 5 == 1 && ready.len() < names.len() {
            let count: std::cell::RefCell<BTreeMap<String, usize>> = Default::default();
            store.list_where(&pods_key, Some(NS), |p| {
                let Some(cluster) = p["metadata"]["labels"]["kubedirector.hpe.com/kdcluster"].as_str() else {
                    return false;
                };
                let is_ready = p["metadata"]["deletionTimestamp"].is_null()
                    && p["status"]["conditions"]
                        .as_array()
                        .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));
                if is_ready {
                    *count.borrow_mut().entry(cluster.to_string()).or_default() += 1;
                }
                false
            });
            let count = count.into_inner();
            for (cluster, n) in count {
                if n == members && !ready.contains_key(&cluster) {
                    // Not seen earlier than configured (sampling).
                    let at = done.get(&cluster).map_or(now, |d| (*d).min(now));
                    ready.insert(cluster, at);
                }
            }
        }
        if names.iter().all(|n| done.contains_key(n)) {
            let configured: Vec<Duration> = names.iter().filter_map(|n| done.get(n).copied()).collect();
            let pods_ready = names
                .iter()
                .filter_map(|n| ready.get(n).or_else(|| done.get(n)).copied())
                .collect();
            return Ok(StepTimes {
                configured,
                pods_ready,
                probe,
            });
        }
        if operator.exited() {
            bail!("the operator stopped");
        }
        if now > step_timeout(clusters) {
            bail!(
                "only {} of {} clusters configured with {members} members after {} s",
                done.len(),
                names.len(),
                step_timeout(clusters).as_secs()
            );
        }
        std::thread::sleep(poll_every(clusters));
    }
}

fn settled(status: &Value, members: usize) -> bool {
    let all: Vec<&Value> = status["roles"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|r| r["members"].as_array().into_iter().flatten())
        .collect();
    status["state"] == "configured" && all.len() == members && all.iter().all(|m| m["state"] == "configured")
}
