//! The kubectl plugin: the `kubedirector` binary answers as `kubectl-kd` when invoked under that
//! name (argv\[0\]), so `kubectl kd ...` works once a `kubectl-kd` symlink is on the `PATH`
//! (`kubedirector install-plugin [DIR]` makes it). The same commands are `kubedirector kd ...`.
//!
//! - `kubectl kd status [CLUSTER] [-n NS]`: a cluster as a tree (roles, members, member states,
//!   pending notifications, the last config error with its stderr tail), like `kubectl tree`.
//! - `kubectl kd validate FILE...`: the offline admission check (`kubedirector validate`).
//! - `kubectl kd logs CLUSTER MEMBER [-n NS]`: the member's startscript output, read in its pod
//!   over `pods/exec` (`/opt/guestconfig/configure.{stdout,stderr,status}`, spec 4.4).

mod logs;
mod status;

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

/// The name kubectl looks for on the `PATH` for `kubectl kd`.
pub const PLUGIN_NAME: &str = "kubectl-kd";

/// `kubectl kd`: inspect KubeDirector clusters.
#[derive(Debug, clap::Parser)]
#[command(name = "kubectl kd", version, about = "KubeDirector plugin for kubectl")]
pub struct KdCli {
    /// The command.
    #[command(subcommand)]
    pub command: KdCommand,
}

/// The plugin's commands.
#[derive(Debug, clap::Subcommand)]
pub enum KdCommand {
    /// A cluster (or every cluster of the namespace) as a tree: roles, members, states, pending
    /// notifications, the last config error with its stderr tail.
    Status(StatusArgs),
    /// Offline admission check of kdapp/kdcluster/kdconfig documents (as `kubedirector validate`).
    Validate(crate::cli::validate::ValidateArgs),
    /// A member's startscript output (configure.stdout, configure.stderr, configure.status).
    Logs(LogsArgs),
}

/// Where to find the cluster: kubeconfig and namespace, as kubectl takes them.
#[derive(Debug, Clone, clap::Args)]
pub struct Target {
    /// Namespace (default: the kubeconfig context's namespace).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Path to the kubeconfig file (default: `KUBECONFIG`, `~/.kube/config`, in-cluster).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
}

/// Arguments of `kubectl kd status`.
#[derive(Debug, Clone, clap::Args)]
pub struct StatusArgs {
    /// The kdcluster (default: every kdcluster of the namespace).
    pub cluster: Option<String>,
    /// Kubeconfig and namespace.
    #[command(flatten)]
    pub target: Target,
}

/// Arguments of `kubectl kd logs`.
#[derive(Debug, Clone, clap::Args)]
pub struct LogsArgs {
    /// The kdcluster.
    pub cluster: String,
    /// The member (its pod name, as `kubectl kd status` shows it).
    pub member: String,
    /// Kubeconfig and namespace.
    #[command(flatten)]
    pub target: Target,
}

/// Arguments of `kubedirector install-plugin`.
#[derive(Debug, Clone, clap::Args)]
pub struct InstallArgs {
    /// Directory for the `kubectl-kd` symlink (default: the directory of this binary). It must be
    /// on your `PATH` for `kubectl kd` to find it.
    pub dir: Option<PathBuf>,
}

/// Whether argv\[0\] names the plugin (`kubectl-kd`, any directory).
pub fn invoked_as_plugin(argv0: Option<&OsString>) -> bool {
    argv0
        .map(Path::new)
        .and_then(Path::file_name)
        .is_some_and(|n| n == PLUGIN_NAME)
}

/// Runs the plugin with the full argv (argv\[0\] included); returns the exit status.
pub fn run_argv(argv: Vec<OsString>) -> u8 {
    use clap::Parser;
    match KdCli::try_parse_from(argv) {
        Ok(cli) => run(cli.command),
        Err(e) => {
            let _ = e.print();
            u8::try_from(e.exit_code()).unwrap_or(2)
        }
    }
}

/// Runs one plugin command; returns the exit status (errors are printed to stderr).
pub fn run(cmd: KdCommand) -> u8 {
    let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
    if let KdCommand::Validate(args) = &cmd {
        return crate::cli::validate::run(args, &mut out, &mut err);
    }
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            let _ = writeln!(err, "kubectl kd: cannot start the async runtime: {e}");
            return 1;
        }
    };
    let result = rt.block_on(async {
        match cmd {
            KdCommand::Status(a) => {
                let (client, ns) = connect(&a.target).await?;
                status::run(&client, &ns, a.cluster.as_deref(), &mut out).await
            }
            KdCommand::Logs(a) => {
                let (client, ns) = connect(&a.target).await?;
                logs::run(&client, &ns, &a.cluster, &a.member, &mut out).await
            }
            KdCommand::Validate(_) => Ok(0),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(err, "kubectl kd: {e}");
            1
        }
    }
}

/// A client and the namespace to use, as kubectl would pick them.
async fn connect(t: &Target) -> Result<(Client, String), String> {
    let config = match &t.kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path)
                .map_err(|e| format!("cannot read kubeconfig {}: {e}", path.display()))?;
            Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(|e| format!("invalid kubeconfig {}: {e}", path.display()))?
        }
        None => Config::infer()
            .await
            .map_err(|e| format!("no cluster to talk to (kubeconfig or in-cluster): {e}"))?,
    };
    let ns = t
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = Client::try_from(config).map_err(|e| format!("cannot build a client: {e}"))?;
    Ok((client, ns))
}

/// `kubedirector install-plugin [DIR]`: the `kubectl-kd` symlink to this binary.
pub fn install(args: &InstallArgs, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    match install_link(args.dir.as_deref()) {
        Ok((link, target)) => {
            let _ = writeln!(out, "{} -> {}", link.display(), target.display());
            let dir = link.parent().unwrap_or(Path::new("."));
            let on_path =
                std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d == dir));
            if on_path {
                let _ = writeln!(out, "try: kubectl kd status");
            } else {
                let _ = writeln!(
                    out,
                    "{} is not on your PATH; add it (export PATH=\"{}:$PATH\") so that kubectl finds the plugin",
                    dir.display(),
                    dir.display()
                );
            }
            0
        }
        Err(e) => {
            let _ = writeln!(err, "kubedirector install-plugin: {e}");
            1
        }
    }
}

fn install_link(dir: Option<&Path>) -> Result<(PathBuf, PathBuf), String> {
    let exe = std::env::current_exe()
        .and_then(std::fs::canonicalize)
        .map_err(|e| format!("cannot find this binary: {e}"))?;
    let dir = match dir {
        Some(d) => d.to_path_buf(),
        None => exe
            .parent()
            .map(Path::to_path_buf)
            .ok_or("this binary has no directory")?,
    };
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let link = dir.join(PLUGIN_NAME);
    match std::fs::symlink_metadata(&link) {
        Ok(m) if m.file_type().is_symlink() => {
            std::fs::remove_file(&link).map_err(|e| format!("cannot replace {}: {e}", link.display()))?
        }
        Ok(_) => {
            return Err(format!(
                "{} exists and is not a symlink; remove it first",
                link.display()
            ))
        }
        Err(_) => {}
    }
    std::os::unix::fs::symlink(&exe, &link).map_err(|e| format!("cannot create {}: {e}", link.display()))?;
    Ok((link, exe))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn argv0_kubectl_kd_in_any_directory_is_the_plugin() {
        for name in ["kubectl-kd", "/usr/local/bin/kubectl-kd", "./kubectl-kd"] {
            assert!(invoked_as_plugin(Some(&OsString::from(name))), "{name}");
        }
        for name in ["kubedirector", "/bin/kubectl-kd2", "kubectl"] {
            assert!(!invoked_as_plugin(Some(&OsString::from(name))), "{name}");
        }
        assert!(!invoked_as_plugin(None));
    }

    #[test]
    fn the_commands_parse_like_kubectl_ones() {
        let cli = KdCli::try_parse_from(["kubectl-kd", "status", "web", "-n", "team"]).unwrap();
        let KdCommand::Status(s) = cli.command else {
            panic!("status")
        };
        assert_eq!(
            (s.cluster.as_deref(), s.target.namespace.as_deref()),
            (Some("web"), Some("team"))
        );
        let cli = KdCli::try_parse_from(["kubectl-kd", "logs", "web", "kdss-x-0"]).unwrap();
        assert!(matches!(cli.command, KdCommand::Logs(l) if l.member == "kdss-x-0"));
        let cli = KdCli::try_parse_from(["kubectl-kd", "validate", "a.yaml", "b.yaml"]).unwrap();
        assert!(matches!(cli.command, KdCommand::Validate(_)));
        assert!(KdCli::try_parse_from(["kubectl-kd", "logs", "web"]).is_err());
    }

    #[test]
    fn install_links_the_binary_and_replaces_an_old_link_but_not_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let (link, target) = install_link(Some(dir.path())).unwrap();
        assert_eq!(std::fs::read_link(&link).unwrap(), target);
        install_link(Some(dir.path())).unwrap();
        std::fs::remove_file(&link).unwrap();
        std::fs::write(&link, "mine").unwrap();
        let e = install_link(Some(dir.path())).unwrap_err();
        assert!(e.contains("is not a symlink"), "{e}");
    }
}
