//! Before the demo starts anything: the simulated containers are bubblewrap sandboxes, so
//! bubblewrap must be installed and usable. Run as root on a machine with apt-get, the demo installs
//! it (and says so); otherwise it names the one command to run and stops, instead of letting every
//! pod fail later with a raw exec error.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The command a user runs to install bubblewrap.
pub const INSTALL_HINT: &str = "sudo apt-get install -y bubblewrap";

/// What to do about bubblewrap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Installed: nothing to do.
    Ready,
    /// Missing, and we may install it ourselves (root, apt-get present).
    Install,
    /// Missing and we cannot install it: the message to print.
    Refuse(String),
}

/// Decides from the facts (pure, for the tests).
pub fn decide(bwrap_found: bool, is_root: bool, apt_get_found: bool) -> Action {
    match (bwrap_found, is_root, apt_get_found) {
        (true, _, _) => Action::Ready,
        (false, true, true) => Action::Install,
        (false, false, true) => Action::Refuse(format!(
            "bubblewrap (bwrap) is not installed; the simulated containers need it. Install it with:  {INSTALL_HINT}"
        )),
        (false, _, false) => Action::Refuse(
            "bubblewrap (bwrap) is not installed; the simulated containers need it. Install your \
             distribution's bubblewrap package (Debian/Ubuntu: sudo apt-get install -y bubblewrap)"
                .to_string(),
        ),
    }
}

/// A program on `PATH` or in the usual system directories (where kubesim looks too).
fn find(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .filter(|d| !d.is_empty())
        .chain(["/usr/bin", "/usr/sbin", "/bin", "/sbin"])
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file());
    found
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").ok().and_then(|s| {
        let line = s.lines().find(|l| l.starts_with("Uid:"))?.to_string();
        line.split_whitespace().nth(2)?.parse::<u32>().ok()
    }) == Some(0)
}

/// Makes sure bubblewrap is installed and usable; `say` prints a progress line. The error is the
/// complete message for the user.
///
/// # Errors
/// When bubblewrap is missing and cannot be installed, or cannot create its sandboxes here.
pub fn ensure_bubblewrap(say: &dyn Fn(&str)) -> Result<(), String> {
    match decide(find("bwrap").is_some(), is_root(), find("apt-get").is_some()) {
        Action::Ready => {}
        Action::Refuse(msg) => return Err(msg),
        Action::Install => {
            say("demo: bubblewrap (bwrap) is missing; installing it: apt-get install -y bubblewrap (running as root)");
            if !apt_install() {
                say("demo: apt-get install failed; refreshing the package lists (apt-get update) and retrying");
                let updated = run_quiet(Command::new("apt-get").args(["update", "-q"]));
                if !updated || !apt_install() {
                    return Err(format!(
                        "could not install bubblewrap with apt-get; install it with:  {INSTALL_HINT}"
                    ));
                }
            }
            if find("bwrap").is_none() {
                return Err(format!(
                    "apt-get installed bubblewrap but bwrap is not on the PATH; install it with:  {INSTALL_HINT}"
                ));
            }
            say("demo: bubblewrap installed");
        }
    }
    // Installed; can it create the namespaces the containers use on this machine?
    match kubesim::sandbox::sandbox_unavailable_reason() {
        None => Ok(()),
        Some(reason) => Err(format!(
            "the simulated containers cannot run on this machine: {reason}"
        )),
    }
}

fn apt_install() -> bool {
    run_quiet(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends", "bubblewrap"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

/// Runs `cmd` with its output on stderr (stdout stays the demo's); true on success.
fn run_quiet(cmd: &mut Command) -> bool {
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::io::stderr())
        .status()
        .is_ok_and(|s| s.success())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installed_bubblewrap_needs_nothing() {
        for root in [true, false] {
            for apt in [true, false] {
                assert_eq!(decide(true, root, apt), Action::Ready);
            }
        }
    }

    #[test]
    fn root_with_apt_get_installs_it() {
        assert_eq!(decide(false, true, true), Action::Install);
    }

    #[test]
    fn otherwise_the_message_names_the_command_to_run() {
        for (root, apt) in [(false, true), (false, false), (true, false)] {
            let Action::Refuse(msg) = decide(false, root, apt) else {
                panic!("({root}, {apt}) must refuse");
            };
            assert!(msg.contains(INSTALL_HINT), "{msg}");
            assert!(msg.starts_with("bubblewrap (bwrap) is not installed"), "{msg}");
        }
    }

    #[test]
    fn programs_are_found_on_the_path_or_in_the_system_directories() {
        assert!(find("sh").is_some_and(|p| p.ends_with("sh")));
        assert!(find("definitely-not-a-program-kd").is_none());
    }
}
