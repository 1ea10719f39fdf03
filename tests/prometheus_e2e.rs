//! A real Prometheus (Debian package `prometheus`) scrapes `kubedirector run` (in-process, on
//! kubesim, serving the admission webhook that kubesim calls for every write) while it brings
//! several clusters to `configured`, one stays stuck in `creating` (unschedulable pod), one
//! reaches `config error` (its setup package's startscript fails) and others fail to reconcile
//! (injected API errors). Then every query of `dashboards/*.json` (template variables set to All)
//! must return data through Prometheus's HTTP API, the webhook, certificate and cluster-queue
//! panels real numbers, every alerting rule must evaluate, and the provoked alerts must fire. The
//! rules are loaded with every `for:` shortened to 2 s (test-only variant of deploy/monitoring's
//! file).
//!
//! SKIPPED (printed) only when the `prometheus` binary is not installed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod monitoring_support;
mod operator_support;
mod skip_support;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use kubedirector::webhook::WebhookOptions;

use monitoring_support::{panel_queries, rules, rules_with_for, substitute, url_encode, variable_queries};
use operator_support::{
    centos_cluster, centos_cluster_in, http_request, serve_files, setup_package, Env, ResourceKind, NS,
    OTHER_NS,
};
use serde_json::{json, Value};

fn prometheus_binary() -> Option<PathBuf> {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([PathBuf::from("/usr/bin")])
        .map(|d| d.join("prometheus"))
        .find(|p| p.is_file())
}

/// A Prometheus server process, killed on drop.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    fn start(bin: &PathBuf, target: SocketAddr) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("rules.yaml"), rules_with_for("2s")).unwrap();
        std::fs::write(
            dir.path().join("prometheus.yml"),
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - rules.yaml\n\
                 scrape_configs:\n  - job_name: kubedirector\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new(bin)
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let p = Prometheus { child, addr, dir };
        p.wait_for("Prometheus ready", Duration::from_secs(60), |p| {
            http_request(p.addr, "GET", "/-/ready", "").0 == 200
        });
        p
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    fn get(&self, path: &str) -> Value {
        let (code, body) = http_request(self.addr, "GET", path, "");
        serde_json::from_str(&body)
            .unwrap_or_else(|_| json!({"status": "error", "error": format!("HTTP {code}: {body}")}))
    }

    /// An instant query: the result vector, or the error.
    fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let v = self.get(&format!("/api/v1/query?query={}", url_encode(expr)));
        if v["status"] != "success" {
            return Err(format!("{}: {}", v["errorType"], v["error"]));
        }
        match &v["data"]["result"] {
            Value::Array(a) => Ok(a.clone()),
            other => Ok(vec![other.clone()]), // scalar results
        }
    }

    fn firing(&self) -> Vec<Value> {
        self.get("/api/v1/alerts")["data"]["alerts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|a| a["state"] == "firing")
            .collect()
    }

    fn wait_for(&self, what: &str, limit: Duration, mut cond: impl FnMut(&Prometheus) -> bool) {
        let start = Instant::now();
        while !cond(self) {
            assert!(
                start.elapsed() < limit,
                "never happened: {what}\nprometheus log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

/// A setup package whose startscript fails `--configure` with exit status 3 (as in
/// tests/operator_configure.rs), served over HTTP on loopback; returns its URL.
fn failing_package(dir: &Path) -> String {
    let body = setup_package(
        dir,
        "bad",
        "#!/bin/sh\nif [ \"$1\" = --configure ]; then echo 'listen failed' >&2; exit 3; fi\nexit 0\n",
    );
    format!("{}/bad.tgz", serve_files(vec![("/bad.tgz", body)]))
}

/// A one-role app whose setup package fails.
fn failing_app(url: &str) -> Value {
    json!({
        "apiVersion": "kubedirector.hpe.com/v1beta1",
        "kind": "KubeDirectorApp",
        "metadata": {"name": "kdbad", "namespace": NS},
        "spec": {
            "label": {"name": "kdbad"}, "distroID": "kdtest/kdbad", "version": "1.0",
            "configSchemaVersion": 7,
            "defaultImageRepoTag": "docker.io/library/debian:12-slim",
            "defaultConfigPackage": {"packageURL": url, "useNewSetupLayout": true},
            "services": [{"id": "api", "label": {"name": "API"}, "endpoint": {"port": 7000, "urlScheme": "http"}}],
            "roles": [{"id": "head", "cardinality": "1"}],
            "config": {"roleServices": [{"roleID": "head", "serviceIDs": ["api"]}], "selectedRoles": ["head"]}
        }
    })
}

fn cluster_in(env: &Env, ns: &str, name: &str) -> Value {
    env.get(&ResourceKind::Cluster, ns, name).unwrap_or(Value::Null)
}

fn configured(env: &Env, ns: &str, name: &str, members: usize) -> bool {
    let c = cluster_in(env, ns, name);
    let all: Vec<Value> = c["status"]["roles"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .flat_map(|r| r["members"].as_array().cloned().unwrap_or_default())
        .collect();
    c["status"]["state"] == "configured"
        && all.len() == members
        && all.iter().all(|m| m["state"] == "configured")
}

#[test]
fn prometheus_scrapes_the_operator_and_every_dashboard_query_and_alert_works() {
    let Some(bin) = prometheus_binary() else {
        skip_support::skipped(
            "prometheus not installed (Debian package prometheus; tests/ci.sh installs it as root)",
        );
        return;
    };
    let started = Instant::now();
    // The webhook is served (kubesim calls it for every kd object write), so its request and
    // certificate series have data.
    let env = Env::start_with_webhook(WebhookOptions::default());
    env.eventually("operator ready", |e| e.http_get("/readyz").0 == 200);
    let prom = Prometheus::start(&bin, env.metrics_addr);
    // One scrape before any cluster exists, so the webhook's series have a sample from before
    // the requests below (a counter first seen at its final value has no increase to rate).
    prom.wait_for("the operator scraped once", Duration::from_secs(30), |p| {
        p.query(r#"up{job="kubedirector"} == 1"#)
            .is_ok_and(|r| r.len() == 1)
    });
    let packages = tempfile::tempdir().unwrap();
    let bad_url = failing_package(packages.path());

    // Several clusters converge while Prometheus scrapes; one stays stuck in `creating`.
    env.create(
        &ResourceKind::Cluster,
        NS,
        centos_cluster("web-1", &[("vanilla_centos", 1)]),
    );
    env.create(
        &ResourceKind::Cluster,
        NS,
        centos_cluster("web-2", &[("vanilla_centos", 2), ("extra", 1)]),
    );
    env.create(
        &ResourceKind::Cluster,
        OTHER_NS,
        centos_cluster_in(OTHER_NS, "other-1", &[("vanilla_centos", 1)]),
    );
    let mut stuck = centos_cluster("stuck-1", &[("vanilla_centos", 1)]);
    stuck["spec"]["roles"][0]["resources"] = json!({
        "limits": {"memory": "100000Gi", "cpu": "1"}, "requests": {"memory": "100000Gi", "cpu": "1"}});
    env.create(&ResourceKind::Cluster, NS, stuck);
    // A cluster whose setup package's startscript fails: `config error`.
    env.create(&ResourceKind::App, NS, failing_app(&bad_url));
    let res = json!({"limits": {"memory": "512Mi", "cpu": "1"}, "requests": {"memory": "512Mi", "cpu": "1"}});
    env.create(
        &ResourceKind::Cluster,
        NS,
        json!({"apiVersion": "kubedirector.hpe.com/v1beta1", "kind": "KubeDirectorCluster",
               "metadata": {"name": "bad-1", "namespace": NS},
               "spec": {"app": "kdbad", "roles": [{"id": "head", "members": 1, "resources": res}]}}),
    );
    env.eventually("web-1 configured", |e| configured(e, NS, "web-1", 1));
    env.eventually("web-2 configured", |e| configured(e, NS, "web-2", 3));
    env.eventually("other-1 configured", |e| configured(e, OTHER_NS, "other-1", 1));
    env.eventually("stuck-1 creating with its StatefulSet", |e| {
        cluster_in(e, NS, "stuck-1")["status"]["state"] == "creating"
    });
    env.eventually("bad-1 member in config error", |e| {
        cluster_in(e, NS, "bad-1")["status"]["roles"][0]["members"][0]["state"] == "config error"
    });

    // Reconciles that keep failing: every StatefulSet create is refused.
    let faults = env.sim.as_ref().unwrap().faults();
    faults.add_error(kubesim::faults::ErrorRule {
        verb: "create".into(),
        resource: "statefulsets".into(),
        rate: 1.0,
        code: 500,
        count: None,
    });
    for name in ["broken-1", "broken-2", "broken-3"] {
        env.create(
            &ResourceKind::Cluster,
            NS,
            centos_cluster(name, &[("vanilla_centos", 1)]),
        );
    }
    let converged_at = started.elapsed();

    // The provoked alerts fire.
    let has = |alerts: &[Value], name: &str, label: Option<(&str, &str)>| {
        alerts
            .iter()
            .any(|a| a["labels"]["alertname"] == name && label.is_none_or(|(k, v)| a["labels"][k] == v))
    };
    prom.wait_for(
        "stuck, config-error and reconcile-error alerts firing",
        Duration::from_secs(90),
        |p| {
            let f = p.firing();
            has(&f, "KubeDirectorClusterStuck", Some(("cluster", "stuck-1")))
                && has(&f, "KubeDirectorClusterConfigErrors", Some(("cluster", "bad-1")))
                && has(
                    &f,
                    "KubeDirectorReconcileErrors",
                    Some(("controller", "kubedirectorcluster")),
                )
        },
    );
    let firing = prom.firing();
    assert!(
        !has(&firing, "KubeDirectorClusterStuck", Some(("cluster", "web-1"))),
        "a configured cluster is not stuck: {firing:#?}"
    );
    assert!(
        !has(&firing, "KubeDirectorNoLeader", None),
        "the operator leads: {firing:#?}"
    );
    assert!(
        !has(
            &firing,
            "KubeDirectorClusterConfigErrors",
            Some(("cluster", "web-2"))
        ),
        "a configured cluster has no config errors: {firing:#?}"
    );

    // Prometheus has scraped the converged state.
    prom.wait_for("configured clusters scraped", Duration::from_secs(30), |p| {
        p.query(r#"kubedirector_cluster_state{cluster=~"web-1|web-2|other-1", state="configured"} == 1"#)
            .is_ok_and(|r| r.len() == 3)
    });

    // Every dashboard query returns data.
    let queries = panel_queries();
    let mut failures = Vec::new();
    for q in &queries {
        let expr = substitute(&q.expr, "5m");
        match prom.query(&expr) {
            Ok(r) if !r.is_empty() => {}
            Ok(_) => failures.push(format!("{} / {}: no data: {expr}", q.dashboard, q.panel)),
            Err(e) => failures.push(format!("{} / {}: error {e}: {expr}", q.dashboard, q.panel)),
        }
    }
    let vars = variable_queries();
    for (dashboard, name, selector, label) in &vars {
        let selector = substitute(selector, "5m");
        let v = prom.get(&format!(
            "/api/v1/label/{label}/values?match[]={}",
            url_encode(&selector)
        ));
        let values = v["data"].as_array().cloned().unwrap_or_default();
        if v["status"] != "success" || values.is_empty() {
            failures.push(format!(
                "{dashboard} / variable {name}: no values for {selector}: {v}"
            ));
        }
        if name == "namespace" {
            assert!(
                values.contains(&json!(NS)) && values.contains(&json!(OTHER_NS)),
                "{values:?}"
            );
        }
    }
    assert!(
        failures.is_empty(),
        "dashboard queries without data or failing:\n{}",
        failures.join("\n")
    );

    // The panels fed by the webhook, its certificates and the cluster queue show real numbers
    // (a histogram quantile over no observations is NaN, which counts as "data" above).
    let finite = |v: &Value| {
        v["value"][1]
            .as_str()
            .and_then(|x| x.parse::<f64>().ok())
            .is_some_and(f64::is_finite)
    };
    let mut numbers = Vec::new();
    for title in [
        "Webhook requests per second, by kind and result",
        "Webhook latency (p99), by kind",
        "Cluster queue wait (p50, p99)",
        "Certificate expiry",
    ] {
        let panel: Vec<_> = queries.iter().filter(|q| q.panel == title).collect();
        assert!(!panel.is_empty(), "no panel {title}");
        for q in panel {
            // Over the whole test, not the last minute: on a loaded machine the webhook's
            // requests (cluster creation) can be more than a minute old by now, and a rate over
            // a window without requests is 0/0.
            let expr = substitute(&q.expr, "5m").replace("[1m]", "[10m]");
            let r = prom.query(&expr).unwrap();
            let values: Vec<&Value> = r.iter().filter(|v| finite(v)).collect();
            assert!(!values.is_empty(), "{title}: no finite value for {expr}: {r:?}");
            numbers.push(format!(
                "{title}: {}",
                values
                    .iter()
                    .map(|v| format!("{}={}", v["metric"], v["value"][1].as_str().unwrap()))
                    .collect::<Vec<_>>()
                    .join(" ")
            ));
        }
    }
    let admitted = prom
        .query(r#"sum(kubedirector_webhook_requests_total{kind="KubeDirectorCluster", result="allowed"})"#)
        .unwrap();
    assert!(
        admitted[0]["value"][1].as_str().unwrap().parse::<f64>().unwrap() >= 8.0,
        "every cluster create went through the webhook: {admitted:?}"
    );
    let left = prom
        .query(r#"min(kubedirector_certificate_expiry_timestamp_seconds{certificate="webhook"}) - time()"#)
        .unwrap();
    let left = left[0]["value"][1].as_str().unwrap().parse::<f64>().unwrap();
    assert!(
        left > 29.0 * 86_400.0 && left <= 30.0 * 86_400.0,
        "a fresh 30-day serving certificate: {left} s left"
    );
    println!("{}", numbers.join("\n"));

    // Every alerting rule evaluates, and Prometheus reports every rule healthy.
    let rules = rules();
    for r in &rules {
        if let Err(e) = prom.query(&r.expr) {
            panic!("rule {} does not evaluate: {e}", r.alert);
        }
    }
    let groups = prom.get("/api/v1/rules")["data"]["groups"].clone();
    let loaded: Vec<Value> = groups
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .collect();
    assert_eq!(loaded.len(), rules.len(), "every rule loaded");
    for r in &loaded {
        assert_eq!(
            r["health"], "ok",
            "rule {} unhealthy: {}",
            r["name"], r["lastError"]
        );
    }

    // promtool check metrics accepts the exposition.
    let (code, metrics) = env.http_get("/metrics");
    assert_eq!(code, 200);
    promtool_check_metrics(&metrics);

    // A deleted cluster's series disappear.
    env.delete(&ResourceKind::Cluster, NS, "web-1");
    env.eventually("web-1 series removed", |e| {
        let (_, body) = e.http_get("/metrics");
        !body.contains("cluster=\"web-1\"") && body.contains("cluster=\"web-2\"")
    });

    println!(
        "prometheus e2e: {} dashboard queries and {} variables returned data, {} rules healthy, {} alerts firing \
         ({}), clusters converged after {:.1} s, total {:.1} s",
        queries.len(),
        vars.len(),
        loaded.len(),
        firing.len(),
        firing
            .iter()
            .map(|a| format!("{}{{{}}}", a["labels"]["alertname"].as_str().unwrap_or_default(),
                a["labels"]["cluster"].as_str().or(a["labels"]["controller"].as_str()).unwrap_or_default()))
            .collect::<Vec<_>>()
            .join(", "),
        converged_at.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}

fn promtool_check_metrics(metrics: &str) {
    use std::io::Write;
    let Ok(mut child) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        skip_support::skipped("promtool check metrics: promtool not installed");
        return;
    };
    child.stdin.take().unwrap().write_all(metrics.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool check metrics:\n{text}");
}
