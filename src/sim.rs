//! Assembling a complete kubesim for the `sim` (and later `demo`) subcommands: the API server plus
//! its node side — scheduler, StatefulSet controller, PVC binder, endpoints and a kubelet whose
//! containers are bubblewrap sandboxes under a state directory.

use std::path::PathBuf;

/// Errors preparing the simulated nodes.
#[derive(Debug, thiserror::Error)]
pub enum NodeSetupError {
    /// The temporary state directory could not be created.
    #[error("cannot create a state directory for simulated containers: {0}")]
    TempDir(#[source] std::io::Error),
    /// The container runtime could not be initialised.
    #[error("cannot initialise the simulated container runtime in {dir}: {source}")]
    Runtime {
        /// The state directory.
        dir: PathBuf,
        /// Cause.
        #[source]
        source: kubesim::sandbox::SandboxError,
    },
    /// The example setup packages could not be built.
    #[error(transparent)]
    Packages(#[from] crate::examples::PackageError),
}

/// The simulated nodes' container runtime and where it keeps its files. Dropping it removes a
/// temporary state directory (a directory given by the user is kept).
#[derive(Debug)]
pub struct NodeSetup {
    runtime: kubesim::sandbox::Runtime,
    _temp: Option<tempfile::TempDir>,
}

impl NodeSetup {
    /// Prepares the runtime in `state_dir`, or in a fresh temporary directory.
    ///
    /// # Errors
    /// When the directory cannot be created or the runtime cannot be initialised there.
    pub fn new(state_dir: Option<PathBuf>) -> Result<Self, NodeSetupError> {
        let (dir, temp) = match state_dir {
            Some(dir) => (dir, None),
            None => {
                let t = tempfile::Builder::new()
                    .prefix("kubesim-")
                    .tempdir()
                    .map_err(NodeSetupError::TempDir)?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        let runtime =
            kubesim::sandbox::Runtime::new(dir.clone()).map_err(|source| NodeSetupError::Runtime {
                dir: dir.clone(),
                source,
            })?;
        crate::examples::register_example_images(&runtime, &dir)?;
        Ok(Self { runtime, _temp: temp })
    }

    /// The container runtime (to register image contents, for instance).
    pub fn runtime(&self) -> &kubesim::sandbox::Runtime {
        &self.runtime
    }

    /// Adds the node side (controllers and the `pods/exec`/`pods/log` handler) to `config`.
    pub fn sim_config(&self, config: kubesim::SimConfig) -> kubesim::SimConfig {
        let (config, _control) = kubesim::controllers::install(
            config,
            self.runtime.clone(),
            kubesim::controllers::NodeConfig::default(),
        );
        config
    }
}
