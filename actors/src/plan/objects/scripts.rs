//! Shell scripts embedded in the pod template: the `init` container's persisted-directory copy
//! (spec 3.7) and the `app` container's `postStart` hook (spec 3.7).
//!
//! Both deliberately improve on upstream (spec 7 R16): the init script fails (non-zero exit, no
//! marker) when the copy fails, so a half-populated PV is retried instead of silently used; the
//! `postStart` hook waits for `/etc/resolv.conf` with a real bound.

/// Marker written on the member PV once the persisted directories were copied.
pub const INIT_MARKER: &str = "/mnt/etc/kubedirector.init";
/// rsync log file on the member PV.
pub const INIT_LOG: &str = "/mnt/etc/kubedirector-init.log";
/// rsync progress file on the member PV (read for `storageInitProgress`, spec 3.10).
pub const INIT_PROGRESS_LOG: &str = "/mnt/etc/kubedirector-init-progress-bar.log";
/// Log file of the `postStart` hook.
pub const POST_START_LOG: &str = "/tmp/kd-postcluster.log";
/// Seconds the `postStart` hook waits for a non-empty `/etc/resolv.conf`.
pub const POST_START_RESOLV_WAIT_SECS: u32 = 60;

/// Single-quotes `s` for a POSIX shell.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The init container script copying `persist_dirs` (with parents, preserving attributes, one
/// filesystem) onto the member PV mounted at `/mnt`, unless the marker already exists.
///
/// rsync is used when it supports every option we need (then progress is reported in
/// [`INIT_PROGRESS_LOG`]), `cp --parent -ax` otherwise. A persisted dir the image does not have
/// is skipped (upstream's copy fails on it and ignores the failure; the subPath mount creates it
/// empty), e.g. `/opt/guestconfig` of the new setup layout in an image that never had one.
/// The dirs are copied relative to `/` (GNU cp 9.1 fails `--parents -a` on absolute sources
/// three levels deep, e.g. `/var/lib/kv`, after copying them).
/// Unlike upstream, a failure to copy a dir that exists exits non-zero without writing the marker
/// (spec 7 R16), so the kubelet retries the init container.
pub fn init_container_script(persist_dirs: &[String]) -> String {
    let dirs: Vec<String> = persist_dirs.iter().map(|d| shell_quote(d)).collect();
    let dirs = dirs.join(" ");
    format!(
        "set -u\n\
         if [ -f {INIT_MARKER} ]; then exit 0; fi\n\
         mkdir -p /mnt/etc || exit 1\n\
         cd / || exit 1\n\
         dirs=()\n\
         for d in {dirs}; do if [ -e \"$d\" ]; then dirs+=(\"${{d#/}}\"); fi; done\n\
         use_rsync=1\n\
         command -v rsync >/dev/null 2>&1 || use_rsync=0\n\
         if [ $use_rsync -eq 1 ]; then\n\
         \x20 for opt in --log-file --info --relative --no-inc-recursive; do\n\
         \x20   rsync --help 2>&1 | grep -q -e \"$opt\" || use_rsync=0\n\
         \x20 done\n\
         fi\n\
         if [ ${{#dirs[@]}} -eq 0 ]; then\n\
         \x20 :\n\
         elif [ $use_rsync -eq 1 ]; then\n\
         \x20 rsync --log-file={INIT_LOG} --info=progress2 --relative -ax --no-inc-recursive \"${{dirs[@]}}\" /mnt \
         >{INIT_PROGRESS_LOG} 2>&1 || {{ echo 'kubedirector: copying persisted directories failed' >&2; exit 1; }}\n\
         else\n\
         \x20 cp --parent -ax \"${{dirs[@]}}\" /mnt || {{ echo 'kubedirector: copying persisted directories failed' >&2; exit 1; }}\n\
         fi\n\
         touch {INIT_MARKER} || exit 1\n\
         exit 0\n"
    )
}

/// The app container's `postStart` script: waits (bounded) for a non-empty `/etc/resolv.conf`,
/// rewrites its first `search D …` line to `search <clusterService>.D D …` so short member names
/// resolve, then `chmod 755 /run`; always exits 0.
pub fn post_start_script(cluster_service: &str) -> String {
    let svc = shell_quote(cluster_service);
    format!(
        "exec >>{POST_START_LOG} 2>&1\n\
         retries={POST_START_RESOLV_WAIT_SECS}\n\
         while [ ! -s /etc/resolv.conf ] && [ $retries -gt 0 ]; do sleep 1; retries=$((retries-1)); done\n\
         if [ -s /etc/resolv.conf ]; then\n\
         \x20 svc={svc}\n\
         \x20 sed \"0,/^search /s/^search \\([^ ]*\\)/search ${{svc}}.\\1 \\1/\" /etc/resolv.conf >/tmp/kd-resolv.conf \
         && cat /tmp/kd-resolv.conf >/etc/resolv.conf\n\
         \x20 rm -f /tmp/kd-resolv.conf\n\
         else\n\
         \x20 echo 'kubedirector: /etc/resolv.conf still empty, not rewritten'\n\
         fi\n\
         chmod 755 /run\n\
         exit 0\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_script_copies_every_dir_and_fails_on_copy_error() {
        let s = init_container_script(&["/etc".to_owned(), "/opt".to_owned()]);
        assert!(s.contains("if [ -f /mnt/etc/kubedirector.init ]; then exit 0; fi"));
        assert!(s.contains("for d in '/etc' '/opt'; do"));
        assert!(s.contains("--relative -ax --no-inc-recursive \"${dirs[@]}\" /mnt"));
        assert!(s.contains("cp --parent -ax \"${dirs[@]}\" /mnt || {"));
        assert!(s.contains("--log-file=/mnt/etc/kubedirector-init.log"));
        assert!(s.contains(">/mnt/etc/kubedirector-init-progress-bar.log"));
        // The marker is written after both copy branches, and each branch exits 1 on failure.
        let marker = s.rfind("touch /mnt/etc/kubedirector.init").unwrap_or(0);
        assert!(marker > s.find("cp --parent").unwrap_or(usize::MAX));
        assert_eq!(s.matches("exit 1; }").count(), 2);
    }

    /// Runs the script with real bash, `/mnt` moved to a temporary directory.
    fn run_init(dirs: &[String], mnt: &std::path::Path) -> std::process::Output {
        let script = init_container_script(dirs).replace("/mnt", &mnt.display().to_string());
        std::process::Command::new("bash")
            .arg("-c")
            .arg(script)
            .output()
            .expect("bash runs")
    }

    #[test]
    fn init_script_skips_dirs_the_image_lacks_and_copies_the_rest() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let src = tmp.path().join("img");
        std::fs::create_dir_all(src.join("etc/app")).expect("mkdir");
        std::fs::write(src.join("etc/app/conf"), "x=1").expect("write");
        let mnt = tmp.path().join("mnt");
        std::fs::create_dir_all(&mnt).expect("mkdir");
        let present = src.join("etc").display().to_string();
        let missing = src.join("opt/guestconfig").display().to_string();
        let out = run_init(&[present.clone(), missing], &mnt);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let copied = mnt.join(present.trim_start_matches('/')).join("app/conf");
        assert_eq!(std::fs::read_to_string(copied).expect("copied"), "x=1");
        assert!(mnt.join("etc/kubedirector.init").exists(), "marker written");
        // Second start: the marker short-circuits the copy.
        std::fs::remove_dir_all(&src).expect("rm");
        assert!(run_init(&[present], &mnt).status.success());
    }

    #[test]
    fn init_script_fails_without_marker_when_the_volume_is_unusable() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let src = tmp.path().join("etc");
        std::fs::create_dir_all(&src).expect("mkdir");
        // A regular file where the volume should be: nothing can be copied onto it.
        let mnt = tmp.path().join("mnt");
        std::fs::write(&mnt, "").expect("write");
        let out = run_init(&[src.display().to_string()], &mnt);
        assert!(!out.status.success());
    }

    #[test]
    fn shell_quote_escapes_single_quotes() {
        assert_eq!(shell_quote("/a'b"), r"'/a'\''b'");
    }

    #[test]
    fn post_start_script_rewrites_search_line_with_bounded_wait() {
        let s = post_start_script("kdhs-abcde");
        assert!(s.contains("svc='kdhs-abcde'"));
        assert!(s.contains("retries=60"));
        assert!(s.contains("[ $retries -gt 0 ]"));
        assert!(s.contains("s/^search \\([^ ]*\\)/search ${svc}.\\1 \\1/"));
        assert!(s.contains("chmod 755 /run"));
        assert!(s.trim_end().ends_with("exit 0"));
        assert!(s.starts_with("exec >>/tmp/kd-postcluster.log"));
    }
}
