//! Per-container sandboxes on bubblewrap: what makes `pods/exec` run commands for real.
//!
//! # Design
//!
//! Every container is one long-lived **pause process**:
//! `bwrap <binds> --unshare-pid --unshare-uts --unshare-ipc --hostname <pod> --die-with-parent
//! --info-fd 1 -- sh -c 'echo ready >&2 && exec sleep infinity'`. bwrap becomes PID 1 of a fresh PID namespace (it reaps orphans),
//! and reports the host PID of that init process on its info fd (here: its stdout).
//!
//! An **exec** enters the pause process's namespaces with
//! `nsenter -t <init pid> -m -u -i -p -r -w -- <argv>` (the environment is passed through
//! `nsenter`, which forks into the PID namespace). The exec'd process is therefore a member of the
//! container's PID namespace: a background job it starts (`nohup sh -c '…' &`) is re-parented to
//! the container's init when the exec returns and keeps running — exactly like in a real
//! container — and it dies with the container.
//!
//! **Stopping** a container kills the pause bwrap. `--die-with-parent` makes the kernel kill the
//! namespace init, and the death of a PID namespace's init kills every process in it, so all
//! background jobs are reaped. Processes are spawned with `kill_on_drop`, and `--die-with-parent`
//! also tears sandboxes down when kubesim itself dies. (Caveat: the parent-death signal follows
//! the *thread* that spawned bwrap, so containers must be started from async tasks, never from
//! `spawn_blocking`, whose threads exit when idle.)
//!
//! # Filesystem
//!
//! Each container gets `<state>/pods/<pod uid>/containers/<id>/root/` with writable, private
//! `/etc` (seeded with passwd, group, hosts, resolv.conf, hostname and the host's
//! `/etc/alternatives`), `/opt`, `/tmp`, `/var`, `/home`, `/root`, `/run`, `/srv`, `/mnt` and
//! `/usr/local`; the host's `/usr`, `/bin`, `/sbin` and `/lib*` are read-only. A restart creates
//! a new container ID and a new, empty root: everything not on a volume is lost. Volumes are
//! plain host directories handed in as [`Mount`]s: PVC data lives under
//! `<state>/pvcs/<namespace>/<claim>/` ([`Runtime::pvc_dir`]) and survives restarts and pod
//! re-creation, `emptyDir` under the pod directory ([`Runtime::empty_dir`]) lives with the pod.
//! Registered images ([`Runtime::register_image`]) are host directories whose tree is copied into
//! every new container of that image.

mod rootfs;

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    sync::Arc,
};

use dashmap::DashMap;
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    process::{Child, ChildStderr, ChildStdin, ChildStdout, Command},
    sync::Mutex,
};

use self::rootfs::MountTable;

/// Default `PATH` of a container whose spec does not set one (the usual image default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The message every sandbox operation fails with when bubblewrap is not installed.
pub const BWRAP_MISSING: &str = "kubesim exec needs bubblewrap: apt-get install bubblewrap";

/// Errors of the sandbox runtime.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// `bwrap` is not on the `PATH`.
    #[error("kubesim exec needs bubblewrap: apt-get install bubblewrap")]
    BwrapMissing,
    /// bubblewrap is installed but cannot create sandboxes on this machine.
    #[error("kubesim exec needs a working bubblewrap sandbox: {0}")]
    SandboxUnusable(String),
    /// `nsenter` (util-linux) is not on the `PATH`.
    #[error("kubesim exec needs nsenter: apt-get install util-linux")]
    NsenterMissing,
    /// No container with this ID exists (never started, stopped or removed).
    #[error("container {0} not found")]
    ContainerNotFound(String),
    /// The exec'd executable does not exist in the container (runc's wording).
    #[error("exec: \"{0}\": executable file not found in $PATH")]
    ExecutableNotFound(String),
    /// The exec request had no command.
    #[error("command must not be empty")]
    EmptyCommand,
    /// A mount path is not absolute or otherwise unusable.
    #[error("invalid mount path {path:?}: {reason}")]
    InvalidMount {
        /// The container path.
        path: String,
        /// Why it is rejected.
        reason: String,
    },
    /// bwrap could not set the sandbox up.
    #[error("failed to start sandbox for container {container}: {message}")]
    StartFailed {
        /// Container name.
        container: String,
        /// bwrap's diagnostics.
        message: String,
    },
    /// A filesystem or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl SandboxError {
    /// A short, bounded label for metrics and logs.
    pub fn category(&self) -> &'static str {
        match self {
            Self::BwrapMissing | Self::NsenterMissing | Self::SandboxUnusable(_) => "tool_missing",
            Self::ContainerNotFound(_) => "not_found",
            Self::ExecutableNotFound(_) | Self::EmptyCommand => "bad_command",
            Self::InvalidMount { .. } => "bad_mount",
            Self::StartFailed { .. } => "start_failed",
            Self::Io { .. } => "io",
        }
    }
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> SandboxError {
    let context = context.into();
    move |source| SandboxError::Io { context, source }
}

/// A container ID as the kubelet reports it: `containerd://<64 hex digits>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContainerId(String);

impl ContainerId {
    fn generate() -> Self {
        let bytes: [u8; 32] = rand::random();
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Self(format!("containerd://{hex}"))
    }

    /// Parses an ID of the form `containerd://<hex>`.
    pub fn parse(s: &str) -> Option<Self> {
        let hex = s.strip_prefix("containerd://")?;
        (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then(|| Self(s.to_string()))
    }

    /// The full ID including the `containerd://` scheme.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn hex(&self) -> &str {
        self.0.strip_prefix("containerd://").unwrap_or(&self.0)
    }
}

impl std::fmt::Display for ContainerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One volume mount of a container: a host directory (or file) bound at a container path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Host directory backing the mount; created when missing.
    pub host_path: PathBuf,
    /// Absolute path inside the container.
    pub container_path: String,
    /// Bind read-only.
    pub read_only: bool,
}

/// The kubelet-managed name resolution files of a pod (`/etc/hosts`, `/etc/resolv.conf`), bound
/// over the container's `/etc` like the kubelet does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodDns {
    /// The pod's IP.
    pub pod_ip: String,
    /// Fully qualified name (`<host>.<subdomain>.<ns>.svc.cluster.local`), when the pod has a
    /// subdomain.
    pub fqdn: Option<String>,
    /// `search` domains of resolv.conf.
    pub search: Vec<String>,
    /// Nameserver IP.
    pub nameserver: String,
}

/// Everything needed to start one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSpec {
    /// Pod namespace.
    pub namespace: String,
    /// Pod UID (the sandbox directory key).
    pub pod_uid: String,
    /// Pod name.
    pub pod_name: String,
    /// Hostname inside the container (pod `spec.hostname`, else the pod name).
    pub hostname: String,
    /// Container name.
    pub container_name: String,
    /// Image reference.
    pub image: String,
    /// Environment of the container's processes, in order (later entries win).
    pub env: Vec<(String, String)>,
    /// Volume mounts, in order.
    pub mounts: Vec<Mount>,
    /// Working directory of exec'd processes (default `/`).
    pub working_dir: Option<String>,
    /// Pod-level hosts and resolv.conf; `None` keeps the seeded files.
    pub dns: Option<PodDns>,
}

/// Options of one exec.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExecOptions {
    /// The command and its arguments (no shell involved).
    pub command: Vec<String>,
    /// Attach a stdin pipe.
    pub stdin: bool,
    /// Run under a pseudo terminal (stderr is merged into stdout).
    pub tty: bool,
}

/// A running exec'd process.
#[derive(Debug)]
pub struct ExecProcess {
    /// Its stdin, when requested.
    pub stdin: Option<ChildStdin>,
    /// Its stdout.
    pub stdout: Option<ChildStdout>,
    /// Its stderr (empty with a tty).
    pub stderr: Option<ChildStderr>,
    child: Child,
}

impl ExecProcess {
    /// Waits for the process and returns its exit code (128 + signal when killed by a signal).
    pub async fn wait(&mut self) -> Result<i32, SandboxError> {
        let status = self.child.wait().await.map_err(io_err("waiting for exec"))?;
        Ok(exit_code(status))
    }

    /// Kills the exec'd process (only the entry process; its children stay, as with `kill`).
    pub fn kill(&mut self) {
        // An already exited process is fine.
        let _ = self.child.start_kill();
    }
}

fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(sig)) => 128 + sig,
        (None, None) => 255,
    }
}

/// Output of [`Runtime::run`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOutput {
    /// Exit code.
    pub exit_code: i32,
    /// Captured stdout.
    pub stdout: Vec<u8>,
    /// Captured stderr.
    pub stderr: Vec<u8>,
}

#[derive(Debug)]
struct Container {
    id: ContainerId,
    spec: ContainerSpec,
    dir: PathBuf,
    table: MountTable,
    env: Vec<(String, String)>,
    init_pid: u32,
    pause: Mutex<Option<Child>>,
    /// Started without bubblewrap: exists (so the control plane works) but cannot run anything.
    virtual_only: bool,
}

#[derive(Debug)]
struct Inner {
    state_dir: PathBuf,
    images: DashMap<String, PathBuf>,
    containers: DashMap<String, Arc<Container>>,
    bwrap: Option<PathBuf>,
    nsenter: Option<PathBuf>,
    rootless: bool,
    /// Why the installed bubblewrap cannot be used, if it cannot.
    unusable: Option<String>,
}

/// Directories a simulated node's filesystem starts with (relative to its root).
const NODE_DIRS: &[&str] = &[
    "sys/fs/cgroup/systemd",
    "var/log",
    "var/lib",
    "var/run",
    "run",
    "etc",
    "tmp",
    "dev",
    "lib/modules",
    "usr/lib",
    "opt",
];

/// The sandbox runtime: starts, execs into, restarts and removes containers. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_else(|_| DEFAULT_PATH.to_string());
    path.split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
        .or_else(|| {
            ["/usr/bin", "/usr/sbin", "/bin", "/sbin"]
                .iter()
                .map(|d| Path::new(d).join(name))
                .find(|p| p.is_file())
        })
}

fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// Whether this machine can run sandboxes: bubblewrap and nsenter installed, and bubblewrap able
/// to create its namespaces here (checked once per process).
pub fn sandbox_available() -> bool {
    sandbox_unavailable_reason().is_none()
}

/// Why sandboxes cannot run on this machine, if they cannot.
pub fn sandbox_unavailable_reason() -> Option<String> {
    static PROBE: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    PROBE
        .get_or_init(|| {
            let Some(bwrap) = find_tool("bwrap") else {
                return Some(BWRAP_MISSING.to_string());
            };
            if find_tool("nsenter").is_none() {
                return Some(SandboxError::NsenterMissing.to_string());
            }
            probe_bwrap(&bwrap, effective_uid().is_some_and(|uid| uid != 0)).err()
        })
        .clone()
}

/// Runs a trivial sandbox with the namespaces containers use.
fn probe_bwrap(bwrap: &Path, rootless: bool) -> Result<(), String> {
    let mut cmd = std::process::Command::new(bwrap);
    cmd.args(["--ro-bind", "/usr", "/usr"]);
    for dir in rootfs::HOST_RO_DIRS {
        let p = Path::new(dir);
        match std::fs::symlink_metadata(p) {
            Ok(m) if m.file_type().is_symlink() => {
                if let Ok(target) = std::fs::read_link(p) {
                    cmd.arg("--symlink").arg(target).arg(dir);
                }
            }
            Ok(m) if m.is_dir() => {
                cmd.args(["--ro-bind", dir, dir]);
            }
            _ => {}
        }
    }
    cmd.args(["--proc", "/proc", "--dev", "/dev"]);
    if rootless {
        cmd.args(["--unshare-user", "--uid", "0", "--gid", "0"]);
    }
    cmd.args([
        "--unshare-pid",
        "--unshare-uts",
        "--unshare-ipc",
        "--",
        "/usr/bin/true",
    ]);
    match cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
    {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "bubblewrap cannot create a sandbox here: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Err(format!("bubblewrap cannot be run: {e}")),
    }
}

impl Runtime {
    /// Creates a runtime keeping all container roots and volume data under `state_dir`.
    ///
    /// When bubblewrap is installed but cannot create sandboxes here (e.g. unprivileged user
    /// namespaces are disabled), the runtime behaves like [`Runtime::new_virtual`] and execs fail
    /// with [`SandboxError::SandboxUnusable`] naming the reason.
    pub fn new(state_dir: impl Into<PathBuf>) -> Result<Self, SandboxError> {
        let state_dir = state_dir.into();
        for sub in ["pods", "pvcs"] {
            std::fs::create_dir_all(state_dir.join(sub))
                .map_err(io_err(format!("creating {}", state_dir.join(sub).display())))?;
        }
        Ok(Self {
            inner: Arc::new(Inner {
                state_dir,
                images: DashMap::new(),
                containers: DashMap::new(),
                bwrap: find_tool("bwrap"),
                nsenter: find_tool("nsenter"),
                rootless: effective_uid().is_some_and(|uid| uid != 0),
                unusable: None,
            }),
        }
        .checked())
    }

    /// Disables the tools when the probe says the sandbox cannot work here.
    fn checked(self) -> Self {
        if self.inner.bwrap.is_none() || self.inner.nsenter.is_none() {
            return self;
        }
        match sandbox_unavailable_reason() {
            None => self,
            Some(reason) => {
                tracing::warn!(%reason, "sandboxes unavailable; containers will be virtual");
                Self {
                    inner: Arc::new(Inner {
                        state_dir: self.inner.state_dir.clone(),
                        images: DashMap::new(),
                        containers: DashMap::new(),
                        bwrap: None,
                        nsenter: None,
                        rootless: self.inner.rootless,
                        unusable: Some(reason),
                    }),
                }
            }
        }
    }

    /// A runtime that never starts processes, as on a machine without bubblewrap: containers
    /// are virtual (they have IDs and count as running) and every exec fails with
    /// [`SandboxError::BwrapMissing`]. Useful for control-plane-only tests and benchmarks.
    pub fn new_virtual(state_dir: impl Into<PathBuf>) -> Result<Self, SandboxError> {
        let rt = Self::new(state_dir)?;
        Ok(Self {
            inner: Arc::new(Inner {
                state_dir: rt.inner.state_dir.clone(),
                images: DashMap::new(),
                containers: DashMap::new(),
                bwrap: None,
                nsenter: None,
                rootless: false,
                unusable: None,
            }),
        })
    }

    /// Whether bubblewrap and nsenter were found.
    pub fn available(&self) -> bool {
        self.inner.bwrap.is_some() && self.inner.nsenter.is_some()
    }

    /// The state directory.
    pub fn state_dir(&self) -> &Path {
        &self.inner.state_dir
    }

    /// Declares the contents of an image: the tree under `dir` (e.g. `dir/opt/app.tgz`) is
    /// copied into every container started from `image` afterwards. Only the container's
    /// writable directories (`/etc`, `/opt`, `/usr/local`, `/home`, ...) can carry contents.
    pub fn register_image(&self, image: &str, dir: impl Into<PathBuf>) {
        self.inner.images.insert(image.to_string(), dir.into());
    }

    /// The directory backing a PersistentVolumeClaim (created when missing). Same claim ⇒ same
    /// data, across container restarts and pod re-creation.
    pub fn pvc_dir(&self, namespace: &str, claim: &str) -> Result<PathBuf, SandboxError> {
        let dir = self
            .inner
            .state_dir
            .join("pvcs")
            .join(safe_name(namespace))
            .join(safe_name(claim));
        std::fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
        Ok(dir)
    }

    /// Deletes the data of a claim (when its volume is reclaimed).
    pub fn delete_pvc_data(&self, namespace: &str, claim: &str) -> Result<(), SandboxError> {
        let dir = self
            .inner
            .state_dir
            .join("pvcs")
            .join(safe_name(namespace))
            .join(safe_name(claim));
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(format!("removing {}", dir.display()))(e)),
        }
    }

    /// The root directory of a simulated node's own filesystem (`<state>/nodes/<node>`), seeded
    /// with the directories every Linux node has (`/sys/fs/cgroup/systemd`, `/var/log`, ...).
    /// `hostPath` volumes live here: pods on the same node share them, pods on other nodes do
    /// not, and this machine's own paths are never exposed.
    pub fn node_root(&self, node: &str) -> Result<PathBuf, SandboxError> {
        let root = self.inner.state_dir.join("nodes").join(safe_name(node));
        if !root.is_dir() {
            for d in NODE_DIRS {
                let dir = root.join(d);
                std::fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
            }
        }
        Ok(root)
    }

    /// Where the absolute node path `path` (a `hostPath` volume) is on simulated node `node`;
    /// `None` when `path` is not absolute or climbs out with `..`.
    pub fn host_path(&self, node: &str, path: &str) -> Result<Option<PathBuf>, SandboxError> {
        let Some(rel) = path.strip_prefix('/') else {
            return Ok(None);
        };
        if rel.split('/').any(|c| c == "..") {
            return Ok(None);
        }
        let root = self.node_root(node)?;
        Ok(Some(
            rel.split('/')
                .filter(|c| !c.is_empty() && *c != ".")
                .fold(root, |p, c| p.join(c)),
        ))
    }

    /// The directory of a pod (container roots, emptyDirs, logs).
    pub fn pod_dir(&self, pod_uid: &str) -> PathBuf {
        self.inner.state_dir.join("pods").join(safe_name(pod_uid))
    }

    /// The directory backing an `emptyDir` volume of a pod (created when missing).
    pub fn empty_dir(&self, pod_uid: &str, volume: &str) -> Result<PathBuf, SandboxError> {
        let dir = self.pod_dir(pod_uid).join("volumes").join(safe_name(volume));
        std::fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
        Ok(dir)
    }

    /// Path of a container's log file (what `pods/log` returns).
    pub fn log_path(&self, pod_uid: &str, container: &str) -> PathBuf {
        self.pod_dir(pod_uid)
            .join("logs")
            .join(format!("{}.log", safe_name(container)))
    }

    /// Appends output to a container's log, in the CRI log format the kubelet reads
    /// (`<RFC 3339 nano time> <stdout|stderr> F <line>` per line).
    pub async fn append_log(
        &self,
        pod_uid: &str,
        container: &str,
        stream: &str,
        text: &str,
    ) -> Result<(), SandboxError> {
        let path = self.log_path(pod_uid, container);
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(io_err("creating log dir"))?;
        }
        let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.9fZ").to_string();
        let mut data = String::new();
        for line in text.lines() {
            data.push_str(&format!("{now} {stream} F {line}\n"));
        }
        let mut f = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .await
            .map_err(io_err(format!("opening {}", path.display())))?;
        f.write_all(data.as_bytes())
            .await
            .map_err(io_err("writing log"))?;
        Ok(())
    }

    /// Starts a container: a fresh root directory, image contents, volumes, and the pause
    /// process. Returns its new ID.
    ///
    /// Without bubblewrap (or nsenter) the container is *virtual*: it gets an ID and counts as
    /// running, so pods still start, but every exec into it fails with [`SandboxError::BwrapMissing`].
    pub async fn start_container(&self, spec: ContainerSpec) -> Result<ContainerId, SandboxError> {
        let id = ContainerId::generate();
        let Some(bwrap) = self.inner.bwrap.clone().filter(|_| self.inner.nsenter.is_some()) else {
            tracing::warn!(container = %spec.container_name, "{BWRAP_MISSING}; starting a virtual container");
            let container = Arc::new(Container {
                id: id.clone(),
                dir: self
                    .pod_dir(&spec.pod_uid)
                    .join("containers")
                    .join(&id.hex()[..16]),
                spec,
                table: MountTable::default(),
                env: Vec::new(),
                init_pid: 0,
                pause: Mutex::new(None),
                virtual_only: true,
            });
            self.inner.containers.insert(id.as_str().to_string(), container);
            return Ok(id);
        };
        let dir = self
            .pod_dir(&spec.pod_uid)
            .join("containers")
            .join(&id.hex()[..16]);
        let root = dir.join("root");
        let prepared = {
            let spec = spec.clone();
            let root = root.clone();
            let image_dir = self.inner.images.get(&spec.image).map(|e| e.value().clone());
            let pod_dir = self.pod_dir(&spec.pod_uid);
            // Filesystem preparation is blocking work; no process is spawned on this thread.
            tokio::task::spawn_blocking(move || prepare_root(&spec, &root, image_dir.as_deref(), &pod_dir))
                .await
                .map_err(|e| SandboxError::Io {
                    context: "preparing container root".into(),
                    source: std::io::Error::other(e.to_string()),
                })??
        };
        let (args, table) = bwrap_args(&spec, &root, &prepared, self.inner.rootless)?;
        let mut child = Command::new(&bwrap)
            .args(&args)
            .env_clear()
            .env("PATH", DEFAULT_PATH)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(io_err(format!("spawning {}", bwrap.display())))?;
        let init_pid = match read_child_pid(&mut child).await {
            Ok(pid) => pid,
            Err(message) => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                let _ = std::fs::remove_dir_all(&dir);
                return Err(SandboxError::StartFailed {
                    container: spec.container_name.clone(),
                    message,
                });
            }
        };
        let env = if self.inner.rootless {
            rootless_env(container_env(&spec))
        } else {
            container_env(&spec)
        };
        let container = Arc::new(Container {
            id: id.clone(),
            spec,
            dir,
            table,
            env,
            init_pid,
            pause: Mutex::new(Some(child)),
            virtual_only: false,
        });
        tracing::debug!(container.id = %id, pid = init_pid, "sandbox started");
        self.inner.containers.insert(id.as_str().to_string(), container);
        Ok(id)
    }

    /// Whether the container exists and its pause process is alive.
    pub async fn is_running(&self, id: &ContainerId) -> bool {
        let Some(c) = self.container(id) else {
            return false;
        };
        if c.virtual_only {
            return true;
        }
        let mut pause = c.pause.lock().await;
        match pause.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The spec a container was started with.
    pub fn spec(&self, id: &ContainerId) -> Option<ContainerSpec> {
        self.container(id).map(|c| c.spec.clone())
    }

    fn container(&self, id: &ContainerId) -> Option<Arc<Container>> {
        self.inner
            .containers
            .get(id.as_str())
            .map(|e| Arc::clone(e.value()))
    }

    /// Stops a container: kills every process in it and deletes its private root (volumes are
    /// kept). Unknown IDs are ignored.
    pub async fn stop_container(&self, id: &ContainerId) -> Result<(), SandboxError> {
        let Some((_, c)) = self.inner.containers.remove(id.as_str()) else {
            return Ok(());
        };
        if let Some(mut child) = c.pause.lock().await.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
        if !c.virtual_only {
            wait_pid_gone(c.init_pid).await;
        }
        let dir = c.dir.clone();
        let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir)).await;
        Ok(())
    }

    /// Restarts a container: stops it and starts a new one from the same spec, with a new ID and
    /// a fresh root (non-persistent files are lost).
    pub async fn restart_container(&self, id: &ContainerId) -> Result<ContainerId, SandboxError> {
        let spec = self
            .spec(id)
            .ok_or_else(|| SandboxError::ContainerNotFound(id.to_string()))?;
        self.stop_container(id).await?;
        self.start_container(spec).await
    }

    /// IDs of the running containers of a pod.
    pub fn pod_containers(&self, pod_uid: &str) -> Vec<(String, ContainerId)> {
        self.inner
            .containers
            .iter()
            .filter(|e| e.value().spec.pod_uid == pod_uid)
            .map(|e| (e.value().spec.container_name.clone(), e.value().id.clone()))
            .collect()
    }

    /// Stops all containers of a pod and deletes the pod directory (emptyDirs, logs). PVC data
    /// is kept.
    pub async fn remove_pod(&self, pod_uid: &str) -> Result<(), SandboxError> {
        for (_, id) in self.pod_containers(pod_uid) {
            self.stop_container(&id).await?;
        }
        let dir = self.pod_dir(pod_uid);
        let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir)).await;
        Ok(())
    }

    /// Stops every container (kubesim shutdown).
    pub async fn shutdown(&self) {
        let ids: Vec<ContainerId> = self
            .inner
            .containers
            .iter()
            .map(|e| e.value().id.clone())
            .collect();
        for id in ids {
            let _ = self.stop_container(&id).await;
        }
    }

    /// Starts a process inside a running container.
    pub async fn exec(&self, id: &ContainerId, opts: &ExecOptions) -> Result<ExecProcess, SandboxError> {
        if self.inner.bwrap.is_none() {
            return Err(match &self.inner.unusable {
                Some(reason) => SandboxError::SandboxUnusable(reason.clone()),
                None => SandboxError::BwrapMissing,
            });
        }
        let nsenter = self.inner.nsenter.clone().ok_or(SandboxError::NsenterMissing)?;
        let c = self
            .container(id)
            .ok_or_else(|| SandboxError::ContainerNotFound(id.to_string()))?;
        let argv0 = opts.command.first().ok_or(SandboxError::EmptyCommand)?;
        let path_var = c
            .env
            .iter()
            .rev()
            .find(|(k, _)| k == "PATH")
            .map_or(DEFAULT_PATH, |(_, v)| v.as_str());
        if c.table.resolve_executable(argv0, path_var).is_none() {
            return Err(SandboxError::ExecutableNotFound(argv0.clone()));
        }
        let mut cmd = Command::new(&nsenter);
        cmd.arg("-t").arg(c.init_pid.to_string());
        if self.inner.rootless {
            cmd.arg("-U").arg("--preserve-credentials");
        }
        cmd.args(["-m", "-u", "-i", "-p", "-r", "-w", "--"]);
        let workdir = c.spec.working_dir.as_deref().unwrap_or("/");
        if workdir != "/" {
            cmd.args(["/usr/bin/env", "-C", workdir]);
        }
        if opts.tty {
            cmd.args([
                "/usr/bin/script",
                "-q",
                "-e",
                "-c",
                &shell_join(&opts.command),
                "/dev/null",
            ]);
        } else {
            cmd.args(&opts.command);
        }
        cmd.env_clear();
        for (k, v) in &c.env {
            cmd.env(k, v);
        }
        if opts.tty {
            cmd.env("TERM", "xterm").env("SHELL", "/bin/sh");
        }
        cmd.stdin(if opts.stdin { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(io_err("spawning nsenter"))?;
        Ok(ExecProcess {
            stdin: child.stdin.take(),
            stdout: child.stdout.take(),
            stderr: child.stderr.take(),
            child,
        })
    }

    /// Runs a command to completion, feeding `stdin` (when given) and capturing output.
    pub async fn run(
        &self,
        id: &ContainerId,
        command: &[String],
        stdin: Option<&[u8]>,
    ) -> Result<RunOutput, SandboxError> {
        let opts = ExecOptions {
            command: command.to_vec(),
            stdin: stdin.is_some(),
            tty: false,
        };
        let mut proc = self.exec(id, &opts).await?;
        let input = stdin.map(<[u8]>::to_vec);
        let mut child_stdin = proc.stdin.take();
        let feed = async move {
            if let (Some(w), Some(data)) = (child_stdin.as_mut(), input) {
                // The process may exit without reading its stdin.
                let _ = w.write_all(&data).await;
            }
            drop(child_stdin);
        };
        let mut out = proc.stdout.take();
        let mut err = proc.stderr.take();
        let read_out = async {
            let mut buf = Vec::new();
            if let Some(r) = out.as_mut() {
                let _ = r.read_to_end(&mut buf).await;
            }
            buf
        };
        let read_err = async {
            let mut buf = Vec::new();
            if let Some(r) = err.as_mut() {
                let _ = r.read_to_end(&mut buf).await;
            }
            buf
        };
        let ((), stdout, stderr) = tokio::join!(feed, read_out, read_err);
        let exit_code = proc.wait().await?;
        Ok(RunOutput {
            exit_code,
            stdout,
            stderr,
        })
    }
}

/// Quotes argv for `sh -c`.
fn shell_join(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if !a.is_empty()
                && a.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Replaces characters that could escape a directory from names used as path components.
fn safe_name(s: &str) -> String {
    let cleaned: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if cleaned.is_empty() || cleaned.chars().all(|c| c == '.') {
        format!("_{cleaned}")
    } else {
        cleaned
    }
}

fn container_env(spec: &ContainerSpec) -> Vec<(String, String)> {
    let mut env = vec![
        ("PATH".to_string(), DEFAULT_PATH.to_string()),
        ("HOSTNAME".to_string(), spec.hostname.clone()),
    ];
    for (k, v) in &spec.env {
        env.retain(|(ek, _)| ek != k);
        env.push((k.clone(), v.clone()));
    }
    if !env.iter().any(|(k, _)| k == "HOME") {
        env.push(("HOME".to_string(), "/root".to_string()));
    }
    env
}

/// In rootless mode only the container's root is mapped (to the invoking user): GNU tar, which
/// as root restores archive ownership, is told not to (it would fail with EINVAL).
fn rootless_env(mut env: Vec<(String, String)>) -> Vec<(String, String)> {
    if !env.iter().any(|(k, _)| k == "TAR_OPTIONS") {
        env.push(("TAR_OPTIONS".to_string(), "--no-same-owner".to_string()));
    }
    env
}

/// Pod-level files bound into the container.
#[derive(Debug, Default)]
struct Prepared {
    pod_files: Vec<(PathBuf, &'static str)>,
}

fn prepare_root(
    spec: &ContainerSpec,
    root: &Path,
    image_dir: Option<&Path>,
    pod_dir: &Path,
) -> Result<Prepared, SandboxError> {
    rootfs::create_root(root, &spec.hostname).map_err(io_err(format!("creating {}", root.display())))?;
    if let Some(image_dir) = image_dir {
        let skipped = rootfs::copy_image(image_dir, root).map_err(io_err(format!(
            "copying image contents from {}",
            image_dir.display()
        )))?;
        if !skipped.is_empty() {
            tracing::warn!(image = %spec.image, ?skipped, "image paths outside the writable directories are ignored");
        }
    }
    for m in &spec.mounts {
        if !m.host_path.exists() {
            std::fs::create_dir_all(&m.host_path)
                .map_err(io_err(format!("creating volume dir {}", m.host_path.display())))?;
        }
    }
    let mut prepared = Prepared::default();
    if let Some(dns) = &spec.dns {
        std::fs::create_dir_all(pod_dir).map_err(io_err("creating pod dir"))?;
        let hosts = pod_dir.join("etc-hosts");
        if !hosts.exists() {
            let mut text = String::from(
                "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
                 fe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n",
            );
            match &dns.fqdn {
                Some(fqdn) => text.push_str(&format!("{}\t{}\t{}\n", dns.pod_ip, fqdn, spec.hostname)),
                None => text.push_str(&format!("{}\t{}\n", dns.pod_ip, spec.hostname)),
            }
            std::fs::write(&hosts, text).map_err(io_err("writing etc-hosts"))?;
        }
        let resolv = pod_dir.join("resolv.conf");
        if !resolv.exists() {
            let text = format!(
                "search {}\nnameserver {}\noptions ndots:5\n",
                dns.search.join(" "),
                dns.nameserver
            );
            std::fs::write(&resolv, text).map_err(io_err("writing resolv.conf"))?;
        }
        let hostname = pod_dir.join("etc-hostname");
        std::fs::write(&hostname, format!("{}\n", spec.hostname)).map_err(io_err("writing hostname"))?;
        prepared.pod_files = vec![
            (hosts, "/etc/hosts"),
            (resolv, "/etc/resolv.conf"),
            (hostname, "/etc/hostname"),
        ];
    }
    Ok(prepared)
}

fn bwrap_args(
    spec: &ContainerSpec,
    root: &Path,
    prepared: &Prepared,
    rootless: bool,
) -> Result<(Vec<String>, MountTable), SandboxError> {
    let mut args: Vec<String> = Vec::new();
    let mut table = MountTable::default();
    let push = |args: &mut Vec<String>, flag: &str, src: &str, dst: &str| {
        args.push(flag.to_string());
        args.push(src.to_string());
        args.push(dst.to_string());
    };
    push(&mut args, "--ro-bind", "/usr", "/usr");
    table.binds.push(("/usr".into(), PathBuf::from("/usr")));
    for dir in rootfs::HOST_RO_DIRS {
        let p = Path::new(dir);
        match std::fs::symlink_metadata(p) {
            Ok(m) if m.file_type().is_symlink() => {
                if let Ok(target) = std::fs::read_link(p) {
                    let target = target.to_string_lossy().to_string();
                    push(&mut args, "--symlink", &target, dir);
                    table
                        .symlinks
                        .push((dir.to_string(), target.trim_start_matches('/').to_string()));
                }
            }
            Ok(m) if m.is_dir() => {
                push(&mut args, "--ro-bind", dir, dir);
                table.binds.push((dir.to_string(), p.to_path_buf()));
            }
            _ => {}
        }
    }
    args.extend(["--proc", "/proc", "--dev", "/dev"].map(String::from));
    for dir in rootfs::WRITABLE_DIRS {
        let host = root.join(dir);
        let dst = format!("/{dir}");
        push(&mut args, "--bind", &host.to_string_lossy(), &dst);
        table.binds.push((dst, host));
    }
    let mut user_paths = Vec::new();
    for m in &spec.mounts {
        let dst = rootfs::normalize(&m.container_path).ok_or_else(|| SandboxError::InvalidMount {
            path: m.container_path.clone(),
            reason: "must be an absolute path".into(),
        })?;
        if dst == "/" || dst == "/proc" || dst == "/dev" {
            return Err(SandboxError::InvalidMount {
                path: m.container_path.clone(),
                reason: "cannot mount over a system directory".into(),
            });
        }
        let flag = if m.read_only { "--ro-bind" } else { "--bind" };
        push(&mut args, flag, &m.host_path.to_string_lossy(), &dst);
        table.binds.push((dst.clone(), m.host_path.clone()));
        user_paths.push(dst);
    }
    for (host, dst) in &prepared.pod_files {
        if user_paths.iter().any(|p| p == dst) {
            continue;
        }
        push(&mut args, "--bind", &host.to_string_lossy(), dst);
        table.binds.push((dst.to_string(), host.clone()));
    }
    if rootless {
        args.extend(["--unshare-user", "--uid", "0", "--gid", "0"].map(String::from));
    }
    args.extend(["--unshare-pid", "--unshare-uts", "--unshare-ipc", "--hostname"].map(String::from));
    args.push(spec.hostname.clone());
    args.extend(
        [
            "--die-with-parent",
            "--info-fd",
            "1",
            "--chdir",
            "/",
            "--",
            "/usr/bin/sh",
            "-c",
            "echo ready >&2 && exec /usr/bin/sleep infinity",
        ]
        .map(String::from),
    );
    Ok((args, table))
}

/// Waits (bounded, about 5 s) until a process is gone or a zombie. The kernel kills and reaps
/// every member of a PID namespace before its init becomes a zombie, so once the container's init
/// is gone, all of the container's processes are.
async fn wait_pid_gone(pid: u32) {
    let stat = format!("/proc/{pid}/stat");
    for _ in 0..500 {
        match tokio::fs::read_to_string(&stat).await {
            Err(_) => return,
            Ok(s) => {
                let state = s
                    .rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().next());
                if matches!(state, Some("Z" | "X")) {
                    return;
                }
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    tracing::warn!(pid, "sandbox init did not exit");
}

/// Reads bwrap's `--info-fd` JSON from its stdout and extracts `child-pid`, then waits for the
/// pause command's `ready` on stderr. bwrap writes the JSON as soon as it has cloned, before the
/// mounts are complete, and closes the fd; `ready` comes once the sandbox is fully set up. Other
/// stderr lines (bwrap's diagnostics) are returned as the error.
async fn read_child_pid(child: &mut Child) -> Result<u32, String> {
    let mut stdout = child.stdout.take().ok_or("no stdout")?;
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let mut json = Vec::new();
    let _ = stdout.read_to_end(&mut json).await;
    let mut reader = BufReader::new(stderr);
    let mut diagnostics = String::new();
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line).await {
            Ok(0) | Err(_) => return Err(diagnostics.trim().to_string()),
            Ok(_) => {}
        }
        if line.trim_end() == "ready" {
            break;
        }
        diagnostics.push_str(&line);
    }
    // Keep draining stderr so a late write by bwrap never hits a closed pipe.
    tokio::spawn(async move {
        let mut sink = Vec::new();
        let _ = reader.read_to_end(&mut sink).await;
    });
    let value: serde_json::Value =
        serde_json::from_slice(&json).map_err(|e| format!("bad bwrap info: {e}"))?;
    value
        .get("child-pid")
        .and_then(serde_json::Value::as_u64)
        .and_then(|p| u32::try_from(p).ok())
        .ok_or_else(|| "bwrap info without child-pid".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids_look_like_containerd_ids() {
        let id = ContainerId::generate();
        assert!(id.as_str().starts_with("containerd://"));
        assert_eq!(id.hex().len(), 64);
        assert_eq!(ContainerId::parse(id.as_str()), Some(id.clone()));
        assert_eq!(ContainerId::parse("docker://abc"), None);
        assert_ne!(ContainerId::generate(), id);
    }

    #[test]
    fn shell_join_quotes_what_needs_quoting() {
        let argv: Vec<String> = ["echo", "a b", "it's", ""]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(shell_join(&argv), r#"echo 'a b' 'it'\''s' ''"#);
    }

    #[test]
    fn safe_name_cannot_escape() {
        assert_eq!(safe_name("../x"), ".._x");
        assert_eq!(safe_name(".."), "_..");
        assert_eq!(safe_name("p-ab.c"), "p-ab.c");
    }

    #[test]
    fn env_has_pod_defaults_and_user_overrides() {
        let spec = ContainerSpec {
            namespace: "ns".into(),
            pod_uid: "u".into(),
            pod_name: "p".into(),
            hostname: "p".into(),
            container_name: "c".into(),
            image: "i".into(),
            env: vec![("PATH".into(), "/x".into()), ("A".into(), "1".into())],
            mounts: vec![],
            working_dir: None,
            dns: None,
        };
        let env = container_env(&spec);
        assert!(env.contains(&("PATH".into(), "/x".into())));
        assert!(!env.contains(&("PATH".into(), DEFAULT_PATH.into())));
        assert!(env.contains(&("HOSTNAME".into(), "p".into())));
        assert!(env.contains(&("HOME".into(), "/root".into())));
        assert!(env.contains(&("A".into(), "1".into())));
        let rootless = rootless_env(env);
        assert!(rootless.contains(&("TAR_OPTIONS".into(), "--no-same-owner".into())));
    }
}
