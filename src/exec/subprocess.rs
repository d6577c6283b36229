//! Starting an external stage program.

use std::fs::File;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, Stdio};

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
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(cwd)
        .env("EFRLHF_STAGE", stage_json)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    // If efrlhf is killed, its stage programs die with it rather than run on
    // unobserved (their partial output would never be used anyway).
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start `{}`: {e}", program.display()))?;
    let status = child
        .wait()
        .map_err(|e| format!("waiting for `{}`: {e}", program.display()))?;
    if status.success() {
        Ok(())
    } else if let Some(code) = status.code() {
        Err(format!(
            "`{}` exited with code {code}",
            program
                .file_name()
                .map(|f| f.to_string_lossy())
                .unwrap_or_default()
        ))
    } else {
        Err(format!(
            "`{}` was killed by signal {}",
            program.display(),
            status.signal().unwrap_or(0)
        ))
    }
}
