//! Resolution of [`Question`]s against the live cluster: the operator's reflector caches when
//! this replica's watches are running and synced (the leader), otherwise API reads; every API
//! call and URL probe is bounded by a short timeout.

use std::{sync::Arc, time::Duration};

use k8s_openapi::api::{
    authorization::v1::SubjectAccessReview,
    core::v1::{Secret, ServiceAccount},
    storage::v1::StorageClass,
};
use kube::{
    api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, PostParams},
    Client,
};
use kubedirector_actors::{caches::Caches, ports::ObjectKey};
use serde_json::{json, Value};
use tokio::sync::OnceCell;

use super::facts::{Answer, Question};
use crate::admission::{SarAnswer, KD_CONFIG_NAME};

/// Timeout of one API read made for a fact.
pub const API_TIMEOUT: Duration = Duration::from_secs(2);
/// Timeout of a file-injection URL probe (upstream: 15 s, longer than most webhook timeouts).
pub const URL_TIMEOUT: Duration = Duration::from_secs(3);

/// Tells whether the reflector caches are live (watches started and synced).
pub type LiveCheck = Arc<dyn Fn() -> bool + Send + Sync>;

/// The fact source of one operator replica.
#[derive(Clone)]
pub struct LiveSource {
    client: Client,
    caches: Caches,
    live: LiveCheck,
    kd_namespace: String,
    version: Arc<OnceCell<(u32, u32)>>,
}

fn kd_resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("kubedirector.hpe.com", "v1beta1", kind),
        plural,
    )
}

async fn bounded<T>(f: impl std::future::Future<Output = Result<T, kube::Error>>) -> Option<T> {
    match tokio::time::timeout(API_TIMEOUT, f).await {
        Ok(Ok(v)) => Some(v),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "webhook fact read failed");
            None
        }
        Err(_) => None,
    }
}

fn object(o: Option<DynamicObject>) -> Answer {
    match o.map(serde_json::to_value) {
        None => Answer::Object(None),
        Some(Ok(v)) => Answer::Object(Some(v)),
        Some(Err(_)) => Answer::Unknown,
    }
}

fn uses_app(cluster: &Value, app_ns: &str, app_name: &str, kd_ns: &str) -> bool {
    let spec = &cluster["spec"];
    if spec["app"].as_str() != Some(app_name) {
        return false;
    }
    let ns = cluster["metadata"]["namespace"].as_str().unwrap_or_default();
    match spec["appCatalog"].as_str() {
        Some("local") => ns == app_ns,
        Some("system") => app_ns == kd_ns,
        _ => ns == app_ns || app_ns == kd_ns,
    }
}

fn ns_name(v: &Value) -> String {
    format!(
        "{}/{}",
        v["metadata"]["namespace"].as_str().unwrap_or_default(),
        v["metadata"]["name"].as_str().unwrap_or_default()
    )
}

impl LiveSource {
    /// A source over `client` and `caches`; `live` says whether the caches may be used.
    pub fn new(client: Client, caches: Caches, live: LiveCheck, kd_namespace: &str) -> Self {
        Self {
            client,
            caches,
            live,
            kd_namespace: kd_namespace.to_string(),
            version: Arc::new(OnceCell::new()),
        }
    }

    /// The status token table, when this replica reconciles (its caches are live).
    pub fn tokens(&self) -> Option<&kubedirector_actors::tokens::StatusTokens> {
        (self.live)().then_some(&self.caches.tokens)
    }

    fn clusters_api(&self) -> Api<DynamicObject> {
        Api::all_with(
            self.client.clone(),
            &kd_resource("KubeDirectorCluster", "kubedirectorclusters"),
        )
    }

    async fn all_clusters(&self) -> Option<Vec<Value>> {
        if (self.live)() {
            return Some(
                self.caches
                    .clusters
                    .state()
                    .iter()
                    .filter_map(|c| c.0.as_ref().ok())
                    .filter_map(|c| serde_json::to_value(c).ok())
                    .collect(),
            );
        }
        let list = bounded(self.clusters_api().list(&ListParams::default())).await?;
        Some(
            list.items
                .into_iter()
                .filter_map(|o| serde_json::to_value(o).ok())
                .collect(),
        )
    }

    /// Answers one question.
    pub async fn resolve(&self, q: Question) -> Answer {
        let c = &self.client;
        match q {
            Question::App(ns, name) => {
                if (self.live)() {
                    if let Some(app) = self.caches.catalog.get(&ObjectKey::new(&ns, &name)) {
                        return serde_json::to_value(&*app)
                            .map_or(Answer::Unknown, |v| Answer::Object(Some(v)));
                    }
                    // A miss may be a kdapp created a moment ago (`kubectl apply -f app.yaml -f
                    // cluster.yaml`) that the watch has not delivered yet: ask the API server
                    // rather than refuse the cluster as "not registered".
                }
                let api: Api<DynamicObject> = Api::namespaced_with(
                    c.clone(),
                    &ns,
                    &kd_resource("KubeDirectorApp", "kubedirectorapps"),
                );
                bounded(api.get_opt(&name)).await.map_or(Answer::Unknown, object)
            }
            Question::ClustersUsingApp(ns, name) => match self.all_clusters().await {
                Some(all) => Answer::Names(
                    all.iter()
                        .filter(|cl| uses_app(cl, &ns, &name, &self.kd_namespace))
                        .map(ns_name)
                        .collect(),
                ),
                None => Answer::Unknown,
            },
            Question::AnyCluster => {
                if (self.live)() {
                    return Answer::Bool(!self.caches.clusters.is_empty());
                }
                bounded(self.clusters_api().list_metadata(&ListParams::default().limit(1)))
                    .await
                    .map_or(Answer::Unknown, |l| Answer::Bool(!l.items.is_empty()))
            }
            Question::Cluster(ns, name) => {
                let api: Api<DynamicObject> = Api::namespaced_with(
                    c.clone(),
                    &ns,
                    &kd_resource("KubeDirectorCluster", "kubedirectorclusters"),
                );
                bounded(api.get_opt(&name)).await.map_or(Answer::Unknown, object)
            }
            Question::StorageClass(name) => {
                bounded(Api::<StorageClass>::all(c.clone()).get_metadata_opt(&name))
                    .await
                    .map_or(Answer::Unknown, |o| Answer::Bool(o.is_some()))
            }
            Question::DefaultStorageClass => {
                let Some(list) =
                    bounded(Api::<StorageClass>::all(c.clone()).list_metadata(&ListParams::default())).await
                else {
                    return Answer::Unknown;
                };
                let default = list.items.into_iter().find(|sc| {
                    sc.metadata.annotations.as_ref().is_some_and(|a| {
                        [
                            "storageclass.kubernetes.io/is-default-class",
                            "storageclass.beta.kubernetes.io/is-default-class",
                        ]
                        .iter()
                        .any(|k| a.get(*k).map(String::as_str) == Some("true"))
                    })
                });
                Answer::Name(default.and_then(|sc| sc.metadata.name))
            }
            Question::ServiceAccount(ns, name) => {
                bounded(Api::<ServiceAccount>::namespaced(c.clone(), &ns).get_metadata_opt(&name))
                    .await
                    .map_or(Answer::Unknown, |o| Answer::Bool(o.is_some()))
            }
            Question::Secret(ns, name) => {
                bounded(Api::<Secret>::namespaced(c.clone(), &ns).get_metadata_opt(&name))
                    .await
                    .map_or(Answer::Unknown, |o| Answer::Bool(o.is_some()))
            }
            Question::Pvc(ns, name) => {
                let api: Api<DynamicObject> = Api::namespaced_with(
                    c.clone(),
                    &ns,
                    &ApiResource::from_gvk_with_plural(
                        &GroupVersionKind::gvk("", "v1", "PersistentVolumeClaim"),
                        "persistentvolumeclaims",
                    ),
                );
                bounded(api.get_opt(&name)).await.map_or(Answer::Unknown, object)
            }
            Question::KdConfig => {
                if (self.live)() {
                    return match self.caches.global_config() {
                        Some(cfg) => {
                            serde_json::to_value(&cfg).map_or(Answer::Unknown, |v| Answer::Object(Some(v)))
                        }
                        None => Answer::Object(None),
                    };
                }
                let api: Api<DynamicObject> = Api::namespaced_with(
                    c.clone(),
                    &self.kd_namespace,
                    &kd_resource("KubeDirectorConfig", "kubedirectorconfigs"),
                );
                bounded(api.get_opt(KD_CONFIG_NAME))
                    .await
                    .map_or(Answer::Unknown, object)
            }
            Question::ServerVersion => {
                let v = self
                    .version
                    .get_or_try_init(|| async {
                        let info = bounded(c.apiserver_version()).await.ok_or(())?;
                        let num = |s: &str| s.trim_end_matches('+').parse::<u32>().map_err(|_| ());
                        Ok::<_, ()>((num(&info.major)?, num(&info.minor)?))
                    })
                    .await;
                v.map_or(Answer::Unknown, |(a, b)| Answer::Version(*a, *b))
            }
            Question::Sar(key) => {
                let r = key.request();
                let review: Result<SubjectAccessReview, _> = serde_json::from_value(json!({
                    "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                    "spec": {"user": r.user.username, "uid": r.user.uid, "groups": r.user.groups,
                             "extra": r.user.extra,
                             "resourceAttributes": {"verb": r.verb, "resource": r.resource, "group": "",
                                                    "version": "v1", "name": r.name, "namespace": r.namespace}}
                }));
                let Ok(review) = review else {
                    return Answer::Unknown;
                };
                let api: Api<SubjectAccessReview> = Api::all(c.clone());
                match bounded(api.create(&PostParams::default(), &review)).await {
                    Some(done) => {
                        let s = done.status.unwrap_or_default();
                        Answer::Review(SarAnswer {
                            allowed: s.allowed,
                            denied: s.denied.unwrap_or(false),
                            reason: s.reason.unwrap_or_default(),
                        })
                    }
                    None => Answer::Unknown,
                }
            }
            Question::Url(url) => Answer::Reach(super::probe::head(&url, URL_TIMEOUT).await),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_users_follow_the_catalog_lookup() {
        let c = |ns: &str, catalog: Option<&str>| json!({"metadata": {"namespace": ns, "name": "c"}, "spec": {"app": "a", "appCatalog": catalog}});
        assert!(uses_app(&c("team", Some("local")), "team", "a", "kd"));
        assert!(!uses_app(&c("team", Some("local")), "kd", "a", "kd"));
        assert!(uses_app(&c("team", Some("system")), "kd", "a", "kd"));
        assert!(!uses_app(&c("team", Some("system")), "team", "a", "kd"));
        assert!(uses_app(&c("team", None), "kd", "a", "kd"));
        assert!(!uses_app(&c("other", None), "team", "a", "kd"));
        assert_eq!(ns_name(&c("team", None)), "team/c");
    }
}
