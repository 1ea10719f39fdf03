//! `kubedirector crds`: prints the four CustomResourceDefinitions as a YAML stream.

use std::io::Write;

/// Runs `kubedirector crds`; returns the exit status.
pub fn run(stdout: &mut dyn Write, stderr: &mut dyn Write) -> u8 {
    match kubedirector_crds::crds_yaml() {
        Ok(yaml) => match stdout.write_all(yaml.as_bytes()) {
            Ok(()) => 0,
            // `kubedirector crds | head` closes the pipe early: not an error worth reporting.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
            Err(e) => {
                let _ = writeln!(stderr, "error: cannot write CRDs: {e}");
                1
            }
        },
        Err(e) => {
            let _ = writeln!(stderr, "error: cannot generate CRDs: {e}");
            1
        }
    }
}
