//! Admission webhooks called over HTTPS with caBundle verification, JSONPatch mutation,
//! denials, failurePolicy, selectors and subresource rules.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use base64::Engine;
use common::{start, status};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::ResourceExt;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

struct Hook {
    addr: std::net::SocketAddr,
    ca_pem: String,
    calls: Arc<Mutex<Vec<String>>>,
}

fn certs() -> (String, rustls::ServerConfig) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["hook.default.svc".to_string(), "127.0.0.1".to_string()]).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    (ca_cert.pem(), cfg)
}

fn respond(path: &str, review: &Value) -> Value {
    let req = &review["request"];
    let uid = req["uid"].clone();
    let obj = &req["object"];
    let response = match path {
        "/mutate" => {
            let patch = if obj["metadata"]["labels"].is_object() {
                json!([{"op": "add", "path": "/metadata/labels/mutated", "value": "true"}])
            } else {
                json!([{"op": "add", "path": "/metadata/labels", "value": {"mutated": "true"}}])
            };
            json!({"uid": uid, "allowed": true, "patchType": "JSONPatch",
                "patch": base64::engine::general_purpose::STANDARD.encode(patch.to_string())})
        }
        "/validate" => {
            if obj["data"].get("forbidden").is_some() {
                json!({"uid": uid, "allowed": false, "status": {"code": 403, "message": "forbidden key present"}})
            } else {
                json!({"uid": uid, "allowed": true})
            }
        }
        "/baduid" => json!({"uid": "nope", "allowed": true}),
        _ => json!({"uid": uid, "allowed": true}),
    };
    json!({"apiVersion": review["apiVersion"], "kind": "AdmissionReview", "response": response})
}

async fn webhook_server() -> Hook {
    let (ca_pem, cfg) = certs();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let calls = Arc::new(Mutex::new(Vec::new()));
    let calls2 = calls.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let calls = calls2.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let calls = calls.clone();
                    async move {
                        let path = req.uri().path().to_string();
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let review: Value = serde_json::from_slice(&body).unwrap();
                        let r = &review["request"];
                        calls.lock().unwrap().push(format!(
                            "{} {} {}{} {}",
                            path,
                            r["operation"].as_str().unwrap_or_default(),
                            r["resource"]["resource"].as_str().unwrap_or_default(),
                            r["subResource"]
                                .as_str()
                                .map(|s| format!("/{s}"))
                                .unwrap_or_default(),
                            review["apiVersion"].as_str().unwrap_or_default(),
                        ));
                        let out = respond(&path, &review);
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::from(
                            out.to_string(),
                        ))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    Hook { addr, ca_pem, calls }
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn webhook_config(kind: &str, name: &str, hooks: Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": kind,
        "metadata": {"name": name},
        "webhooks": hooks,
    }))
    .unwrap()
}

fn api_for(client: &kube::Client, kind: &str, plural: &str) -> Api<DynamicObject> {
    let ar = kube::api::ApiResource::from_gvk_with_plural(
        &kube::api::GroupVersionKind::gvk("admissionregistration.k8s.io", "v1", kind),
        plural,
    );
    Api::all_with(client.clone(), &ar)
}

fn cm(name: &str, data: Value, labels: Value) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}, "data": data})).unwrap()
}

#[tokio::test]
async fn webhooks_mutate_validate_and_fail() {
    let (sim, client) = start().await;
    let hook = webhook_server().await;
    sim.map_webhook_service("default", "hook", &hook.addr.to_string());
    let mutating = api_for(
        &client,
        "MutatingWebhookConfiguration",
        "mutatingwebhookconfigurations",
    );
    let validating = api_for(
        &client,
        "ValidatingWebhookConfiguration",
        "validatingwebhookconfigurations",
    );
    mutating
        .create(
            &PostParams::default(),
            &webhook_config(
                "MutatingWebhookConfiguration",
                "m",
                json!([{
                    "name": "mutate.example.com",
                    "clientConfig": {"service": {"namespace": "default", "name": "hook", "path": "/mutate", "port": 443}, "caBundle": b64(&hook.ca_pem)},
                    "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["configmaps"]}],
                    "objectSelector": {"matchLabels": {"hooked": "yes"}},
                    "sideEffects": "None",
                    "admissionReviewVersions": ["v1beta1"],
                }]),
            ),
        )
        .await
        .unwrap();
    validating
        .create(
            &PostParams::default(),
            &webhook_config(
                "ValidatingWebhookConfiguration",
                "v",
                json!([{
                    "name": "validate.example.com",
                    "clientConfig": {"url": format!("https://127.0.0.1:{}/validate", hook.addr.port()), "caBundle": b64(&hook.ca_pem)},
                    "rules": [{"operations": ["CREATE", "UPDATE"], "apiGroups": ["", "apps"], "apiVersions": ["v1"], "resources": ["configmaps", "statefulsets"]}],
                    "sideEffects": "None",
                    "admissionReviewVersions": ["v1", "v1beta1"],
                }]),
            ),
        )
        .await
        .unwrap();
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    // mutated (objectSelector matches) and validated
    let c = cms
        .create(
            &PostParams::default(),
            &cm("a", json!({"k": "v"}), json!({"hooked": "yes"})),
        )
        .await
        .unwrap();
    assert_eq!(c.labels().get("mutated").map(String::as_str), Some("true"));
    // objectSelector does not match: not mutated
    let c = cms
        .create(&PostParams::default(), &cm("b", json!({"k": "v"}), json!({})))
        .await
        .unwrap();
    assert!(!c.labels().contains_key("mutated"));
    // denied
    let e = status(
        cms.create(
            &PostParams::default(),
            &cm("c", json!({"forbidden": "x"}), json!({})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(e.code, 403);
    assert_eq!(
        e.message,
        "admission webhook \"validate.example.com\" denied the request: forbidden key present"
    );
    assert!(cms.get_opt("c").await.unwrap().is_none());
    // updates go through validation too
    let e = status(
        cms.patch(
            "b",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"forbidden": "1"}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(e.code, 403);
    {
        let calls = hook.calls.lock().unwrap();
        assert!(
            calls
                .iter()
                .any(|c| c == "/mutate CREATE configmaps admission.k8s.io/v1beta1"),
            "{calls:?}"
        );
        assert!(
            calls
                .iter()
                .any(|c| c == "/validate UPDATE configmaps admission.k8s.io/v1"),
            "{calls:?}"
        );
        assert_eq!(
            calls.iter().filter(|c| c.starts_with("/mutate")).count(),
            1,
            "{calls:?}"
        );
    }
    // status subresource writes are not sent to a webhook that lists only the main resource
    let sts: Api<k8s_openapi::api::apps::v1::StatefulSet> = Api::default_namespaced(client.clone());
    let s: k8s_openapi::api::apps::v1::StatefulSet = serde_json::from_value(json!({
        "metadata": {"name": "s"},
        "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}},
            "spec": {"containers": [{"name": "c", "image": "i"}]}}}
    }))
    .unwrap();
    sts.create(&PostParams::default(), &s).await.unwrap();
    let before = hook.calls.lock().unwrap().len();
    sts.patch_status(
        "s",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"replicas": 1}})),
    )
    .await
    .unwrap();
    assert_eq!(hook.calls.lock().unwrap().len(), before);

    // failurePolicy: an unreachable webhook fails closed, or open with Ignore
    let failing = |policy: &str| {
        webhook_config(
            "ValidatingWebhookConfiguration",
            "z-unreachable",
            json!([{
                "name": "down.example.com",
                "clientConfig": {"service": {"namespace": "default", "name": "down", "path": "/validate"}, "caBundle": b64(&hook.ca_pem)},
                "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["configmaps"]}],
                "failurePolicy": policy,
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
            }]),
        )
    };
    sim.map_webhook_service("default", "down", "127.0.0.1:1");
    validating
        .create(&PostParams::default(), &failing("Fail"))
        .await
        .unwrap();
    let e = status(
        cms.create(&PostParams::default(), &cm("d", json!({}), json!({})))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 500);
    assert!(
        e.message.contains("failed calling webhook \"down.example.com\""),
        "{}",
        e.message
    );
    let mut cfg = validating.get("z-unreachable").await.unwrap();
    cfg.data["webhooks"][0]["failurePolicy"] = json!("Ignore");
    validating
        .replace("z-unreachable", &PostParams::default(), &cfg)
        .await
        .unwrap();
    cms.create(&PostParams::default(), &cm("d", json!({}), json!({})))
        .await
        .unwrap();

    // a wrong CA bundle fails TLS verification
    let (other_ca, _) = certs();
    let mut cfg = validating.get("z-unreachable").await.unwrap();
    cfg.data["webhooks"][0]["failurePolicy"] = json!("Fail");
    cfg.data["webhooks"][0]["clientConfig"] = json!({"url": format!("https://127.0.0.1:{}/validate", hook.addr.port()), "caBundle": b64(&other_ca)});
    validating
        .replace("z-unreachable", &PostParams::default(), &cfg)
        .await
        .unwrap();
    let e = status(
        cms.create(&PostParams::default(), &cm("e", json!({}), json!({})))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 500);
    assert!(e.message.contains("tls"), "{}", e.message);
    sim.shutdown().await;
}

#[tokio::test]
async fn webhook_response_uid_must_match() {
    let (sim, client) = start().await;
    let hook = webhook_server().await;
    let validating = api_for(
        &client,
        "ValidatingWebhookConfiguration",
        "validatingwebhookconfigurations",
    );
    validating
        .create(
            &PostParams::default(),
            &webhook_config(
                "ValidatingWebhookConfiguration",
                "bad",
                json!([{
                    "name": "baduid.example.com",
                    "clientConfig": {"url": format!("https://127.0.0.1:{}/baduid", hook.addr.port()), "caBundle": b64(&hook.ca_pem)},
                    "rules": [{"operations": ["*"], "apiGroups": ["*"], "apiVersions": ["*"], "resources": ["configmaps"]}],
                    "sideEffects": "None",
                    "admissionReviewVersions": ["v1"],
                }]),
            ),
        )
        .await
        .unwrap();
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let e = status(
        cms.create(&PostParams::default(), &cm("x", json!({}), json!({})))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 500);
    assert!(e.message.contains("expected response.uid"), "{}", e.message);
    let n = AtomicUsize::new(hook.calls.lock().unwrap().len());
    assert_eq!(n.load(Ordering::SeqCst), 1);
    sim.shutdown().await;
}
