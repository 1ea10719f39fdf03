//! `volumeMounts[].subPath` resolved the way the kubelet does it: relative, no `..`, and no
//! symlink (left in the volume by a container) leading out of the volume. Missing directories
//! are created one component at a time, so a symlink is never followed by `create_dir_all`.

use std::path::{Component, Path, PathBuf};

/// The host directory or file `sub` names inside the volume at `base`, created as a directory
/// when missing. Errors are the kubelet's log text (the caller wraps them in its
/// `failed to prepare subPath` status).
pub fn resolve(base: &Path, sub: &str) -> Result<PathBuf, String> {
    let rel = Path::new(sub);
    if rel.is_absolute()
        || rel
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(format!(
            "invalid subpath {sub:?}: must be a relative path without '..'"
        ));
    }
    // The volume's own directory is the kubelet's (created when missing, as before a mount).
    std::fs::create_dir_all(base).map_err(|e| format!("volume path {}: {e}", base.display()))?;
    let root = base
        .canonicalize()
        .map_err(|e| format!("volume path {}: {e}", base.display()))?;
    let mut cur = root.clone();
    for comp in rel.components() {
        let Component::Normal(name) = comp else { continue };
        let next = cur.join(name);
        match std::fs::symlink_metadata(&next) {
            Ok(md) if md.file_type().is_symlink() => {
                let target = next
                    .canonicalize()
                    .map_err(|e| format!("subpath {sub:?}: {}: {e}", next.display()))?;
                if !target.starts_with(&root) {
                    return Err(format!(
                        "subpath {:?} not within volume path {:?}",
                        target.display().to_string(),
                        root.display().to_string()
                    ));
                }
                cur = target;
            }
            Ok(_) => cur = next,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir(&next)
                    .map_err(|e| format!("subpath {sub:?}: {}: {e}", next.display()))?;
                cur = next;
            }
            Err(e) => return Err(format!("subpath {sub:?}: {}: {e}", next.display())),
        }
    }
    Ok(cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sub_paths_are_created_inside_the_volume() {
        let parent = tempfile::tempdir().unwrap();
        let fresh = parent.path().join("not-yet");
        assert!(
            resolve(&fresh, "x").unwrap().ends_with("not-yet/x"),
            "a missing volume dir is created"
        );
        let vol = tempfile::tempdir().unwrap();
        let p = resolve(vol.path(), "a/b").unwrap();
        assert_eq!(p, vol.path().canonicalize().unwrap().join("a/b"));
        assert!(p.is_dir());
        assert!(resolve(vol.path(), "../up").is_err());
        assert!(resolve(vol.path(), "/etc").is_err());
        assert!(resolve(vol.path(), "a/../../x").is_err());
    }

    #[test]
    fn symlinks_out_of_the_volume_are_refused_and_nothing_is_created_outside() {
        let vol = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), vol.path().join("escape")).unwrap();
        let e = resolve(vol.path(), "escape/new").unwrap_err();
        assert!(e.contains("not within volume path"), "{e}");
        assert!(!outside.path().join("new").exists());
        // Absolute symlink to /etc, and a relative one climbing out.
        std::os::unix::fs::symlink("/etc", vol.path().join("etc")).unwrap();
        assert!(resolve(vol.path(), "etc").is_err());
        std::os::unix::fs::symlink("../..", vol.path().join("up")).unwrap();
        assert!(resolve(vol.path(), "up").is_err());
        // A symlink staying inside the volume is followed.
        std::fs::create_dir(vol.path().join("data")).unwrap();
        std::os::unix::fs::symlink("data", vol.path().join("link")).unwrap();
        let p = resolve(vol.path(), "link/x").unwrap();
        assert_eq!(p, vol.path().canonicalize().unwrap().join("data/x"));
    }
}
