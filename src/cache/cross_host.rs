//! Locks that hold across the hosts of a shared filesystem, where `flock`
//! may fail (Lustre without `-o flock`, NFS without a lock daemon) or hold
//! only within one host (Lustre's `localflock`, GPFS). Two forms, both
//! plain files, renewed by a heartbeat thread every few seconds:
//! - a *lease*: a folder made by `mkdir` (atomic on every such filesystem)
//!   holding `owner.json`: host, pid, the Slurm job that computes the key once
//!   there is one, and a heartbeat count;
//! - a *registration*: one owner file in a folder of them, for holds that
//!   are shared (every run registers; `gc` waits until none is live).
//!
//! A holder is gone when it is on this host and its process is dead, or when
//! its file has not changed for the TTL as this process's own clock measures
//! it (no clock is compared across hosts). A lease is taken over under a
//! second `mkdir` guard, after checking again that it is still the stale
//! one, so two waiters never both take it.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Who holds a lease or a registration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Owner {
    /// The holder's host name.
    pub host: String,
    /// Its process on that host.
    pub pid: u32,
    /// Unique to this hold (a pid can recur on another host).
    pub token: String,
    /// The cluster job computing the key, once submitted.
    #[serde(default)]
    pub job: Option<String>,
    /// Unix seconds.
    pub since: u64,
    /// The heartbeat: counts the renewals.
    pub beat: u64,
}

impl Owner {
    fn new() -> Owner {
        Owner {
            host: host_name(),
            pid: std::process::id(),
            token: fresh_token(),
            job: None,
            since: super::now_unix(),
            beat: 0,
        }
    }

    /// "Slurm job 12 of the run with pid 345 on login1".
    pub fn describe(&self) -> String {
        let run = format!("the run with pid {} on {}", self.pid, self.host);
        match &self.job {
            Some(job) => format!("Slurm job {job} of {run}"),
            None => run,
        }
    }
}

/// How long a holder may go without renewing before it counts as gone:
/// `$EFRLHF_LEASE_TTL` seconds, 60 by default (longer than NFS caches a
/// file's attributes, and than a busy node's pauses).
pub fn ttl() -> Duration {
    std::env::var("EFRLHF_LEASE_TTL")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .map_or(Duration::from_secs(60), Duration::from_secs_f64)
}

fn renew_every() -> Duration {
    (ttl() / 4).min(Duration::from_secs(5))
}

/// How often a waiter looks again.
fn poll() -> Duration {
    (ttl() / 8).clamp(Duration::from_millis(50), Duration::from_millis(500))
}

/// A file this process renews.
struct Renewed {
    file: PathBuf,
    owner: Owner,
    /// Someone else's owner file replaced ours (we were taken for gone).
    lost: bool,
}

fn held() -> &'static Mutex<Vec<Renewed>> {
    static HELD: OnceLock<Mutex<Vec<Renewed>>> = OnceLock::new();
    HELD.get_or_init(|| {
        std::thread::Builder::new()
            .name("efrlhf-lease-renewal".into())
            .spawn(renew_forever)
            .ok();
        Mutex::new(Vec::new())
    })
}

fn renew_forever() {
    loop {
        std::thread::sleep(renew_every());
        let Ok(mut all) = held().lock() else { return };
        for r in all.iter_mut().filter(|r| !r.lost) {
            if read_owner(&r.file).is_some_and(|o| o.token != r.owner.token) {
                r.lost = true;
                continue;
            }
            r.owner.beat += 1;
            // A missed beat is one of several before the TTL.
            let _ = write_owner(&r.file, &r.owner);
        }
    }
}

/// A lease or registration of this process; dropping it releases it.
#[derive(Debug)]
pub struct Hold {
    file: PathBuf,
    token: String,
    /// For a lease, its folder (removed on release).
    dir: Option<PathBuf>,
    /// The holder this one took over from, when it did.
    pub took_over: Option<Owner>,
}

impl Hold {
    /// Names the cluster job that now computes what this lease holds.
    pub fn name_job(&self, job: &str) {
        if let Ok(mut all) = held().lock()
            && let Some(r) = all.iter_mut().find(|r| r.owner.token == self.token)
        {
            r.owner.job = Some(job.to_string());
            let _ = write_owner(&r.file, &r.owner);
        }
    }

    /// Whether another process took this lease for gone while it was held.
    pub fn lost(&self) -> bool {
        held()
            .lock()
            .is_ok_and(|all| all.iter().any(|r| r.owner.token == self.token && r.lost))
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        let lost = match held().lock() {
            Ok(mut all) => {
                let lost = all.iter().any(|r| r.owner.token == self.token && r.lost);
                all.retain(|r| r.owner.token != self.token);
                lost
            }
            Err(_) => false,
        };
        if lost || read_owner(&self.file).is_some_and(|o| o.token != self.token) {
            return; // Not ours any more: leave it to its new holder.
        }
        match &self.dir {
            // Renamed away first, so no one sees a folder without its owner.
            Some(dir) => {
                let gone = dir.with_extension(format!("lease.released-{}", self.token));
                if std::fs::rename(dir, &gone).is_ok() {
                    let _ = std::fs::remove_dir_all(&gone);
                }
            }
            None => {
                let _ = std::fs::remove_file(&self.file);
            }
        }
    }
}

/// Starts renewing `file` as `owner`'s.
fn hold(file: PathBuf, owner: Owner, dir: Option<PathBuf>, took_over: Option<Owner>) -> Hold {
    let token = owner.token.clone();
    if let Ok(mut all) = held().lock() {
        all.push(Renewed {
            file: file.clone(),
            owner,
            lost: false,
        });
    }
    Hold {
        file,
        token,
        dir,
        took_over,
    }
}

/// What one look at a lease found.
pub enum Tried {
    Held(Hold),
    /// Someone holds it; `seen` is its owner file as read (to notice renewals).
    Busy {
        owner: Option<Owner>,
        seen: Vec<u8>,
    },
}

/// Takes the lease `dir` if it is free, or its holder is provably gone
/// (on this host, its process dead).
pub fn try_lease(dir: &Path) -> std::io::Result<Tried> {
    match std::fs::create_dir(dir) {
        Ok(()) => return start_lease(dir, None).map(Tried::Held),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let file = dir.join("owner.json");
    let seen = std::fs::read(&file).unwrap_or_default();
    let owner: Option<Owner> = serde_json::from_slice(&seen).ok();
    if let Some(o) = &owner
        && is_dead_here(o)
        && let Some(h) = take_over(dir, &seen)?
    {
        return Ok(Tried::Held(h));
    }
    Ok(Tried::Busy { owner, seen })
}

/// Waits for the lease `dir`, taking it over from a holder gone for the
/// TTL; `on_wait` is called with the holder first when it must wait.
pub fn lease(dir: &Path, on_wait: impl FnOnce(Option<&Owner>)) -> std::io::Result<Hold> {
    let mut on_wait = Some(on_wait);
    let mut unchanged: Option<(Vec<u8>, Instant)> = None;
    loop {
        let (owner, seen) = match try_lease(dir)? {
            Tried::Held(h) => return Ok(h),
            Tried::Busy { owner, seen } => (owner, seen),
        };
        if let Some(f) = on_wait.take() {
            f(owner.as_ref());
        }
        match &unchanged {
            Some((before, since)) if *before == seen => {
                if since.elapsed() >= ttl()
                    && let Some(h) = take_over(dir, &seen)?
                {
                    return Ok(h);
                }
            }
            _ => unchanged = Some((seen, Instant::now())),
        }
        std::thread::sleep(poll());
    }
}

fn start_lease(dir: &Path, took_over: Option<Owner>) -> std::io::Result<Hold> {
    let owner = Owner::new();
    let file = dir.join("owner.json");
    write_owner(&file, &owner)?;
    Ok(hold(file, owner, Some(dir.to_path_buf()), took_over))
}

/// Replaces the stale lease `dir` (whose owner file read `stale`) with ours.
/// `None` when another waiter is taking it over, or it changed meanwhile.
fn take_over(dir: &Path, stale: &[u8]) -> std::io::Result<Option<Hold>> {
    let guard = dir.with_extension("takeover");
    match std::fs::create_dir(&guard) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            // A waiter that died while taking over leaves its guard behind.
            let age = std::fs::metadata(&guard)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok());
            if age.is_some_and(|a| a > ttl() * 2) {
                let _ = std::fs::remove_dir(&guard);
            }
            return Ok(None);
        }
        Err(e) => return Err(e),
    }
    let taken = replace_stale(dir, stale);
    let _ = std::fs::remove_dir(&guard);
    taken
}

fn replace_stale(dir: &Path, stale: &[u8]) -> std::io::Result<Option<Hold>> {
    let file = dir.join("owner.json");
    if std::fs::read(&file).unwrap_or_default() != stale {
        return Ok(None); // Renewed, released or replaced since it was judged gone.
    }
    let before: Option<Owner> = serde_json::from_slice(stale).ok();
    let trash = dir.with_extension(format!("lease.stale-{}", fresh_token()));
    match std::fs::rename(dir, &trash) {
        Ok(()) => {
            let _ = std::fs::remove_dir_all(&trash);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    match std::fs::create_dir(dir) {
        Ok(()) => start_lease(dir, before).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(None),
        Err(e) => Err(e),
    }
}

/// Registers this process in the folder `dir` (a shared hold).
pub fn register(dir: &Path) -> std::io::Result<Hold> {
    std::fs::create_dir_all(dir)?;
    let owner = Owner::new();
    let file = dir.join(format!("{}.json", owner.token));
    write_owner(&file, &owner)?;
    Ok(hold(file, owner, None, None))
}

/// Watches the registrations in `dir` until they are gone (released, or
/// their holders gone), removing those of gone holders; `on_wait` is called
/// with one live holder first when it must wait.
pub fn wait_unregistered(dir: &Path, on_wait: impl FnOnce(&Owner)) {
    let mut on_wait = Some(on_wait);
    let mut seen: Vec<(PathBuf, Vec<u8>, Instant)> = Vec::new();
    loop {
        let live = live_registrations(dir, &mut seen);
        let Some(owner) = live.first() else { return };
        if let Some(f) = on_wait.take() {
            f(owner);
        }
        std::thread::sleep(poll());
    }
}

/// Registrations in `dir` whose holders may be alive; gone ones are removed.
fn live_registrations(dir: &Path, seen: &mut Vec<(PathBuf, Vec<u8>, Instant)>) -> Vec<Owner> {
    let mut live = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return live;
    };
    let ours = std::process::id();
    for file in rd.flatten().map(|e| e.path()) {
        if file.extension().is_none_or(|x| x != "json") {
            continue;
        }
        let Ok(bytes) = std::fs::read(&file) else {
            continue; // Released meanwhile.
        };
        let owner: Option<Owner> = serde_json::from_slice(&bytes).ok();
        let since = match seen.iter_mut().find(|(f, _, _)| *f == file) {
            Some(s) if s.1 == bytes => s.2,
            Some(s) => {
                *s = (file.clone(), bytes.clone(), Instant::now());
                s.2
            }
            None => {
                seen.push((file.clone(), bytes.clone(), Instant::now()));
                Instant::now()
            }
        };
        let gone = owner.as_ref().is_some_and(is_dead_here) || since.elapsed() >= ttl();
        match owner {
            _ if gone => {
                let _ = std::fs::remove_file(&file);
            }
            // This process's own registration does not block it.
            Some(o) if o.pid == ours && o.host == host_name() => {}
            Some(o) => live.push(o),
            None => {}
        }
    }
    live
}

/// The live holder of the lease `dir`, if any is recorded there.
pub fn holder(dir: &Path) -> Option<Owner> {
    read_owner(&dir.join("owner.json"))
}

/// Whether `owner` ran on this host and its process has ended.
fn is_dead_here(owner: &Owner) -> bool {
    owner.host == host_name() && !pid_alive(owner.pid)
}

fn pid_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return true;
    };
    // Signal 0 checks for the process without touching it.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

fn read_owner(file: &Path) -> Option<Owner> {
    serde_json::from_slice(&std::fs::read(file).ok()?).ok()
}

/// Written whole and renamed; a heartbeat need not survive a crash, so no fsync.
fn write_owner(file: &Path, owner: &Owner) -> std::io::Result<()> {
    let tmp = file.with_extension(format!("tmp-{}", owner.token));
    std::fs::write(&tmp, serde_json::to_vec(owner).unwrap_or_default())?;
    std::fs::rename(&tmp, file)
}

/// This machine's name, as the lease files record it.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

fn fresh_token() -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let seed = format!("{}:{}:{nanos}:{n}", host_name(), std::process::id());
    blake3::hash(seed.as_bytes()).to_hex()[..16].to_string()
}
