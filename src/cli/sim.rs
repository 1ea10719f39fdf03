//! `kubedirector sim`: runs kubesim, the embedded Kubernetes API server with its simulated control
//! plane, until SIGINT or SIGTERM; writes a kubeconfig so `kubectl` can talk to it.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Arguments of `kubedirector sim`.
#[derive(Debug, Clone, clap::Args)]
pub struct SimArgs {
    /// Address to listen on (loopback by default; port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Write a kubeconfig pointing at the simulator to this path.
    #[arg(long)]
    pub kubeconfig_out: Option<PathBuf>,
    /// Number of simulated nodes.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Directory for simulated container filesystems and volumes (default: a fresh temporary
    /// directory, removed on exit).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// How requests are authorized: `always-allow` (default) or `rbac` (ServiceAccount tokens
    /// get what their Role/ClusterRole bindings grant; the admin kubeconfig stays
    /// system:masters).
    #[arg(long, default_value = "always-allow")]
    pub authorization: kubesim::auth::AuthorizationMode,
    /// Write a kubeconfig authenticating as a ServiceAccount (token valid while it exists):
    /// `NAMESPACE/NAME=PATH`; repeatable.
    #[arg(long = "service-account-kubeconfig", value_parser = parse_sa_kubeconfig)]
    pub service_account_kubeconfigs: Vec<(String, String, PathBuf)>,
}

/// `NAMESPACE/NAME=PATH`.
fn parse_sa_kubeconfig(s: &str) -> Result<(String, String, PathBuf), String> {
    let (sa, path) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected NAMESPACE/NAME=PATH"))?;
    let (ns, name) = sa
        .split_once('/')
        .filter(|(ns, name)| !ns.is_empty() && !name.is_empty() && !name.contains('/'))
        .ok_or_else(|| format!("{s:?}: expected NAMESPACE/NAME=PATH"))?;
    if path.is_empty() {
        return Err(format!("{s:?}: empty PATH"));
    }
    Ok((ns.to_string(), name.to_string(), PathBuf::from(path)))
}

/// Runs `kubedirector sim`; returns the exit status.
pub fn run(args: &SimArgs, stderr: &mut dyn Write) -> u8 {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            let _ = writeln!(stderr, "kubedirector sim: cannot start the async runtime: {e}");
            return 1;
        }
    };
    match runtime.block_on(serve(args)) {
        Ok(()) => 0,
        Err(e) => {
            let _ = writeln!(stderr, "kubedirector sim: {e}");
            1
        }
    }
}

async fn serve(args: &SimArgs) -> Result<(), String> {
    let node = crate::sim::NodeSetup::new(args.state_dir.clone()).map_err(|e| e.to_string())?;
    let config = node.sim_config(kubesim::SimConfig {
        listen: args.listen,
        nodes: args.nodes,
        authorization: args.authorization,
        ..kubesim::SimConfig::default()
    });
    let sim = kubesim::Sim::start(config).await.map_err(|e| e.to_string())?;
    if let Some(path) = &args.kubeconfig_out {
        sim.write_kubeconfig(path).map_err(|e| e.to_string())?;
    }
    for (ns, name, path) in &args.service_account_kubeconfigs {
        sim.write_service_account_kubeconfig(ns, name, path)
            .map_err(|e| e.to_string())?;
        println!(
            "service account {ns}/{name} kubeconfig written to {}",
            path.display()
        );
    }
    // The address line is the contract with scripts: `kubesim listening on http://...`.
    println!("kubesim listening on {}", sim.url());
    if let Some(path) = &args.kubeconfig_out {
        println!("kubeconfig written to {}", path.display());
    }
    crate::signals::shutdown_signal().await;
    println!("kubesim shutting down");
    sim.shutdown().await;
    drop(node);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_account_kubeconfig_flag_is_namespace_slash_name_equals_path() {
        assert_eq!(
            parse_sa_kubeconfig("kubedirector/kd=/tmp/kd.kubeconfig").unwrap(),
            (
                "kubedirector".into(),
                "kd".into(),
                PathBuf::from("/tmp/kd.kubeconfig")
            )
        );
        for bad in [
            "kd=/tmp/x",
            "kubedirector/kd",
            "/kd=/x",
            "ns/=/x",
            "ns/a/b=/x",
            "ns/kd=",
        ] {
            assert!(parse_sa_kubeconfig(bad).is_err(), "{bad}");
        }
    }
}
