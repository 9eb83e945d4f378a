//! Power loss during install: the agent is killed with SIGKILL at chosen
//! system calls of a renewal, hundreds of times, and after every kill the
//! set in service is still there and loadable, the backup is whole, and the
//! next run completes.
//!
//! How: Debian's `strace` kills the agent as it enters the N-th call of one
//! system call (`-e inject=rename:signal=SIGKILL:when=N`), before the kernel
//! performs it. A reference run of a whole renewal under `strace` lists the
//! agent's calls of [`KILL_SET`] (every file it creates, writes, syncs,
//! renames or removes, the wait for the reload command, the writes of the
//! served-certificate check); those calls are the kill points. Every point
//! of the install step is taken once, then every other point of the
//! renewal, then random points, two thirds of them in the install step.
//! Several devices (each with its own agent and nginx, one server) are
//! killed in parallel, because every renewal waits out the server's 1 s
//! `Retry-After`. `LANCERT_KILLS` sets the number of kills (default
//! [`DEFAULT_KILLS`]), `LANCERT_KILL_SEED` the random seed (printed),
//! `LANCERT_KILL_WORKERS` the number of devices; `scripts/soak-kill` runs
//! thousands.
//!
//! After every kill:
//! - the installed set is whole (the key is the certificate's, the
//!   fullchain is the certificate and the chain) and `nginx -t` loads it,
//!   except after a kill between two renames of the install, which leaves a
//!   torn set (below); then the `.bak` set must be whole;
//! - the `.bak` set, whenever its key is there, is whole;
//! - leftover temporary files are plain files, nothing a run trips on;
//! - a run without the server (its URL pointed at a port where nothing
//!   listens, so it cannot renew) leaves a whole set that nginx loads and
//!   serves: a torn set replaced by the `.bak` set, a new set the killed run
//!   installed but did not get to reload, reloaded;
//! - then a normal `agent --check-now` exits 0 or 2 and leaves a whole set
//!   that nginx serves (a leaf from the CA, for the device's name), a whole
//!   backup and no temporary file.
//!
//! Four files cannot be replaced at one instant: rename(2) swaps one name at
//! a time, and any order of the four renames has a moment where the key
//! belongs to the new certificate and another file to the old one (the
//! agent renames chain, certificate, key, fullchain, so a leaf-and-key
//! server such as uhttpd sees a mismatch only between the certificate's and
//! the key's rename, and nginx only between the key's and the fullchain's).
//! The agent's answer, asserted here: the backup is complete and synced
//! before the first rename, and every run first checks that the installed
//! key, certificate and fullchain belong together and, if not, puts the
//! `.bak` set back before doing anything else, without the server.
//!
//! What this models, honestly: SIGKILL is a crash of the process, not a
//! power cut. The kernel keeps what was written: the page cache survives
//! the kill, so nothing written but not yet on the storage is lost, and the
//! renames reach the disk in order. For a real power cut the agent relies
//! on `fsync`: each new file is written under a temporary name created
//! with `O_CREAT|O_EXCL|O_NOFOLLOW` and its final mode, fsynced, and only
//! then renamed over its target; the directory is fsynced after the backup
//! copies are in place (and after the old key backup is removed), and again
//! after the four renames (`agent/src/atomic.rs`, `agent/src/install.rs`).
//! So after a power cut every file is the old or the new one, never torn or
//! empty, and the `.bak` set is on the storage before the first rename; a
//! file system that reorders the renames can tear the set in other ways
//! than a kill can, and the same check of the next run repairs it. Pulling
//! the power of a real appliance is not tested here.

mod support;

use lancert_tests::scenario::{server_device_named, Device};
use lancert_tests::tls::{self, CertInfo};
use lancert_tests::{run, Output, Server, ServerConfig, TestEnv, NGINX};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use support::{temp_files, SetFiles};

/// Debian's strace.
const STRACE: &str = "/usr/bin/strace";

/// The system calls a kill may land on: everything that creates, writes,
/// syncs, renames or removes a file, takes the lock, waits for the reload
/// command or writes to the web server being checked. (`?`: no error where
/// the architecture lacks one of them.)
const KILL_SET: &str = "?openat,?open,?creat,?write,?writev,?pwrite64,?fsync,?fdatasync,?sync_file_range,\
                        ?rename,?renameat,?renameat2,?unlink,?unlinkat,?link,?linkat,?symlink,?symlinkat,\
                        ?mkdir,?mkdirat,?rmdir,?fchmod,?fchmodat,?chmod,?ftruncate,?flock,?wait4";

/// Kills in one run of the test unless `LANCERT_KILLS` says otherwise.
const DEFAULT_KILLS: usize = 200;

/// Devices killed in parallel unless `LANCERT_KILL_WORKERS` says otherwise.
const DEFAULT_WORKERS: usize = 24;

/// One kill point: the `n`-th call (from 1) of system call `name`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Point {
    name: String,
    n: usize,
}

/// One line of an strace log.
#[derive(Debug, Clone)]
struct Call {
    name: String,
    text: String,
}

/// The reference renewal: its kill points in order, and which of them are
/// the install step.
struct Reference {
    points: Vec<Point>,
    install: std::ops::Range<usize>,
}

/// How one kill went.
struct Record {
    point: Point,
    /// The call the agent was killed at, as strace printed it (paths
    /// shortened); `None` if the agent finished before reaching it.
    killed_at: Option<String>,
    /// The kill left a torn installed set, and a run without the server
    /// put the `.bak` set back.
    torn: bool,
    failure: Option<String>,
}

#[test]
fn sigkill_anywhere_in_a_renewal_loses_nothing() {
    assert!(
        Path::new(STRACE).is_file(),
        "{STRACE} is missing: this test kills the agent at chosen system calls with strace's fault injection \
         (scripts/test installs it: apt-get install strace)"
    );
    assert!(
        std::env::var_os("LANCERT_AGENT_RUNNER").is_none(),
        "the power-loss test traces the agent's own system calls and cannot run it under an emulator"
    );
    let kills = env_number("LANCERT_KILLS", DEFAULT_KILLS);
    let workers = env_number("LANCERT_KILL_WORKERS", DEFAULT_WORKERS).clamp(1, 64);
    let seed = std::env::var("LANCERT_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    let started = Instant::now();

    let env = TestEnv::new("power-loss");
    // Certificates of 30 s (a lifetime of 90 s with the server's 60 s
    // backdating) are inside their last third at once: every check renews,
    // so every killed run and every recovery run is a whole renewal. 30 s is
    // also how long an order left pending by a kill may wait for the run
    // that resumes it before its certificate has expired.
    let mut extra = serde_json::Map::new();
    extra.insert("orders_per_hour".into(), 10_000.into());
    let server = Server::start_with(
        &env,
        ServerConfig {
            validity_secs: 30,
            extra,
            ..ServerConfig::default()
        },
    );
    let mut devices: Vec<Device> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|i| {
                let (env, server) = (&env, &server);
                scope.spawn(move || {
                    let dev = server_device_named(env, server, &format!("dev{i}"), |c| c.set("log_level", "info"));
                    // The first check installs the self-signed certificate
                    // and the real one; the second renews, so that a whole
                    // .bak set exists.
                    dev.agent.check_now().assert_code(0);
                    dev.agent.check_now().assert_code(0);
                    dev.nginx.wait_running();
                    assert_whole_and_served(&dev).unwrap_or_else(|e| panic!("set-up: {e}"));
                    dev
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("setting up a device"))
            .collect()
    });
    let dead_server = format!("https://localhost:{}", env.free_port());
    let set_up = started.elapsed();

    let agent_bin = env.agent_bin();
    let reference = reference_run(&env, &agent_bin, &devices[0]);
    let plan = plan(&reference, kills + kills / 5, seed);
    let queue = Mutex::new(plan.into_iter().collect::<VecDeque<Point>>());
    let records = Mutex::new(Vec::new());
    // Kills that landed: a run that takes another path than the reference
    // may finish before its kill point, and then the spare points of the
    // plan make up for it.
    let landed = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for dev in devices.iter_mut() {
            let (queue, records, landed, env, dead_server, agent_bin) = (
                &queue,
                &records,
                &landed,
                &env,
                dead_server.as_str(),
                agent_bin.as_path(),
            );
            scope.spawn(move || loop {
                if landed.load(Ordering::SeqCst) >= kills {
                    break;
                }
                let Some(point) = queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front() else {
                    break;
                };
                let record = kill_and_recover(env, agent_bin, dev, &point, dead_server);
                if record.killed_at.is_some() {
                    landed.fetch_add(1, Ordering::SeqCst);
                }
                let failed = record.failure.is_some();
                records.lock().unwrap_or_else(|e| e.into_inner()).push(record);
                if failed {
                    // This device's files are suspect now; the others go on.
                    break;
                }
            });
        }
    });
    let records = records.into_inner().unwrap_or_else(|e| e.into_inner());

    let index: BTreeMap<&Point, usize> = reference.points.iter().enumerate().map(|(i, p)| (p, i)).collect();
    let in_install = |p: &Point| index.get(p).is_some_and(|i| reference.install.contains(i));
    let killed: Vec<&Record> = records.iter().filter(|r| r.killed_at.is_some()).collect();
    let distinct: BTreeSet<&Point> = killed.iter().map(|r| &r.point).collect();
    let failures: Vec<String> = records
        .iter()
        .filter_map(|r| r.failure.as_ref().map(|f| format!("kill at {:?}: {f}", r.point)))
        .collect();
    let summary = format!(
        "power_loss: a renewal makes {} calls of the kill set ({} in the install step); \
         {} kills ({} in the install step) at {} distinct kill points ({} of the install step's {}); \
         {} runs finished before their kill point; {} torn sets put back without the server; \
         {} failures; {:.1} s with {} devices ({:.1} s of set-up); seed {}",
        reference.points.len(),
        reference.install.len(),
        killed.len(),
        killed.iter().filter(|r| in_install(&r.point)).count(),
        distinct.len(),
        distinct.iter().filter(|p| in_install(p)).count(),
        reference.install.len(),
        records.len() - killed.len(),
        records.iter().filter(|r| r.torn).count(),
        failures.len(),
        started.elapsed().as_secs_f64(),
        workers,
        set_up.as_secs_f64(),
        seed,
    );
    eprintln!("{summary}");
    for r in records.iter().filter(|r| r.torn) {
        eprintln!("torn set after the kill at {}", r.killed_at.as_deref().unwrap_or("?"));
    }
    assert!(
        failures.is_empty(),
        "{summary}\n(LANCERT_KILL_SEED={seed} repeats this plan)\n{}",
        failures.join("\n\n")
    );
    assert!(
        killed.len() >= kills,
        "{summary}\nfewer kills landed than the {kills} asked for: the reference run does not describe the runs"
    );
    let install_points = reference.install.len().min(kills);
    assert!(
        distinct.iter().filter(|p| in_install(p)).count() >= install_points * 9 / 10,
        "{summary}\nthe kills missed the install step"
    );
}

/// A positive number from the environment, or `default`.
fn env_number(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .unwrap_or_else(|| panic!("{name}={v:?} is not a positive number")),
        Err(_) => default,
    }
}

/// The strace command line for one run of `agent --check-now`, its log in
/// `log`, with `inject` (e.g. `rename:signal=SIGKILL:when=3`) if given.
fn strace_args(agent_bin: &Path, dev: &Device, log: &Path, inject: Option<&str>) -> Vec<String> {
    let mut args: Vec<String> = ["-qq", "-o"].map(String::from).to_vec();
    args.push(log.display().to_string());
    // Without cargo's library path the dynamic loader does not probe
    // dozens of directories before main(): those calls are not kill points
    // worth having.
    args.extend(["-E", "LD_LIBRARY_PATH", "-e"].map(String::from));
    args.push(format!("trace={KILL_SET}"));
    if let Some(inject) = inject {
        args.push("-e".into());
        args.push(format!("inject={inject}"));
    }
    args.push(agent_bin.display().to_string());
    args.push("--config".into());
    args.push(dev.agent.config_path().display().to_string());
    args.push("--check-now".into());
    args
}

fn strace(args: &[String]) -> Output {
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    run(Path::new(STRACE), &words, Duration::from_secs(60))
}

/// The calls of an strace log, in order (signals and exit lines left out).
fn parse_log(log: &Path) -> (Vec<Call>, bool) {
    let text = std::fs::read_to_string(log).unwrap_or_else(|e| panic!("reading {}: {e}", log.display()));
    let killed = text.lines().any(|l| l.starts_with("+++ killed by SIGKILL"));
    let calls = text
        .lines()
        .filter(|l| !l.starts_with("+++") && !l.starts_with("---"))
        .filter_map(|l| {
            let name = l.split('(').next()?;
            (!name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')).then(|| Call {
                name: name.to_string(),
                text: l.to_string(),
            })
        })
        .collect();
    (calls, killed)
}

/// Point of each call: its name and how many calls of that name came
/// before, plus one.
fn points_of(calls: &[Call]) -> Vec<Point> {
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    calls
        .iter()
        .map(|c| {
            let n = seen.entry(&c.name).or_insert(0);
            *n += 1;
            Point {
                name: c.name.clone(),
                n: *n,
            }
        })
        .collect()
}

/// Runs one whole renewal of `dev` under strace, without a kill, and finds
/// its install step: from the first call on the certificate directory that
/// touches a backup or a temporary file (and the reads of the installed
/// files just before it) to the directory sync after the last rename.
fn reference_run(env: &TestEnv, agent_bin: &Path, dev: &Device) -> Reference {
    let log = env.path("reference.strace");
    let out = strace(&strace_args(agent_bin, dev, &log, None));
    out.assert_code(0);
    let (calls, _) = parse_log(&log);
    let tls = format!("{}/", dev.agent.config().path("cert_file").parent().unwrap().display());
    let on_tls = |c: &Call| c.text.contains(&tls) || c.text.contains(&format!("\"{}\"", tls.trim_end_matches('/')));
    let first = calls
        .iter()
        .position(|c| on_tls(c) && (c.text.contains(".bak") || c.text.contains(".tmp-")))
        .unwrap_or_else(|| panic!("no install step in the reference run {}", log.display()));
    let mut start = first;
    while start > 0 && on_tls(&calls[start - 1]) {
        start -= 1;
    }
    let mut end = calls
        .iter()
        .rposition(on_tls)
        .expect("the install step touches the certificate directory")
        + 1;
    while end < calls.len() && matches!(calls[end].name.as_str(), "fsync" | "fdatasync") {
        end += 1;
    }
    let renames = calls[start..end]
        .iter()
        .filter(|c| c.name.starts_with("rename"))
        .count();
    assert!(
        renames >= 4,
        "the install step found in {} ({start}..{end}) renames {renames} files, not the four of a set",
        log.display()
    );
    let points = points_of(&calls);
    Reference {
        points,
        install: start..end,
    }
}

/// A small deterministic random source (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i + 1));
        }
    }
}

/// `kills` kill points: the install step's in random order, then the rest
/// of the renewal's, then random ones (two thirds in the install step).
fn plan(reference: &Reference, kills: usize, seed: u64) -> Vec<Point> {
    let mut rng = Rng(seed);
    let mut install: Vec<Point> = reference.points[reference.install.clone()].to_vec();
    let mut others: Vec<Point> = reference
        .points
        .iter()
        .enumerate()
        .filter(|(i, _)| !reference.install.contains(i))
        .map(|(_, p)| p.clone())
        .collect();
    rng.shuffle(&mut install);
    rng.shuffle(&mut others);
    let mut plan: Vec<Point> = install.iter().chain(&others).take(kills).cloned().collect();
    while plan.len() < kills {
        let p = if rng.below(3) < 2 {
            &install[rng.below(install.len())]
        } else {
            &reference.points[rng.below(reference.points.len())]
        };
        plan.push(p.clone());
    }
    plan
}

/// Kills `dev`'s agent at `point`, checks what it left, and runs it again.
fn kill_and_recover(env: &TestEnv, agent_bin: &Path, dev: &mut Device, point: &Point, dead_server: &str) -> Record {
    let mut record = Record {
        point: point.clone(),
        killed_at: None,
        torn: false,
        failure: None,
    };
    let log = dev.agent.config().path("state_dir").with_file_name("kill.strace");
    let inject = format!("{}:signal=SIGKILL:when={}", point.name, point.n);
    let out = strace(&strace_args(agent_bin, dev, &log, Some(&inject)));
    let (calls, killed) = parse_log(&log);
    if !killed {
        return match out.code {
            // The run took another path and never made that call.
            Some(0 | 2) => record,
            _ => Record {
                failure: Some(format!("the run to be killed failed on its own\n{out}")),
                ..record
            },
        };
    }
    let last = calls.last().map(|c| shorten(&c.text, env)).unwrap_or_default();
    record.killed_at = Some(last.clone());
    if let Err(e) = after_kill(dev, calls.last(), dead_server, &mut record.torn) {
        record.failure = Some(format!("killed at {last}: {e}"));
        return record;
    }
    let out = dev.agent.check_now();
    if !matches!(out.code, Some(0 | 2)) {
        record.failure = Some(format!("killed at {last}: the next run failed\n{out}"));
        return record;
    }
    if let Err(e) = assert_whole_and_served(dev) {
        record.failure = Some(format!("killed at {last}: after the next run: {e}\n{out}"));
    }
    record
}

/// The paths of a log line without the test directory, and temporary
/// names without the pid.
fn shorten(text: &str, env: &TestEnv) -> String {
    let text = text.replace(&format!("{}/", env.dir().display()), "");
    let mut out = String::new();
    let mut rest = text.as_str();
    while let Some(i) = rest.find(".tmp-") {
        out.push_str(&rest[..i + 5]);
        rest = rest[i + 5..].trim_start_matches(|c: char| c.is_ascii_digit());
        out.push_str("PID");
    }
    out.push_str(rest);
    out
}

/// What must hold right after a kill, and after one run without the
/// server. A torn installed set is allowed only when the kill landed on a
/// rename of an installed file, and then the `.bak` set must be whole. The
/// run without the server (it cannot renew: it points at a port where
/// nothing listens) must leave a whole set that nginx serves: the `.bak`
/// set put back if the set was torn, and a new set that the killed run
/// installed but did not get to reload, reloaded.
fn after_kill(dev: &mut Device, killed_at: Option<&Call>, dead_server: &str, torn: &mut bool) -> Result<(), String> {
    let installed = SetFiles::installed(&dev.agent);
    check_backup(dev)?;
    check_temps(dev)?;
    let torn_by_kill = match installed.check_whole() {
        Ok(_) => {
            nginx_loads(dev)?;
            None
        }
        Err(why) => {
            let at_install_rename = killed_at.is_some_and(|c| {
                c.name.starts_with("rename")
                    && [&installed.cert, &installed.key, &installed.fullchain]
                        .iter()
                        .any(|p| c.text.contains(&format!("\"{}\"", p.display())))
            });
            if !at_install_rename {
                return Err(format!("the installed set is not whole: {why}"));
            }
            let backup = SetFiles::backup(&dev.agent)
                .check_whole()
                .map_err(|e| format!("the installed set is torn ({why}) and the backup is not whole: {e}"))?;
            Some((why, backup))
        }
    };

    let server = dev.agent.config().get("server").cloned();
    dev.agent.reconfigure(|c| c.set("server", dead_server));
    let out = dev.agent.check_now();
    dev.agent.reconfigure(|c| match server {
        Some(s) => c.set("server", s),
        None => c.remove("server"),
    });
    let leaf = installed
        .check_whole()
        .map_err(|e| format!("after a run without the server: {e}\n{out}"))?;
    if let Some((why, backup)) = torn_by_kill {
        if leaf != backup {
            return Err(format!(
                "the set was torn ({why}), and a run without the server installed something else than the backup\n{out}"
            ));
        }
        *torn = true;
    }
    check_backup(dev)?;
    nginx_loads(dev)?;
    serving(dev, &leaf).map_err(|e| format!("after a run without the server: {e}\n{out}"))
}

/// The `.bak` set is whole whenever its key is there (the agent removes the
/// key's backup first and writes it last).
fn check_backup(dev: &Device) -> Result<(), String> {
    let backup = SetFiles::backup(&dev.agent);
    if backup.key.exists() {
        backup
            .check_whole()
            .map_err(|e| format!("the backup set is not whole: {e}"))?;
    }
    Ok(())
}

/// Leftover temporaries of the killed run must be plain files (the next
/// run removes them; anything else would be in its way).
fn check_temps(dev: &Device) -> Result<(), String> {
    for dir in temp_dirs(dev) {
        for name in temp_files(&dir) {
            let path = dir.join(&name);
            let meta = std::fs::symlink_metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            if !meta.file_type().is_file() {
                return Err(format!("{} is not a plain file", path.display()));
            }
        }
    }
    Ok(())
}

/// The directories the agent writes temporaries in.
fn temp_dirs(dev: &Device) -> BTreeSet<PathBuf> {
    let cfg = dev.agent.config();
    ["key_file", "cert_file", "chain_file", "fullchain_file"]
        .iter()
        .filter_map(|k| cfg.path(k).parent().map(Path::to_path_buf))
        .chain([cfg.path("state_dir")])
        .collect()
}

/// `nginx -t` with the device's configuration: nginx loads the key and the
/// fullchain and checks that they belong together.
fn nginx_loads(dev: &Device) -> Result<(), String> {
    let conf = dev.nginx.conf().display().to_string();
    let log = dev.nginx.dir().join("test-error.log").display().to_string();
    let out = run(
        Path::new(NGINX),
        &["-t", "-q", "-e", &log, "-c", &conf],
        Duration::from_secs(10),
    );
    match out.code {
        Some(0) => Ok(()),
        _ => Err(format!("nginx cannot load the installed files\n{out}")),
    }
}

/// After a completed run: the installed set is whole, is a CA-issued leaf
/// for the device, nginx loads and serves it, the backup is whole and no
/// temporary file is left.
fn assert_whole_and_served(dev: &Device) -> Result<(), String> {
    let leaf = SetFiles::installed(&dev.agent).check_whole()?;
    let info = CertInfo::parse(&leaf);
    if info.dns_names != [dev.hostname.clone()] || info.issuer == info.subject {
        return Err(format!(
            "the installed leaf is not the CA's for {}: {info:?}",
            dev.hostname
        ));
    }
    check_backup(dev)?;
    for dir in temp_dirs(dev) {
        let temps = temp_files(&dir);
        if !temps.is_empty() {
            return Err(format!("temporary files left in {}: {temps:?}", dir.display()));
        }
    }
    nginx_loads(dev)?;
    serving(dev, &leaf)
}

/// Waits (at most 10 s) until nginx serves `leaf`, as
/// [`lancert_tests::Nginx::wait_serving`] does, but returns the failure
/// instead of panicking in a worker thread. One handshake is proof enough
/// here: a worker that still serves the older leaf after a reload only
/// makes this wait, never pass wrongly.
fn serving(dev: &Device, leaf: &[u8]) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let served = tls::served_leaf(dev.nginx.port(), &dev.hostname);
        if served.as_deref() == Ok(leaf) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "nginx does not serve the installed leaf: {}\n{}",
                match served {
                    Ok(l) => format!("serves {:?}", CertInfo::parse(&l)),
                    Err(e) => e,
                },
                dev.nginx.error_log_text()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
