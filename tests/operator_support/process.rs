//! The operator as a child process (`kubedirector run`), for tests that SIGKILL, SIGSTOP or
//! restart it: [`Env::start_process`] and the methods below.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test harness code

use std::path::PathBuf;

use super::{Env, KD_NS};

impl Env {
    /// As [`Env::start`], with the operator as a child process: `kubedirector run` (the binary
    /// of [`operator_binary`]) with the harness's flags (kubeconfig, addresses, identity `op`,
    /// no webhook) followed by `args`. [`Env::kill_operator`] SIGKILLs it,
    /// [`Env::start_operator`] starts a new one (a new identity suffix, as a restarted pod).
    pub fn start_process(args: &[&str]) -> Env {
        Self::start_mode(
            &[],
            None,
            false,
            Some(args.iter().map(|a| a.to_string()).collect()),
        )
    }

    /// A `kubedirector run` process with the harness's flags (kubeconfig, metrics address,
    /// identity prefix, no webhook, text logs) and `args`, its output appended to `log`. The
    /// caller owns it (see [`Env::start_process`] for the Env's own).
    pub fn operator_process(
        &self,
        identity: &str,
        metrics_addr: std::net::SocketAddr,
        args: &[String],
        log: &std::path::Path,
    ) -> std::process::Child {
        use std::process::{Command, Stdio};
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        Command::new(operator_binary())
            .arg("run")
            .arg("--kubeconfig")
            .arg(&self.operator_kubeconfig)
            .args([
                "--kd-namespace",
                KD_NS,
                "--identity",
                identity,
                "--webhook",
                "false",
            ])
            .args(["--metrics-addr", &metrics_addr.to_string()])
            .args(["--admin-addr", "127.0.0.1:0", "--log-format", "text"])
            .args(["--log-level", "warn,kubedirector=info,kubedirector_actors=info"])
            .args(args)
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap()
    }

    /// The operator process's id (process mode, while it runs).
    pub fn operator_pid(&self) -> Option<u32> {
        self.child.as_ref().map(std::process::Child::id)
    }

    /// SIGKILLs the operator process and reaps it (process mode): no shutdown, no lease release.
    pub fn kill_operator(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Whether the operator process ended on its own (process mode); its exit status if so.
    pub fn operator_exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }
}

/// The `kubedirector` binary: Cargo's for integration tests, else `$KUBEDIRECTOR_BIN`, else the
/// one beside the running example (`target/<profile>/examples/X` -> `target/<profile>/kubedirector`).
pub fn operator_binary() -> PathBuf {
    if let Some(p) = option_env!("CARGO_BIN_EXE_kubedirector") {
        return p.into();
    }
    if let Ok(p) = std::env::var("KUBEDIRECTOR_BIN") {
        return p.into();
    }
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .and_then(std::path::Path::parent)
        .map(|d| d.join("kubedirector"))
        .unwrap()
}

/// Sends `SIG<name>` (`KILL`, `TERM`, `STOP`, `CONT`) to process `pid` with kill(1); whether
/// it was delivered.
pub fn signal(pid: u32, name: &str) -> bool {
    std::process::Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success())
}
