//! Root directory layout of one sandboxed container, its seeding, image-content copies and the
//! container-path → host-path resolution used to find executables before an exec.

use std::{
    io,
    path::{Component, Path, PathBuf},
};

/// Top-level directories of a container that are private, writable and per-container (lost on a
/// container restart unless a volume is mounted over them). `usr/local` is bound at `/usr/local`.
pub(crate) const WRITABLE_DIRS: &[&str] = &[
    "etc",
    "opt",
    "tmp",
    "var",
    "home",
    "root",
    "run",
    "srv",
    "mnt",
    "usr/local",
];

/// Host directories exposed read-only inside every container (or re-created as the same symlink
/// when the host has them as symlinks, as on merged-`/usr` systems).
pub(crate) const HOST_RO_DIRS: &[&str] = &["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"];

/// Files copied from the host's `/etc` when present: enough for bash, tar, curl and Debian's
/// alternatives symlinks (`awk`, `nc`, ...) to work.
const HOST_ETC_COPIES: &[&str] = &[
    "ld.so.cache",
    "nsswitch.conf",
    "localtime",
    "bash.bashrc",
    "profile",
];

const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
bin:x:2:2:bin:/bin:/usr/sbin/nologin\n\
sys:x:3:3:sys:/dev:/usr/sbin/nologin\n\
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";

const GROUP: &str = "root:x:0:\ndaemon:x:1:\nbin:x:2:\nsys:x:3:\ntty:x:5:\nnogroup:x:65534:\n";

/// Creates the writable directory skeleton of a fresh container root and seeds `/etc`.
pub(crate) fn create_root(root: &Path, hostname: &str) -> io::Result<()> {
    for dir in WRITABLE_DIRS {
        std::fs::create_dir_all(root.join(dir))?;
    }
    for dir in [
        "var/tmp",
        "var/log",
        "var/lib",
        "run/lock",
        "usr/local/bin",
        "usr/local/lib",
    ] {
        std::fs::create_dir_all(root.join(dir))?;
    }
    set_mode(&root.join("tmp"), 0o1777)?;
    set_mode(&root.join("var/tmp"), 0o1777)?;
    let etc = root.join("etc");
    std::fs::write(etc.join("passwd"), PASSWD)?;
    std::fs::write(etc.join("group"), GROUP)?;
    std::fs::write(etc.join("hostname"), format!("{hostname}\n"))?;
    std::fs::write(etc.join("hosts"), "127.0.0.1\tlocalhost\n::1\tlocalhost\n")?;
    std::fs::write(etc.join("resolv.conf"), "nameserver 10.96.0.10\n")?;
    for name in HOST_ETC_COPIES {
        let src = Path::new("/etc").join(name);
        if src.exists() {
            // Best effort: a host file that cannot be read is simply not seeded.
            let _ = copy_tree(&src, &etc.join(name));
        }
    }
    let alternatives = Path::new("/etc/alternatives");
    if alternatives.is_dir() {
        copy_tree(alternatives, &etc.join("alternatives"))?;
    }
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// Copies the contents of an image directory into a container root. Only paths below the
/// container's writable directories can carry image contents; anything else is reported back.
pub(crate) fn copy_image(image_dir: &Path, root: &Path) -> io::Result<Vec<String>> {
    let mut skipped = Vec::new();
    for entry in std::fs::read_dir(image_dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().to_string();
        if name == "usr" {
            let local = entry.path().join("local");
            if local.is_dir() {
                copy_tree(&local, &root.join("usr/local"))?;
            }
            for sub in std::fs::read_dir(entry.path())? {
                let sub = sub?.file_name().to_string_lossy().to_string();
                if sub != "local" {
                    skipped.push(format!("/usr/{sub}"));
                }
            }
        } else if WRITABLE_DIRS.contains(&name.as_str()) {
            copy_tree(&entry.path(), &root.join(&name))?;
        } else {
            skipped.push(format!("/{name}"));
        }
    }
    Ok(skipped)
}

/// Recursively copies `src` to `dst`, preserving permissions and symlinks (merging into an
/// existing destination directory).
pub(crate) fn copy_tree(src: &Path, dst: &Path) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(src)?;
    let ft = meta.file_type();
    if ft.is_symlink() {
        let target = std::fs::read_link(src)?;
        if std::fs::symlink_metadata(dst).is_ok() {
            std::fs::remove_file(dst)?;
        }
        std::os::unix::fs::symlink(target, dst)?;
    } else if ft.is_dir() {
        std::fs::create_dir_all(dst)?;
        for entry in std::fs::read_dir(src)? {
            let entry = entry?;
            copy_tree(&entry.path(), &dst.join(entry.file_name()))?;
        }
        std::fs::set_permissions(dst, meta.permissions())?;
    } else if ft.is_file() {
        std::fs::copy(src, dst)?;
    }
    Ok(())
}

/// Lexically normalises an absolute container path (`/a/./b/../c` → `/a/c`). Returns `None` for
/// relative paths.
pub(crate) fn normalize(path: &str) -> Option<String> {
    let p = Path::new(path);
    if !p.is_absolute() {
        return None;
    }
    let mut parts: Vec<String> = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(s) => parts.push(s.to_string_lossy().to_string()),
            Component::ParentDir => {
                parts.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    Some(format!("/{}", parts.join("/")))
}

/// The container's view of the filesystem: ordered binds (later ones shadow earlier ones) and
/// top-level symlinks. Used to resolve executables on the host side before an exec.
#[derive(Debug, Clone, Default)]
pub(crate) struct MountTable {
    /// `(container path, host path)`, in mount order.
    pub(crate) binds: Vec<(String, PathBuf)>,
    /// `(container path, link target)` for top-level symlinks like `/bin -> usr/bin`.
    pub(crate) symlinks: Vec<(String, String)>,
}

impl MountTable {
    /// Maps a container path to the host path that backs it, if any mount covers it.
    pub(crate) fn host_path(&self, container_path: &str) -> Option<PathBuf> {
        let mut path = normalize(container_path)?;
        for (link, target) in &self.symlinks {
            if path == *link || path.starts_with(&format!("{link}/")) {
                let rest = &path[link.len()..];
                path = normalize(&format!("/{target}{rest}"))?;
                break;
            }
        }
        let mut best: Option<(usize, &PathBuf, &str)> = None;
        for (dest, host) in &self.binds {
            let covers = dest == "/" || path == *dest || path.starts_with(&format!("{dest}/"));
            if covers && best.is_none_or(|(len, _, _)| dest.len() >= len) {
                best = Some((dest.len(), host, dest.as_str()));
            }
        }
        let (_, host, dest) = best?;
        let rest = path[dest.len()..].trim_start_matches('/');
        Some(if rest.is_empty() {
            host.clone()
        } else {
            host.join(rest)
        })
    }

    /// Resolves `argv0` like `execvp` would inside the container, using the container's `PATH`.
    pub(crate) fn resolve_executable(&self, argv0: &str, path_var: &str) -> Option<String> {
        if argv0.contains('/') {
            let abs = if argv0.starts_with('/') {
                argv0.to_string()
            } else {
                format!("/{argv0}")
            };
            return self.is_executable(&abs).then(|| argv0.to_string());
        }
        path_var
            .split(':')
            .filter(|d| d.starts_with('/'))
            .map(|d| format!("{}/{argv0}", d.trim_end_matches('/')))
            .find(|candidate| self.is_executable(candidate))
    }

    fn is_executable(&self, container_path: &str) -> bool {
        use std::os::unix::fs::PermissionsExt;
        let Some(host) = self.host_path(container_path) else {
            return false;
        };
        // Absolute symlinks inside the host tree resolve against the host root; that matches
        // the container view for the read-only host directories and is close enough elsewhere.
        match std::fs::metadata(&host) {
            Ok(m) => m.is_file() && m.permissions().mode() & 0o111 != 0,
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_handles_dots() {
        assert_eq!(normalize("/a/./b/../c/").as_deref(), Some("/a/c"));
        assert_eq!(normalize("/").as_deref(), Some("/"));
        assert_eq!(normalize("rel/x"), None);
    }

    #[test]
    fn mount_table_prefers_longest_and_latest_bind() {
        let table = MountTable {
            binds: vec![
                ("/usr".into(), PathBuf::from("/usr")),
                ("/usr/local".into(), PathBuf::from("/r/usr/local")),
                ("/etc".into(), PathBuf::from("/r/etc")),
                ("/etc".into(), PathBuf::from("/pvc/etc")),
            ],
            symlinks: vec![("/bin".into(), "usr/bin".into())],
        };
        assert_eq!(
            table.host_path("/usr/local/bin/x"),
            Some(PathBuf::from("/r/usr/local/bin/x"))
        );
        assert_eq!(
            table.host_path("/usr/bin/env"),
            Some(PathBuf::from("/usr/bin/env"))
        );
        assert_eq!(
            table.host_path("/etc/passwd"),
            Some(PathBuf::from("/pvc/etc/passwd"))
        );
        assert_eq!(table.host_path("/bin/sh"), Some(PathBuf::from("/usr/bin/sh")));
        assert_eq!(table.host_path("/usrx"), None);
        assert_eq!(table.host_path("/usr"), Some(PathBuf::from("/usr")));
    }

    #[test]
    fn copy_image_copies_writable_dirs_and_reports_others() {
        let img = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(img.path().join("opt/pkg")).unwrap();
        std::fs::write(img.path().join("opt/pkg/a.txt"), "A").unwrap();
        std::fs::create_dir_all(img.path().join("usr/local/bin")).unwrap();
        std::fs::write(img.path().join("usr/local/bin/tool"), "T").unwrap();
        std::fs::create_dir_all(img.path().join("usr/share")).unwrap();
        std::fs::create_dir_all(img.path().join("data")).unwrap();
        let skipped = copy_image(img.path(), root.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(root.path().join("opt/pkg/a.txt")).unwrap(),
            "A"
        );
        assert_eq!(
            std::fs::read_to_string(root.path().join("usr/local/bin/tool")).unwrap(),
            "T"
        );
        let mut skipped = skipped;
        skipped.sort();
        assert_eq!(skipped, vec!["/data".to_string(), "/usr/share".to_string()]);
    }
}
