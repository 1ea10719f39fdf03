//! Test builders for planner inputs: the upstream example kdapps (spark245 with a setup package,
//! centos7x without) and kdclusters, a default kdconfig, and observed Pods/StatefulSets; the
//! multi-pass [`Sim`] and the small assertions helpers shared by the `pass` tests.

#![allow(missing_docs)]

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus,
    PersistentVolumeClaim, Pod, PodCondition, PodStatus,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kubedirector_crds::app::KubeDirectorApp;
use kubedirector_crds::cluster::{
    BlockStorageSpec, ClusterState, KubeDirectorCluster, KubeDirectorClusterStatus, MemberStatus, StorageSpec,
};
use kubedirector_crds::config::KubeDirectorConfigSpec;
use serde_json::json;

use super::config::member::{GuestResult, GuestView};
use super::config::script::{GuestJob, GuestReport, Tails};
use super::{reconcile, Command, FinalizerChange, Observed, Plan, PlanContext, TokenUpdate};
use kubedirector_crds::wire::FINALIZER;

pub fn app_spark() -> KubeDirectorApp {
    let v = json!({
        "apiVersion": "kubedirector.hpe.com/v1beta1",
        "kind": "KubeDirectorApp",
        "metadata": {"name": "spark245", "namespace": "ns1"},
        "spec": {
            "systemdRequired": true,
            "config": {
                "roleServices": [
                    {"serviceIDs": ["spark-web", "spark-master"], "roleID": "spark-master"},
                    {"serviceIDs": ["spark-worker"], "roleID": "spark-worker"}
                ],
                "selectedRoles": ["spark-master", "spark-worker"]
            },
            "label": {"name": "Spark 2.4.5 + Jupyterhub"},
            "distroID": "bluedata/spark245",
            "version": "1.0",
            "configSchemaVersion": 7,
            "services": [
                {"endpoint": {"urlScheme": "http", "path": "/", "isDashboard": true, "port": 8080}, "id": "spark-web", "label": {"name": "Spark-web"}},
                {"endpoint": {"urlScheme": "spark", "isDashboard": false, "port": 7077}, "id": "spark-master", "label": {"name": "Spark-master"}},
                {"endpoint": {"urlScheme": "http", "port": 8081}, "id": "spark-worker", "label": {"name": "spark-worker"}}
            ],
            "defaultImageRepoTag": "bluedata/spark245:5.2.0.35",
            "defaultConfigPackage": {"packageURL": "file:///opt/configscripts/appconfig-5.2.0.35.tgz"},
            "roles": [
                {"cardinality": "1", "id": "spark-master",
                 "persistDirs": ["/usr/lib/spark/spark-2.4.5-bin-hadoop2.7/conf", "/home", "/etc/hadoop"]},
                {"cardinality": "1+", "id": "spark-worker", "persistDirs": ["/home"]}
            ]
        }
    });
    serde_json::from_value(v).unwrap()
}

pub fn app_centos() -> KubeDirectorApp {
    let v = json!({
        "apiVersion": "kubedirector.hpe.com/v1beta1",
        "kind": "KubeDirectorApp",
        "metadata": {"name": "centos7x", "namespace": "ns1"},
        "spec": {
            "systemdRequired": true,
            "defaultPersistDirs": ["/home"],
            "defaultEventList": ["configure", "addnodes", "delnodes"],
            "config": {
                "roleServices": [{"serviceIDs": ["ssh"], "roleID": "vanilla_centos"}],
                "selectedRoles": ["vanilla_centos"]
            },
            "label": {"name": "CentOS 7.5"},
            "distroID": "bluedata/centos7x",
            "version": "1.1",
            "configSchemaVersion": 7,
            "services": [{"endpoint": {"port": 22, "isDashboard": false}, "id": "ssh", "label": {"name": "SSH"}}],
            "defaultImageRepoTag": "docker.io/bluedata/centos7:4.1",
            "defaultConfigPackage": null,
            "roles": [{"cardinality": "1+", "id": "vanilla_centos"}]
        }
    });
    serde_json::from_value(v).unwrap()
}

fn role(id: &str, members: Option<i32>) -> serde_json::Value {
    let mut r = json!({
        "id": id,
        "resources": {"requests": {"memory": "4Gi", "cpu": "2"}, "limits": {"memory": "4Gi", "cpu": "2"}}
    });
    if let Some(m) = members {
        r["members"] = json!(m);
    }
    r
}

fn cluster(name: &str, app: &str, roles: Vec<serde_json::Value>) -> KubeDirectorCluster {
    let v = json!({
        "apiVersion": "kubedirector.hpe.com/v1beta1",
        "kind": "KubeDirectorCluster",
        "metadata": {"name": name, "namespace": "ns1", "uid": format!("uid-{name}")},
        "spec": {"app": app, "appCatalog": "local", "serviceType": "LoadBalancer", "namingScheme": "UID", "roles": roles}
    });
    serde_json::from_value(v).unwrap()
}

/// spark245 cluster: `spark-master` (1 member) and `spark-worker` (2 members).
pub fn cluster_spark() -> KubeDirectorCluster {
    cluster(
        "spark",
        "spark245",
        vec![role("spark-master", Some(1)), role("spark-worker", Some(2))],
    )
}

/// centos7x cluster with `n` members of `vanilla_centos`.
pub fn cluster_centos(n: i32) -> KubeDirectorCluster {
    cluster("centos", "centos7x", vec![role("vanilla_centos", Some(n))])
}

pub fn config_default() -> KubeDirectorConfigSpec {
    KubeDirectorConfigSpec::default()
}

pub fn ctx(uid: &str) -> PlanContext {
    PlanContext {
        configcli: true,
        now: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
        kd_namespace: "kd-system".to_owned(),
        new_generation_uid: uid.to_owned(),
        auth_token_seed: format!("seed-{uid}"),
    }
}

pub fn observed(cluster: KubeDirectorCluster, app: KubeDirectorApp) -> Observed {
    Observed {
        cluster,
        app: Some(app),
        ..Observed::default()
    }
}

/// A pod `name` in phase `phase`, whose `app` container is running with id `container_id`
/// (no container status when `None`), with the `Ready` condition `ready`.
pub fn pod(name: &str, phase: &str, container_id: Option<&str>, ready: bool) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some("ns1".to_owned()),
            ..Default::default()
        },
        spec: None,
        status: Some(PodStatus {
            phase: Some(phase.to_owned()),
            conditions: Some(vec![PodCondition {
                type_: "Ready".to_owned(),
                status: if ready { "True" } else { "False" }.to_owned(),
                ..Default::default()
            }]),
            container_statuses: container_id.map(|id| {
                vec![ContainerStatus {
                    name: "app".to_owned(),
                    container_id: Some(id.to_owned()),
                    ready,
                    state: Some(ContainerState {
                        running: Some(ContainerStateRunning::default()),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        }),
    }
}

/// A pod whose `app` container is waiting (optionally behind a still-running init container).
pub fn pod_waiting(name: &str, init_running: bool) -> Pod {
    let mut p = pod(name, "Pending", None, false);
    let status = p.status.as_mut().unwrap();
    status.container_statuses = Some(vec![ContainerStatus {
        name: "app".to_owned(),
        state: Some(ContainerState {
            waiting: Some(ContainerStateWaiting::default()),
            ..Default::default()
        }),
        ..Default::default()
    }]);
    if init_running {
        status.init_container_statuses = Some(vec![ContainerStatus {
            name: "init".to_owned(),
            state: Some(ContainerState {
                running: Some(ContainerStateRunning::default()),
                ..Default::default()
            }),
            ..Default::default()
        }]);
    }
    p
}

/// A pod whose `app` container terminated.
pub fn pod_terminated(name: &str, container_id: &str) -> Pod {
    let mut p = pod(name, "Failed", Some(container_id), false);
    p.status.as_mut().unwrap().container_statuses.as_mut().unwrap()[0].state = Some(ContainerState {
        terminated: Some(ContainerStateTerminated::default()),
        ..Default::default()
    });
    p
}

/// The StatefulSet as the controller would report it: `spec.replicas` and `status.replicas`
/// both `replicas`.
pub fn sts_with_replicas(mut sts: StatefulSet, replicas: i32) -> StatefulSet {
    if let Some(spec) = sts.spec.as_mut() {
        spec.replicas = Some(replicas);
    }
    sts.status = Some(StatefulSetStatus {
        replicas,
        ..Default::default()
    });
    sts
}

pub fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A tiny in-memory control plane for multi-pass planner tests: it runs [`reconcile`], applies
/// the plan like the ClusterActor would (objects, status, finalizer, token), and simulates the
/// StatefulSet controller and kubelet ([`Sim::kube`]).
pub struct Sim {
    pub obs: Observed,
    pub passes: u32,
    /// Container restarts per pod (part of the simulated container id).
    pub restarts: BTreeMap<String, u32>,
    /// Every configuration job run, in order: (pod, container, job).
    pub guest_log: Vec<(String, String, GuestJob)>,
    /// `--configure` exit status per pod (0 when absent).
    pub configure_exit: BTreeMap<String, i32>,
}

impl Sim {
    pub fn new(cluster: KubeDirectorCluster, app: KubeDirectorApp) -> Self {
        Sim {
            obs: observed(cluster, app),
            passes: 0,
            restarts: BTreeMap::new(),
            guest_log: Vec::new(),
            configure_exit: BTreeMap::new(),
        }
    }

    /// Runs one pass and applies its plan.
    pub fn pass(&mut self) -> Plan {
        self.passes += 1;
        let plan = reconcile(&self.obs, &ctx(&format!("gen-{}", self.passes)));
        // Every result shown to a pass is consumed by it.
        self.obs.guest.clear();
        self.apply(&plan);
        plan
    }

    /// Applies a plan's commands, status, finalizer, annotations, labels and token.
    pub fn apply(&mut self, plan: &Plan) {
        for c in &plan.commands {
            match c {
                Command::EnsureHeadlessService(s) | Command::EnsureMemberService(s) => {
                    let name = s.metadata.name.clone().unwrap();
                    let mut s = s.clone();
                    if let Some(old) = self.obs.services.get(&name) {
                        // Keep what the API server allocated.
                        if let (Some(ns), Some(os)) = (s.spec.as_mut(), old.spec.as_ref()) {
                            ns.cluster_ip = os.cluster_ip.clone().or(ns.cluster_ip.take());
                        }
                    }
                    self.obs.services.insert(name, s);
                }
                Command::EnsureStatefulSet(sts) => {
                    let name = sts.metadata.name.clone().unwrap();
                    self.obs.statefulsets.entry(name).or_insert_with(|| {
                        // Stored as created; the controller has not reported on it yet.
                        let want = sts.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                        let mut stored = sts_with_replicas(sts.clone(), 0);
                        if let Some(spec) = stored.spec.as_mut() {
                            spec.replicas = Some(want);
                        }
                        stored
                    });
                }
                Command::PatchStatefulSetMetadata { name, metadata } => {
                    if let Some(sts) = self.obs.statefulsets.get_mut(name) {
                        let md = &mut sts.metadata;
                        md.labels
                            .get_or_insert_with(BTreeMap::new)
                            .extend(metadata.labels.clone().unwrap_or_default());
                        md.annotations
                            .get_or_insert_with(BTreeMap::new)
                            .extend(metadata.annotations.clone().unwrap_or_default());
                        if metadata.owner_references.is_some() {
                            md.owner_references = metadata.owner_references.clone();
                        }
                    }
                }
                Command::SetReplicas {
                    statefulset,
                    replicas,
                } => {
                    if let Some(sts) = self.obs.statefulsets.get_mut(statefulset) {
                        sts.spec.as_mut().unwrap().replicas = Some(*replicas);
                    }
                }
                Command::DeleteStatefulSet { name } => {
                    self.obs.statefulsets.remove(name);
                }
                Command::DeleteService { name } => {
                    self.obs.services.remove(name);
                }
                Command::DeletePvc { name } => {
                    self.obs.pvcs.remove(name);
                }
                // Jobs finish at once (a perfect guest); the result shows in the next pass.
                Command::RunGuestJob {
                    pod,
                    container_id,
                    job,
                    ..
                } => {
                    self.guest_log
                        .push((pod.clone(), container_id.clone(), job.clone()));
                    let outcome = match job {
                        GuestJob::Setup(_) => GuestReport::Configured {
                            exit: self.configure_exit.get(pod).copied().unwrap_or(0),
                            same_container: true,
                            tails: Tails::default(),
                        },
                        GuestJob::WriteConfigmeta { .. } => GuestReport::ConfigWritten,
                        GuestJob::Notify { cmds, .. } => GuestReport::Notified {
                            done: cmds.len(),
                            failed: None,
                        },
                        GuestJob::Reconnect { .. } => GuestReport::Notified {
                            done: 1,
                            failed: None,
                        },
                    };
                    self.obs.guest.insert(
                        pod.clone(),
                        GuestView {
                            busy: false,
                            result: Some(GuestResult {
                                id: u64::from(self.passes),
                                container_id: container_id.clone(),
                                job: job.clone(),
                                outcome: Ok(outcome),
                            }),
                        },
                    );
                }
                // Metadata and status are applied from the plan's fields below.
                Command::WriteStatusBackup(b) => self.obs.status_backup = Some((**b).clone()),
                Command::DeleteStatusBackup { .. } => self.obs.status_backup = None,
                Command::Event(_) | Command::PatchClusterMetadata(_) | Command::WriteStatus { .. } => {}
            }
        }
        if plan.status_changed {
            self.obs.cluster.status = Some(plan.status.clone());
        }
        match &plan.token {
            TokenUpdate::Keep => {}
            TokenUpdate::Set(t) => self.obs.expected_generation_uid = Some(t.clone()),
            TokenUpdate::Forget => self.obs.expected_generation_uid = None,
        }
        let fins = self.obs.cluster.metadata.finalizers.get_or_insert_with(Vec::new);
        match plan.finalizer {
            FinalizerChange::None => {}
            FinalizerChange::Add => fins.push(FINALIZER.to_owned()),
            FinalizerChange::Remove => fins.retain(|f| f != FINALIZER),
        }
        let anns = self
            .obs
            .cluster
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new);
        for (k, v) in &plan.annotations {
            match v {
                Some(v) => anns.insert(k.clone(), v.clone()),
                None => anns.remove(k),
            };
        }
        let labels = self.obs.cluster.metadata.labels.get_or_insert_with(BTreeMap::new);
        for (k, v) in &plan.labels {
            match v {
                Some(v) => labels.insert(k.clone(), v.clone()),
                None => labels.remove(k),
            };
        }
    }

    /// The simulated StatefulSet controller + kubelet: pods `0..replicas` exist and run, others
    /// are gone; claims exist for every template of every pod; `status.replicas` follows.
    pub fn kube(&mut self) {
        let mut want_pods = BTreeMap::new();
        for (name, sts) in self.obs.statefulsets.iter_mut() {
            let replicas = sts.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            sts.status = Some(StatefulSetStatus {
                replicas,
                ..Default::default()
            });
            let templates: Vec<String> = sts
                .spec
                .as_ref()
                .and_then(|s| s.volume_claim_templates.clone())
                .unwrap_or_default()
                .into_iter()
                .filter_map(|c| c.metadata.name)
                .collect();
            for i in 0..usize::try_from(replicas).unwrap() {
                want_pods.insert(format!("{name}-{i}"), templates.clone());
            }
        }
        self.obs.pods.retain(|p, _| want_pods.contains_key(p));
        for (p, templates) in want_pods {
            if !self.obs.pods.contains_key(&p) {
                let r = self.restarts.get(&p).copied().unwrap_or(0);
                self.obs
                    .pods
                    .insert(p.clone(), pod(&p, "Running", Some(&format!("cid-{p}-{r}")), true));
            }
            for t in templates {
                let claim = format!("{t}-{p}");
                self.obs
                    .pvcs
                    .entry(claim.clone())
                    .or_insert_with(|| PersistentVolumeClaim {
                        metadata: ObjectMeta {
                            name: Some(claim),
                            ..Default::default()
                        },
                        ..Default::default()
                    });
            }
        }
    }

    /// Restarts the app container of a pod (new container id).
    pub fn restart(&mut self, pod_name: &str) {
        let r = self.restarts.entry(pod_name.to_owned()).or_insert(0);
        *r += 1;
        let r = *r;
        self.obs.pods.insert(
            pod_name.to_owned(),
            pod(pod_name, "Running", Some(&format!("cid-{pod_name}-{r}")), true),
        );
    }

    /// Alternates passes and [`Sim::kube`] until a pass changes nothing (or `max` passes).
    /// Returns every plan.
    pub fn converge(&mut self, max: usize) -> Vec<Plan> {
        let mut plans = Vec::new();
        for _ in 0..max {
            let plan = self.pass();
            self.kube();
            let quiet = !plan.status_changed
                && plan.finalizer == FinalizerChange::None
                && plan.commands.iter().all(|c| matches!(c, Command::Event(_)));
            plans.push(plan);
            if quiet {
                break;
            }
        }
        plans
    }

    pub fn status(&self) -> &KubeDirectorClusterStatus {
        self.obs.cluster.status.as_ref().unwrap()
    }

    pub fn set_members(&mut self, role: &str, n: i32) {
        self.obs.cluster.spec.role_mut(role).unwrap().members = Some(n);
    }
}

/// All event messages of some plans, in order.
pub fn messages(plans: &[Plan]) -> Vec<String> {
    plans
        .iter()
        .flat_map(|p| p.events().map(|e| e.message.clone()))
        .collect()
}

pub fn msgs(plan: &Plan) -> Vec<String> {
    messages(std::slice::from_ref(plan))
}

pub fn is_create(c: &Command) -> bool {
    matches!(
        c,
        Command::EnsureHeadlessService(_) | Command::EnsureStatefulSet(_) | Command::EnsureMemberService(_)
    )
}

pub fn members(sim: &Sim, role: &str) -> Vec<MemberStatus> {
    sim.status()
        .role(role)
        .map(|r| r.members.clone())
        .unwrap_or_default()
}

pub fn states(sim: &Sim, role: &str) -> Vec<String> {
    members(sim, role)
        .iter()
        .map(|m| m.state.as_str().to_owned())
        .collect()
}

pub fn with_storage(mut c: KubeDirectorCluster, role: usize, blocks: i32) -> KubeDirectorCluster {
    c.spec.roles[role].storage = Some(StorageSpec {
        size: Quantity("1Gi".into()),
        storage_class_name: None,
    });
    if blocks > 0 {
        c.spec.roles[role].block_storage = Some(BlockStorageSpec {
            storage_class_name: "blk".into(),
            path_prefix: "/dev/b".into(),
            num_devices: blocks,
            size: None,
        });
    }
    c
}

/// A centos cluster driven to `configured`.
pub fn configured_centos(n: i32, storage: bool) -> Sim {
    let c = cluster_centos(n);
    let c = if storage { with_storage(c, 0, 1) } else { c };
    let mut sim = Sim::new(c, app_centos());
    sim.converge(20);
    assert_eq!(sim.status().state, ClusterState::Configured);
    sim
}

pub fn created_name(c: &Command) -> Option<String> {
    match c {
        Command::EnsureHeadlessService(s) | Command::EnsureMemberService(s) => s.metadata.name.clone(),
        Command::EnsureStatefulSet(s) => s.metadata.name.clone(),
        _ => None,
    }
}

/// `true` when `msg` is an instance of the spec 5.1 template `tpl` (`<…>` = any text).
pub fn matches_template(msg: &str, tpl: &str) -> bool {
    let mut literals = Vec::new();
    let mut rest = tpl;
    while let Some(start) = rest.find('<') {
        literals.push(&rest[..start]);
        let end = rest[start..].find('>').map_or(rest.len(), |e| start + e + 1);
        rest = &rest[end..];
    }
    literals.push(rest);
    let Some(mut tail) = msg.strip_prefix(literals[0]) else {
        return false;
    };
    let last = literals.len() - 1;
    for (i, lit) in literals.iter().enumerate().skip(1) {
        if i == last {
            return tail.ends_with(lit) && (last > 0 || tail.is_empty());
        }
        match tail.find(lit) {
            Some(pos) => tail = &tail[pos + lit.len()..],
            None => return false,
        }
    }
    tail.is_empty()
}
