//! The benchmark's objects: CRDs, namespaces, the generated app and the clusters.

use anyhow::Context;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, PostParams};
use kube::discovery::ApiResource;
use kube::{Client, Config};
use kubedirector_crds::KubeDirectorApp;
use kubesim::Sim;
use serde_json::{json, Value};

use crate::{APP, BENCH_CLIENT, KD_NS, NS};

/// Installs the CRDs, the namespaces and the generated app; returns the benchmark's client.
pub(crate) async fn install(sim: &Sim, roles: usize, setup_package: bool) -> anyhow::Result<Client> {
    let mut config = Config::new(sim.url().parse()?);
    config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_str(&format!("{BENCH_CLIENT}/0.1"))?,
    ));
    let client = Client::try_from(config)?;
    let crd_api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in kubedirector_crds::crds()? {
        crd_api.create(&PostParams::default(), &crd).await?;
    }
    let ns_api: Api<Namespace> = Api::all(client.clone());
    for ns in [KD_NS, NS] {
        let obj: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}}))?;
        ns_api.create(&PostParams::default(), &obj).await?;
    }
    let apps: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), NS, &ApiResource::erase::<KubeDirectorApp>(&()));
    let app: DynamicObject = serde_json::from_value(app(roles, setup_package))?;
    apps.create(&PostParams::default(), &app)
        .await
        .context("cannot create the app")?;
    Ok(client)
}

/// An app without a setup package: roles r0..r{R-1} (cardinality 0+), one service with an
/// endpoint port on every role (so every member gets a Service).
fn app(roles: usize, setup_package: bool) -> Value {
    let ids: Vec<String> = (0..roles).map(|i| format!("r{i}")).collect();
    let package = if setup_package {
        json!({"packageURL": format!("file://{}/{}", kubedirector::examples::PACKAGE_DIR, kubedirector::examples::PACKAGES[0].file)})
    } else {
        Value::Null
    };
    json!({
        "apiVersion": "kubedirector.hpe.com/v1beta1",
        "kind": "KubeDirectorApp",
        "metadata": {"name": APP, "namespace": NS},
        "spec": {
            "label": {"name": "Benchmark app", "description": "generated"},
            "distroID": "kd-bench/app",
            "version": "1.0",
            "configSchemaVersion": 7,
            "defaultImageRepoTag": "docker.io/library/debian:12-slim",
            "defaultConfigPackage": package,
            "services": [{"id": "ssh", "label": {"name": "SSH"},
                          "endpoint": {"port": 22, "isDashboard": false}}],
            "roles": ids.iter().map(|id| json!({"id": id, "cardinality": "0+"})).collect::<Vec<_>>(),
            "config": {
                "roleServices": ids.iter().map(|id| json!({"roleID": id, "serviceIDs": ["ssh"]})).collect::<Vec<_>>(),
                "selectedRoles": ids
            }
        }
    })
}

/// Members per role: `m` split over `r` roles, the first roles get the remainder.
pub(crate) fn role_sizes(m: usize, r: usize) -> Vec<usize> {
    (0..r).map(|i| m / r + usize::from(i < m % r)).collect()
}

pub(crate) fn roles_spec(sizes: &[usize]) -> Vec<Value> {
    sizes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            json!({"id": format!("r{i}"), "members": n,
                   "resources": {"requests": {"cpu": "10m", "memory": "32Mi"},
                                 "limits": {"cpu": "100m", "memory": "64Mi"}}})
        })
        .collect()
}

pub(crate) fn cluster(name: &str, m: usize, r: usize) -> Value {
    json!({
        "apiVersion": "kubedirector.hpe.com/v1beta1",
        "kind": "KubeDirectorCluster",
        "metadata": {"name": name, "namespace": NS},
        // ClusterIP member Services: NodePorts (upstream's default) run out at 2,768 per
        // cluster (30000-32767), fewer than the members of 1,000 clusters.
        "spec": {"app": APP, "serviceType": "ClusterIP", "roles": roles_spec(&role_sizes(m, r))}
    })
}
