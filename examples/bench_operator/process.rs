//! The operator as its own process, and the CPU and memory statistics of both processes.
//!
//! The benchmark runs the operator exactly as `kubedirector run` does, in a child process, so
//! that its CPU time and peak memory are its own: kubesim stays in the benchmark's process. The
//! child is either a `kubedirector` binary (`--operator-bin PATH`) or, by default, this program
//! re-executed as `bench_operator run <options>`: that mode parses the options with
//! `kubedirector run`'s own parser ([`RunOptions`]) and calls the same
//! `kubedirector::operator::run` (signal handling and panic hook included), so no separately
//! built binary is needed. The child reaches kubesim through a kubeconfig, over HTTP.
//!
//! CPU is utime + stime of `/proc/<pid>/stat` (all threads, exited ones included); peak memory
//! is `VmHWM` of `/proc/<pid>/status`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use clap::Parser;
use kubedirector::operator::RunOptions;

/// Linux `USER_HZ` (the unit of utime/stime in /proc; 100 on every Linux architecture).
const CLOCK_TICKS: f64 = 100.0;

/// `bench_operator run ...`: the child mode, `kubedirector run`'s command line.
#[derive(Debug, Parser)]
#[command(name = "bench_operator run")]
struct RunCli {
    #[command(flatten)]
    opts: RunOptions,
}

/// If this process was started as the operator child (`run` as the first argument), runs the
/// operator and returns its exit status.
pub fn child_main() -> Option<ExitCode> {
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).and_then(|a| a.to_str()) != Some("run") {
        return None;
    }
    args.remove(1);
    let cli = RunCli::parse_from(args);
    Some(match kubedirector::operator::run(cli.opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e:#}");
            ExitCode::FAILURE
        }
    })
}

/// The running operator process.
pub struct Operator {
    child: Child,
    pid: u32,
}

impl Operator {
    /// Starts `bin run ...` (or this program in its `run` mode) against the kubeconfig, with the
    /// benchmark's settings: leader election on, its metrics server on `metrics_addr`.
    pub fn spawn(
        bin: Option<&Path>,
        kubeconfig: &Path,
        kd_namespace: &str,
        metrics_addr: SocketAddr,
    ) -> anyhow::Result<Self> {
        let program: PathBuf = match bin {
            Some(b) => b.to_path_buf(),
            None => std::env::current_exe().context("cannot find this program's path")?,
        };
        let admin = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .context("cannot find a free port for the operator's admin server")?;
        let child = Command::new(&program)
            .arg("run")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["--kd-namespace", kd_namespace])
            .args(["--metrics-addr", &metrics_addr.to_string()])
            .args(["--admin-addr", &admin.to_string()])
            .args(["--identity", "bench"])
            .args(["--log-level", "warn"])
            .args(["--webhook", "false"])
            // Coalesce progress-only status changes, as an operator at scale would be configured.
            .args(["--status-detail-window-seconds", "5"])
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot start the operator ({})", program.display()))?;
        let pid = child.id();
        Ok(Self { child, pid })
    }

    /// The process ID.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether the process has exited.
    pub fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// CPU seconds the process used so far.
    pub fn cpu(&self) -> f64 {
        stat_times(&format!("/proc/{}/stat", self.pid)).map_or(0.0, |(_, s)| s)
    }

    /// Peak resident memory (`VmHWM`), MiB.
    pub fn peak_mib(&self) -> Option<f64> {
        status_mib(&format!("/proc/{}/status", self.pid), "VmHWM")
    }

    /// SIGTERM, then waits up to 20 s for a clean exit.
    pub fn stop(mut self) -> anyhow::Result<()> {
        let sent = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .context("cannot run kill")?;
        if !sent.success() {
            bail!("kill -TERM {} failed", self.pid);
        }
        let t0 = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                if status.success() {
                    return Ok(());
                }
                bail!("the operator exited with {status} after SIGTERM");
            }
            if t0.elapsed() > Duration::from_secs(20) {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!("the operator did not exit within 20 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Operator {
    /// Never leaves the child running (an error path of the benchmark).
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// CPU seconds (user + system) of the two processes.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuTimes {
    /// The benchmark's process: kubesim (and this program's small client and sampling work).
    pub kubesim: f64,
    /// The operator's process (0 once it is gone).
    pub operator: f64,
}

impl CpuTimes {
    /// Now, for this process and (if given) the operator's.
    pub fn now(operator: Option<&Operator>) -> anyhow::Result<Self> {
        let (_, kubesim) =
            stat_times("/proc/self/stat").ok_or_else(|| anyhow!("cannot read /proc/self/stat"))?;
        Ok(Self {
            kubesim,
            operator: operator.map_or(0.0, Operator::cpu),
        })
    }

    /// Sum of both.
    pub fn total(&self) -> f64 {
        self.kubesim + self.operator
    }
}

/// utime + stime (seconds) and the name of a `/proc/.../stat` file.
fn stat_times(path: &str) -> Option<(String, f64)> {
    parse_stat(&std::fs::read_to_string(path).ok()?)
}

/// Parses a `/proc/.../stat` line: (comm, utime + stime in seconds).
fn parse_stat(text: &str) -> Option<(String, f64)> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_string();
    let rest: Vec<&str> = text.get(close + 2..)?.split_whitespace().collect();
    // Fields 14 (utime) and 15 (stime); `rest` starts at field 3.
    let utime: f64 = rest.get(11)?.parse().ok()?;
    let stime: f64 = rest.get(12)?.parse().ok()?;
    Some((comm, (utime + stime) / CLOCK_TICKS))
}

/// A `kB` line of a `/proc/.../status` file, in MiB.
fn status_mib(path: &str, field: &str) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|l| l.starts_with(&format!("{field}:")))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Peak resident memory of this process (kubesim), MiB.
pub fn own_peak_mib() -> Option<f64> {
    status_mib("/proc/self/status", "VmHWM")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_parse_with_spaces_in_the_name() {
        let line = "42 (kd op) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 8 0 1 2 3";
        let (comm, secs) = parse_stat(line).unwrap_or_default();
        assert_eq!(comm, "kd op");
        assert!((secs - 3.0).abs() < 1e-9, "{secs}");
        assert!(parse_stat("garbage").is_none());
    }
}
