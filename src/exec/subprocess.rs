//! Starting an external stage program: under the supervisor (`efrlhf
//! supervise`, see `supervise.rs`), so the program and everything it starts
//! die with the stage, and the runner can stop them all.

use std::collections::BTreeSet;
use std::fs::File;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;

/// Supervisors running now, by pid.
static RUNNING: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());

/// Asks every running supervisor to stop its program (SIGTERM; it kills the group).
pub fn stop_all() {
    let pids: Vec<u32> = RUNNING
        .lock()
        .map(|r| r.iter().copied().collect())
        .unwrap_or_default();
    for pid in pids {
        // SAFETY: signals a process we started and have not reaped yet.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGTERM);
        }
    }
}

/// Runs `program args...` in `cwd` with `EFRLHF_STAGE` set, stdout and stderr
/// appended to `log`. Returns a message on failure.
pub fn run_program(
    program: &Path,
    args: &[String],
    cwd: &Path,
    stage_json: &Path,
    log: &Path,
) -> Result<(), String> {
    let out = File::options()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| format!("cannot open log `{}`: {e}", log.display()))?;
    let err = out
        .try_clone()
        .map_err(|e| format!("cannot open log: {e}"))?;
    let me = std::env::current_exe().map_err(|e| format!("cannot find efrlhf itself: {e}"))?;
    let mut cmd = Command::new(me);
    cmd.arg("supervise")
        .arg("--")
        .arg(program)
        .args(args)
        .current_dir(cwd)
        .env("EFRLHF_STAGE", stage_json)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    // If efrlhf dies, even by `kill -9`, the supervisor is told and kills the
    // program's whole process group (their output would never be used).
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start `{}`: {e}", program.display()))?;
    if let Ok(mut r) = RUNNING.lock() {
        r.insert(child.id());
    }
    let status = child.wait();
    if let Ok(mut r) = RUNNING.lock() {
        r.remove(&child.id());
    }
    let status = status.map_err(|e| format!("waiting for `{}`: {e}", program.display()))?;
    let name = program
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    if status.success() {
        Ok(())
    } else if let Some(code) = status.code() {
        Err(format!("`{name}` exited with code {code}"))
    } else {
        Err(format!(
            "`{}` was killed by signal {}",
            program.display(),
            status.signal().unwrap_or(0)
        ))
    }
}
