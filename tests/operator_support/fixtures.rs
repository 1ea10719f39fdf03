//! Test fixtures: the example kdapps and kdclusters the operator tests create, setup packages
//! and a loopback file server for their `packageURL`s.

use serde_json::{json, Value};

use super::NS;

/// The centos7x example app (no setup package), in `namespace`.
pub fn centos_app(namespace: &str) -> Value {
    json!({
        "apiVersion": "kubedirector.hpe.com/v1beta1",
        "kind": "KubeDirectorApp",
        "metadata": {"name": "centos7x", "namespace": namespace},
        "spec": {
            "systemdRequired": false,
            "config": {
                "roleServices": [
                    {"serviceIDs": ["ssh"], "roleID": "vanilla_centos"},
                    {"serviceIDs": ["ssh"], "roleID": "extra"}
                ],
                "selectedRoles": ["vanilla_centos"]
            },
            "label": {"name": "CentOS 7.5", "description": "CentOS"},
            "distroID": "bluedata/centos7x",
            "version": "1.1",
            "configSchemaVersion": 7,
            "services": [{"endpoint": {"port": 22, "isDashboard": false}, "id": "ssh", "label": {"name": "SSH"}}],
            "roles": [
                {"cardinality": "1+", "id": "vanilla_centos", "imageRepoTag": "docker.io/bluedata/centos7:4.1",
                 "configPackage": null, "persistDirs": ["/home"]},
                {"cardinality": "0+", "id": "extra", "imageRepoTag": "docker.io/bluedata/centos7:4.1",
                 "configPackage": null}
            ]
        }
    })
}

/// A two-role kdapp `name` (`head` 1, `worker` 0+, one `api` endpoint on both) whose setup
/// package is at `url` (new setup layout), in [`NS`]: the fault suites' app.
pub fn two_role_app(name: &str, url: &str) -> Value {
    json!({
        "apiVersion": "kubedirector.hpe.com/v1beta1",
        "kind": "KubeDirectorApp",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "label": {"name": name},
            "distroID": format!("kdtest/{name}"),
            "version": "1.0",
            "configSchemaVersion": 7,
            "defaultImageRepoTag": "docker.io/library/debian:12-slim",
            "defaultConfigPackage": {"packageURL": url, "useNewSetupLayout": true},
            "services": [{"id": "api", "label": {"name": "API"}, "endpoint": {"port": 7000, "urlScheme": "http"}}],
            "roles": [{"id": "head", "cardinality": "1"}, {"id": "worker", "cardinality": "0+"}],
            "config": {
                "roleServices": [{"roleID": "head", "serviceIDs": ["api"]}, {"roleID": "worker", "serviceIDs": ["api"]}],
                "selectedRoles": ["head", "worker"]
            }
        }
    })
}

/// A kdcluster of the centos app with the given role sizes (in [`NS`]).
pub fn centos_cluster(name: &str, roles: &[(&str, i64)]) -> Value {
    centos_cluster_in(NS, name, roles)
}

/// A kdcluster of the centos app with the given role sizes in `namespace`.
pub fn centos_cluster_in(namespace: &str, name: &str, roles: &[(&str, i64)]) -> Value {
    let roles: Vec<Value> = roles
        .iter()
        .map(|(id, n)| {
            json!({"id": id, "members": n,
                   "resources": {"limits": {"memory": "1Gi", "cpu": "1"}, "requests": {"memory": "1Gi", "cpu": "1"}}})
        })
        .collect();
    json!({
        "apiVersion": "kubedirector.hpe.com/v1beta1",
        "kind": "KubeDirectorCluster",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"app": "centos7x", "appCatalog": "local", "serviceType": "ClusterIP",
                 "namingScheme": "UID", "roles": roles}
    })
}

/// A setup package: a gzip tar holding `app/startscript` (executable) with `startscript` as its
/// text, built under `dir/name`.
pub fn setup_package(dir: &std::path::Path, name: &str, startscript: &str) -> Vec<u8> {
    let src = dir.join(name).join("app");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("startscript"), startscript).unwrap();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg("chmod +x app/startscript && tar czf - app")
        .current_dir(dir.join(name))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// Serves `files` (path -> bytes; 404 for any other path) over HTTP/1.0 on loopback until the
/// process ends; returns the base URL (`http://127.0.0.1:PORT`).
pub fn serve_files(files: Vec<(&'static str, Vec<u8>)>) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 4096];
            let n = s.read(&mut buf).unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]);
            let path = req.split_whitespace().nth(1).unwrap_or("/").to_string();
            match files.iter().find(|(p, _)| *p == path) {
                Some((_, body)) => {
                    let _ = write!(s, "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
                    let _ = s.write_all(body);
                }
                None => {
                    let _ = write!(s, "HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n");
                }
            }
        }
    });
    format!("http://{addr}")
}
