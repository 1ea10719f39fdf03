//! Certificate rotation under load: short-lived certificates (serving 12 s, CA 30 s) are renewed
//! and the CA rolled over while admission requests flow through kubesim to two operator
//! replicas; no request may fail, and both replicas end up serving the Secret's certificate.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod operator_support;

use std::{
    collections::BTreeSet,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DynamicObject, PostParams};
use kubedirector::webhook::WebhookOptions;
use operator_support::{centos_cluster, free_addr, webhook_ca, webhook_request, Env, KD_NS, NS};
use rustls_pki_types::{pem::PemObject, CertificateDer};

fn secret_state(env: &Env) -> (String, String) {
    let api: Api<Secret> = Api::namespaced(env.client.clone(), KD_NS);
    let s = env.rt.block_on(api.get("kubedirector-validator-secret")).unwrap();
    let data = s.data.unwrap();
    let text = |k: &str| String::from_utf8(data[k].0.clone()).unwrap();
    (text("app.crt"), text("app.ca"))
}

#[test]
fn certificates_rotate_and_the_ca_rolls_over_while_admission_requests_flow_without_failure() {
    let env = Env::start_with_webhook(WebhookOptions {
        cert_validity_seconds: 12,
        ca_validity_seconds: 30,
        cert_check_seconds: 0.25,
        ..WebhookOptions::default()
    });
    let second_addr = free_addr();
    let second = env.spawn_operator_with("op2", free_addr(), second_addr, free_addr());
    env.wait_for_webhook(second_addr);

    let stop = Arc::new(AtomicBool::new(false));
    let admitted = Arc::new(AtomicUsize::new(0));
    let denied = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let api: Api<DynamicObject> = Api::namespaced_with(
        env.client.clone(),
        NS,
        &kube::discovery::ApiResource::erase::<kubedirector_crds::KubeDirectorCluster>(&()),
    );
    let mut load = Vec::new();
    for worker in 0..4 {
        let (api, stop, admitted, denied, failures) = (
            api.clone(),
            stop.clone(),
            admitted.clone(),
            denied.clone(),
            failures.clone(),
        );
        load.push(env.rt.spawn(async move {
            let dry = PostParams {
                dry_run: true,
                ..PostParams::default()
            };
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let invalid = i.is_multiple_of(3);
                let members = if invalid { 0 } else { 1 };
                let doc = centos_cluster(&format!("rot-{worker}-{i}"), &[("vanilla_centos", members)]);
                let obj: DynamicObject = serde_json::from_value(doc).unwrap();
                match (api.create(&dry, &obj).await, invalid) {
                    (Ok(_), false) => {
                        admitted.fetch_add(1, Ordering::SeqCst);
                    }
                    (Err(kube::Error::Api(s)), true)
                        if s.message
                            .contains("Invalid member count for role(vanilla_centos)") =>
                    {
                        denied.fetch_add(1, Ordering::SeqCst);
                    }
                    (res, _) => failures.lock().unwrap().push(format!("{res:?}")),
                }
            }
        }));
    }

    // Watch the Secret until three serving certificates and two CAs have been used.
    let started = Instant::now();
    let mut certs = BTreeSet::new();
    let mut cas = BTreeSet::new();
    let mut switched = false;
    while certs.len() < 4 || cas.len() < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "rotation too slow: {} certificates, {} CAs",
            certs.len(),
            cas.len()
        );
        let (cert, ca) = secret_state(&env);
        certs.insert(cert);
        cas.insert(ca);
        if !switched && certs.len() >= 2 {
            // The API server now calls the second replica.
            env.sim.as_ref().unwrap().map_webhook_service(
                KD_NS,
                "kubedirector-validator",
                &second_addr.to_string(),
            );
            switched = true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Keep the load on for one more renewal period after the CA rollover.
    std::thread::sleep(Duration::from_secs(4));
    stop.store(true, Ordering::SeqCst);
    for l in load {
        env.rt.block_on(l).unwrap();
    }
    let failures = failures.lock().unwrap();
    println!(
        "rotation: {} serving certificates, {} CAs in {:?}; {} admitted, {} denied, {} failed",
        certs.len(),
        cas.len(),
        started.elapsed(),
        admitted.load(Ordering::SeqCst),
        denied.load(Ordering::SeqCst),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "admission failed during rotation: {:?}",
        &failures[..failures.len().min(5)]
    );
    assert!(admitted.load(Ordering::SeqCst) > 0 && denied.load(Ordering::SeqCst) > 0);

    // Both replicas serve the Secret's current certificate (each re-reads it every tick).
    env.eventually("both replicas serve the Secret's certificate", |env| {
        let (cert, _) = secret_state(env);
        let want = CertificateDer::from_pem_slice(cert.as_bytes()).unwrap().to_vec();
        let ca = webhook_ca(env);
        [env.webhook_addr, second_addr].iter().all(|addr| {
            env.rt
                .block_on(webhook_request(*addr, &ca, "GET", "/healthz", None, Vec::new()))
                .is_ok_and(|(status, _, _, leaf)| status == 200 && leaf == want)
        })
    });
    operator_support::stop(second);
}
