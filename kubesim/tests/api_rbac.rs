//! RBAC enforced on the HTTP API (`authorization: Rbac`): the admin token keeps full access
//! (system:masters), a ServiceAccount's issued token gets exactly what its Role/ClusterRole
//! bindings grant (subresources and resourceNames included), everything else is 403 with the
//! API server's message, unknown tokens are 401, and access reviews come from the same
//! evaluator.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{start_with, status};
use k8s_openapi::api::authorization::v1::{SelfSubjectAccessReview, SubjectAccessReview};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use kubesim::auth::AuthorizationMode;
use kubesim::{Sim, SimConfig};
use serde_json::json;

async fn client_from_yaml(yaml: &str) -> Client {
    let kc = Kubeconfig::from_yaml(yaml).unwrap();
    let cfg = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap();
    Client::try_from(cfg).unwrap()
}

fn obj<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).unwrap()
}

/// Namespace `team`, ServiceAccount `team/bot`: may read configmaps in `team` (Role), patch only
/// the configmap `settings`, exec into pods, and list namespaces (ClusterRole).
async fn grants(admin: &Client) {
    let pp = PostParams::default();
    Api::<Namespace>::all(admin.clone())
        .create(&pp, &obj(json!({"metadata": {"name": "team"}})))
        .await
        .unwrap();
    Api::<ServiceAccount>::namespaced(admin.clone(), "team")
        .create(&pp, &obj(json!({"metadata": {"name": "bot"}})))
        .await
        .unwrap();
    Api::<Role>::namespaced(admin.clone(), "team")
        .create(
            &pp,
            &obj(json!({"metadata": {"name": "bot"}, "rules": [
                {"verbs": ["get", "list", "watch"], "apiGroups": [""], "resources": ["configmaps", "pods"]},
                {"verbs": ["patch"], "apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["settings"]},
                {"verbs": ["create"], "apiGroups": [""], "resources": ["pods/exec"]}
            ]})),
        )
        .await
        .unwrap();
    Api::<RoleBinding>::namespaced(admin.clone(), "team")
        .create(
            &pp,
            &obj(json!({"metadata": {"name": "bot"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "bot"},
                        "subjects": [{"kind": "ServiceAccount", "name": "bot", "namespace": "team"}]})),
        )
        .await
        .unwrap();
    Api::<ClusterRole>::all(admin.clone())
        .create(
            &pp,
            &obj(json!({"metadata": {"name": "ns-reader"}, "rules": [
                {"verbs": ["list"], "apiGroups": [""], "resources": ["namespaces"]}]})),
        )
        .await
        .unwrap();
    Api::<ClusterRoleBinding>::all(admin.clone())
        .create(
            &pp,
            &obj(json!({"metadata": {"name": "bot-ns"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "ns-reader"},
                        "subjects": [{"kind": "ServiceAccount", "name": "bot", "namespace": "team"}]})),
        )
        .await
        .unwrap();
    for name in ["settings", "other"] {
        Api::<ConfigMap>::namespaced(admin.clone(), "team")
            .create(&pp, &obj(json!({"metadata": {"name": name}, "data": {"k": "v"}})))
            .await
            .unwrap();
    }
}

/// A simulator with RBAC on, and a client of its admin kubeconfig (bearer token, system:masters).
async fn rbac_sim() -> (Sim, Client) {
    let (sim, anonymous) = start_with(SimConfig {
        authorization: AuthorizationMode::Rbac,
        ..SimConfig::default()
    })
    .await;
    let e = status(
        Api::<Namespace>::all(anonymous)
            .list(&ListParams::default())
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (e.code, e.reason.as_str()),
        (401, "Unauthorized"),
        "no token, no access"
    );
    let admin = client_from_yaml(&sim.kubeconfig_yaml()).await;
    (sim, admin)
}

#[tokio::test]
async fn service_account_gets_exactly_its_grants_and_403s_carry_the_api_servers_message() {
    let (sim, admin) = rbac_sim().await;
    grants(&admin).await;
    let bot = client_from_yaml(&sim.service_account_kubeconfig_yaml("team", "bot")).await;
    let cms: Api<ConfigMap> = Api::namespaced(bot.clone(), "team");
    assert_eq!(cms.list(&ListParams::default()).await.unwrap().items.len(), 3); // + kube-root-ca.crt
    cms.get("other").await.unwrap();
    // resourceNames: only `settings` may be patched.
    let patch = Patch::Merge(json!({"data": {"k": "w"}}));
    cms.patch("settings", &PatchParams::default(), &patch)
        .await
        .unwrap();
    let e = status(
        cms.patch("other", &PatchParams::default(), &patch)
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        e.message,
        "configmaps \"other\" is forbidden: User \"system:serviceaccount:team:bot\" cannot patch resource \"configmaps\" in API group \"\" in the namespace \"team\""
    );
    let e = status(
        cms.create(&PostParams::default(), &obj(json!({"metadata": {"name": "new"}})))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        e.message,
        "configmaps is forbidden: User \"system:serviceaccount:team:bot\" cannot create resource \"configmaps\" in API group \"\" in the namespace \"team\""
    );
    // The Role is namespaced: nothing in `default`.
    let e = status(
        Api::<ConfigMap>::namespaced(bot.clone(), "default")
            .list(&ListParams::default())
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 403);
    // Cluster scope through the ClusterRoleBinding: list namespaces, but not get one.
    let nss: Api<Namespace> = Api::all(bot.clone());
    assert!(nss.list(&ListParams::default()).await.is_ok());
    let e = status(nss.get("team").await.unwrap_err());
    assert_eq!(
        e.message,
        "namespaces \"team\" is forbidden: User \"system:serviceaccount:team:bot\" cannot get resource \"namespaces\" in API group \"\" in the namespace \"team\""
    );
    let e = status(
        Api::<Pod>::all(bot.clone())
            .list(&ListParams::default())
            .await
            .unwrap_err(),
    );
    assert_eq!(
        e.message,
        "pods is forbidden: User \"system:serviceaccount:team:bot\" cannot list resource \"pods\" in API group \"\" at the cluster scope"
    );
    // Subresources need their own grant: reading pods does not give pods/log.
    let e = status(
        Api::<Pod>::namespaced(bot.clone(), "team")
            .logs("p", &Default::default())
            .await
            .unwrap_err(),
    );
    assert_eq!(
        e.message,
        "pods \"p\" is forbidden: User \"system:serviceaccount:team:bot\" cannot get resource \"pods/log\" in API group \"\" in the namespace \"team\""
    );
    // The admin keeps full access.
    Api::<ConfigMap>::namespaced(admin.clone(), "default")
        .list(&ListParams::default())
        .await
        .unwrap();
    sim.shutdown().await;
}

#[tokio::test]
async fn unknown_tokens_are_401_and_tokens_die_with_their_service_account() {
    let (sim, admin) = rbac_sim().await;
    grants(&admin).await;
    let yaml = sim.service_account_kubeconfig_yaml("team", "bot");
    let bot = client_from_yaml(&yaml).await;
    Api::<ConfigMap>::namespaced(bot.clone(), "team")
        .get("other")
        .await
        .unwrap();
    let forged = yaml.replace("token: kubesim-sa-", "token: kubesim-sb-");
    let nobody = client_from_yaml(&forged).await;
    let e = status(
        Api::<ConfigMap>::namespaced(nobody, "team")
            .get("other")
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (401, "Unauthorized"));
    Api::<ServiceAccount>::namespaced(admin.clone(), "team")
        .delete("bot", &Default::default())
        .await
        .unwrap();
    let e = status(
        Api::<ConfigMap>::namespaced(bot, "team")
            .get("other")
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 401);
    sim.shutdown().await;
}

#[tokio::test]
async fn access_reviews_are_answered_by_the_same_evaluator() {
    let (sim, admin) = rbac_sim().await;
    grants(&admin).await;
    let sar = |verb: &str, name: &str| -> SubjectAccessReview {
        obj(json!({"spec": {
            "user": "system:serviceaccount:team:bot",
            "groups": ["system:serviceaccounts", "system:serviceaccounts:team", "system:authenticated"],
            "resourceAttributes": {"namespace": "team", "verb": verb, "resource": "configmaps", "name": name}}}))
    };
    let reviews: Api<SubjectAccessReview> = Api::all(admin.clone());
    let allowed = |r: SubjectAccessReview| r.status.unwrap().allowed;
    let pp = PostParams::default();
    assert!(allowed(
        reviews.create(&pp, &sar("patch", "settings")).await.unwrap()
    ));
    assert!(!allowed(
        reviews.create(&pp, &sar("patch", "other")).await.unwrap()
    ));
    assert!(!allowed(
        reviews.create(&pp, &sar("delete", "settings")).await.unwrap()
    ));
    // exec is a subresource grant.
    let exec: SubjectAccessReview = obj(json!({"spec": {"user": "system:serviceaccount:team:bot",
        "resourceAttributes": {"namespace": "team", "verb": "create", "resource": "pods", "subresource": "exec"}}}));
    assert!(allowed(reviews.create(&pp, &exec).await.unwrap()));
    // SelfSubjectAccessReview as the bot itself (allowed to every authenticated user).
    let bot = client_from_yaml(&sim.service_account_kubeconfig_yaml("team", "bot")).await;
    let selfr: SelfSubjectAccessReview = obj(json!({"spec": {"resourceAttributes":
        {"namespace": "team", "verb": "list", "resource": "configmaps"}}}));
    let r = Api::<SelfSubjectAccessReview>::all(bot.clone())
        .create(&pp, &selfr)
        .await
        .unwrap();
    assert!(r.status.unwrap().allowed);
    let selfr: SelfSubjectAccessReview = obj(json!({"spec": {"resourceAttributes":
        {"namespace": "team", "verb": "list", "resource": "secrets"}}}));
    let r = Api::<SelfSubjectAccessReview>::all(bot.clone())
        .create(&pp, &selfr)
        .await
        .unwrap();
    assert!(!r.status.unwrap().allowed);
    // The bot may not ask about others.
    let e = status(
        Api::<SubjectAccessReview>::all(bot)
            .create(&pp, &sar("get", "x"))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 403);
    sim.shutdown().await;
}
