//! One pod's worker: its record of the pod (IPs, container records, readiness deadlines), the
//! status it publishes, its commands (recheck, terminate, restart, fail), and its life: network,
//! volumes, init containers, app containers, serving, then termination.

use std::{
    collections::{HashMap, HashSet},
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use tokio::sync::mpsc;

mod containers;

use super::status::{self, ContainerRecord, PodView};
use super::volumes;
use crate::controllers::{event, name_of, pods_key, uid_of, update_status_with, NodeConfig};
use crate::resources::ResourceKey;
use crate::sandbox::{ContainerId, Runtime};
use crate::store::{now_rfc3339, DeleteOptions, Store};

/// The Events' source component.
const COMPONENT: &str = "kubelet";

/// What the kubelet tells a pod's worker.
#[derive(Debug)]
pub(super) enum Cmd {
    Recheck,
    Terminate,
    Restart(Option<String>),
    Fail,
}

/// What the kubelet shares with its workers.
pub(super) struct Shared {
    pub(super) store: Store,
    pub(super) runtime: Runtime,
    pub(super) config: NodeConfig,
    pub(super) next_ip: Mutex<HashMap<String, u32>>,
    pub(super) pulled: Mutex<HashSet<(String, String)>>,
}

/// Deletes the pod object once its containers are gone (grace 0, this uid only).
pub(super) fn finish_deletion(store: &Store, ns: &str, name: &str, uid: &str) {
    let opts = DeleteOptions {
        grace_period_seconds: Some(0),
        precondition_uid: Some(uid.to_string()),
        ..DeleteOptions::default()
    };
    if let Err(e) = store.delete(&pods_key(), Some(ns), name, &opts) {
        if e.code != 404 && e.code != 409 {
            tracing::warn!(pod = %name, error = %e, "finishing pod deletion failed");
        }
    }
}

/// The containers listed under `spec.<field>` of a pod.
fn containers(pod: &Value, field: &str) -> Vec<Value> {
    pod["spec"][field].as_array().cloned().unwrap_or_default()
}

/// The worker of one bound pod.
pub(super) struct Worker {
    sh: Arc<Shared>,
    pub(super) ns: String,
    pub(super) name: String,
    uid: String,
    node: String,
    host_ip: String,
    pod_ip: Option<String>,
    start_time: String,
    inits: Vec<ContainerRecord>,
    apps: Vec<ContainerRecord>,
    ready_at: Vec<Option<Instant>>,
    failed: bool,
    rx: mpsc::UnboundedReceiver<Cmd>,
    volumes: HashMap<String, PathBuf>,
    pub(super) waiting: Arc<AtomicBool>,
    terminate: bool,
    backoff: HashMap<String, Duration>,
}

impl Worker {
    pub(super) fn new(sh: Arc<Shared>, pod: &Value, rx: mpsc::UnboundedReceiver<Cmd>) -> Self {
        let has_inits = !containers(pod, "initContainers").is_empty();
        let app_reason = if has_inits {
            "PodInitializing"
        } else {
            "ContainerCreating"
        };
        let record = |c: &Value, reason: &str| {
            ContainerRecord::waiting(
                c["name"].as_str().unwrap_or(""),
                c["image"].as_str().unwrap_or(""),
                reason,
            )
        };
        let inits: Vec<ContainerRecord> = containers(pod, "initContainers")
            .iter()
            .map(|c| record(c, "PodInitializing"))
            .collect();
        let apps: Vec<ContainerRecord> = containers(pod, "containers")
            .iter()
            .map(|c| record(c, app_reason))
            .collect();
        let n = apps.len();
        Self {
            sh,
            ns: pod["metadata"]["namespace"].as_str().unwrap_or("").to_string(),
            name: name_of(pod).to_string(),
            uid: uid_of(pod).to_string(),
            node: pod["spec"]["nodeName"].as_str().unwrap_or("").to_string(),
            host_ip: String::new(),
            pod_ip: None,
            start_time: now_rfc3339(),
            inits,
            apps,
            ready_at: vec![None; n],
            failed: false,
            rx,
            volumes: HashMap::new(),
            waiting: Arc::new(AtomicBool::new(false)),
            terminate: false,
            backoff: HashMap::new(),
        }
    }

    fn pod(&self) -> Option<Value> {
        self.sh
            .store
            .get(&pods_key(), Some(&self.ns), &self.name)
            .filter(|p| uid_of(p) == self.uid)
    }

    fn publish(&self) {
        let Some(pod) = self.pod() else {
            return;
        };
        let view = PodView {
            pod: &pod,
            host_ip: &self.host_ip,
            pod_ip: self.pod_ip.as_deref(),
            start_time: &self.start_time,
            inits: &self.inits,
            containers: &self.apps,
            failed: self.failed,
        };
        let result = update_status_with(
            &self.sh.store,
            &pods_key(),
            Some(&self.ns),
            &self.name,
            Some(&self.uid),
            |s| {
                *s = status::compose(s, &view);
            },
        );
        if let Err(e) = result {
            tracing::warn!(pod = %self.name, error = %e, "pod status update failed");
        }
    }

    fn event(&self, type_: &str, reason: &str, message: &str) {
        if let Some(pod) = self.pod() {
            event(&self.sh.store, &pod, type_, reason, message, COMPONENT);
        }
    }

    fn allocate_network(&mut self) {
        let node = self.sh.store.get(&ResourceKey::core("nodes"), None, &self.node);
        let addresses = node
            .as_ref()
            .and_then(|n| n["status"]["addresses"].as_array().cloned())
            .unwrap_or_default();
        self.host_ip = addresses
            .iter()
            .find(|a| a["type"] == "InternalIP")
            .and_then(|a| a["address"].as_str())
            .unwrap_or("172.18.0.2")
            .to_string();
        let cidr = node
            .as_ref()
            .and_then(|n| n["spec"]["podCIDR"].as_str().map(String::from))
            .unwrap_or_else(|| "10.244.0.0/24".to_string());
        let prefix = cidr
            .split('/')
            .next()
            .unwrap_or("10.244.0.0")
            .rsplit_once('.')
            .map_or("10.244.0", |(p, _)| p)
            .to_string();
        let host = {
            let mut ips = self.sh.next_ip.lock().unwrap_or_else(|e| e.into_inner());
            let n = ips.entry(self.node.clone()).or_insert(1);
            *n = if *n >= 254 { 2 } else { *n + 1 };
            *n
        };
        self.pod_ip = Some(format!("{prefix}.{host}"));
    }

    /// Waits for the next command; `false` when the pod must stop (terminate or kubelet gone).
    async fn wait_cmd(&mut self) -> bool {
        match self.rx.recv().await {
            Some(Cmd::Terminate) | None => {
                self.terminate = true;
                false
            }
            Some(_) => true,
        }
    }

    /// Sleeps, returning `false` early when termination is requested.
    async fn sleep(&mut self, d: Duration) -> bool {
        if d.is_zero() {
            return !self.terminate;
        }
        let deadline = tokio::time::Instant::now() + d;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => return !self.terminate,
                cmd = self.rx.recv() => match cmd {
                    Some(Cmd::Terminate) | None => {
                        self.terminate = true;
                        return false;
                    }
                    Some(_) => {}
                },
            }
        }
    }

    fn next_backoff(&mut self, container: &str) -> Duration {
        let base = self.sh.config.crash_backoff;
        let d = self
            .backoff
            .get(container)
            .map_or(base, |d| (*d * 2).min(Duration::from_secs(300)));
        self.backoff.insert(container.to_string(), d);
        d
    }

    pub(super) async fn run(mut self) {
        self.allocate_network();
        self.publish();
        let Some(pod) = self.pod() else {
            return;
        };
        loop {
            // Set before looking, so a change made while we look still sends a recheck.
            self.waiting.store(true, Ordering::Relaxed);
            match volumes::prepare(&self.sh.store, &self.sh.runtime, &pod) {
                Ok(dirs) => {
                    self.waiting.store(false, Ordering::Relaxed);
                    self.volumes = dirs;
                    break;
                }
                Err(nr) => {
                    if !nr.silent {
                        self.event("Warning", nr.reason, &nr.message);
                    }
                    if !self.wait_cmd().await {
                        return self.finish().await;
                    }
                }
            }
        }
        let inits = containers(&pod, "initContainers");
        for (i, c) in inits.iter().enumerate() {
            if !self.run_init(i, c).await {
                if self.terminate {
                    return self.finish().await;
                }
                return self.serve().await;
            }
        }
        let apps = containers(&pod, "containers");
        for (i, c) in apps.iter().enumerate() {
            if self.apps[i].state["waiting"]["reason"] == "PodInitializing" {
                self.apps[i].state = json!({"waiting": {"reason": "ContainerCreating"}});
            }
            if !self.start_app(i, c).await {
                return self.finish().await;
            }
        }
        self.publish();
        self.serve().await;
    }

    async fn serve(&mut self) {
        loop {
            let next_ready = self.ready_at.iter().flatten().min().copied();
            tokio::select! {
                cmd = self.rx.recv() => match cmd {
                    None | Some(Cmd::Terminate) => {
                        self.terminate = true;
                        return self.finish().await;
                    }
                    Some(Cmd::Recheck) => {}
                    Some(Cmd::Fail) => self.fail().await,
                    Some(Cmd::Restart(which)) => {
                        if self.failed {
                            continue;
                        }
                        let names: Vec<String> = match which {
                            Some(n) => vec![n],
                            None => self.apps.iter().map(|c| c.name.clone()).collect(),
                        };
                        for n in names {
                            if !self.restart_app(&n).await {
                                return self.finish().await;
                            }
                        }
                    }
                },
                () = sleep_until_opt(next_ready) => {
                    let now = Instant::now();
                    for (i, at) in self.ready_at.iter_mut().enumerate() {
                        if at.is_some_and(|t| t <= now) {
                            *at = None;
                            self.apps[i].ready = true;
                        }
                    }
                    self.publish();
                }
            }
        }
    }

    async fn fail(&mut self) {
        for (cname, id) in self.sh.runtime.pod_containers(&self.uid) {
            let _ = self.sh.runtime.stop_container(&id).await;
            if let Some(rec) = self.apps.iter_mut().find(|r| r.name == cname) {
                rec.state = json!({"terminated": {"exitCode": 137, "reason": "Error",
                    "startedAt": rec.state["running"]["startedAt"], "finishedAt": now_rfc3339(), "containerID": id.as_str()}});
                rec.ready = false;
            }
        }
        self.ready_at.iter_mut().for_each(|r| *r = None);
        self.failed = true;
        self.publish();
    }

    /// Stops everything, removes the sandbox and finishes the pod's deletion.
    async fn finish(&mut self) {
        let pod = self.pod();
        if let Some(pod) = &pod {
            let grace = pod["metadata"]["deletionGracePeriodSeconds"]
                .as_u64()
                .unwrap_or(30);
            for c in containers(pod, "containers") {
                let cname = c["name"].as_str().unwrap_or("").to_string();
                let Some(rec) = self.apps.iter().find(|r| r.name == cname && r.is_running()) else {
                    continue;
                };
                let Some(id) = rec.id.clone().and_then(|s| ContainerId::parse(&s)) else {
                    continue;
                };
                if let Some(hook) = c["lifecycle"]["preStop"]["exec"]["command"].as_array() {
                    let hook: Vec<String> =
                        hook.iter().filter_map(|s| s.as_str().map(String::from)).collect();
                    let run = self.sh.runtime.run(&id, &hook, None);
                    if tokio::time::timeout(Duration::from_secs(grace), run)
                        .await
                        .is_err()
                    {
                        self.event("Warning", "FailedPreStopHook", "PreStopHook failed");
                    }
                }
                self.event("Normal", "Killing", &format!("Stopping container {cname}"));
            }
        }
        let _ = self.sh.runtime.remove_pod(&self.uid).await;
        if self.terminate
            || pod
                .as_ref()
                .is_some_and(|p| p["metadata"]["deletionTimestamp"].is_string())
        {
            finish_deletion(&self.sh.store, &self.ns, &self.name, &self.uid);
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
        None => std::future::pending().await,
    }
}
