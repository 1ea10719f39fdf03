//! Built-in kind behaviour: defaulting (what the real API server's defaulters set), kind-specific
//! validation, Secret `stringData` merge. (Service ClusterIP/NodePort allocation and the Event
//! storage conversion belong to the storage layer: `store::alloc`, `store::convert`.)

use crate::error::Cause;
use crate::resources::ResourceInfo;
use crate::selectors::LabelSelector;
use crate::util::{default_path, set_path};
use base64::Engine;
use serde_json::{json, Map, Value};

fn is(info: &ResourceInfo, group: &str, resource: &str) -> bool {
    info.group == group && info.resource == resource
}

fn default_container(c: &mut Value) {
    if !c.is_object() {
        return;
    }
    default_path(c, &["terminationMessagePath"], json!("/dev/termination-log"));
    default_path(c, &["terminationMessagePolicy"], json!("File"));
    let image = c["image"].as_str().unwrap_or_default().to_string();
    let tagless = !image.rsplit('/').next().unwrap_or_default().contains(':') && !image.contains('@');
    let policy = if image.ends_with(":latest") || tagless {
        "Always"
    } else {
        "IfNotPresent"
    };
    default_path(c, &["imagePullPolicy"], json!(policy));
    default_path(c, &["resources"], json!({}));
    if let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports.iter_mut().filter(|p| p.is_object()) {
            default_path(p, &["protocol"], json!("TCP"));
        }
    }
    if let Some(env) = c.get_mut("env").and_then(Value::as_array_mut) {
        for e in env.iter_mut().filter(|e| e.is_object()) {
            if let Some(fr) = e.get_mut("valueFrom").and_then(|v| v.get_mut("fieldRef")) {
                default_path(fr, &["apiVersion"], json!("v1"));
            }
        }
    }
}

/// Defaults of a PodSpec (also used inside templates).
pub fn default_pod_spec(spec: &mut Value) {
    if !spec.is_object() {
        return;
    }
    default_path(spec, &["restartPolicy"], json!("Always"));
    default_path(spec, &["terminationGracePeriodSeconds"], json!(30));
    default_path(spec, &["dnsPolicy"], json!("ClusterFirst"));
    default_path(spec, &["securityContext"], json!({}));
    default_path(spec, &["schedulerName"], json!("default-scheduler"));
    for key in ["containers", "initContainers"] {
        if let Some(cs) = spec.get_mut(key).and_then(Value::as_array_mut) {
            cs.iter_mut().for_each(default_container);
        }
    }
    if let Some(vols) = spec.get_mut("volumes").and_then(Value::as_array_mut) {
        for v in vols.iter_mut() {
            for src in ["configMap", "secret"] {
                if let Some(s) = v.get_mut(src).filter(|s| s.is_object()) {
                    default_path(s, &["defaultMode"], json!(420));
                }
            }
        }
    }
}

fn default_template(obj: &mut Value) {
    if let Some(spec) = obj
        .get_mut("spec")
        .and_then(|s| s.get_mut("template"))
        .and_then(|t| t.get_mut("spec"))
    {
        default_pod_spec(spec);
    }
    if obj["spec"]["template"].is_object() {
        default_path(
            obj,
            &["spec", "template", "metadata", "creationTimestamp"],
            Value::Null,
        );
    }
}

/// Apply the real server's defaults for built-in kinds (idempotent).
pub fn default_object(info: &ResourceInfo, obj: &mut Value) {
    if !obj.is_object() {
        return;
    }
    if info.group.is_empty() {
        match info.resource.as_str() {
            "namespaces" => {
                default_path(obj, &["spec", "finalizers"], json!(["kubernetes"]));
                default_path(obj, &["status", "phase"], json!("Active"));
                if let Some(name) = obj["metadata"]["name"].as_str().map(String::from) {
                    default_path(
                        obj,
                        &["metadata", "labels", "kubernetes.io/metadata.name"],
                        json!(name),
                    );
                }
            }
            "pods" => {
                if let Some(spec) = obj.get_mut("spec") {
                    default_pod_spec(spec);
                    default_path(spec, &["serviceAccountName"], json!("default"));
                    default_path(spec, &["enableServiceLinks"], json!(true));
                    default_path(spec, &["priority"], json!(0));
                    default_path(spec, &["preemptionPolicy"], json!("PreemptLowerPriority"));
                    if spec.get("tolerations").is_none() {
                        spec["tolerations"] = json!([
                            {"key":"node.kubernetes.io/not-ready","operator":"Exists","effect":"NoExecute","tolerationSeconds":300},
                            {"key":"node.kubernetes.io/unreachable","operator":"Exists","effect":"NoExecute","tolerationSeconds":300}
                        ]);
                    }
                }
                if !obj["status"].is_object() {
                    obj["status"] = json!({"phase": "Pending", "qosClass": "BestEffort"});
                }
            }
            "services" => default_service(obj),
            "secrets" => {
                default_path(obj, &["type"], json!("Opaque"));
                merge_string_data(obj);
            }
            "persistentvolumeclaims" => {
                default_path(obj, &["spec", "volumeMode"], json!("Filesystem"));
                default_path(obj, &["status", "phase"], json!("Pending"));
            }
            "persistentvolumes" => {
                default_path(obj, &["spec", "persistentVolumeReclaimPolicy"], json!("Retain"));
                default_path(obj, &["spec", "volumeMode"], json!("Filesystem"));
                default_path(obj, &["status", "phase"], json!("Pending"));
            }
            _ => {}
        }
        return;
    }
    match (info.group.as_str(), info.resource.as_str()) {
        ("apps", "statefulsets") => {
            default_path(obj, &["spec", "replicas"], json!(1));
            default_path(obj, &["spec", "podManagementPolicy"], json!("OrderedReady"));
            default_path(
                obj,
                &["spec", "updateStrategy"],
                json!({"type":"RollingUpdate","rollingUpdate":{"partition":0}}),
            );
            default_path(obj, &["spec", "revisionHistoryLimit"], json!(10));
            default_path(
                obj,
                &["spec", "persistentVolumeClaimRetentionPolicy"],
                json!({"whenDeleted":"Retain","whenScaled":"Retain"}),
            );
            default_template(obj);
            if let Some(vcts) = obj["spec"]
                .get_mut("volumeClaimTemplates")
                .and_then(Value::as_array_mut)
            {
                for t in vcts.iter_mut().filter(|t| t.is_object()) {
                    default_path(t, &["apiVersion"], json!("v1"));
                    default_path(t, &["kind"], json!("PersistentVolumeClaim"));
                    default_path(t, &["spec", "volumeMode"], json!("Filesystem"));
                    default_path(t, &["status", "phase"], json!("Pending"));
                }
            }
            default_path(obj, &["status", "replicas"], json!(0));
            default_path(obj, &["status", "availableReplicas"], json!(0));
        }
        ("apps", "deployments") => {
            default_path(obj, &["spec", "replicas"], json!(1));
            default_path(
                obj,
                &["spec", "strategy"],
                json!({"type":"RollingUpdate","rollingUpdate":{"maxUnavailable":"25%","maxSurge":"25%"}}),
            );
            default_path(obj, &["spec", "revisionHistoryLimit"], json!(10));
            default_path(obj, &["spec", "progressDeadlineSeconds"], json!(600));
            default_template(obj);
            default_path(obj, &["status"], json!({}));
        }
        ("apps", "replicasets") | ("apps", "daemonsets") | ("batch", "jobs") => {
            default_template(obj);
        }
        ("admissionregistration.k8s.io", r) if r.ends_with("webhookconfigurations") => {
            let mutating = r.starts_with("mutating");
            if let Some(hooks) = obj.get_mut("webhooks").and_then(Value::as_array_mut) {
                for h in hooks.iter_mut().filter(|h| h.is_object()) {
                    default_path(h, &["failurePolicy"], json!("Fail"));
                    default_path(h, &["matchPolicy"], json!("Equivalent"));
                    default_path(h, &["namespaceSelector"], json!({}));
                    default_path(h, &["objectSelector"], json!({}));
                    default_path(h, &["timeoutSeconds"], json!(10));
                    if mutating {
                        default_path(h, &["reinvocationPolicy"], json!("Never"));
                    }
                    if let Some(rules) = h.get_mut("rules").and_then(Value::as_array_mut) {
                        for r in rules.iter_mut().filter(|r| r.is_object()) {
                            default_path(r, &["scope"], json!("*"));
                        }
                    }
                    if let Some(svc) = h.get_mut("clientConfig").and_then(|c| c.get_mut("service")) {
                        if svc.is_object() {
                            default_path(svc, &["port"], json!(443));
                        }
                    }
                }
            }
        }
        _ => {}
    }
}

fn default_service(obj: &mut Value) {
    default_path(obj, &["spec", "type"], json!("ClusterIP"));
    default_path(obj, &["spec", "sessionAffinity"], json!("None"));
    let t = obj["spec"]["type"].as_str().unwrap_or_default().to_string();
    if t != "ExternalName" {
        default_path(obj, &["spec", "ipFamilyPolicy"], json!("SingleStack"));
        default_path(obj, &["spec", "ipFamilies"], json!(["IPv4"]));
        default_path(obj, &["spec", "internalTrafficPolicy"], json!("Cluster"));
    }
    if t == "NodePort" || t == "LoadBalancer" {
        default_path(obj, &["spec", "externalTrafficPolicy"], json!("Cluster"));
    }
    if let Some(ports) = obj["spec"].get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports.iter_mut().filter(|p| p.is_object()) {
            default_path(p, &["protocol"], json!("TCP"));
            if p.get("targetPort").is_none_or(Value::is_null) {
                p["targetPort"] = p["port"].clone();
            }
        }
    }
    if let Some(ip) = obj["spec"]["clusterIP"].as_str().map(String::from) {
        if !ip.is_empty() {
            default_path(obj, &["spec", "clusterIPs"], json!([ip]));
        }
    }
    default_path(obj, &["status", "loadBalancer"], json!({}));
}

fn merge_string_data(obj: &mut Value) {
    let Some(sd) = obj.as_object_mut().and_then(|o| o.remove("stringData")) else {
        return;
    };
    if let Value::Object(m) = sd {
        for (k, v) in m {
            let s = v.as_str().unwrap_or_default();
            set_path(
                obj,
                &["data", &k],
                json!(base64::engine::general_purpose::STANDARD.encode(s)),
            );
        }
    }
}

/// Copy server-allocated values the client may omit on update (Service clusterIP/nodePorts).
pub fn preserve_on_update(info: &ResourceInfo, old: &Value, new: &mut Value) {
    if !is(info, "", "services") {
        return;
    }
    for f in ["clusterIP", "clusterIPs"] {
        if new["spec"].get(f).is_none_or(Value::is_null) || new["spec"][f] == json!("") {
            if let Some(v) = old["spec"].get(f) {
                set_path(new, &["spec", f], v.clone());
            }
        }
    }
    let old_ports = old["spec"]["ports"].as_array().cloned().unwrap_or_default();
    if let Some(ports) = new["spec"].get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports.iter_mut().filter(|p| p.is_object()) {
            if p.get("nodePort").is_none_or(Value::is_null) {
                if let Some(op) = old_ports
                    .iter()
                    .find(|o| o["port"] == p["port"] && o["protocol"] == p["protocol"])
                {
                    if let Some(np) = op.get("nodePort") {
                        p["nodePort"] = np.clone();
                    }
                }
            }
        }
    }
}

fn selector_matches_template(obj: &Value, causes: &mut Vec<Cause>) {
    let sel = &obj["spec"]["selector"];
    if sel.is_null() {
        causes.push(Cause::required("spec.selector", ""));
        return;
    }
    let empty = sel.as_object().is_none_or(|m| {
        m.get("matchLabels")
            .is_none_or(|v| v.as_object().is_none_or(Map::is_empty))
            && m.get("matchExpressions")
                .is_none_or(|v| v.as_array().is_none_or(Vec::is_empty))
    });
    if empty {
        causes.push(Cause::invalid(
            "spec.selector",
            &json!("{}"),
            "empty selector is invalid for deployment",
        ));
        return;
    }
    match LabelSelector::from_structured(sel) {
        Ok(s) => {
            if !s.matches(&obj["spec"]["template"]["metadata"]["labels"]) {
                let labels = obj["spec"]["template"]["metadata"]["labels"].clone();
                let shown = match labels.as_object() {
                    Some(m) => format!(
                        "map[string]string{{{}}}",
                        m.iter()
                            .map(|(k, v)| format!("{k:?}:{}", crate::error::value_for_message(v)))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    None => "map[string]string(nil)".into(),
                };
                causes.push(Cause::new(
                    "FieldValueInvalid",
                    "spec.template.metadata.labels",
                    format!("Invalid value: {shown}: `selector` does not match template `labels`"),
                ));
            }
        }
        Err(e) => causes.push(Cause::invalid("spec.selector", sel, &e)),
    }
}

fn containers_valid(spec: &Value, prefix: &str, causes: &mut Vec<Cause>) {
    match spec["containers"].as_array() {
        Some(cs) if !cs.is_empty() => {
            for (i, c) in cs.iter().enumerate() {
                let name = c["name"].as_str().unwrap_or_default();
                if name.is_empty() {
                    causes.push(Cause::required(&format!("{prefix}.containers[{i}].name"), ""));
                } else {
                    for d in crate::validation::dns1123_label(name) {
                        causes.push(Cause::invalid(
                            &format!("{prefix}.containers[{i}].name"),
                            &json!(name),
                            &d,
                        ));
                    }
                }
                if c["image"].as_str().unwrap_or_default().is_empty() {
                    causes.push(Cause::required(&format!("{prefix}.containers[{i}].image"), ""));
                }
            }
        }
        _ => causes.push(Cause::required(&format!("{prefix}.containers"), "")),
    }
}

fn pod_update_allowed(old: &Value, new: &Value) -> bool {
    let mut o = old["spec"].clone();
    let mut n = new["spec"].clone();
    for spec in [&mut o, &mut n] {
        for key in ["containers", "initContainers"] {
            if let Some(cs) = spec.get_mut(key).and_then(Value::as_array_mut) {
                for c in cs.iter_mut().filter_map(Value::as_object_mut) {
                    c.remove("image");
                }
            }
        }
        if let Some(m) = spec.as_object_mut() {
            m.remove("activeDeadlineSeconds");
            m.remove("tolerations");
            m.remove("terminationGracePeriodSeconds");
        }
    }
    o == n
}

/// Kind-specific validation; `old` is set on updates.
pub fn validate(info: &ResourceInfo, obj: &Value, old: Option<&Value>) -> Vec<Cause> {
    let mut causes = Vec::new();
    match (info.group.as_str(), info.resource.as_str()) {
        ("", "pods") => {
            containers_valid(&obj["spec"], "spec", &mut causes);
            if let Some(o) = old {
                if !pod_update_allowed(o, obj) {
                    causes.push(Cause::forbidden("spec", "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)"));
                }
            }
        }
        ("", "services") => {
            let t = obj["spec"]["type"].as_str().unwrap_or("ClusterIP");
            if !["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"].contains(&t) {
                causes.push(Cause::not_supported(
                    "spec.type",
                    &json!(t),
                    &[
                        json!("ClusterIP"),
                        json!("ExternalName"),
                        json!("LoadBalancer"),
                        json!("NodePort"),
                    ],
                ));
            }
            let headless = obj["spec"]["clusterIP"] == json!("None");
            let ports = obj["spec"]["ports"].as_array().cloned().unwrap_or_default();
            if ports.is_empty() && !headless && t != "ExternalName" {
                causes.push(Cause::required("spec.ports", ""));
            }
            for (i, p) in ports.iter().enumerate() {
                match p["port"].as_i64() {
                    Some(n) if (1..=65535).contains(&n) => {}
                    Some(n) => causes.push(Cause::invalid(
                        &format!("spec.ports[{i}].port"),
                        &json!(n),
                        "must be between 1 and 65535, inclusive",
                    )),
                    None => causes.push(Cause::required(&format!("spec.ports[{i}].port"), "")),
                }
                if ports.len() > 1 && p["name"].as_str().unwrap_or_default().is_empty() {
                    causes.push(Cause::required(&format!("spec.ports[{i}].name"), ""));
                }
            }
            if let Some(o) = old {
                let oip = o["spec"]["clusterIP"].as_str().unwrap_or_default();
                let nip = obj["spec"]["clusterIP"].as_str().unwrap_or_default();
                if !oip.is_empty() && oip != nip && t != "ExternalName" {
                    causes.push(Cause::invalid(
                        "spec.clusterIPs[0]",
                        &json!(nip),
                        "may not change once set",
                    ));
                }
            }
        }
        ("", "configmaps") | ("", "secrets") => {
            if let Some(o) = old {
                if o["immutable"] == json!(true) {
                    if o["data"] != obj["data"] || o["binaryData"] != obj["binaryData"] {
                        causes.push(Cause::forbidden(
                            "data",
                            "field is immutable when `immutable` is set",
                        ));
                    }
                    if obj["immutable"] != json!(true) {
                        causes.push(Cause::forbidden(
                            "immutable",
                            "field is immutable when `immutable` is set",
                        ));
                    }
                }
            }
            if info.resource == "secrets" {
                if let Some(data) = obj["data"].as_object() {
                    for (k, v) in data {
                        let ok = v
                            .as_str()
                            .is_some_and(|s| base64::engine::general_purpose::STANDARD.decode(s).is_ok());
                        if !ok {
                            causes.push(Cause::invalid(&format!("data[{k}]"), v, "must be base64-encoded"));
                        }
                    }
                }
            }
        }
        ("apps", "statefulsets")
        | ("apps", "deployments")
        | ("apps", "replicasets")
        | ("apps", "daemonsets") => {
            selector_matches_template(obj, &mut causes);
            containers_valid(
                &obj["spec"]["template"]["spec"],
                "spec.template.spec",
                &mut causes,
            );
            if let Some(r) = obj["spec"]["replicas"].as_i64() {
                if r < 0 {
                    causes.push(Cause::invalid(
                        "spec.replicas",
                        &json!(r),
                        "must be greater than or equal to 0",
                    ));
                }
            }
            if let Some(o) = old {
                if o["spec"]["selector"] != obj["spec"]["selector"] {
                    causes.push(Cause::invalid(
                        "spec.selector",
                        &obj["spec"]["selector"],
                        "field is immutable",
                    ));
                }
                if info.resource == "statefulsets" {
                    let strip = |v: &Value| {
                        let mut s = v["spec"].clone();
                        if let Some(m) = s.as_object_mut() {
                            for k in [
                                "replicas",
                                "ordinals",
                                "template",
                                "updateStrategy",
                                "revisionHistoryLimit",
                                "persistentVolumeClaimRetentionPolicy",
                                "minReadySeconds",
                            ] {
                                m.remove(k);
                            }
                        }
                        s
                    };
                    if strip(o) != strip(obj) {
                        causes.push(Cause::forbidden("spec", "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden"));
                    }
                }
            }
        }
        ("apiextensions.k8s.io", "customresourcedefinitions") => {
            causes.extend(crate::crd::validate_crd(obj, old));
        }
        _ => {}
    }
    causes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::Registry;
    use crate::resources::ResourceKey;

    #[test]
    fn secret_string_data_merges() {
        let reg = Registry::with_builtins();
        let info = reg.get(&ResourceKey::core("secrets")).unwrap();
        let mut s = json!({"data":{"a":"eA=="},"stringData":{"b":"hello"}});
        default_object(&info, &mut s);
        assert_eq!(s["data"]["b"], "aGVsbG8=");
        assert_eq!(s["data"]["a"], "eA==");
        assert!(s.get("stringData").is_none());
        assert_eq!(s["type"], "Opaque");
    }
}
