//! Our example catalog's setup packages (`deploy/examples/packages/`), built reproducibly and made
//! part of the simulated images, so the example apps configure on kubesim exactly as an app
//! written for upstream KubeDirector would on a real cluster.
//!
//! The apps in `deploy/examples/catalog/` name their package as
//! `file:///opt/kd-examples/<file>`: a tarball inside the container image (upstream's usual
//! layout). On kubesim an image's contents are a directory registered with the sandbox runtime
//! ([`kubesim::sandbox::Runtime::register_image`]); [`register_example_images`] builds the
//! tarballs and registers every image the catalog uses. The tarballs are byte-for-byte
//! reproducible (sorted entries, fixed mtime and owner, `gzip -n`).

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

/// One example setup package.
#[derive(Debug, Clone, Copy)]
pub struct ExamplePackage {
    /// File name under `/opt/kd-examples/` (the catalog's `packageURL`).
    pub file: &'static str,
    /// Top directory inside the tarball (`<dir>/startscript`).
    pub dir: &'static str,
    /// The startscript.
    pub startscript: &'static str,
}

/// Where the example images keep the packages.
pub const PACKAGE_DIR: &str = "/opt/kd-examples";

/// The packages of `deploy/examples/catalog/`.
pub const PACKAGES: [ExamplePackage; 2] = [
    ExamplePackage {
        file: "webstack-setup-2.1.tgz",
        dir: "webstack",
        startscript: include_str!("../deploy/examples/packages/webstack/webstack/startscript"),
    },
    ExamplePackage {
        file: "keyvalue-setup-0.9.tgz",
        dir: "keyvalue",
        startscript: include_str!("../deploy/examples/packages/keyvalue/keyvalue/startscript"),
    },
];

/// The images our example catalog and clusters use; each carries every example package.
pub const IMAGES: [&str; 4] = [
    "docker.io/library/python:3.12-slim",
    "docker.io/library/python:3.12-alpine",
    "docker.io/library/redis:7-alpine",
    "docker.io/library/debian:12-slim",
];

/// Errors building the packages.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    /// A file could not be written.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// `tar` or `gzip` failed.
    #[error("building {file} failed: {message}")]
    Tool {
        /// The package.
        file: &'static str,
        /// What the tool said.
        message: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PackageError + '_ {
    move |source| PackageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Builds the tarball of `pkg` (gzip'ed tar) reproducibly, using `work` as scratch space.
///
/// # Errors
/// When the scratch files cannot be written or `tar`/`gzip` fail.
pub fn build_tarball(pkg: &ExamplePackage, work: &Path) -> Result<Vec<u8>, PackageError> {
    let root = work.join(format!("src-{}", pkg.dir));
    let dir = root.join(pkg.dir);
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let script = dir.join("startscript");
    std::fs::write(&script, pkg.startscript).map_err(io(&script))?;
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .map_err(io(&script))?;
    let tool = |message: String| PackageError::Tool {
        file: pkg.file,
        message,
    };
    let tar = Command::new("tar")
        .args([
            "--sort=name",
            "--mtime=@0",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "--mode=u=rwX,go=rX",
            "-cf",
            "-",
            "-C",
        ])
        .arg(&root)
        .arg(pkg.dir)
        .output()
        .map_err(|e| tool(format!("tar: {e}")))?;
    if !tar.status.success() {
        return Err(tool(String::from_utf8_lossy(&tar.stderr).into_owned()));
    }
    let mut gzip = Command::new("gzip")
        .args(["-n", "-9", "-c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| tool(format!("gzip: {e}")))?;
    if let Some(mut stdin) = gzip.stdin.take() {
        stdin
            .write_all(&tar.stdout)
            .map_err(|e| tool(format!("gzip: {e}")))?;
    }
    let out = gzip.wait_with_output().map_err(|e| tool(format!("gzip: {e}")))?;
    if !out.status.success() {
        return Err(tool(String::from_utf8_lossy(&out.stderr).into_owned()));
    }
    Ok(out.stdout)
}

/// Writes every example package under `<dir>/opt/kd-examples/` and registers `dir` as the
/// contents of every example image. Returns the image directory.
///
/// # Errors
/// When a package cannot be built.
pub fn register_example_images(
    runtime: &kubesim::sandbox::Runtime,
    dir: &Path,
) -> Result<PathBuf, PackageError> {
    let image_root = dir.join("example-image");
    let pkg_dir = image_root.join(PACKAGE_DIR.trim_start_matches('/'));
    std::fs::create_dir_all(&pkg_dir).map_err(io(&pkg_dir))?;
    for pkg in &PACKAGES {
        let bytes = build_tarball(pkg, dir)?;
        let path = pkg_dir.join(pkg.file);
        std::fs::write(&path, bytes).map_err(io(&path))?;
    }
    for image in IMAGES {
        runtime.register_image(image, image_root.clone());
    }
    Ok(image_root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tarballs_are_reproducible_and_hold_an_executable_startscript() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        for pkg in &PACKAGES {
            let x = build_tarball(pkg, a.path()).unwrap();
            let y = build_tarball(pkg, b.path()).unwrap();
            assert_eq!(x, y, "{} is byte-for-byte reproducible", pkg.file);
            let out = a.path().join(pkg.file);
            std::fs::write(&out, &x).unwrap();
            let list = Command::new("tar").arg("tvzf").arg(&out).output().unwrap();
            let list = String::from_utf8_lossy(&list.stdout);
            let line = list
                .lines()
                .find(|l| l.ends_with(&format!("{}/startscript", pkg.dir)))
                .unwrap_or_else(|| panic!("no startscript in {list}"));
            assert!(line.starts_with("-rwx"), "{line}");
        }
    }

    #[test]
    fn every_catalog_package_url_and_image_is_provided() {
        let catalog = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/examples/catalog");
        let clusters = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/examples/clusters");
        let mut seen = 0;
        for dir in [catalog, clusters] {
            for entry in std::fs::read_dir(dir).unwrap() {
                let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
                for line in text.lines() {
                    let line = line.trim();
                    if let Some(url) = line.strip_prefix("packageURL: ") {
                        let file = url
                            .strip_prefix("file:///opt/kd-examples/")
                            .unwrap_or_else(|| panic!("unexpected package URL {url}"));
                        assert!(PACKAGES.iter().any(|p| p.file == file), "no package {file}");
                        seen += 1;
                    }
                    for key in ["defaultImageRepoTag: ", "imageRepoTag: "] {
                        if let Some(image) = line.strip_prefix(key) {
                            assert!(IMAGES.contains(&image), "image {image} is not registered");
                        }
                    }
                }
            }
        }
        assert_eq!(seen, PACKAGES.len(), "every package is used by the catalog");
    }
}
