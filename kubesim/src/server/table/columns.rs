//! The columns of each kind (as the real server prints them) and the cell builder of each row;
//! custom resources get their CRD's printer columns.

use serde_json::{json, Value};

use super::values::{age, cell_for, json_path, or_none, s};
use crate::resources::ResourceInfo;

fn col(name: &str, t: &str, format: &str, desc: &str, priority: i64) -> Value {
    json!({"name": name, "type": t, "format": format, "description": desc, "priority": priority})
}

fn name_col() -> Value {
    col("Name", "string", "name", "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names", 0)
}

fn age_col() -> Value {
    col(
        "Age",
        "string",
        "",
        "CreationTimestamp is a timestamp representing the server time when this object was created.",
        0,
    )
}

fn pod_cells(o: &Value) -> Vec<Value> {
    let statuses = o["status"]["containerStatuses"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let total = o["spec"]["containers"].as_array().map(Vec::len).unwrap_or(0);
    let ready = statuses.iter().filter(|c| c["ready"] == json!(true)).count();
    let restarts: i64 = statuses
        .iter()
        .map(|c| c["restartCount"].as_i64().unwrap_or(0))
        .fold(0, i64::saturating_add);
    let mut reason = o["status"]["reason"]
        .as_str()
        .map(String::from)
        .unwrap_or_else(|| s(&o["status"]["phase"]));
    for c in &statuses {
        if let Some(r) = c["state"]["waiting"]["reason"].as_str() {
            reason = r.into();
        } else if let Some(r) = c["state"]["terminated"]["reason"].as_str() {
            reason = r.into();
        }
    }
    if o["metadata"]["deletionTimestamp"].is_string() {
        reason = "Terminating".into();
    }
    let last_restart = statuses
        .iter()
        .filter_map(|c| c["lastState"]["terminated"]["finishedAt"].as_str())
        .max()
        .map(|t| format!(" ({} ago)", s(&age(&json!(t)))));
    let restarts_cell = match (restarts, last_restart) {
        (r, Some(l)) if r > 0 => format!("{r}{l}"),
        (r, _) => r.to_string(),
    };
    vec![
        json!(format!("{ready}/{total}")),
        json!(reason),
        json!(restarts_cell),
        age(&o["metadata"]["creationTimestamp"]),
        json!(or_none(s(&o["status"]["podIP"]))),
        json!(or_none(s(&o["spec"]["nodeName"]))),
        json!(or_none(s(&o["status"]["nominatedNodeName"]))),
        json!("<none>"),
    ]
}

fn ports_string(o: &Value) -> String {
    let ports = o["spec"]["ports"].as_array().cloned().unwrap_or_default();
    if ports.is_empty() {
        return "<none>".into();
    }
    ports
        .iter()
        .map(|p| match p["nodePort"].as_i64() {
            Some(np) => format!("{}:{}/{}", s(&p["port"]), np, s(&p["protocol"])),
            None => format!("{}/{}", s(&p["port"]), s(&p["protocol"])),
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn selector_string(m: &Value) -> String {
    m.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", s(v)))
                .collect::<Vec<_>>()
                .join(",")
        })
        .filter(|x| !x.is_empty())
        .unwrap_or_else(|| "<none>".into())
}

fn containers_images(o: &Value) -> (String, String) {
    let cs = o["spec"]["template"]["spec"]["containers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    (
        cs.iter().map(|c| s(&c["name"])).collect::<Vec<_>>().join(","),
        cs.iter().map(|c| s(&c["image"])).collect::<Vec<_>>().join(","),
    )
}

fn involved(o: &Value) -> String {
    format!(
        "{}/{}",
        s(&o["involvedObject"]["kind"]).to_lowercase(),
        s(&o["involvedObject"]["name"])
    )
}

/// Columns and cell builder for a resource.
pub(super) type CellFn = Box<dyn Fn(&Value) -> Vec<Value>>;

pub(super) fn spec_for(info: &ResourceInfo) -> (Vec<Value>, CellFn) {
    if info.crd.is_some() {
        let cols = info.printer_columns.clone();
        let mut defs = vec![name_col()];
        let has_cols = !cols.is_empty();
        for c in &cols {
            defs.push(col(
                &c.name,
                if c.type_ == "date" { "date" } else { &c.type_ },
                &c.format,
                &c.description,
                c.priority,
            ));
        }
        if !has_cols {
            defs.push(col(
                "Age",
                "date",
                "",
                "Custom resource definition column (in JSONPath format): .metadata.creationTimestamp",
                0,
            ));
        }
        return (
            defs,
            Box::new(move |o| {
                if !has_cols {
                    return vec![age(&o["metadata"]["creationTimestamp"])];
                }
                cols.iter()
                    .map(|c| cell_for(&c.type_, json_path(o, &c.json_path).first().copied()))
                    .collect()
            }),
        );
    }
    let g = info.group.as_str();
    let r = info.resource.as_str();
    if info.converted() {
        // events.k8s.io/v1 Events print like core/v1 Events (same storage, same printer).
        let mut core = info.clone();
        core.group = String::new();
        core.version = "v1".into();
        let (cols, cells) = spec_for(&core);
        return (
            cols,
            Box::new(move |o| cells(&crate::store::convert::event_to_core(o))),
        );
    }
    match (g, r) {
        ("", "pods") => (
            vec![
                name_col(),
                col("Ready", "string", "", "The aggregate readiness state of this pod for accepting traffic.", 0),
                col("Status", "string", "", "The aggregate status of the containers in this pod.", 0),
                col("Restarts", "string", "", "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.", 0),
                age_col(),
                col("IP", "string", "", "IP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.", 1),
                col("Node", "string", "", "NodeName is a request to schedule this pod onto a specific node.", 1),
                col("Nominated Node", "string", "", "nominatedNodeName is set only when this pod preempts other pods on the node.", 1),
                col("Readiness Gates", "string", "", "If specified, all readiness gates will be evaluated for pod readiness.", 1),
            ],
            Box::new(pod_cells),
        ),
        ("", "services") => (
            vec![
                name_col(),
                col("Type", "string", "", "type determines how the Service is exposed.", 0),
                col("Cluster-IP", "string", "", "clusterIP is the IP address of the service.", 0),
                col("External-IP", "string", "", "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service.", 0),
                col("Port(s)", "string", "", "The list of ports that are exposed by this service.", 0),
                age_col(),
                col("Selector", "string", "", "Route service traffic to pods with label keys and values matching this selector.", 1),
            ],
            Box::new(|o| {
                let ext = o["spec"]["externalIPs"]
                    .as_array()
                    .map(|a| a.iter().map(s).collect::<Vec<_>>().join(","))
                    .filter(|x| !x.is_empty())
                    .unwrap_or_else(|| if o["spec"]["type"] == json!("LoadBalancer") { "<pending>".into() } else { "<none>".into() });
                vec![
                    o["spec"]["type"].clone(),
                    json!(or_none(s(&o["spec"]["clusterIP"]))),
                    json!(ext),
                    json!(ports_string(o)),
                    age(&o["metadata"]["creationTimestamp"]),
                    json!(selector_string(&o["spec"]["selector"])),
                ]
            }),
        ),
        ("apps", "statefulsets") => (
            vec![
                name_col(),
                col("Ready", "string", "", "Number of the pod with ready state", 0),
                age_col(),
                col("Containers", "string", "", "Names of each container in the template.", 1),
                col("Images", "string", "", "Images referenced by each container in the template.", 1),
            ],
            Box::new(|o| {
                let (c, i) = containers_images(o);
                vec![
                    json!(format!("{}/{}", o["status"]["readyReplicas"].as_i64().unwrap_or(0), o["spec"]["replicas"].as_i64().unwrap_or(0))),
                    age(&o["metadata"]["creationTimestamp"]),
                    json!(c),
                    json!(i),
                ]
            }),
        ),
        ("apps", "deployments") => (
            vec![
                name_col(),
                col("Ready", "string", "", "Number of the pod with ready state", 0),
                col("Up-to-date", "integer", "", "Total number of non-terminated pods targeted by this deployment that have the desired template spec.", 0),
                col("Available", "integer", "", "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.", 0),
                age_col(),
                col("Containers", "string", "", "Names of each container in the template.", 1),
                col("Images", "string", "", "Images referenced by each container in the template.", 1),
                col("Selector", "string", "", "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment.", 1),
            ],
            Box::new(|o| {
                let (c, i) = containers_images(o);
                vec![
                    json!(format!("{}/{}", o["status"]["readyReplicas"].as_i64().unwrap_or(0), o["spec"]["replicas"].as_i64().unwrap_or(0))),
                    json!(o["status"]["updatedReplicas"].as_i64().unwrap_or(0)),
                    json!(o["status"]["availableReplicas"].as_i64().unwrap_or(0)),
                    age(&o["metadata"]["creationTimestamp"]),
                    json!(c),
                    json!(i),
                    json!(selector_string(&o["spec"]["selector"]["matchLabels"])),
                ]
            }),
        ),
        ("", "namespaces") => (
            vec![name_col(), col("Status", "string", "", "The status of the namespace", 0), age_col()],
            Box::new(|o| vec![o["status"]["phase"].clone(), age(&o["metadata"]["creationTimestamp"])]),
        ),
        ("", "configmaps") => (
            vec![name_col(), col("Data", "integer", "", "Data contains the configuration data.", 0), age_col()],
            Box::new(|o| {
                let n = o["data"].as_object().map(|m| m.len()).unwrap_or(0).saturating_add(o["binaryData"].as_object().map(|m| m.len()).unwrap_or(0));
                vec![json!(n), age(&o["metadata"]["creationTimestamp"])]
            }),
        ),
        ("", "secrets") => (
            vec![name_col(), col("Type", "string", "", "Used to facilitate programmatic handling of secret data.", 0), col("Data", "integer", "", "Data contains the secret data.", 0), age_col()],
            Box::new(|o| vec![o["type"].clone(), json!(o["data"].as_object().map(|m| m.len()).unwrap_or(0)), age(&o["metadata"]["creationTimestamp"])]),
        ),
        ("", "nodes") => (
            vec![
                name_col(),
                col("Status", "string", "", "The status of the node", 0),
                col("Roles", "string", "", "The roles of the node", 0),
                age_col(),
                col("Version", "string", "", "Kubelet Version reported by the node.", 0),
                col("Internal-IP", "string", "", "List of addresses reachable to the node.", 1),
                col("External-IP", "string", "", "List of addresses reachable to the node.", 1),
                col("OS-Image", "string", "", "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).", 1),
                col("Kernel-Version", "string", "", "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).", 1),
                col("Container-Runtime", "string", "", "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).", 1),
            ],
            Box::new(|o| {
                let ready = o["status"]["conditions"]
                    .as_array()
                    .and_then(|a| a.iter().find(|c| c["type"] == json!("Ready")))
                    .map(|c| if c["status"] == json!("True") { "Ready" } else { "NotReady" })
                    .unwrap_or("Unknown");
                let mut st = ready.to_string();
                if o["spec"]["unschedulable"] == json!(true) {
                    st.push_str(",SchedulingDisabled");
                }
                let roles: Vec<String> = o["metadata"]["labels"]
                    .as_object()
                    .map(|m| m.keys().filter_map(|k| k.strip_prefix("node-role.kubernetes.io/").map(String::from)).collect())
                    .unwrap_or_default();
                let addr = |t: &str| {
                    o["status"]["addresses"]
                        .as_array()
                        .and_then(|a| a.iter().find(|x| x["type"] == json!(t)))
                        .map(|x| s(&x["address"]))
                        .unwrap_or_else(|| "<none>".into())
                };
                vec![
                    json!(st),
                    json!(or_none(roles.join(","))),
                    age(&o["metadata"]["creationTimestamp"]),
                    o["status"]["nodeInfo"]["kubeletVersion"].clone(),
                    json!(addr("InternalIP")),
                    json!(addr("ExternalIP")),
                    o["status"]["nodeInfo"]["osImage"].clone(),
                    o["status"]["nodeInfo"]["kernelVersion"].clone(),
                    o["status"]["nodeInfo"]["containerRuntimeVersion"].clone(),
                ]
            }),
        ),
        ("", "events") => (
            vec![
                col("Last Seen", "string", "", "Time when this Event was last seen", 0),
                col("Type", "string", "", "Type of this event (Normal, Warning), new types could be added in the future.", 0),
                col("Reason", "string", "", "Short, machine understandable string that gives the reason for this event being generated.", 0),
                col("Object", "string", "", "The object that this event is about.", 0),
                col("Subobject", "string", "", "Subobject of the object", 1),
                col("Source", "string", "", "The component reporting this event.", 1),
                col("Message", "string", "", "A human-readable description of the status of this operation.", 0),
                col("First Seen", "string", "", "The time at which the event was first recorded.", 1),
                col("Count", "string", "", "The number of times this event has occurred.", 1),
                name_col(),
            ],
            Box::new(|o| {
                let last = if o["lastTimestamp"].is_string() { &o["lastTimestamp"] } else if o["eventTime"].is_string() { &o["eventTime"] } else { &o["metadata"]["creationTimestamp"] };
                let first = if o["firstTimestamp"].is_string() { &o["firstTimestamp"] } else { last };
                vec![
                    age(last),
                    o["type"].clone(),
                    o["reason"].clone(),
                    json!(involved(o)),
                    json!(s(&o["involvedObject"]["fieldPath"])),
                    json!(s(&o["source"]["component"])),
                    o["message"].clone(),
                    age(first),
                    json!(o["count"].as_i64().unwrap_or(1).to_string()),
                    o["metadata"]["name"].clone(),
                ]
            }),
        ),
        ("", "persistentvolumeclaims") => (
            vec![
                name_col(),
                col("Status", "string", "", "The status of the claim", 0),
                col("Volume", "string", "", "The volume bound to the claim", 0),
                col("Capacity", "string", "", "The capacity of the claim", 0),
                col("Access Modes", "string", "", "The access modes of the claim", 0),
                col("StorageClass", "string", "", "The storage class of the claim", 0),
                col("VolumeAttributesClass", "string", "", "The volume attributes class", 0),
                age_col(),
                col("VolumeMode", "string", "", "The volume mode", 1),
            ],
            Box::new(|o| {
                let modes = o["status"]["accessModes"]
                    .as_array()
                    .map(|a| a.iter().map(|m| match m.as_str().unwrap_or_default() {
                        "ReadWriteOnce" => "RWO".to_string(),
                        "ReadOnlyMany" => "ROX".to_string(),
                        "ReadWriteMany" => "RWX".to_string(),
                        "ReadWriteOncePod" => "RWOP".to_string(),
                        other => other.to_string(),
                    }).collect::<Vec<_>>().join(","))
                    .unwrap_or_default();
                vec![
                    o["status"]["phase"].clone(),
                    json!(s(&o["spec"]["volumeName"])),
                    json!(s(&o["status"]["capacity"]["storage"])),
                    json!(modes),
                    json!(or_none(s(&o["spec"]["storageClassName"]))),
                    json!("<unset>"),
                    age(&o["metadata"]["creationTimestamp"]),
                    o["spec"]["volumeMode"].clone(),
                ]
            }),
        ),
        ("", "serviceaccounts") => (
            vec![name_col(), col("Secrets", "string", "", "Secrets", 0), age_col()],
            Box::new(|o| vec![json!(o["secrets"].as_array().map(Vec::len).unwrap_or(0).to_string()), age(&o["metadata"]["creationTimestamp"])]),
        ),
        ("", "endpoints") => (
            vec![name_col(), col("Endpoints", "string", "", "Endpoints of the service", 0), age_col()],
            Box::new(|o| {
                let mut eps = Vec::new();
                for sset in o["subsets"].as_array().cloned().unwrap_or_default() {
                    for a in sset["addresses"].as_array().cloned().unwrap_or_default() {
                        for p in sset["ports"].as_array().cloned().unwrap_or_default() {
                            eps.push(format!("{}:{}", s(&a["ip"]), s(&p["port"])));
                        }
                    }
                }
                vec![json!(or_none(eps.join(","))), age(&o["metadata"]["creationTimestamp"])]
            }),
        ),
        ("coordination.k8s.io", "leases") => (
            vec![name_col(), col("Holder", "string", "", "The holder of the lease", 0), age_col()],
            Box::new(|o| vec![json!(s(&o["spec"]["holderIdentity"])), age(&o["metadata"]["creationTimestamp"])]),
        ),
        ("storage.k8s.io", "storageclasses") => (
            vec![
                name_col(),
                col("Provisioner", "string", "", "Indicates the type of the provisioner.", 0),
                col("ReclaimPolicy", "string", "", "Dynamically provisioned PersistentVolumes of this storage class are created with this reclaimPolicy. Defaults to Delete.", 0),
                col("VolumeBindingMode", "string", "", "VolumeBindingMode indicates how PersistentVolumeClaims should be provisioned and bound.", 0),
                col("AllowVolumeExpansion", "string", "", "AllowVolumeExpansion shows whether the storage class allow volume expand", 0),
                age_col(),
            ],
            Box::new(|o| {
                vec![
                    o["provisioner"].clone(),
                    json!(o["reclaimPolicy"].as_str().unwrap_or("Delete")),
                    json!(o["volumeBindingMode"].as_str().unwrap_or("Immediate")),
                    json!(o["allowVolumeExpansion"].as_bool().unwrap_or(false).to_string()),
                    age(&o["metadata"]["creationTimestamp"]),
                ]
            }),
        ),
        _ => (
            vec![
                name_col(),
                col("Created At", "date", "", "CreationTimestamp is a timestamp representing the server time when this object was created.", 0),
            ],
            Box::new(|o| vec![o["metadata"]["creationTimestamp"].clone()]),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_arithmetic_does_not_overflow_on_extreme_values() {
        let a = json!({"a": [1, 2, 3]});
        assert_eq!(json_path(&a, ".a[-1]"), vec![&json!(3)]);
        assert!(json_path(&a, ".a[-4]").is_empty());
        assert!(json_path(&a, &format!(".a[{}]", i64::MIN)).is_empty());
        assert!(json_path(&a, &format!(".a[{}]", i64::MAX)).is_empty());
        let pod = json!({"spec": {"containers": [{}, {}]}, "status": {"containerStatuses": [
            {"restartCount": i64::MAX}, {"restartCount": i64::MAX}]}});
        assert_eq!(pod_cells(&pod)[2], json!(i64::MAX.to_string()));
    }
}
