//! The physical limit: a bare client makes the minimal write set of N clusters against the same
//! kubesim, with no operator logic in between, and waits for the same pods to be Ready.
//!
//! Per cluster: one headless Service, one StatefulSet per role created with its final replicas,
//! one Service per member, and, once the cluster's pods are Ready, one status write (a ConfigMap
//! here: a kdcluster object would be picked up by the operator). That is 2 + R + M writes per
//! cluster, all sent concurrently, in namespace `bare`.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use k8s_openapi::api::{
    apps::v1::StatefulSet,
    core::v1::{ConfigMap, Namespace, Service},
};
use kube::api::{Api, PostParams};
use kube::{Client, Config};
use kubesim::{ResourceKey, Sim};
use serde_json::{json, Value};

/// User agent of the bare client.
pub const BARE_CLIENT: &str = "kd-bare";
/// Its namespace.
const NS: &str = "bare";

/// What the bare run measured.
#[derive(Debug, Clone, Copy)]
pub struct Baseline {
    /// Time from the first write until every pod is Ready and every status write is done.
    pub converged: Duration,
    /// Writes made.
    pub writes: usize,
}

fn member_service(cluster: &str, set: &str, i: usize) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": format!("{set}-{i}"), "namespace": NS, "labels": {"bare-cluster": cluster}},
        "spec": {"selector": {"statefulset.kubernetes.io/pod-name": format!("{set}-{i}")},
                 "ports": [{"name": "ssh", "port": 22}]}})
}

fn headless(cluster: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": format!("{cluster}-hs"), "namespace": NS},
        "spec": {"clusterIP": "None", "selector": {"bare-cluster": cluster},
                 "ports": [{"name": "ssh", "port": 22}]}})
}

fn statefulset(cluster: &str, role: usize, replicas: usize) -> Value {
    let name = format!("{cluster}-r{role}");
    json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"replicas": replicas, "serviceName": format!("{cluster}-hs"), "podManagementPolicy": "Parallel",
                 "selector": {"matchLabels": {"bare-cluster": cluster, "bare-role": format!("r{role}")}},
                 "template": {"metadata": {"labels": {"bare-cluster": cluster, "bare-role": format!("r{role}")}},
                              "spec": {"containers": [{"name": "app", "image": "docker.io/library/debian:12-slim",
                                  "resources": {"requests": {"cpu": "10m", "memory": "32Mi"},
                                                "limits": {"cpu": "100m", "memory": "64Mi"}}}]}}}})
}

/// Runs the bare client for `n` clusters with roles of `sizes` members.
pub fn run(
    rt: &tokio::runtime::Runtime,
    sim: &Sim,
    n: usize,
    sizes: &[usize],
    timeout: Duration,
) -> anyhow::Result<Baseline> {
    let mut config = Config::new(sim.url().parse()?);
    config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_str(&format!("{BARE_CLIENT}/0.1"))?,
    ));
    // The client's connection pool needs the runtime.
    let _entered = rt.enter();
    let client = Client::try_from(config)?;
    let names: Vec<String> = (1..=n).map(|i| format!("b{i:04}")).collect();
    let members: usize = sizes.iter().sum();
    rt.block_on(async {
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": NS}}))?;
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .context("cannot create the bare namespace")?;
        anyhow::Ok(())
    })?;
    let services: Api<Service> = Api::namespaced(client.clone(), NS);
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), NS);
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    let pp = PostParams::default();

    let t0 = Instant::now();
    rt.block_on(async {
        let creates = names.iter().map(|c| {
            let (services, sets, pp) = (services.clone(), sets.clone(), pp.clone());
            async move {
                services
                    .create(&pp, &serde_json::from_value(headless(c))?)
                    .await?;
                for (r, size) in sizes.iter().enumerate() {
                    sets.create(&pp, &serde_json::from_value(statefulset(c, r, *size))?)
                        .await?;
                    for i in 0..*size {
                        let svc = member_service(c, &format!("{c}-r{r}"), i);
                        services.create(&pp, &serde_json::from_value(svc)?).await?;
                    }
                }
                anyhow::Ok(())
            }
        });
        futures::future::try_join_all(creates).await
    })
    .context("bare client writes failed")?;

    // Wait (reading the store in-process) until every pod is Ready.
    let store = sim.store();
    let pods = ResourceKey::core("pods");
    loop {
        let ready = std::cell::Cell::new(0usize);
        store.list_where(&pods, Some(NS), |p| {
            let is_ready = p["metadata"]["deletionTimestamp"].is_null()
                && p["status"]["conditions"]
                    .as_array()
                    .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));
            if is_ready {
                ready.set(ready.get() + 1);
            }
            false
        });
        if ready.get() == n * members {
            break;
        }
        if t0.elapsed() > timeout {
            bail!(
                "bare client: only {} of {} pods Ready after {} s",
                ready.get(),
                n * members,
                timeout.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    rt.block_on(async {
        let writes = names.iter().map(|c| {
            let (maps, pp) = (maps.clone(), pp.clone());
            async move {
                let cm: ConfigMap =
                    serde_json::from_value(json!({"metadata": {"name": format!("{c}-status")},
                    "data": {"state": "configured"}}))?;
                maps.create(&pp, &cm).await?;
                anyhow::Ok(())
            }
        });
        futures::future::try_join_all(writes).await
    })
    .context("bare client status writes failed")?;
    Ok(Baseline {
        converged: t0.elapsed(),
        writes: n * (2 + sizes.len() + members),
    })
}
