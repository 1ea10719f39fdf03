//! Volume set-up and container environment resolution for the simulated kubelet.
//!
//! Volumes become host directories: PVCs their claim's data directory (shared by every pod that
//! mounts the claim, kept across restarts), `emptyDir` a pod directory, `configMap`, `secret`,
//! `downwardAPI` and `projected` volumes a pod directory filled with their files, and `hostPath`
//! the path on the simulated node's own filesystem (`<state>/nodes/<node>/<path>`, shared by the
//! pods of that node) — this machine's paths are never exposed.

use std::{collections::HashMap, path::PathBuf};

use base64::Engine;
use serde_json::Value;

use crate::{
    resources::ResourceKey,
    sandbox::{Mount, Runtime},
    store::Store,
};

/// Why a pod cannot start yet (reported and retried when related objects change).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NotReady {
    pub(crate) reason: &'static str,
    pub(crate) message: String,
    /// A transient wait the kubelet does not report (a claim still being bound).
    pub(crate) silent: bool,
}

/// A file of a configMap/secret/downwardAPI volume: path, content, mode.
type VolumeFile = (String, Vec<u8>, Option<u32>);

fn wait(reason: &'static str, message: String) -> NotReady {
    NotReady {
        reason,
        message,
        silent: false,
    }
}

fn io(volume: &str, e: impl std::fmt::Display) -> NotReady {
    wait(
        "FailedMount",
        format!("MountVolume.SetUp failed for volume \"{volume}\" : {e}"),
    )
}

fn write_files(dir: &std::path::Path, files: &[VolumeFile], volume: &str) -> Result<(), NotReady> {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            let _ = if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
        }
    }
    for (path, data, mode) in files {
        let rel = path.trim_start_matches('/');
        if rel.split('/').any(|c| c == "..") {
            continue;
        }
        let target = dir.join(rel);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io(volume, e))?;
        }
        std::fs::write(&target, data).map_err(|e| io(volume, e))?;
        if let Some(mode) = mode {
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(*mode))
                .map_err(|e| io(volume, e))?;
        }
    }
    Ok(())
}

fn object_files(obj: &Value, secret: bool) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    if let Some(data) = obj["data"].as_object() {
        for (k, v) in data {
            let s = v.as_str().unwrap_or("");
            let bytes = if secret {
                base64::engine::general_purpose::STANDARD
                    .decode(s)
                    .unwrap_or_default()
            } else {
                s.as_bytes().to_vec()
            };
            out.push((k.clone(), bytes));
        }
    }
    if let Some(data) = obj["binaryData"].as_object() {
        for (k, v) in data {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(v.as_str().unwrap_or(""))
                .unwrap_or_default();
            out.push((k.clone(), bytes));
        }
    }
    out
}

/// Keys of a configMap/secret source, honouring `items`.
fn source_files(
    store: &Store,
    ns: &str,
    src: &Value,
    secret: bool,
    volume: &str,
) -> Result<Vec<VolumeFile>, NotReady> {
    let (res, name_field, kind) = if secret {
        ("secrets", "secretName", "secret")
    } else {
        ("configmaps", "name", "configmap")
    };
    let name = src[name_field]
        .as_str()
        .or_else(|| src["name"].as_str())
        .unwrap_or("");
    let optional = src["optional"] == true;
    let default_mode = src["defaultMode"].as_u64().and_then(|m| u32::try_from(m).ok());
    let Some(obj) = store.get(&ResourceKey::core(res), Some(ns), name) else {
        if optional {
            return Ok(Vec::new());
        }
        return Err(io(volume, format!("{kind} \"{name}\" not found")));
    };
    let all = object_files(&obj, secret);
    match src["items"].as_array() {
        None => Ok(all.into_iter().map(|(k, v)| (k, v, default_mode)).collect()),
        Some(items) => {
            let mut out = Vec::new();
            for item in items {
                let key = item["key"].as_str().unwrap_or("");
                let path = item["path"].as_str().unwrap_or(key);
                let mode = item["mode"]
                    .as_u64()
                    .and_then(|m| u32::try_from(m).ok())
                    .or(default_mode);
                match all.iter().find(|(k, _)| k == key) {
                    Some((_, data)) => out.push((path.to_string(), data.clone(), mode)),
                    None if optional => {}
                    None => {
                        return Err(io(
                            volume,
                            format!("configmap references non-existent config key: {key}"),
                        ));
                    }
                }
            }
            Ok(out)
        }
    }
}

fn downward_files(pod: &Value, items: &[Value]) -> Vec<VolumeFile> {
    items
        .iter()
        .filter_map(|item| {
            let path = item["path"].as_str()?;
            let value = field_ref(pod, item["fieldRef"]["fieldPath"].as_str().unwrap_or(""), "")?;
            Some((path.to_string(), value.into_bytes(), None))
        })
        .collect()
}

/// Prepares every volume of a pod; returns the host directory of each, by volume name.
pub(crate) fn prepare(
    store: &Store,
    runtime: &Runtime,
    pod: &Value,
) -> Result<HashMap<String, PathBuf>, NotReady> {
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or("");
    let uid = pod["metadata"]["uid"].as_str().unwrap_or("");
    let mut dirs = HashMap::new();
    for v in pod["spec"]["volumes"].as_array().into_iter().flatten() {
        let name = v["name"].as_str().unwrap_or("");
        let dir = if let Some(claim) = v["persistentVolumeClaim"]["claimName"].as_str() {
            let Some(pvc) = store.get(&ResourceKey::core("persistentvolumeclaims"), Some(ns), claim) else {
                return Err(wait(
                    "FailedMount",
                    format!("persistentvolumeclaim \"{claim}\" not found"),
                ));
            };
            if pvc["status"]["phase"] != "Bound" {
                return Err(NotReady {
                    reason: "FailedMount",
                    message: format!("persistentvolumeclaim \"{claim}\" is not bound"),
                    silent: true,
                });
            }
            runtime.pvc_dir(ns, claim).map_err(|e| io(name, e))?
        } else if let Some(path) = v["hostPath"]["path"].as_str() {
            let node = pod["spec"]["nodeName"].as_str().unwrap_or("");
            host_path(
                runtime,
                node,
                path,
                v["hostPath"]["type"].as_str().unwrap_or(""),
                name,
            )?
        } else {
            let dir = runtime.empty_dir(uid, name).map_err(|e| io(name, e))?;
            if v["configMap"].is_object() {
                write_files(
                    &dir,
                    &source_files(store, ns, &v["configMap"], false, name)?,
                    name,
                )?;
            } else if v["secret"].is_object() {
                write_files(&dir, &source_files(store, ns, &v["secret"], true, name)?, name)?;
            } else if let Some(items) = v["downwardAPI"]["items"].as_array() {
                write_files(&dir, &downward_files(pod, items), name)?;
            } else if let Some(sources) = v["projected"]["sources"].as_array() {
                let mut files = Vec::new();
                for s in sources {
                    if s["configMap"].is_object() {
                        files.extend(source_files(store, ns, &s["configMap"], false, name)?);
                    } else if s["secret"].is_object() {
                        files.extend(source_files(store, ns, &s["secret"], true, name)?);
                    } else if let Some(items) = s["downwardAPI"]["items"].as_array() {
                        files.extend(downward_files(pod, items));
                    } else if s["serviceAccountToken"].is_object() {
                        let path = s["serviceAccountToken"]["path"].as_str().unwrap_or("token");
                        files.push((path.to_string(), b"kubesim-service-account-token".to_vec(), None));
                    }
                }
                write_files(&dir, &files, name)?;
            }
            dir
        };
        dirs.insert(name.to_string(), dir);
    }
    Ok(dirs)
}

/// A `hostPath` volume on the simulated node, checked against its `type` like the kubelet does
/// (an unset type creates a missing directory, as the container runtime would).
fn host_path(
    runtime: &Runtime,
    node: &str,
    path: &str,
    kind: &str,
    volume: &str,
) -> Result<PathBuf, NotReady> {
    let failed = |what: &str| {
        wait(
            "FailedMount",
            format!("MountVolume.SetUp failed for volume \"{volume}\" : hostPath type check failed: {path} is not {what}"),
        )
    };
    let p = runtime
        .host_path(node, path)
        .map_err(|e| io(volume, e))?
        .ok_or_else(|| {
            wait(
                "FailedMount",
                format!("MountVolume.SetUp failed for volume \"{volume}\" : invalid hostPath {path:?}"),
            )
        })?;
    match kind {
        "" | "DirectoryOrCreate" if !p.exists() => {
            std::fs::create_dir_all(&p).map_err(|e| io(volume, e))?;
        }
        "Directory" if !p.is_dir() => return Err(failed("a directory")),
        "FileOrCreate" if !p.exists() => {
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent).map_err(|e| io(volume, e))?;
            }
            std::fs::write(&p, b"").map_err(|e| io(volume, e))?;
        }
        "File" if !p.is_file() => return Err(failed("a file")),
        // A simulated node has no sockets or devices.
        "Socket" => return Err(failed("a socket file")),
        "CharDevice" => return Err(failed("a character device")),
        "BlockDevice" => return Err(failed("a block device")),
        _ => {}
    }
    Ok(p)
}

/// The mounts of one container.
pub(crate) fn mounts(
    container: &Value,
    dirs: &HashMap<String, PathBuf>,
    pod: &Value,
) -> Result<Vec<Mount>, NotReady> {
    let mut out = Vec::new();
    for m in container["volumeMounts"].as_array().into_iter().flatten() {
        let name = m["name"].as_str().unwrap_or("");
        let Some(base) = dirs.get(name) else {
            return Err(wait(
                "CreateContainerConfigError",
                format!("volume \"{name}\" not found in the pod's volumes"),
            ));
        };
        let sub = m["subPath"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(String::from)
            .or_else(|| {
                m["subPathExpr"]
                    .as_str()
                    .filter(|s| !s.is_empty())
                    .map(|e| expand(e, &pod_env_for_expr(pod)))
            });
        let host_path = match sub {
            Some(sub) => super::subpath::resolve(base, &sub).map_err(|e| {
                tracing::debug!(volume = name, "subPath refused: {e}");
                wait(
                    "CreateContainerConfigError",
                    format!(
                        "failed to prepare subPath for volumeMount \"{name}\" of container \"{}\"",
                        container["name"].as_str().unwrap_or("")
                    ),
                )
            })?,
            None => base.clone(),
        };
        out.push(Mount {
            host_path,
            container_path: m["mountPath"].as_str().unwrap_or("").to_string(),
            read_only: m["readOnly"] == true,
        });
    }
    Ok(out)
}

fn pod_env_for_expr(pod: &Value) -> Vec<(String, String)> {
    vec![
        (
            "POD_NAME".into(),
            pod["metadata"]["name"].as_str().unwrap_or("").into(),
        ),
        (
            "POD_NAMESPACE".into(),
            pod["metadata"]["namespace"].as_str().unwrap_or("").into(),
        ),
    ]
}

/// `fieldRef` values of the downward API.
pub(crate) fn field_ref(pod: &Value, path: &str, pod_ip: &str) -> Option<String> {
    let s = |v: &Value| v.as_str().unwrap_or("").to_string();
    Some(match path {
        "metadata.name" => s(&pod["metadata"]["name"]),
        "metadata.namespace" => s(&pod["metadata"]["namespace"]),
        "metadata.uid" => s(&pod["metadata"]["uid"]),
        "spec.nodeName" => s(&pod["spec"]["nodeName"]),
        "spec.serviceAccountName" => s(&pod["spec"]["serviceAccountName"]),
        "status.podIP" | "status.podIPs" => pod_ip.to_string(),
        "status.hostIP" | "status.hostIPs" => s(&pod["status"]["hostIP"]),
        "metadata.labels" | "metadata.annotations" => {
            let field = if path.ends_with("labels") {
                "labels"
            } else {
                "annotations"
            };
            let mut lines: Vec<String> = pod["metadata"][field]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}=\"{}\"", v.as_str().unwrap_or("")))
                        .collect()
                })
                .unwrap_or_default();
            lines.sort();
            lines.join("\n")
        }
        p => {
            let (field, key) = p.strip_suffix("']").and_then(|p| p.split_once("['"))?;
            match field {
                "metadata.labels" => s(&pod["metadata"]["labels"][key]),
                "metadata.annotations" => s(&pod["metadata"]["annotations"][key]),
                _ => return None,
            }
        }
    })
}

/// `$(VAR)` expansion (`$$` escapes), like the kubelet.
pub(crate) fn expand(input: &str, env: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(end) => {
                    let name = &inner[..end];
                    match env.iter().rev().find(|(k, _)| k == name) {
                        Some((_, v)) => out.push_str(v),
                        None => out.push_str(&format!("$({name})")),
                    }
                    rest = &inner[end + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = inner;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

fn service_env(store: &Store, pod: &Value) -> Vec<(String, String)> {
    let mut env = Vec::new();
    let mut add = |svc: &Value| {
        let Some(ip) = svc["spec"]["clusterIP"]
            .as_str()
            .filter(|ip| !ip.is_empty() && *ip != "None")
        else {
            return;
        };
        let Some(port) = svc["spec"]["ports"][0]["port"].as_i64() else {
            return;
        };
        let proto = svc["spec"]["ports"][0]["protocol"].as_str().unwrap_or("TCP");
        let prefix = svc["metadata"]["name"]
            .as_str()
            .unwrap_or("")
            .to_uppercase()
            .replace('-', "_");
        env.push((format!("{prefix}_SERVICE_HOST"), ip.to_string()));
        env.push((format!("{prefix}_SERVICE_PORT"), port.to_string()));
        env.push((
            format!("{prefix}_PORT"),
            format!("{}://{ip}:{port}", proto.to_lowercase()),
        ));
        let p = format!("{prefix}_PORT_{port}_{proto}");
        env.push((p.clone(), format!("{}://{ip}:{port}", proto.to_lowercase())));
        env.push((format!("{p}_PROTO"), proto.to_lowercase()));
        env.push((format!("{p}_PORT"), port.to_string()));
        env.push((format!("{p}_ADDR"), ip.to_string()));
    };
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or("");
    if pod["spec"]["enableServiceLinks"] != false {
        for svc in store.list(&ResourceKey::core("services"), Some(ns)).0 {
            if !(ns == "default" && svc["metadata"]["name"] == "kubernetes") {
                add(&svc);
            }
        }
    }
    if let Some(k) = store.get(&ResourceKey::core("services"), Some("default"), "kubernetes") {
        add(&k);
    }
    env
}

fn key_ref(store: &Store, ns: &str, r: &Value, secret: bool) -> Result<Option<String>, NotReady> {
    let (res, kind) = if secret {
        ("secrets", "secret")
    } else {
        ("configmaps", "configmap")
    };
    let name = r["name"].as_str().unwrap_or("");
    let key = r["key"].as_str().unwrap_or("");
    let optional = r["optional"] == true;
    let Some(obj) = store.get(&ResourceKey::core(res), Some(ns), name) else {
        if optional {
            return Ok(None);
        }
        return Err(wait(
            "CreateContainerConfigError",
            format!("{kind} \"{name}\" not found"),
        ));
    };
    match object_files(&obj, secret).into_iter().find(|(k, _)| k == key) {
        Some((_, v)) => Ok(Some(String::from_utf8_lossy(&v).into_owned())),
        None if optional => Ok(None),
        None => Err(wait(
            "CreateContainerConfigError",
            format!(
                "couldn't find key {key} in {} {ns}/{name}",
                if secret { "Secret" } else { "ConfigMap" }
            ),
        )),
    }
}

fn resource_field(container: &Value, r: &Value) -> String {
    let resource = r["resource"].as_str().unwrap_or("");
    let (kind, name) = resource.split_once('.').unwrap_or(("limits", resource));
    let q = &container["resources"][kind][name];
    let v = super::super::parse_quantity(q);
    match (name, v) {
        ("cpu", Some(c)) => format!("{}", c.ceil().max(1.0) as i64),
        ("cpu", None) => "8".into(),
        (_, Some(b)) => format!("{}", b as i64),
        (_, None) => "34359738368".into(),
    }
}

/// The environment of a container: service links, `envFrom`, then `env` (with `$(VAR)`
/// expansion).
///
/// `service_links: false` leaves the service-link variables out: for virtual containers, which
/// run no process, so their environment is never seen. The links are seven variables per
/// Service of the namespace (thousands at scale), read from every Service at each container
/// start; `envFrom` and `env` are still resolved, so a missing config map or secret is reported
/// the same way.
pub(crate) fn env(
    store: &Store,
    pod: &Value,
    container: &Value,
    pod_ip: &str,
    service_links: bool,
) -> Result<Vec<(String, String)>, NotReady> {
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or("");
    let mut env = if service_links {
        service_env(store, pod)
    } else {
        Vec::new()
    };
    for from in container["envFrom"].as_array().into_iter().flatten() {
        let prefix = from["prefix"].as_str().unwrap_or("");
        let (r, secret) = if from["secretRef"].is_object() {
            (&from["secretRef"], true)
        } else {
            (&from["configMapRef"], false)
        };
        let res = if secret { "secrets" } else { "configmaps" };
        let name = r["name"].as_str().unwrap_or("");
        match store.get(&ResourceKey::core(res), Some(ns), name) {
            Some(obj) => {
                for (k, v) in object_files(&obj, secret) {
                    env.push((format!("{prefix}{k}"), String::from_utf8_lossy(&v).into_owned()));
                }
            }
            None if r["optional"] == true => {}
            None => {
                return Err(wait(
                    "CreateContainerConfigError",
                    format!(
                        "{} \"{name}\" not found",
                        if secret { "secret" } else { "configmap" }
                    ),
                ))
            }
        }
    }
    for e in container["env"].as_array().into_iter().flatten() {
        let name = e["name"].as_str().unwrap_or("").to_string();
        let value = if let Some(v) = e["value"].as_str() {
            Some(expand(v, &env))
        } else if let Some(path) = e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            field_ref(pod, path, pod_ip)
        } else if e["valueFrom"]["resourceFieldRef"].is_object() {
            Some(resource_field(container, &e["valueFrom"]["resourceFieldRef"]))
        } else if e["valueFrom"]["configMapKeyRef"].is_object() {
            key_ref(store, ns, &e["valueFrom"]["configMapKeyRef"], false)?
        } else if e["valueFrom"]["secretKeyRef"].is_object() {
            key_ref(store, ns, &e["valueFrom"]["secretKeyRef"], true)?
        } else {
            Some(String::new())
        };
        if let Some(v) = value {
            env.push((name, v));
        }
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn host_paths_live_on_the_simulated_node_and_follow_their_type() {
        let dir = tempfile::tempdir().unwrap();
        let rt = Runtime::new_virtual(dir.path().join("state")).unwrap();
        // A node's filesystem has the usual directories (systemd's cgroup among them).
        let cg = host_path(&rt, "n1", "/sys/fs/cgroup/systemd", "Directory", "v").unwrap();
        assert!(
            cg.starts_with(dir.path().join("state/nodes/n1")),
            "{}",
            cg.display()
        );
        assert!(cg.is_dir());
        // Unset type creates the directory; the same node sees it again, another node does not.
        let a = host_path(&rt, "n1", "/data/x", "", "v").unwrap();
        std::fs::write(a.join("f"), b"1").unwrap();
        assert!(host_path(&rt, "n1", "/data/x", "Directory", "v")
            .unwrap()
            .join("f")
            .is_file());
        let e = host_path(&rt, "n2", "/data/x", "Directory", "v").unwrap_err();
        assert_eq!(e.reason, "FailedMount");
        assert!(e.message.contains("/data/x is not a directory"), "{}", e.message);
        // Files.
        assert!(host_path(&rt, "n1", "/etc/thing.conf", "File", "v").is_err());
        assert!(host_path(&rt, "n1", "/etc/thing.conf", "FileOrCreate", "v")
            .unwrap()
            .is_file());
        assert!(host_path(&rt, "n1", "/var/run/docker.sock", "Socket", "v").is_err());
        // Never outside the node.
        assert!(host_path(&rt, "n1", "/../../etc", "", "v").is_err());
        assert!(host_path(&rt, "n1", "relative", "", "v").is_err());
    }

    #[test]
    fn dollar_expansion_follows_the_kubelet() {
        let env = vec![("A".to_string(), "1".to_string())];
        assert_eq!(expand("x$(A)y", &env), "x1y");
        assert_eq!(expand("$(B)", &env), "$(B)");
        assert_eq!(expand("$$(A)", &env), "$(A)");
        assert_eq!(expand("cost $5", &env), "cost $5");
        assert_eq!(expand("$(A", &env), "$(A");
    }

    #[test]
    fn field_refs_read_the_pod() {
        let pod = json!({"metadata": {"name": "p", "namespace": "n", "labels": {"b": "2", "a": "1"}},
                         "spec": {"nodeName": "node"}, "status": {"hostIP": "h"}});
        assert_eq!(field_ref(&pod, "metadata.name", "").as_deref(), Some("p"));
        assert_eq!(
            field_ref(&pod, "status.podIP", "10.0.0.1").as_deref(),
            Some("10.0.0.1")
        );
        assert_eq!(field_ref(&pod, "metadata.labels['a']", "").as_deref(), Some("1"));
        assert_eq!(
            field_ref(&pod, "metadata.labels", "").as_deref(),
            Some("a=\"1\"\nb=\"2\"")
        );
        assert_eq!(field_ref(&pod, "bogus", ""), None);
    }

    #[test]
    fn mounts_resolve_sub_paths_inside_the_volume() {
        let dir = tempfile::tempdir().unwrap();
        let dirs: HashMap<String, PathBuf> = [("p".to_string(), dir.path().to_path_buf())]
            .into_iter()
            .collect();
        let c = json!({"volumeMounts": [{"name": "p", "mountPath": "/etc", "subPath": "etc"},
                                        {"name": "p", "mountPath": "/mnt", "readOnly": true}]});
        let m = mounts(&c, &dirs, &json!({})).unwrap();
        assert_eq!(m[0].host_path, dir.path().canonicalize().unwrap().join("etc"));
        assert!(dir.path().join("etc").is_dir());
        assert!(m[1].read_only);
        let bad = json!({"volumeMounts": [{"name": "p", "mountPath": "/x", "subPath": "../up"}]});
        assert!(mounts(&bad, &dirs, &json!({})).is_err());
        let missing = json!({"volumeMounts": [{"name": "q", "mountPath": "/x"}]});
        assert!(mounts(&missing, &dirs, &json!({})).is_err());
    }
}
