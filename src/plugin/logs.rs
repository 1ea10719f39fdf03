//! `kubectl kd logs CLUSTER MEMBER`: the member's startscript output. The setup runs
//! `startscript --configure` with its output in `/opt/guestconfig/configure.stdout` and
//! `configure.stderr`, its exit status in `configure.status` (spec 4.4; README "Configuration
//! injection"); they are read with one `pods/exec` of `sh` in the member's `app` container.

use std::io::Write;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, AttachParams, DynamicObject};
use kube::discovery::ApiResource;
use kube::Client;
use kubedirector_crds::KubeDirectorCluster;
use tokio::io::AsyncReadExt;

/// Where the setup keeps the startscript's output.
const GUESTCONFIG: &str = "/opt/guestconfig";

/// The script run in the member: every output file with a header, or a message when the setup has
/// not run yet (exit 3).
fn script() -> String {
    format!(
        "G={GUESTCONFIG}; found=; for f in configure.stdout configure.stderr configure.status; do \
         if [ -f \"$G/$f\" ]; then found=1; echo \"==> $G/$f <==\"; cat \"$G/$f\"; echo; fi; done; \
         [ -n \"$found\" ] || {{ echo \"no startscript output in $G yet (the member's setup has not run)\" >&2; exit 3; }}"
    )
}

/// Prints the startscript output of `member` of `cluster`.
pub async fn run(
    client: &Client,
    ns: &str,
    cluster: &str,
    member: &str,
    out: &mut dyn Write,
) -> Result<u8, String> {
    let api: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        ns,
        &ApiResource::erase::<KubeDirectorCluster>(&()),
    );
    let obj = api
        .get_opt(cluster)
        .await
        .map_err(|e| format!("cannot read kdcluster {cluster}: {e}"))?
        .ok_or_else(|| format!("kdcluster {cluster} not found in namespace {ns}"))?;
    let pods: Vec<String> = obj.data["status"]["roles"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|r| r["members"].as_array().into_iter().flatten())
        .filter_map(|m| m["pod"].as_str().map(String::from))
        .collect();
    if !pods.iter().any(|p| p == member) {
        return Err(format!(
            "{member} is not a member of kdcluster {cluster}; its members: {}",
            if pods.is_empty() {
                "none yet".to_string()
            } else {
                pods.join(", ")
            }
        ));
    }
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let mut proc = pods_api
        .exec(
            member,
            vec!["sh".to_string(), "-c".to_string(), script()],
            &AttachParams::default().container("app").stderr(true),
        )
        .await
        .map_err(|e| format!("cannot exec in {member}: {e}"))?;
    let (mut stdout, mut stderr) = (String::new(), String::new());
    if let Some(mut s) = proc.stdout() {
        s.read_to_string(&mut stdout)
            .await
            .map_err(|e| format!("reading from {member}: {e}"))?;
    }
    if let Some(mut s) = proc.stderr() {
        s.read_to_string(&mut stderr)
            .await
            .map_err(|e| format!("reading from {member}: {e}"))?;
    }
    let status = proc.take_status();
    proc.join().await.map_err(|e| format!("exec in {member}: {e}"))?;
    let ok = match status {
        Some(s) => s.await.is_none_or(|st| st.status.as_deref() == Some("Success")),
        None => true,
    };
    let _ = write!(out, "{stdout}");
    if !ok {
        return Err(stderr.trim().to_string());
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_prints_every_output_file_with_a_header_or_says_none_ran() {
        let dir = tempfile::tempdir().unwrap();
        let g = dir.path().to_str().unwrap();
        let run = || {
            std::process::Command::new("sh")
                .arg("-c")
                .arg(script().replace(GUESTCONFIG, g))
                .output()
                .unwrap()
        };
        let none = run();
        assert_eq!(none.status.code(), Some(3));
        assert!(String::from_utf8_lossy(&none.stderr).contains("no startscript output"));
        std::fs::write(dir.path().join("configure.stdout"), "configured\n").unwrap();
        std::fs::write(dir.path().join("configure.status"), "0").unwrap();
        let some = run();
        assert!(some.status.success());
        assert_eq!(
            String::from_utf8_lossy(&some.stdout),
            format!("==> {g}/configure.stdout <==\nconfigured\n\n==> {g}/configure.status <==\n0\n")
        );
    }
}
