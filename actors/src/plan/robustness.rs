//! Property-style robustness tests of the planner (no new crates: a small deterministic PRNG).
//!
//! Each case generates a perturbed observation — random roles and member counts (including
//! absent, zero, negative and duplicate role ids), a missing or present kdapp, a random pre-existing
//! status (roles the spec does not know, duplicate role statuses, members in every state
//! including unknown ones, random pods/services/PVC names), pods in odd phases or missing, foreign
//! and owned objects — and checks that:
//! * [`reconcile`] returns (a panic fails the test);
//! * driving the simulated world ([`Sim`]) with the planner's own output reaches a quiet pass
//!   (no status change, no object command) within a bounded number of passes, and stays quiet;
//! * while it runs, node ids handed out are unique and never exceed `lastNodeID`, neither
//!   `lastNodeID` nor `specGenerationToProcess` ever goes down, and a StatefulSet is never
//!   "created" while one of that name is observed;
//! * after random disturbances of a converged world (pods killed or restarted, StatefulSets or
//!   services deleted out of band, scaling, the kdapp vanishing and coming back) it converges
//!   again.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec, StatefulSetStatus};
use k8s_openapi::api::core::v1::{
    ContainerState as K8sContainerState, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus,
    PersistentVolumeClaim, Pod, PodCondition, Service,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kubedirector_crds::app::KubeDirectorApp;
use kubedirector_crds::cluster::{
    BlockStorageSpec, ClusterState, KubeDirectorCluster, KubeDirectorClusterStatus, MemberState,
    MemberStateDetail, MemberStatus, NamingScheme, RoleStatus, ServiceType, StorageSpec,
};

use super::testing::{app_centos, app_spark, cluster_centos, cluster_spark, ctx, pod, Sim};
use super::{reconcile, Command, FinalizerChange, Observed, Plan};

/// splitmix64: tiny, deterministic, good enough to drive test-case generation.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed ^ 0x5851_f42d_4c95_7f2d)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % (n as u64)).unwrap()
    }

    /// `true` with probability `pct`%.
    fn chance(&mut self, pct: usize) -> bool {
        self.below(100) < pct
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

const MEMBER_STATES: &[&str] = &[
    "create pending",
    "creating",
    "configured",
    "config error",
    "delete pending",
    "deleting",
    "bogus",
    "",
];

/// Upper bound of passes to converge from any generated start.
const MAX_PASSES: usize = 80;

fn owner(cluster: &KubeDirectorCluster) -> OwnerReference {
    OwnerReference {
        api_version: "kubedirector.hpe.com/v1beta1".to_owned(),
        kind: "KubeDirectorCluster".to_owned(),
        name: cluster.metadata.name.clone().unwrap(),
        uid: cluster.metadata.uid.clone().unwrap(),
        controller: Some(true),
        block_owner_deletion: Some(false),
    }
}

/// A pod in a random odd (or normal) condition.
fn odd_pod(rng: &mut Rng, name: &str) -> Pod {
    let cid = format!("cid-odd-{name}-{}", rng.below(3));
    match rng.below(8) {
        0 => pod(name, "Running", Some(&cid), true),
        1 => pod(name, "Running", Some(&cid), false),
        2 => pod(name, "Running", None, false),
        3 => pod(name, "Pending", None, false),
        4 => {
            let mut p = pod(name, "Failed", Some(&cid), false);
            p.status.as_mut().unwrap().container_statuses.as_mut().unwrap()[0].state =
                Some(K8sContainerState {
                    terminated: Some(ContainerStateTerminated::default()),
                    ..Default::default()
                });
            p
        }
        5 => {
            let mut p = pod(name, "Pending", None, false);
            let st = p.status.as_mut().unwrap();
            st.container_statuses = Some(vec![ContainerStatus {
                name: "app".to_owned(),
                container_id: Some(String::new()),
                state: Some(K8sContainerState {
                    waiting: Some(ContainerStateWaiting::default()),
                    ..Default::default()
                }),
                ..Default::default()
            }]);
            st.conditions = Some(vec![PodCondition {
                type_: "PodScheduled".to_owned(),
                status: "False".to_owned(),
                reason: Some("Unschedulable".to_owned()),
                message: Some("0/3 nodes are available".to_owned()),
                ..Default::default()
            }]);
            p
        }
        6 => Pod {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                ..Default::default()
            },
            spec: None,
            status: None,
        },
        _ => pod(name, "Unknown", Some(&cid), false),
    }
}

/// Generates one perturbed starting observation.
fn generate(rng: &mut Rng) -> Observed {
    let spark = rng.chance(50);
    let app: KubeDirectorApp = if spark { app_spark() } else { app_centos() };
    let mut cluster = if spark { cluster_spark() } else { cluster_centos(1) };
    let mut role_ids: Vec<String> = app.spec.roles.iter().map(|r| r.id.clone()).collect();
    role_ids.push("ghost".to_owned());

    // Spec roles: 0-3 entries drawn from the kdapp roles plus an unknown one (duplicates allowed).
    let template = cluster.spec.roles[0].clone();
    cluster.spec.roles = (0..rng.below(4))
        .map(|_| {
            let mut r = template.clone();
            r.id = rng.pick(&role_ids).clone();
            r.members = match rng.below(6) {
                0 => None,
                1 => Some(-1),
                n => Some(i32::try_from(n).unwrap() - 2),
            };
            if rng.chance(30) {
                r.storage = Some(StorageSpec {
                    size: Quantity("1Gi".to_owned()),
                    storage_class_name: None,
                });
            }
            if rng.chance(20) {
                r.block_storage = Some(BlockStorageSpec {
                    storage_class_name: "blk".to_owned(),
                    path_prefix: "/dev/b".to_owned(),
                    num_devices: i32::try_from(rng.below(3)).unwrap(),
                    size: None,
                });
            }
            r
        })
        .collect();
    cluster.spec.naming_scheme = Some(if rng.chance(50) {
        NamingScheme::Uid
    } else {
        NamingScheme::CrNameRole
    });
    cluster.spec.service_type = match rng.below(5) {
        0 => None,
        1 => Some(ServiceType::ClusterIp),
        2 => Some(ServiceType::NodePort),
        3 => Some(ServiceType::from_wire("Weird")),
        _ => Some(ServiceType::LoadBalancer),
    };
    let own = owner(&cluster);

    let mut obs = Observed {
        cluster,
        app: (!rng.chance(10)).then_some(app),
        ..Observed::default()
    };

    // Half the cases start from an existing (possibly inconsistent) status, as after an
    // operator restart: the stored token is adopted.
    if rng.chance(50) {
        let cluster_state = *rng.pick(&["creating", "updating", "configured", "spec modified"]);
        let mut status = KubeDirectorClusterStatus {
            generation_uid: "restarted".to_owned(),
            spec_generation_to_process: Some(i64::try_from(rng.below(4)).unwrap()),
            state: ClusterState::from_wire(cluster_state),
            last_node_id: i64::try_from(rng.below(5)).unwrap(),
            ..Default::default()
        };
        if rng.chance(70) {
            status.cluster_service = format!("kdhs-{}", rng.below(3));
        }
        let mut next_id = status.last_node_id;
        for r in 0..rng.below(4) {
            let id = rng.pick(&role_ids).clone();
            let sts = match rng.below(5) {
                0 => String::new(),
                _ => format!("kdss-r{r}"),
            };
            let mut members = Vec::new();
            for i in 0..rng.below(4) {
                let pod_name = if rng.chance(85) {
                    format!("{sts}-{i}")
                } else {
                    format!("stray-{r}-{i}")
                };
                let state_name = *rng.pick(MEMBER_STATES);
                let state = MemberState::from_wire(state_name);
                next_id += 1;
                members.push(MemberStatus {
                    pod: if rng.chance(5) {
                        String::new()
                    } else {
                        pod_name.clone()
                    },
                    service: match rng.below(4) {
                        0 => String::new(),
                        1 => "n/a".to_owned(),
                        _ => format!("s-{pod_name}"),
                    },
                    pvc: rng.chance(30).then(|| format!("p-{pod_name}")),
                    state,
                    node_id: next_id,
                    state_detail: MemberStateDetail {
                        last_configured_container: rng
                            .chance(50)
                            .then(|| format!("cid-odd-{pod_name}-{}", rng.below(3))),
                        last_setup_generation: rng.chance(30).then(|| i64::try_from(rng.below(4)).unwrap()),
                        ..Default::default()
                    },
                    ..Default::default()
                });
            }
            // Some statuses lag behind the node ids they hold (corrupt input).
            if rng.chance(80) {
                status.last_node_id = next_id;
            }
            status.roles.push(RoleStatus {
                id,
                stateful_set: sts.clone(),
                members,
            });
            if !sts.is_empty() && rng.chance(70) {
                let replicas = i32::try_from(rng.below(4)).unwrap();
                let mut labels = BTreeMap::new();
                labels.insert("kubedirector.hpe.com/kdcluster".to_owned(), own.name.clone());
                obs.statefulsets.insert(
                    sts.clone(),
                    StatefulSet {
                        metadata: ObjectMeta {
                            name: Some(sts.clone()),
                            labels: Some(labels),
                            owner_references: rng.chance(80).then(|| vec![own.clone()]),
                            ..Default::default()
                        },
                        spec: Some(StatefulSetSpec {
                            replicas: Some(replicas),
                            ..Default::default()
                        }),
                        status: Some(StatefulSetStatus {
                            replicas: i32::try_from(rng.below(4)).unwrap(),
                            ..Default::default()
                        }),
                    },
                );
            }
        }
        // Pods: each member pod present (in a random condition) or missing.
        let pod_names: Vec<String> = status
            .roles
            .iter()
            .flat_map(|r| r.members.iter().map(|m| m.pod.clone()))
            .filter(|p| !p.is_empty())
            .collect();
        for p in pod_names {
            if rng.chance(60) {
                let created = odd_pod(rng, &p);
                obs.pods.insert(p.clone(), created);
            }
            if rng.chance(30) {
                obs.pvcs.insert(
                    format!("p-{p}"),
                    PersistentVolumeClaim {
                        metadata: ObjectMeta {
                            name: Some(format!("p-{p}")),
                            ..Default::default()
                        },
                        ..Default::default()
                    },
                );
            }
            if rng.chance(40) {
                let name = format!("s-{p}");
                obs.services.insert(
                    name.clone(),
                    Service {
                        metadata: ObjectMeta {
                            name: Some(name),
                            owner_references: rng.chance(70).then(|| vec![own.clone()]),
                            ..Default::default()
                        },
                        ..Default::default()
                    },
                );
            }
        }
        obs.cluster.status = Some(status);
    }
    // Foreign and owned stray objects.
    if rng.chance(30) {
        let name = "kdss-orphan".to_owned();
        obs.statefulsets.insert(
            name.clone(),
            StatefulSet {
                metadata: ObjectMeta {
                    name: Some(name),
                    owner_references: rng.chance(50).then(|| vec![own.clone()]),
                    ..Default::default()
                },
                ..Default::default()
            },
        );
    }
    obs
}

/// Checks the invariants of one pass and returns `true` when the pass was quiet.
fn check_pass(before: &Observed, plan: &Plan, seed: u64) -> bool {
    let old = before.cluster.status.clone().unwrap_or_default();
    let prev_ids: BTreeSet<i64> = old
        .roles
        .iter()
        .flat_map(|r| r.members.iter().map(|m| m.node_id))
        .collect();
    let st = &plan.status;
    assert!(
        st.last_node_id >= old.last_node_id,
        "seed {seed}: lastNodeID went down"
    );
    assert!(
        st.spec_generation_to_process.unwrap_or(0) >= old.spec_generation_to_process.unwrap_or(0),
        "seed {seed}: generation went down"
    );
    // Node ids stay unique (the generated inputs hold unique ids, though `lastNodeID` may lag
    // behind them) and never exceed `lastNodeID`.
    let prev_count = old.roles.iter().map(|r| r.members.len()).sum::<usize>();
    if prev_ids.len() == prev_count {
        let mut seen = BTreeSet::new();
        for m in st.roles.iter().flat_map(|r| r.members.iter()) {
            assert!(
                seen.insert(m.node_id),
                "seed {seed}: node id {} reused",
                m.node_id
            );
            assert!(
                m.node_id <= st.last_node_id,
                "seed {seed}: node id {} above lastNodeID {}",
                m.node_id,
                st.last_node_id
            );
        }
    }
    for c in &plan.commands {
        if let Command::EnsureStatefulSet(sts) = c {
            let name = sts.metadata.name.clone().unwrap_or_default();
            assert!(
                !before.statefulsets.contains_key(&name),
                "seed {seed}: create of observed StatefulSet {name}"
            );
        }
    }
    !plan.status_changed
        && plan.finalizer == FinalizerChange::None
        && plan
            .commands
            .iter()
            .all(|c| matches!(c, Command::Event(_) | Command::RunGuestJob { .. }))
}

/// The simulated objects (everything but the kdcluster).
type World = (
    BTreeMap<String, StatefulSet>,
    BTreeMap<String, Pod>,
    BTreeMap<String, Service>,
    BTreeMap<String, PersistentVolumeClaim>,
);

fn world(sim: &Sim) -> World {
    (
        sim.obs.statefulsets.clone(),
        sim.obs.pods.clone(),
        sim.obs.services.clone(),
        sim.obs.pvcs.clone(),
    )
}

/// Drives the simulated world until a quiet pass, then checks that it stays quiet.
fn drive(sim: &mut Sim, seed: u64, phase: &str) {
    let mut quiet_at = None;
    for i in 0..MAX_PASSES {
        let before = sim.obs.clone();
        let plan = sim.pass();
        let world = world(sim);
        sim.kube();
        // Converged: the planner had nothing to do and the controllers nothing to react to.
        if check_pass(&before, &plan, seed) && world == self::world(sim) {
            quiet_at = Some(i);
            break;
        }
    }
    let Some(at) = quiet_at else {
        let plan = sim.pass();
        panic!(
            "seed {seed} ({phase}): no quiet pass within {MAX_PASSES} passes; last commands {:?}, status {:?}",
            plan.commands, plan.status
        );
    };
    // A quiet pass is a fixpoint: nothing changes any more.
    for _ in 0..3 {
        let before = sim.obs.clone();
        let plan = sim.pass();
        sim.kube();
        assert!(
            check_pass(&before, &plan, seed),
            "seed {seed} ({phase}): quiet after {at} passes but then {:?} / changed={}",
            plan.commands,
            plan.status_changed
        );
    }
}

/// One random out-of-band disturbance of a converged world.
fn disturb(rng: &mut Rng, sim: &mut Sim, app: &Option<KubeDirectorApp>) -> &'static str {
    match rng.below(8) {
        0 => {
            let pods: Vec<String> = sim.obs.pods.keys().cloned().collect();
            if !pods.is_empty() {
                let p = rng.pick(&pods).clone();
                sim.restart(&p);
            }
            "restart a pod"
        }
        1 => {
            let pods: Vec<String> = sim.obs.pods.keys().cloned().collect();
            if !pods.is_empty() {
                let p = rng.pick(&pods).clone();
                sim.obs.pods.remove(&p);
            }
            "kill a pod"
        }
        2 => {
            let names: Vec<String> = sim.obs.statefulsets.keys().cloned().collect();
            if !names.is_empty() {
                let n = rng.pick(&names).clone();
                sim.obs.statefulsets.remove(&n);
            }
            "delete a StatefulSet"
        }
        3 => {
            let names: Vec<String> = sim.obs.services.keys().cloned().collect();
            if !names.is_empty() {
                let n = rng.pick(&names).clone();
                sim.obs.services.remove(&n);
            }
            "delete a service"
        }
        4 | 5 => {
            let n = sim.obs.cluster.spec.roles.len();
            if n > 0 {
                let i = rng.below(n);
                sim.obs.cluster.spec.roles[i].members = Some(i32::try_from(rng.below(4)).unwrap());
            }
            "scale a role"
        }
        6 => {
            sim.obs.app = None;
            "the kdapp vanishes"
        }
        _ => {
            sim.obs.app.clone_from(app);
            "the kdapp is back"
        }
    }
}

#[test]
fn reconcile_never_panics_and_converges_from_perturbed_observations() {
    for seed in 0..400u64 {
        let mut rng = Rng::new(seed);
        let obs = generate(&mut rng);
        // Plain call first: must return.
        let _ = reconcile(&obs, &ctx("probe"));
        let app = obs.app.clone();
        let mut sim = Sim {
            obs,
            passes: 0,
            restarts: BTreeMap::new(),
            guest_log: Vec::new(),
            configure_exit: BTreeMap::new(),
        };
        drive(&mut sim, seed, "initial");
        for _ in 0..3 {
            let what = disturb(&mut rng, &mut sim, &app);
            drive(&mut sim, seed, what);
        }
    }
}

#[test]
fn prng_is_deterministic_and_spreads() {
    let a: Vec<u64> = {
        let mut r = Rng::new(7);
        (0..5).map(|_| r.next()).collect()
    };
    let b: Vec<u64> = {
        let mut r = Rng::new(7);
        (0..5).map(|_| r.next()).collect()
    };
    assert_eq!(a, b);
    let mut r = Rng::new(1);
    let mut hits = [0usize; 4];
    for _ in 0..4000 {
        hits[r.below(4)] += 1;
    }
    assert!(hits.iter().all(|h| (800..1200).contains(h)), "{hits:?}");
}

/// The centos kdapp with a second, identical role `other` (no setup package, so members reach
/// `configured` without in-pod work and the end state is fully determined by the spec).
fn app_two_roles() -> KubeDirectorApp {
    let mut app = app_centos();
    let mut other = app.spec.roles[0].clone();
    "other".clone_into(&mut other.id);
    app.spec.roles.push(other);
    let mut rs = app.spec.config.role_services[0].clone();
    "other".clone_into(&mut rs.role_id);
    app.spec.config.role_services.push(rs);
    app
}

/// Checks that a converged world is exactly what the spec asks for.
fn assert_matches_spec(sim: &Sim, seed: u64, phase: &str) {
    let st = sim.status();
    let ctx = format!("seed {seed} ({phase})");
    assert_eq!(st.state, ClusterState::Configured, "{ctx}: {st:?}");
    let mut want_sts = BTreeSet::new();
    let mut want_svcs = BTreeSet::from([st.cluster_service.clone()]);
    let mut want_pvcs = BTreeSet::new();
    for role in &sim.obs.cluster.spec.roles {
        let desired = usize::try_from(role.members.unwrap_or(0).max(0)).unwrap();
        let Some(rs) = st.role(&role.id) else {
            assert_eq!(desired, 0, "{ctx}: role {} missing", role.id);
            continue;
        };
        assert_eq!(rs.members.len(), desired, "{ctx}: role {} population", role.id);
        let sts = sim.obs.statefulsets.get(&rs.stateful_set).unwrap();
        assert_eq!(
            sts.spec.as_ref().and_then(|s| s.replicas),
            Some(i32::try_from(desired).unwrap()),
            "{ctx}: replicas of {}",
            role.id
        );
        want_sts.insert(rs.stateful_set.clone());
        for (i, m) in rs.members.iter().enumerate() {
            assert_eq!(m.state, MemberState::Configured, "{ctx}: {m:?}");
            assert_eq!(m.pod, format!("{}-{i}", rs.stateful_set), "{ctx}");
            assert!(sim.obs.pods.contains_key(&m.pod), "{ctx}: pod {} missing", m.pod);
            let svc = sim.obs.services.get(&m.service);
            let ty = svc.and_then(|s| s.spec.as_ref()).and_then(|s| s.type_.as_deref());
            let want_ty = match sim
                .obs
                .cluster
                .spec
                .service_type
                .as_ref()
                .map(ServiceType::as_str)
            {
                Some("ClusterIP") => "ClusterIP",
                Some("NodePort") => "NodePort",
                _ => "LoadBalancer",
            };
            assert_eq!(ty, Some(want_ty), "{ctx}: service of {}", m.pod);
            want_svcs.insert(m.service.clone());
            if role.storage.is_some() {
                assert_eq!(m.pvc.as_deref(), Some(format!("p-{}", m.pod).as_str()), "{ctx}");
                want_pvcs.insert(format!("p-{}", m.pod));
            }
        }
    }
    // Nothing else is left behind (role statuses of removed roles, StatefulSets, services,
    // claims of departed members).
    assert!(
        st.roles.iter().all(|r| sim
            .obs
            .cluster
            .spec
            .roles
            .iter()
            .any(|s| s.id == r.id && s.members.unwrap_or(0) > 0)),
        "{ctx}: stale role status in {st:?}"
    );
    let have_sts: BTreeSet<String> = sim.obs.statefulsets.keys().cloned().collect();
    assert_eq!(have_sts, want_sts, "{ctx}: StatefulSets");
    let have_svcs: BTreeSet<String> = sim.obs.services.keys().cloned().collect();
    assert_eq!(have_svcs, want_svcs, "{ctx}: services");
    let have_pvcs: BTreeSet<String> = sim.obs.pvcs.keys().cloned().collect();
    assert_eq!(have_pvcs, want_pvcs, "{ctx}: claims");
    let ids: BTreeSet<i64> = st
        .roles
        .iter()
        .flat_map(|r| r.members.iter().map(|m| m.node_id))
        .collect();
    assert_eq!(
        ids.len(),
        st.roles.iter().map(|r| r.members.len()).sum::<usize>(),
        "{ctx}: node ids"
    );
}

#[test]
fn valid_clusters_converge_to_exactly_their_spec_under_random_disturbances() {
    for seed in 0..150u64 {
        let mut rng = Rng::new(seed.wrapping_mul(7919).wrapping_add(1));
        let mut cluster = cluster_centos(1);
        let template = cluster.spec.roles[0].clone();
        cluster.spec.roles.clear();
        for id in ["vanilla_centos", "other"] {
            if rng.chance(70) {
                let mut r = template.clone();
                id.clone_into(&mut r.id);
                r.members = Some(i32::try_from(rng.below(4)).unwrap());
                if rng.chance(40) {
                    r.storage = Some(StorageSpec {
                        size: Quantity("1Gi".to_owned()),
                        storage_class_name: None,
                    });
                }
                cluster.spec.roles.push(r);
            }
        }
        cluster.spec.naming_scheme = Some(if rng.chance(50) {
            NamingScheme::Uid
        } else {
            NamingScheme::CrNameRole
        });
        let mut sim = Sim::new(cluster, app_two_roles());
        drive(&mut sim, seed, "valid initial");
        assert_matches_spec(&sim, seed, "valid initial");
        for _ in 0..4 {
            let what = match rng.below(8) {
                7 => {
                    // Scale, then crash after executing a pass's commands but before its status
                    // write: the objects exist, the status (and the caller's token) do not know.
                    let n = sim.obs.cluster.spec.roles.len();
                    if n > 0 {
                        let i = rng.below(n);
                        sim.obs.cluster.spec.roles[i].members = Some(i32::try_from(rng.below(4)).unwrap());
                    }
                    let status = sim.obs.cluster.status.clone();
                    let token = sim.obs.expected_generation_uid.clone();
                    sim.pass();
                    sim.obs.cluster.status = status;
                    sim.obs.expected_generation_uid = token;
                    sim.kube();
                    "scale, then lose a status write"
                }
                0 => {
                    let pods: Vec<String> = sim.obs.pods.keys().cloned().collect();
                    if !pods.is_empty() {
                        let p = rng.pick(&pods).clone();
                        sim.restart(&p);
                    }
                    "restart a pod"
                }
                1 => {
                    let pods: Vec<String> = sim.obs.pods.keys().cloned().collect();
                    if !pods.is_empty() {
                        let p = rng.pick(&pods).clone();
                        sim.obs.pods.remove(&p);
                    }
                    "kill a pod"
                }
                2 => {
                    let names: Vec<String> = sim.obs.statefulsets.keys().cloned().collect();
                    if !names.is_empty() {
                        let n = rng.pick(&names).clone();
                        sim.obs.statefulsets.remove(&n);
                    }
                    "delete a StatefulSet"
                }
                3 => {
                    let names: Vec<String> = sim.obs.services.keys().cloned().collect();
                    if !names.is_empty() {
                        let n = rng.pick(&names).clone();
                        sim.obs.services.remove(&n);
                    }
                    "delete a service"
                }
                4 => {
                    sim.obs.cluster.spec.service_type = Some(
                        rng.pick(&[
                            ServiceType::ClusterIp,
                            ServiceType::NodePort,
                            ServiceType::LoadBalancer,
                        ])
                        .clone(),
                    );
                    "change the service type"
                }
                5 => {
                    if sim.obs.cluster.spec.roles.is_empty() || rng.chance(30) {
                        let id = *rng.pick(&["vanilla_centos", "other"]);
                        if sim.obs.cluster.spec.role(id).is_none() {
                            let mut r = template.clone();
                            id.clone_into(&mut r.id);
                            r.members = Some(1);
                            sim.obs.cluster.spec.roles.push(r);
                        }
                        "add a role"
                    } else {
                        let i = rng.below(sim.obs.cluster.spec.roles.len());
                        sim.obs.cluster.spec.roles.remove(i);
                        "remove a role"
                    }
                }
                _ => {
                    let n = sim.obs.cluster.spec.roles.len();
                    if n > 0 {
                        let i = rng.below(n);
                        sim.obs.cluster.spec.roles[i].members = Some(i32::try_from(rng.below(4)).unwrap());
                    }
                    "scale a role"
                }
            };
            drive(&mut sim, seed, what);
            assert_matches_spec(&sim, seed, what);
        }
    }
}
