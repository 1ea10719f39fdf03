//! In-guest work as data: the shell scripts a member job feeds to `bash` on the `app` container
//! (spec 4.1), and the parser of what they print back.
//!
//! One exec per job. A member's whole initial setup (spec 4.4 steps 2, 4-12: file injections,
//! the `configure.status` check, the systemd probe, configmeta, configcli, the setup package and
//! the background `startscript --configure`) is **one** script, which then waits (bounded) for
//! `configure.status` to become final and reports it. A configure that finishes within the wait
//! costs the member a single exec (upstream: six or more, plus a 30 s poll). If it does not
//! finish, the job runs the same script again later: it is idempotent, because the in-pod
//! `configure.status` (`<containerID>=` while running, `<containerID>=<exit>` when done) decides
//! whether anything starts. That is also what makes an operator restart mid-setup safe: the new
//! job finds the running or finished configure of that container and never starts a second one.
//!
//! Two setup scripts for one container may overlap: the exec of an operator that was killed (or
//! whose exec timed out, during a slow download) goes on in the pod while the next one starts.
//! The setup script therefore holds an exclusive `flock` on `/opt/guestconfig.lock` from its start
//! to its report (the background `--configure` does not inherit it); a script that cannot get the
//! lock within the wait reports `running` and is polled again. The check of `configure.status`
//! and the start of `--configure` are thus one step per container: `--configure` runs **at most
//! once per container** whatever happens to the operator (exactly once when the container lives
//! long enough; an image without `flock` loses only the protection against overlapping execs).
//! Every script is one `{ ...; }` block, which bash parses whole before running any of it, so a
//! script cut short on its way in (the operator died while sending stdin) runs nothing.
//!
//! Output protocol (last lines of stdout): `KD-OUT <size> <base64 tail>`, `KD-ERR <size> <base64
//! tail>` (the tails of `configure.stdout`/`configure.stderr`, at most `maxLogSizeDump` bytes),
//! `KD-ERROR <base64 message>` on failure, and finally `KD-RESULT <word> [args]`.
//!
//! Deviations from upstream, on purpose: the configcli symlinks in `/usr/bin` are made only when
//! configcli is installed and are best effort (an image whose `/usr` is read-only still
//! configures); the package download uses `curl -f`, so an HTTP error is reported as a download
//! failure instead of an unreadable tarball; notification arguments are checked against a safe
//! character set before they reach the shell.

use base64::Engine as _;
use kubedirector_crds::cluster::{FileInjection, NotifyCmd};

/// Directory of the setup package in the guest.
pub const GUEST_DIR: &str = "/opt/guestconfig";
/// The configmeta file.
pub const CONFIGMETA_PATH: &str = "/etc/guestconfig/configmeta.json";
/// Where upstream's image keeps the configcli tarball.
pub const DEFAULT_CONFIGCLI_TARBALL: &str = "/home/kubedirector/configcli.tgz";

/// A member's initial setup (spec 4.4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetupJob {
    /// The member's configmeta document (compact JSON).
    pub configmeta: String,
    /// The generation that configmeta carries (`specGenerationToProcess`).
    pub generation: i64,
    /// The setup package URL; `None` for a role with file injections only.
    pub package_url: Option<String>,
    /// `useNewSetupLayout`.
    pub new_layout: bool,
    /// Whether `--configure` runs (the role's eventList is absent or lists `configure`).
    pub run_configure: bool,
    /// Whether the kdapp requires systemd (probe `systemd-journald` first).
    pub systemd: bool,
    /// Ignore an existing `configure.status` (a retry after `config error`, spec 4.4 step 4).
    pub restart: bool,
    /// The role's file injections (spec 4.10), run before anything else.
    pub file_injections: Vec<FileInjection>,
    /// `maxLogSizeDump` of the kdapp role (0 disables the tails).
    pub max_log_size: i64,
}

/// One job for one member's `app` container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GuestJob {
    /// Initial setup (spec 4.4).
    Setup(Box<SetupJob>),
    /// Write a refreshed configmeta to a configured member (spec 3.11 step 1).
    WriteConfigmeta {
        /// The generation it carries.
        generation: i64,
        /// The document.
        configmeta: String,
    },
    /// Run queued `--addnodes`/`--delnodes` notifications in order (spec 4.5).
    Notify {
        /// The queue, FIFO.
        cmds: Vec<NotifyCmd>,
        /// `maxLogSizeDump` for the stderr tail of a failure.
        max_log_size: i64,
    },
    /// Run `startscript --reconnect` after a connections change (spec 4.5, 4.8); reports like a
    /// one-command [`GuestJob::Notify`].
    Reconnect {
        /// The connection version the member holds once it succeeded.
        version: i64,
        /// `maxLogSizeDump` for the stderr tail of a failure.
        max_log_size: i64,
    },
}

impl GuestJob {
    /// Bounded label for metrics and logs.
    pub fn operation(&self) -> &'static str {
        match self {
            GuestJob::Setup(_) => "setup",
            GuestJob::WriteConfigmeta { .. } => "configmeta",
            GuestJob::Notify { .. } => "notify",
            GuestJob::Reconnect { .. } => "reconnect",
        }
    }
}

/// What a finished job reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GuestReport {
    /// Setup: `--configure` still running after the wait; run the job again later.
    Running,
    /// Setup: `systemctl status systemd-journald` failed; retry later (spec 4.4 step 5).
    SystemdNotReady,
    /// Setup finished: `exit` is the startscript's status (0 also when `--configure` was skipped by
    /// the eventList); `same_container` is false when the status file came from an earlier
    /// container of this member (a restart with persistent storage).
    Configured {
        /// Exit status of `--configure`.
        exit: i32,
        /// Whether the status file names this container.
        same_container: bool,
        /// Tails of configure.stdout / configure.stderr.
        tails: Tails,
    },
    /// Setup failed before `--configure` ran (download, unpack, configcli, malformed status).
    SetupFailed {
        /// Upstream-style error text.
        error: String,
        /// Tails.
        tails: Tails,
    },
    /// A file injection failed (spec 4.10).
    InjectionFailed {
        /// Error text.
        error: String,
    },
    /// configmeta written.
    ConfigWritten,
    /// Notifications: the first `done` commands succeeded; `failed` carries the exit status and
    /// stderr tail of the one that stopped the queue, if any.
    Notified {
        /// Number of leading commands that succeeded.
        done: usize,
        /// `(exit status, stderr tail)` of the failing command.
        failed: Option<(i32, String)>,
    },
}

/// Tails of the startscript's output (spec 4.4 step 13).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tails {
    /// Tail of configure.stdout.
    pub stdout: String,
    /// Tail of configure.stderr.
    pub stderr: String,
}

/// Single-quotes `s` for bash.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn b64(s: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// Wraps a script into one brace group: bash reads and parses it whole before running any of
/// it, so a truncated script is a syntax error instead of a partial run.
fn whole(body: String) -> String {
    format!("{{\n{body}\n}}\n")
}

/// Shell functions shared by every script: tails, reporting, failure.
fn prelude(max_log: i64) -> String {
    let max_log = max_log.max(0);
    format!(
        r#"set -u
G={GUEST_DIR}
S=$G/configure.status
kd_max={max_log}
kd_tail() {{ if [ "$kd_max" -gt 0 ] && [ -f "$1" ]; then printf '%s %s' "$(wc -c < "$1")" "$(tail -c "$kd_max" "$1" | base64 -w0)"; else printf '0 '; fi; }}
kd_report() {{ printf '\nKD-OUT %s\nKD-ERR %s\nKD-RESULT %s\n' "$(kd_tail $G/configure.stdout)" "$(kd_tail $G/configure.stderr)" "$*"; exit 0; }}
kd_fail() {{ kind=$1; shift; printf '\nKD-ERROR %s' "$(printf '%s' "$*" | base64 -w0)"; kd_report "$kind"; }}
"#
    )
}

/// The script of a member's initial setup, for container `container_id`. `configcli` is the
/// operator's configcli tarball, when it has one.
pub fn setup_script(job: &SetupJob, container_id: &str, configcli: Option<&[u8]>, wait_secs: u64) -> String {
    whole(setup_body(job, container_id, configcli, wait_secs))
}

fn setup_body(job: &SetupJob, container_id: &str, configcli: Option<&[u8]>, wait_secs: u64) -> String {
    let mut s = prelude(job.max_log_size);
    s.push_str(&format!(
        "kd_cid={}\nkd_wait={wait_secs}\n",
        sh_quote(container_id)
    ));
    s.push_str(
        r#"kd_wait_done() {
  kd_end=$(( $(date +%s) + kd_wait ))
  while :; do
    c=$(cat "$S" 2>/dev/null || true); code=${c##*=}
    if [ -n "$code" ] && [ "$c" != "$code" ]; then kd_report configured "$code" same; fi
    [ "$(date +%s)" -ge "$kd_end" ] && kd_report running
    sleep 0.2
  done
}
kd_links() {
  [ -e /usr/local/bin/configcli ] || return 0
  for l in bdvcli bd_vcli configcli; do ln -sf /usr/local/bin/configcli /usr/bin/$l 2>/dev/null; done
  for l in ccli configmacro; do [ -e /usr/local/bin/$l ] && ln -sf /usr/local/bin/$l /usr/bin/$l 2>/dev/null; done
  return 0
}
if command -v flock >/dev/null 2>&1 && { exec 9>>"$G.lock"; } 2>/dev/null; then
  flock -w $(( kd_wait + 5 )) 9 || kd_report running
fi
"#,
    );
    // Spec 4.10: file injections, in order; the first failure stops the list.
    for fi in &job.file_injections {
        let file = fi.src_url.rsplit('/').next().unwrap_or_default();
        let mut cmd = format!(
            "mkdir -p {d} && cd {d} && curl -L -sS -f -o {f} {u}",
            d = sh_quote(&fi.dest_dir),
            f = sh_quote(file),
            u = sh_quote(&fi.src_url)
        );
        if let Some(p) = &fi.permissions {
            if let Some(mode) = p.file_mode {
                cmd.push_str(&format!(" && chmod {mode:o} {}", sh_quote(file)));
            }
            if let Some(o) = &p.file_owner {
                cmd.push_str(&format!(" && chown {} {}", sh_quote(o), sh_quote(file)));
            }
            if let Some(g) = &p.file_group {
                cmd.push_str(&format!(" && chgrp {} {}", sh_quote(g), sh_quote(file)));
            }
        }
        s.push_str(&format!(
            "kd_e=$( ( {cmd} ) 2>&1 ) || kd_fail injection-failed \"$kd_e\"\ncd /\n"
        ));
    }
    let Some(url) = &job.package_url else {
        s.push_str("kd_report configured 0 same\n");
        return s;
    };
    // Spec 4.4 step 4: an existing status file decides (unless this is a retry after an error).
    if !job.restart {
        s.push_str(
            r#"if [ -f "$S" ]; then
  c=$(cat "$S")
  case "$c" in *=*) ;; *) kd_fail setup-failed "configure failed with malformed status file";; esac
  id=${c%=*}; code=${c##*=}
  if [ -z "$code" ]; then
    [ "$id" = "$kd_cid" ] && kd_wait_done
  elif [ "$id" = "$kd_cid" ]; then
    kd_report configured "$code" same
  else
    kd_links; kd_report configured "$code" other
  fi
fi
"#,
        );
    }
    if job.systemd {
        s.push_str(
            "systemctl status systemd-journald > /tmp/journald-status.out 2>&1 || kd_report systemd-not-ready\n",
        );
    }
    // Step 7: configmeta.
    let chmod = if job.new_layout {
        " && chmod 700 /etc/guestconfig"
    } else {
        ""
    };
    s.push_str(&format!(
        "kd_e=$( (mkdir -p /etc/guestconfig{chmod} && printf '%s' {} | base64 -d > {CONFIGMETA_PATH}) 2>&1 ) || kd_fail setup-failed \"failed to write configmeta: $kd_e\"\n",
        sh_quote(&b64(job.configmeta.as_bytes()))
    ));
    // Step 8-9: configcli, unless already installed.
    if let Some(tgz) = configcli {
        let (arg, prefix) = if job.new_layout {
            (" --new", "/usr/local")
        } else {
            ("", "/usr")
        };
        s.push_str(&format!(
            r#"if [ ! -e /usr/local/bin/configcli ] && [ ! -e /usr/bin/configcli ]; then
  kd_e=$( (printf '%s' {tgz} | base64 -d > /tmp/configcli.tgz && cd /tmp && tar xzf configcli.tgz && chmod u+x /tmp/configcli-*/install && /tmp/configcli-*/install{arg} && rm -rf /tmp/configcli-* /tmp/configcli.tgz && ln -sf {prefix}/bin/configcli {prefix}/bin/bdvcli && ln -sf {prefix}/bin/configcli {prefix}/bin/bd_vcli) 2>&1 ) || kd_fail setup-failed "failed to install configcli: $kd_e"
fi
"#,
            tgz = sh_quote(&b64(tgz))
        ));
    }
    if job.new_layout {
        s.push_str("kd_links\n");
    }
    // Step 10: the setup package.
    s.push_str(&format!(
        r#"kd_e=$( (mkdir -p $G && chmod 700 $G && rm -rf $G/* && cd $G && curl -L -sS -f -o appconfig.tgz {url}) 2>&1 ) || kd_fail setup-failed "failed to download setup package: $kd_e"
kd_e=$( (cd $G && tar xzf appconfig.tgz && rm -f appconfig.tgz && chmod u+x $G/*/startscript) 2>&1 ) || kd_fail setup-failed "failed to unpack setup package: $kd_e"
"#,
        url = sh_quote(url)
    ));
    // Step 11-12: configure in the background, then wait for it.
    if !job.run_configure {
        s.push_str("kd_report configured 0 same\n");
        return s;
    }
    s.push_str(
        r#"rm -f $G/configure.*
printf '%s=' "$kd_cid" > "$S"
nohup sh -c 'G=/opt/guestconfig; $G/*/startscript --configure > $G/configure.stdout 2> $G/configure.stderr; printf "%s" $? >> $G/configure.status' >/dev/null 2>&1 9>&- &
kd_wait_done
"#,
    );
    s
}

/// The script writing a refreshed configmeta (spec 3.11 step 1).
pub fn configmeta_script(configmeta: &str) -> String {
    let mut s = prelude(0);
    s.push_str(&format!(
        "kd_e=$( (mkdir -p /etc/guestconfig && printf '%s' {} | base64 -d > {CONFIGMETA_PATH}) 2>&1 ) || kd_fail setup-failed \"$kd_e\"\nkd_report config-written\n",
        sh_quote(&b64(configmeta.as_bytes()))
    ));
    whole(s)
}

/// Whether a notification argument may be handed to the shell unquoted (spec 4.5 runs the
/// arguments joined with spaces through bash, on purpose: `--nodegroup 1` becomes two words).
fn safe_argument(a: &str) -> bool {
    a.chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ',' | ' ' | '=' | ':'))
}

/// The script running the queued notifications in order, stopping at the first failure.
/// `None` when an argument carries characters outside the safe set.
pub fn notify_script(cmds: &[NotifyCmd], max_log: i64) -> Option<String> {
    let mut s = prelude(max_log);
    s.push_str("kd_max_n=$kd_max\n");
    for (i, cmd) in cmds.iter().enumerate() {
        if !cmd.arguments.iter().all(|a| safe_argument(a)) {
            return None;
        }
        s.push_str(&format!(
            "$G/*/startscript {} > /tmp/kd-notify.out 2> /tmp/kd-notify.err; rc=$?\nif [ $rc -ne 0 ]; then printf '\\nKD-ERR %s\\nKD-RESULT notified {i} %s\\n' \"$(kd_tail /tmp/kd-notify.err)\" \"$rc\"; exit 0; fi\n",
            cmd.arguments.join(" ")
        ));
    }
    s.push_str(&format!("printf '\\nKD-RESULT notified {}\\n'\n", cmds.len()));
    Some(whole(s))
}

/// Decodes a `KD-OUT`/`KD-ERR` tail: `<size> <base64>`. A tail cut from a longer file starts at
/// the first line boundary when it has one (spec 4.4 step 13).
fn decode_tail(field: &str) -> String {
    let mut parts = field.splitn(2, ' ');
    let size: usize = parts.next().and_then(|n| n.trim().parse().ok()).unwrap_or(0);
    let data = parts
        .next()
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b.trim()).ok())
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&data).into_owned();
    if size > data.len() {
        if let Some(i) = text.find('\n') {
            if i + 1 < text.len() {
                return text[i + 1..].to_owned();
            }
        }
    }
    text
}

/// Parses a script's stdout. `Err` carries a description of unexpected output.
pub fn parse_report(stdout: &str) -> Result<GuestReport, String> {
    let mut tails = Tails::default();
    let mut error = String::new();
    let mut result = None;
    for line in stdout.lines() {
        if let Some(rest) = line.strip_prefix("KD-OUT ") {
            tails.stdout = decode_tail(rest);
        } else if let Some(rest) = line.strip_prefix("KD-ERR ") {
            tails.stderr = decode_tail(rest);
        } else if let Some(rest) = line.strip_prefix("KD-ERROR ") {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(rest.trim())
                .unwrap_or_default();
            error = String::from_utf8_lossy(&raw).trim_end().to_owned();
        } else if let Some(rest) = line.strip_prefix("KD-RESULT ") {
            result = Some(rest.split_whitespace().map(str::to_owned).collect::<Vec<_>>());
        }
    }
    let Some(words) = result else {
        return Err(format!(
            "no result line in guest output: {:?}",
            truncate(stdout, 200)
        ));
    };
    let word = |i: usize| words.get(i).map(String::as_str).unwrap_or_default();
    let num = |i: usize| {
        word(i)
            .parse::<i64>()
            .map_err(|_| format!("bad number in {words:?}"))
    };
    Ok(match word(0) {
        "running" => GuestReport::Running,
        "systemd-not-ready" => GuestReport::SystemdNotReady,
        "configured" => GuestReport::Configured {
            exit: i32::try_from(num(1)?).unwrap_or(i32::MAX),
            same_container: word(2) != "other",
            tails,
        },
        "setup-failed" => GuestReport::SetupFailed { error, tails },
        "injection-failed" => GuestReport::InjectionFailed { error },
        "config-written" => GuestReport::ConfigWritten,
        "notified" => GuestReport::Notified {
            done: usize::try_from(num(1)?).unwrap_or(0),
            failed: match words.get(2) {
                Some(rc) => Some((rc.parse().unwrap_or(-1), tails.stderr)),
                None => None,
            },
        },
        other => return Err(format!("unknown guest result {other:?}")),
    })
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
#[path = "script_tests.rs"]
mod tests;
