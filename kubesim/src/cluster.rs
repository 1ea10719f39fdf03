//! What a simulated cluster contains before anyone writes to it (namespaces, the `kubernetes`
//! Service, nodes, the default StorageClass), the version it reports, and API server restarts
//! (the store kept, or lost and bootstrapped again).

use serde_json::json;

use crate::resources::ResourceKey;
use crate::store::{now_rfc3339, Store, WriteOptions};

/// The version the server reports (`/version`) and the nodes' kubelets run.
pub const GIT_VERSION: &str = "v1.33.0";

fn node_object(i: usize) -> serde_json::Value {
    let name = format!("kubesim-node-{i}");
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "beta.kubernetes.io/os": "linux",
            "beta.kubernetes.io/arch": "amd64",
        }},
        "spec": {"podCIDR": format!("10.244.{i}.0/24"), "podCIDRs": [format!("10.244.{i}.0/24")]},
        "status": {
            "capacity": {"cpu": "8", "memory": "32Gi", "pods": "110", "ephemeral-storage": "100Gi"},
            "allocatable": {"cpu": "8", "memory": "32Gi", "pods": "110", "ephemeral-storage": "100Gi"},
            "conditions": [
                {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory", "message": "kubelet has sufficient memory available", "lastHeartbeatTime": now_rfc3339(), "lastTransitionTime": now_rfc3339()},
                {"type": "DiskPressure", "status": "False", "reason": "KubeletHasNoDiskPressure", "message": "kubelet has no disk pressure", "lastHeartbeatTime": now_rfc3339(), "lastTransitionTime": now_rfc3339()},
                {"type": "PIDPressure", "status": "False", "reason": "KubeletHasSufficientPID", "message": "kubelet has sufficient PID available", "lastHeartbeatTime": now_rfc3339(), "lastTransitionTime": now_rfc3339()},
                {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status", "lastHeartbeatTime": now_rfc3339(), "lastTransitionTime": now_rfc3339()},
            ],
            "addresses": [{"type": "InternalIP", "address": format!("172.18.0.{}", i + 1)}, {"type": "Hostname", "address": name}],
            "nodeInfo": {
                "machineID": format!("{:032x}", i), "systemUUID": format!("{:032x}", i), "bootID": format!("{:032x}", i),
                "kernelVersion": "6.1.0-kubesim", "osImage": "kubesim", "containerRuntimeVersion": "kubesim://1.0.0",
                "kubeletVersion": GIT_VERSION, "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "amd64",
            },
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
        },
    })
}

/// Create the objects a fresh cluster has: namespaces, the `kubernetes` Service, nodes, the
/// default StorageClass.
pub fn bootstrap(store: &Store, nodes: usize) {
    let ns = ResourceKey::core("namespaces");
    for n in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let _ = store.create_with(
            &ns,
            None,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}}),
            &WriteOptions {
                field_manager: Some("kube-apiserver".into()),
                dry_run: false,
            },
        );
    }
    let _ = store.create_with(
        &ResourceKey::core("services"),
        Some("default"),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "kubernetes", "namespace": "default",
            "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {"clusterIP": "10.96.0.1", "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}]}}),
        &WriteOptions { field_manager: Some("kube-apiserver".into()), dry_run: false },
    );
    for i in 1..=nodes {
        let _ = store.create_with(
            &ResourceKey::core("nodes"),
            None,
            node_object(i),
            &WriteOptions {
                field_manager: Some("kubelet".into()),
                dry_run: false,
            },
        );
    }
    let _ = store.create(
        &ResourceKey::new("storage.k8s.io", "v1", "storageclasses"),
        None,
        json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": "standard", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": "kubesim.io/local", "reclaimPolicy": "Delete", "volumeBindingMode": "WaitForFirstConsumer"}),
    );
}

/// Simulate an API server restart: every watch is closed. With `keep == true` the store is
/// kept but, as a restarted API server's watch cache starts at the current revision, resuming
/// a watch from an older resourceVersion gets 410 (clients relist). With `keep == false` the
/// store is wiped and re-bootstrapped (an etcd loss, or a restore with `--bump-revision
/// --mark-compacted`): resourceVersions keep growing and every older one is compacted, so
/// every client must relist. Watches are closed before the new store's first event.
pub fn restart_store(store: &Store, keep: bool, nodes: usize) {
    if keep {
        store.compact();
        store.faults().drop_watches();
    } else {
        store.wipe();
        store.faults().drop_watches();
        bootstrap(store, nodes);
    }
}
