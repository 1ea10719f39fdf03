//! The Kubernetes Pod Security Standards' **restricted** profile (baseline rules included), as a
//! pure check of a pod spec: [`restricted_violations`] lists every rule the spec breaks, named like
//! the API server's `violates PodSecurity "restricted:latest"` warnings. Used by the tests of
//! `deploy/` (the operator Deployment must pass) and usable on any pod template.
//!
//! Rules (<https://kubernetes.io/docs/concepts/security/pod-security-standards/>):
//! baseline: host namespaces (hostNetwork/hostPID/hostIPC), privileged containers, capabilities
//! beyond the default set, hostPath volumes, host ports, AppArmor, SELinux, /proc mount type,
//! sysctls, Windows host process; restricted: volume types, privilege escalation, running as
//! non-root, non-zero UID, seccomp profile, capabilities dropped to ALL (+ NET_BIND_SERVICE only).

use serde_json::Value;

/// Volume sources the restricted profile allows.
const ALLOWED_VOLUMES: [&str; 8] = [
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

/// Sysctls the baseline profile allows.
const SAFE_SYSCTLS: [&str; 9] = [
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
];

/// Capabilities the baseline profile allows to add.
const BASELINE_CAPS: [&str; 13] = [
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// SELinux types the baseline profile allows.
const SELINUX_TYPES: [&str; 4] = [
    "container_t",
    "container_init_t",
    "container_kvm_t",
    "container_engine_t",
];

fn containers(spec: &Value) -> impl Iterator<Item = &Value> {
    ["initContainers", "containers", "ephemeralContainers"]
        .into_iter()
        .flat_map(move |k| spec[k].as_array().into_iter().flatten())
}

fn name(c: &Value) -> &str {
    c["name"].as_str().unwrap_or("?")
}

/// Every restricted-profile rule `spec` (a PodSpec as JSON) breaks, one message each; empty when
/// the pod may run in a namespace labelled `pod-security.kubernetes.io/enforce: restricted`.
pub fn restricted_violations(spec: &Value) -> Vec<String> {
    let mut v = Vec::new();
    let pod_sc = &spec["securityContext"];

    // Baseline: host namespaces.
    for key in ["hostNetwork", "hostPID", "hostIPC"] {
        if spec[key] == true {
            v.push(format!("host namespaces: {key}=true"));
        }
    }
    // Volumes: no hostPath (baseline), only the allowed types (restricted).
    for vol in spec["volumes"].as_array().into_iter().flatten() {
        let vname = vol["name"].as_str().unwrap_or("?");
        if let Some(obj) = vol.as_object() {
            for key in obj.keys().filter(|k| *k != "name") {
                if key == "hostPath" {
                    v.push(format!("hostPath volumes: volume {vname}"));
                } else if !ALLOWED_VOLUMES.contains(&key.as_str()) {
                    v.push(format!("restricted volume types: volume {vname} uses {key}"));
                }
            }
        }
    }
    // Pod-level sysctls, SELinux, Windows host process, UID.
    for s in pod_sc["sysctls"].as_array().into_iter().flatten() {
        let n = s["name"].as_str().unwrap_or("?");
        if !SAFE_SYSCTLS.contains(&n) {
            v.push(format!("forbidden sysctls: {n}"));
        }
    }
    selinux(&pod_sc["seLinuxOptions"], "pod", &mut v);
    if pod_sc["windowsOptions"]["hostProcess"] == true {
        v.push("hostProcess: pod".into());
    }
    if pod_sc["runAsUser"] == 0 {
        v.push("runAsUser=0: pod".into());
    }
    apparmor(&pod_sc["appArmorProfile"], "pod", &mut v);

    let pod_nonroot = pod_sc["runAsNonRoot"] == true;
    let pod_seccomp = seccomp_ok(&pod_sc["seccompProfile"]);
    if !pod_sc["seccompProfile"].is_null() && !pod_seccomp {
        v.push("seccompProfile: pod must use RuntimeDefault or Localhost".into());
    }
    for c in containers(spec) {
        let n = name(c);
        let sc = &c["securityContext"];
        if sc["privileged"] == true {
            v.push(format!("privileged: container {n}"));
        }
        if sc["allowPrivilegeEscalation"] != false {
            v.push(format!(
                "allowPrivilegeEscalation != false: container {n} must set securityContext.allowPrivilegeEscalation=false"
            ));
        }
        let runs_nonroot = match sc["runAsNonRoot"].as_bool() {
            Some(b) => b,
            None => pod_nonroot,
        };
        if !runs_nonroot {
            v.push(format!(
                "runAsNonRoot != true: pod or container {n} must set securityContext.runAsNonRoot=true"
            ));
        }
        if sc["runAsUser"] == 0 {
            v.push(format!("runAsUser=0: container {n}"));
        }
        let sp = &sc["seccompProfile"];
        if sp.is_null() {
            if !pod_seccomp {
                v.push(format!(
                    "seccompProfile: pod or container {n} must set securityContext.seccompProfile.type to RuntimeDefault or Localhost"
                ));
            }
        } else if !seccomp_ok(sp) {
            v.push(format!(
                "seccompProfile: container {n} must use RuntimeDefault or Localhost"
            ));
        }
        let drop_all = sc["capabilities"]["drop"]
            .as_array()
            .is_some_and(|d| d.iter().any(|x| x == "ALL"));
        if !drop_all {
            v.push(format!(
                "unrestricted capabilities: container {n} must set securityContext.capabilities.drop=[\"ALL\"]"
            ));
        }
        for add in sc["capabilities"]["add"].as_array().into_iter().flatten() {
            let cap = add.as_str().unwrap_or("?");
            if cap != "NET_BIND_SERVICE" {
                let level = if BASELINE_CAPS.contains(&cap) {
                    "restricted"
                } else {
                    "baseline"
                };
                v.push(format!(
                    "unrestricted capabilities ({level}): container {n} adds {cap}"
                ));
            }
        }
        for p in c["ports"].as_array().into_iter().flatten() {
            if p["hostPort"].as_i64().is_some_and(|h| h != 0) {
                v.push(format!(
                    "hostPort: container {n} uses host port {}",
                    p["hostPort"]
                ));
            }
        }
        if sc["procMount"].as_str().is_some_and(|m| m != "Default") {
            v.push(format!(
                "procMount: container {n} must use the Default /proc mount"
            ));
        }
        if sc["windowsOptions"]["hostProcess"] == true {
            v.push(format!("hostProcess: container {n}"));
        }
        selinux(&sc["seLinuxOptions"], &format!("container {n}"), &mut v);
        apparmor(&sc["appArmorProfile"], &format!("container {n}"), &mut v);
    }
    v
}

fn seccomp_ok(p: &Value) -> bool {
    matches!(p["type"].as_str(), Some("RuntimeDefault" | "Localhost"))
}

fn selinux(o: &Value, who: &str, v: &mut Vec<String>) {
    if let Some(t) = o["type"].as_str() {
        if !t.is_empty() && !SELINUX_TYPES.contains(&t) {
            v.push(format!("seLinuxOptions: {who} uses type {t}"));
        }
    }
    for key in ["user", "role"] {
        if o[key].as_str().is_some_and(|s| !s.is_empty()) {
            v.push(format!("seLinuxOptions: {who} sets {key}"));
        }
    }
}

fn apparmor(p: &Value, who: &str, v: &mut Vec<String>) {
    if p["type"] == "Unconfined" {
        v.push(format!("appArmorProfile: {who} is Unconfined"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn good() -> Value {
        json!({
            "securityContext": {"runAsNonRoot": true, "runAsUser": 1001, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "app",
                "ports": [{"containerPort": 8443}],
                "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}
            }],
            "volumes": [{"name": "tmp", "emptyDir": {}}, {"name": "cfg", "configMap": {"name": "x"}}]
        })
    }

    fn broken(f: impl FnOnce(&mut Value)) -> Vec<String> {
        let mut s = good();
        f(&mut s);
        restricted_violations(&s)
    }

    #[test]
    fn a_compliant_pod_has_no_violations() {
        assert_eq!(restricted_violations(&good()), Vec::<String>::new());
    }

    #[test]
    fn container_level_settings_satisfy_the_pod_level_rules_too() {
        let v = broken(|s| {
            s["securityContext"] = json!({});
            s["containers"][0]["securityContext"]["runAsNonRoot"] = json!(true);
            s["containers"][0]["securityContext"]["seccompProfile"] =
                json!({"type": "Localhost", "localhostProfile": "p.json"});
        });
        assert_eq!(v, Vec::<String>::new());
    }

    type Breakage = Box<dyn FnOnce(&mut Value)>;

    #[test]
    fn every_rule_is_reported() {
        let cases: Vec<(&str, Breakage)> = vec![
            (
                "runAsNonRoot != true",
                Box::new(|s| s["securityContext"]["runAsNonRoot"] = json!(false)),
            ),
            (
                "runAsUser=0: pod",
                Box::new(|s| s["securityContext"]["runAsUser"] = json!(0)),
            ),
            (
                "allowPrivilegeEscalation != false",
                Box::new(|s| s["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = json!(true)),
            ),
            (
                "unrestricted capabilities: container app",
                Box::new(|s| {
                    s["containers"][0]["securityContext"]["capabilities"] = json!({"drop": ["NET_RAW"]})
                }),
            ),
            (
                "unrestricted capabilities (restricted): container app adds CHOWN",
                Box::new(|s| s["containers"][0]["securityContext"]["capabilities"]["add"] = json!(["CHOWN"])),
            ),
            (
                "unrestricted capabilities (baseline): container app adds SYS_ADMIN",
                Box::new(|s| {
                    s["containers"][0]["securityContext"]["capabilities"]["add"] = json!(["SYS_ADMIN"])
                }),
            ),
            (
                "seccompProfile: pod must",
                Box::new(|s| s["securityContext"]["seccompProfile"] = json!({"type": "Unconfined"})),
            ),
            (
                "seccompProfile: pod or container app",
                Box::new(|s| {
                    s["securityContext"]
                        .as_object_mut()
                        .unwrap()
                        .remove("seccompProfile");
                }),
            ),
            (
                "host namespaces: hostNetwork=true",
                Box::new(|s| s["hostNetwork"] = json!(true)),
            ),
            (
                "host namespaces: hostPID=true",
                Box::new(|s| s["hostPID"] = json!(true)),
            ),
            (
                "host namespaces: hostIPC=true",
                Box::new(|s| s["hostIPC"] = json!(true)),
            ),
            (
                "hostPath volumes: volume h",
                Box::new(|s| {
                    s["volumes"]
                        .as_array_mut()
                        .unwrap()
                        .push(json!({"name": "h", "hostPath": {"path": "/"}}))
                }),
            ),
            (
                "restricted volume types: volume n uses nfs",
                Box::new(|s| {
                    s["volumes"]
                        .as_array_mut()
                        .unwrap()
                        .push(json!({"name": "n", "nfs": {"server": "x", "path": "/"}}))
                }),
            ),
            (
                "privileged: container app",
                Box::new(|s| s["containers"][0]["securityContext"]["privileged"] = json!(true)),
            ),
            (
                "hostPort: container app",
                Box::new(|s| s["containers"][0]["ports"][0]["hostPort"] = json!(8443)),
            ),
            (
                "procMount",
                Box::new(|s| s["containers"][0]["securityContext"]["procMount"] = json!("Unmasked")),
            ),
            (
                "forbidden sysctls: kernel.msgmax",
                Box::new(|s| {
                    s["securityContext"]["sysctls"] = json!([{"name": "kernel.msgmax", "value": "1"}])
                }),
            ),
            (
                "seLinuxOptions: pod uses type spc_t",
                Box::new(|s| s["securityContext"]["seLinuxOptions"] = json!({"type": "spc_t"})),
            ),
            (
                "hostProcess: container app",
                Box::new(|s| {
                    s["containers"][0]["securityContext"]["windowsOptions"] = json!({"hostProcess": true})
                }),
            ),
            (
                "appArmorProfile: container app is Unconfined",
                Box::new(|s| {
                    s["containers"][0]["securityContext"]["appArmorProfile"] = json!({"type": "Unconfined"})
                }),
            ),
            (
                "allowPrivilegeEscalation != false: container init",
                Box::new(|s| {
                    s["initContainers"] =
                        json!([{"name": "init", "securityContext": {"capabilities": {"drop": ["ALL"]}}}])
                }),
            ),
        ];
        for (expected, f) in cases {
            let v = broken(f);
            assert!(
                v.iter().any(|m| m.starts_with(expected)),
                "expected a violation starting with {expected:?}, got {v:?}"
            );
        }
    }
}
