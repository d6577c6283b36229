//! The supervisor a stage program runs under: `efrlhf supervise -- PROGRAM
//! ARGS...` (the same binary, started by the runner). It starts the program
//! in a process group of its own and becomes a subreaper, so everything the
//! program starts stays below it. When the runner dies (even by `kill -9`:
//! the kernel sends the supervisor SIGTERM) or stops the stage, it kills the
//! whole group; when the program exits, it kills whatever it left running.
//! Nothing a stage started can keep writing into a scratch folder after its
//! attempt is over.

use std::ffi::OsString;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::Command;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

/// The signal that asked the supervisor to stop (0: none yet).
static STOP: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    STOP.store(sig, Ordering::SeqCst);
}

/// Runs `program args` to its end or until told to stop; returns the exit
/// code to pass on (a program killed by a signal is re-raised, so the runner
/// sees the same signal), or why the program could not start.
pub fn supervise(program: &OsString, args: &[OsString]) -> Result<i32, String> {
    // SAFETY: plain libc calls with valid arguments; the handler only stores an atomic.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1);
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::signal(sig, on_signal as *const () as libc::sighandler_t);
        }
    }
    let mut child = Command::new(program)
        .args(args)
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start `{}`: {e}", program.to_string_lossy()))?;
    let group = child.id() as libc::pid_t;
    loop {
        if STOP.load(Ordering::SeqCst) != 0 {
            kill_all(group);
            let _ = child.wait();
            reap();
            return Ok(128 + STOP.load(Ordering::SeqCst));
        }
        match child.try_wait() {
            Ok(Some(status)) => {
                kill_all(group);
                reap();
                if let Some(sig) = status.signal() {
                    reraise(sig);
                }
                return Ok(status.code().unwrap_or(1));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => {
                kill_all(group);
                return Err(format!(
                    "cannot wait for `{}`: {e}",
                    program.to_string_lossy()
                ));
            }
        }
    }
}

/// Kills the program's process group, and every process that was
/// reparented to the supervisor (those that left the group).
fn kill_all(group: libc::pid_t) {
    // SAFETY: kill with a negative pid signals a process group; harmless if it is gone.
    unsafe {
        libc::kill(-group, libc::SIGKILL);
    }
    for pid in children_of(std::process::id()) {
        // SAFETY: as above, for one process.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
}

/// The pids whose parent is `parent`, from `/proc`.
fn children_of(parent: u32) -> Vec<libc::pid_t> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<libc::pid_t>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
                    let rest = &s[s.rfind(')')? + 2..];
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(parent)
        })
        .collect()
}

/// Collects the exit status of every child that has ended (zombies).
fn reap() {
    for _ in 0..50 {
        let mut status = 0;
        // SAFETY: waitpid on any child, not blocking.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            if children_of(std::process::id()).is_empty() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Ends the supervisor by the signal that ended the program.
fn reraise(sig: i32) {
    // SAFETY: restores the default action, then sends the signal to ourselves.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
}
