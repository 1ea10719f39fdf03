//! Writes the generated CRDs to `deploy/crds/` (one file per CRD).
//!
//! Run with `cargo run -p kubedirector-crds --features crdgen --bin crdgen [OUT_DIR]`.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let out_dir = std::env::args_os().nth(1).map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("deploy")
            .join("crds")
    });
    let crds = match kubedirector_crds::crds() {
        Ok(crds) => crds,
        Err(e) => {
            eprintln!("crdgen: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = std::fs::create_dir_all(&out_dir) {
        eprintln!("crdgen: cannot create {}: {e}", out_dir.display());
        return ExitCode::FAILURE;
    }
    for crd in &crds {
        let path = out_dir.join(kubedirector_crds::crd::crd_file_name(crd));
        let yaml = match kubedirector_crds::crd::crd_yaml(crd) {
            Ok(y) => y,
            Err(e) => {
                eprintln!("crdgen: {e}");
                return ExitCode::FAILURE;
            }
        };
        if let Err(e) = std::fs::write(&path, yaml) {
            eprintln!("crdgen: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        println!("wrote {}", path.display());
    }
    ExitCode::SUCCESS
}
