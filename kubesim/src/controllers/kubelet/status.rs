//! Pure construction of a pod's `status` from the kubelet's view of its containers.

use serde_json::{json, Map, Value};

use crate::store::now_rfc3339;

/// The kubelet's record of one container.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ContainerRecord {
    pub(crate) name: String,
    pub(crate) image: String,
    /// The current container ID (`containerd://…`), once created.
    pub(crate) id: Option<String>,
    /// `{"waiting": {...}}`, `{"running": {...}}` or `{"terminated": {...}}`.
    pub(crate) state: Value,
    /// The previous termination, `{}` when none.
    pub(crate) last_state: Value,
    pub(crate) ready: bool,
    pub(crate) started: bool,
    pub(crate) restart_count: u32,
}

impl ContainerRecord {
    pub(crate) fn waiting(name: &str, image: &str, reason: &str) -> Self {
        Self {
            name: name.to_string(),
            image: image.to_string(),
            id: None,
            state: json!({"waiting": {"reason": reason}}),
            last_state: json!({}),
            ready: false,
            started: false,
            restart_count: 0,
        }
    }

    pub(crate) fn is_running(&self) -> bool {
        self.state.get("running").is_some()
    }

    pub(crate) fn terminated_ok(&self) -> bool {
        self.state["terminated"]["exitCode"] == 0
    }

    fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("name".into(), json!(self.name));
        m.insert("state".into(), self.state.clone());
        m.insert("lastState".into(), self.last_state.clone());
        m.insert("ready".into(), json!(self.ready));
        m.insert("restartCount".into(), json!(self.restart_count));
        m.insert("image".into(), json!(normalize_image(&self.image)));
        m.insert(
            "imageID".into(),
            json!(if self.id.is_some() {
                image_id(&self.image)
            } else {
                String::new()
            }),
        );
        if let Some(id) = &self.id {
            m.insert("containerID".into(), json!(id));
        }
        m.insert("started".into(), json!(self.started));
        Value::Object(m)
    }
}

/// `nginx` → `docker.io/library/nginx:latest`, like containerd reports image names.
pub(crate) fn normalize_image(image: &str) -> String {
    let (name, has_tag) = match image.rsplit_once('/') {
        Some((_, last)) => (image.to_string(), last.contains(':') || last.contains('@')),
        None => (image.to_string(), image.contains(':') || image.contains('@')),
    };
    let first = name.split('/').next().unwrap_or("");
    let has_domain =
        name.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    let full = if has_domain {
        name
    } else if name.contains('/') {
        format!("docker.io/{name}")
    } else {
        format!("docker.io/library/{name}")
    };
    if has_tag {
        full
    } else {
        format!("{full}:latest")
    }
}

/// A stable pseudo digest reference for an image.
pub(crate) fn image_id(image: &str) -> String {
    let normalized = normalize_image(image);
    let repo = normalized.split('@').next().unwrap_or(&normalized);
    let repo = match repo.rsplit_once(':') {
        Some((r, tag)) if !tag.contains('/') => r,
        _ => repo,
    };
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut digest = String::new();
    for round in 0u8..4 {
        for b in normalized.bytes().chain(std::iter::once(round)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        digest.push_str(&format!("{h:016x}"));
    }
    format!("{repo}@sha256:{digest}")
}

/// QoS class from the containers' resources.
pub(crate) fn qos_class(pod: &Value) -> &'static str {
    let containers: Vec<&Value> = ["initContainers", "containers"]
        .iter()
        .flat_map(|f| pod["spec"][f].as_array().into_iter().flatten())
        .collect();
    let mut any = false;
    let mut guaranteed = !containers.is_empty();
    for c in &containers {
        let limits = &c["resources"]["limits"];
        let requests = &c["resources"]["requests"];
        for r in ["cpu", "memory"] {
            if !limits[r].is_null() || !requests[r].is_null() {
                any = true;
            }
            let limit = &limits[r];
            let request = if requests[r].is_null() {
                limit
            } else {
                &requests[r]
            };
            if limit.is_null() || super::super::parse_quantity(limit) != super::super::parse_quantity(request)
            {
                guaranteed = false;
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// Everything the status is computed from.
#[derive(Debug, Clone)]
pub(crate) struct PodView<'a> {
    pub(crate) pod: &'a Value,
    pub(crate) host_ip: &'a str,
    pub(crate) pod_ip: Option<&'a str>,
    pub(crate) start_time: &'a str,
    pub(crate) inits: &'a [ContainerRecord],
    pub(crate) containers: &'a [ContainerRecord],
    pub(crate) failed: bool,
}

fn condition(prev: &Value, type_: &str, ok: bool, reason: Option<&str>, message: Option<String>) -> Value {
    let status = if ok { "True" } else { "False" };
    let old = prev["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_));
    let since = match old {
        Some(c) if c["status"] == status => c["lastTransitionTime"].clone(),
        _ => json!(now_rfc3339()),
    };
    let mut c = json!({"type": type_, "status": status, "lastProbeTime": null, "lastTransitionTime": since});
    if let Some(r) = reason {
        c["reason"] = json!(r);
    }
    if let Some(m) = message {
        c["message"] = json!(m);
    }
    c
}

/// The pod status the kubelet reports.
pub(crate) fn compose(prev: &Value, v: &PodView<'_>) -> Value {
    let inits_done = v.inits.iter().all(ContainerRecord::terminated_ok);
    let unready: Vec<&str> = v
        .containers
        .iter()
        .filter(|c| !c.ready)
        .map(|c| c.name.as_str())
        .collect();
    let incomplete: Vec<&str> = v
        .inits
        .iter()
        .filter(|c| !c.terminated_ok())
        .map(|c| c.name.as_str())
        .collect();
    let phase = if v.failed {
        "Failed"
    } else if inits_done
        && v.containers
            .iter()
            .any(|c| c.is_running() || c.last_state.get("terminated").is_some())
    {
        "Running"
    } else {
        "Pending"
    };
    let all_ready = unready.is_empty() && !v.failed;
    let ready_reason = if v.failed {
        "PodFailed"
    } else {
        "ContainersNotReady"
    };
    let unready_msg = format!("containers with unready status: [{}]", unready.join(" "));
    let mut conditions = vec![
        condition(prev, "PodReadyToStartContainers", !v.failed, None, None),
        if inits_done {
            condition(prev, "Initialized", true, None, None)
        } else {
            condition(
                prev,
                "Initialized",
                false,
                Some("ContainersNotInitialized"),
                Some(format!(
                    "containers with incomplete status: [{}]",
                    incomplete.join(" ")
                )),
            )
        },
        if all_ready {
            condition(prev, "Ready", true, None, None)
        } else {
            condition(
                prev,
                "Ready",
                false,
                Some(ready_reason),
                Some(unready_msg.clone()),
            )
        },
        if all_ready {
            condition(prev, "ContainersReady", true, None, None)
        } else {
            condition(
                prev,
                "ContainersReady",
                false,
                Some(ready_reason),
                Some(unready_msg),
            )
        },
    ];
    if let Some(sched) = prev["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "PodScheduled"))
    {
        conditions.push(sched.clone());
    } else {
        conditions.push(condition(prev, "PodScheduled", true, None, None));
    }
    let mut s = Map::new();
    s.insert("phase".into(), json!(phase));
    s.insert("conditions".into(), json!(conditions));
    s.insert("hostIP".into(), json!(v.host_ip));
    s.insert("hostIPs".into(), json!([{"ip": v.host_ip}]));
    if let Some(ip) = v.pod_ip {
        s.insert("podIP".into(), json!(ip));
        s.insert("podIPs".into(), json!([{"ip": ip}]));
    }
    s.insert("startTime".into(), json!(v.start_time));
    if !v.inits.is_empty() {
        s.insert(
            "initContainerStatuses".into(),
            json!(v.inits.iter().map(ContainerRecord::to_json).collect::<Vec<_>>()),
        );
    }
    s.insert(
        "containerStatuses".into(),
        json!(v
            .containers
            .iter()
            .map(ContainerRecord::to_json)
            .collect::<Vec<_>>()),
    );
    s.insert("qosClass".into(), json!(qos_class(v.pod)));
    Value::Object(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_are_normalized_like_containerd() {
        assert_eq!(normalize_image("nginx"), "docker.io/library/nginx:latest");
        assert_eq!(
            normalize_image("bluedata/cassandra:3.2"),
            "docker.io/bluedata/cassandra:3.2"
        );
        assert_eq!(normalize_image("quay.io/x/y"), "quay.io/x/y:latest");
        assert_eq!(normalize_image("localhost:5000/app:1"), "localhost:5000/app:1");
        assert!(image_id("nginx").starts_with("docker.io/library/nginx@sha256:"));
        assert_eq!(
            image_id("nginx").len(),
            "docker.io/library/nginx@sha256:".len() + 64
        );
    }

    #[test]
    fn qos_classes() {
        let be = json!({"spec": {"containers": [{"name": "a"}]}});
        let g = json!({"spec": {"containers": [{"resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]}});
        let b = json!({"spec": {"containers": [{"resources": {"requests": {"cpu": "1"}}}]}});
        assert_eq!(qos_class(&be), "BestEffort");
        assert_eq!(qos_class(&g), "Guaranteed");
        assert_eq!(qos_class(&b), "Burstable");
    }

    #[test]
    fn running_pod_has_all_conditions_true() {
        let pod = json!({"spec": {"containers": [{"name": "app"}]}});
        let mut app = ContainerRecord::waiting("app", "img", "ContainerCreating");
        app.state = json!({"running": {"startedAt": "t"}});
        app.ready = true;
        app.started = true;
        app.id = Some("containerd://x".into());
        let prev =
            json!({"conditions": [{"type": "PodScheduled", "status": "True", "lastTransitionTime": "t0"}]});
        let v = PodView {
            pod: &pod,
            host_ip: "172.18.0.2",
            pod_ip: Some("10.244.1.2"),
            start_time: "t",
            inits: &[],
            containers: &[app],
            failed: false,
        };
        let s = compose(&prev, &v);
        assert_eq!(s["phase"], "Running");
        let types: Vec<&str> = s["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["type"].as_str().unwrap())
            .collect();
        assert_eq!(
            types,
            [
                "PodReadyToStartContainers",
                "Initialized",
                "Ready",
                "ContainersReady",
                "PodScheduled"
            ]
        );
        assert!(s["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["status"] == "True"));
        assert_eq!(s["conditions"][4]["lastTransitionTime"], "t0");
        assert_eq!(s["containerStatuses"][0]["containerID"], "containerd://x");
        assert_eq!(s["podIP"], "10.244.1.2");
    }

    #[test]
    fn initializing_pod_is_pending_with_reasons() {
        let pod = json!({"spec": {}});
        let init = ContainerRecord::waiting("init", "img", "PodInitializing");
        let app = ContainerRecord::waiting("app", "img", "PodInitializing");
        let v = PodView {
            pod: &pod,
            host_ip: "h",
            pod_ip: None,
            start_time: "t",
            inits: std::slice::from_ref(&init),
            containers: std::slice::from_ref(&app),
            failed: false,
        };
        let s = compose(&json!({}), &v);
        assert_eq!(s["phase"], "Pending");
        assert_eq!(s["conditions"][1]["reason"], "ContainersNotInitialized");
        assert_eq!(
            s["conditions"][1]["message"],
            "containers with incomplete status: [init]"
        );
        assert_eq!(
            s["conditions"][2]["message"],
            "containers with unready status: [app]"
        );
        assert_eq!(
            s["initContainerStatuses"][0]["state"]["waiting"]["reason"],
            "PodInitializing"
        );
    }
}
