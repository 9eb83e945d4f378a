//! Storage faults during a renewal: a full disk, a read-only file system, a
//! missing state directory, a key file others can read, and a symlink
//! planted at the name of a temporary file. In every case the check that
//! meets the fault exits 1, its error (or, for the key, its warning) says
//! what is wrong and where, and the certificate in service stays in service:
//! the installed files and their backups byte-identical (contents, mtimes,
//! modes), nginx not reloaded and still serving the old leaf. Once the
//! fault is gone the next check renews. A key others can read is itself a
//! reason to renew (with a fresh key): that check fails here only because
//! the server is down, and the next one, with the server back, replaces
//! the key.
//!
//! The certificate directory is replaced by a small tmpfs or a read-only
//! bind mount of itself. The mounts are made in this machine's mount
//! namespace (the test runs as root, as in CI), so that nginx, which runs
//! outside the agent's process, reads the same files; each is unmounted
//! (lazily) when its guard is dropped, also when the test fails.

mod support;

use lancert_tests::scenario::{evil_device, Device};
use lancert_tests::tls::first_cert_of_file;
use lancert_tests::{run, EvilServer, Mode, Output, TestEnv};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::{temp_files, SetFiles};

/// A device whose evil server hands out certificates that are due at once
/// ([`Mode::Good`]), so that every check renews, with one installed and
/// served.
fn device(env: &TestEnv, evil: &EvilServer) -> Device {
    let dev = evil_device(env, evil, |c| c);
    // mtimes have a granularity: let a rewrite show as a changed mtime.
    std::thread::sleep(Duration::from_millis(1100));
    dev
}

/// The certificate directory of `dev`.
fn tls_dir(dev: &Device) -> PathBuf {
    let dir = dev
        .agent
        .config()
        .path("cert_file")
        .parent()
        .expect("cert_file has a directory")
        .to_path_buf();
    for key in ["key_file", "chain_file", "fullchain_file"] {
        assert_eq!(
            dev.agent.config().path(key).parent(),
            Some(dir.as_path()),
            "{key} elsewhere"
        );
    }
    dir
}

/// Runs `check` (a run of the agent that must fail) and asserts what every
/// storage fault must leave: exit code 1, an error line naming each of
/// `needles` (what failed, and the path), the installed files and backups
/// byte-identical, nginx neither reloaded nor serving anything else, and no
/// temporary file left next to the certificate.
#[track_caller]
fn keeps_the_certificate_in_service(dev: &Device, needles: &[&str], check: impl FnOnce() -> Output) -> Output {
    let leaf = first_cert_of_file(&dev.agent.config().path("cert_file"));
    let before = dev.agent.installed_snapshot();
    let reloads = dev.nginx.reload_count();

    let out = check();
    out.assert_code(1);
    let errors: Vec<&str> = out.stderr.lines().filter(|l| l.starts_with("<3>")).collect();
    assert!(
        errors.iter().any(|l| needles.iter().all(|n| l.contains(n))),
        "no error line names all of {needles:?}\n{out}"
    );
    before.assert_same(&dev.agent.installed_snapshot(), "the failed check");
    assert_eq!(
        dev.nginx.reload_count(),
        reloads,
        "nginx was reloaded although nothing was installed"
    );
    assert_eq!(
        dev.nginx.served_leaf(&dev.hostname),
        leaf,
        "nginx no longer serves the old leaf"
    );
    // A symlink planted by the test may stay; a file of the agent may not.
    let dir = tls_dir(dev);
    let left: Vec<String> = temp_files(&dir)
        .into_iter()
        .filter(|t| std::fs::symlink_metadata(dir.join(t)).is_ok_and(|m| !m.file_type().is_symlink()))
        .collect();
    assert!(
        left.is_empty(),
        "temporary files left behind in {}: {left:?}",
        dir.display()
    );
    out
}

/// After the fault is gone, the next check renews: a whole new set that
/// nginx serves, the old one whole in the backup.
#[track_caller]
fn renews_again(dev: &Device) {
    let old = first_cert_of_file(&dev.agent.config().path("cert_file"));
    dev.agent.check_now().assert_code(0);
    let leaf = SetFiles::installed(&dev.agent)
        .check_whole()
        .unwrap_or_else(|e| panic!("after the fault: {e}"));
    assert_ne!(leaf, old, "not renewed");
    let backup = SetFiles::backup(&dev.agent).check_whole();
    assert_eq!(backup, Ok(old), "the backup is not the previous set");
    dev.nginx.wait_serving(&dev.hostname, &leaf);
}

#[test]
fn disk_full_in_the_certificate_directory() {
    let env = TestEnv::new("disk-full");
    let evil = EvilServer::start(env.dir(), Mode::Good);
    let dev = device(&env, &evil);
    let dir = tls_dir(&dev);
    let mount = Mount::tmpfs(&dir, "128k");
    let filler = dir.join("filler");
    fill(&filler);

    let out = keeps_the_certificate_in_service(&dev, &["No space left on device", &dir.display().to_string()], || {
        dev.agent.check_now()
    });
    assert!(out.stderr.contains("installing certificate"), "{out}");

    std::fs::remove_file(&filler).unwrap();
    renews_again(&dev);
    drop(mount);
}

#[test]
fn read_only_certificate_directory() {
    let env = TestEnv::new("read-only");
    let evil = EvilServer::start(env.dir(), Mode::Good);
    let dev = device(&env, &evil);
    let dir = tls_dir(&dev);
    let mount = Mount::read_only(&dir);

    keeps_the_certificate_in_service(&dev, &["Read-only file system", &dir.display().to_string()], || {
        dev.agent.check_now()
    });

    drop(mount);
    renews_again(&dev);
}

/// The state directory is gone (a partition that did not mount, a wiped
/// `/var/lib`): the device has no identity, so it asks for nothing, writes
/// nothing (not even an empty state directory that would hide the missing
/// mount) and says where it looked.
#[test]
fn missing_state_directory() {
    let env = TestEnv::new("missing-state-dir");
    let evil = EvilServer::start(env.dir(), Mode::Good);
    let dev = device(&env, &evil);
    let state = dev.agent.state_dir();
    let away = env.path("state-elsewhere");
    std::fs::rename(&state, &away).unwrap();
    let orders = evil.orders();

    keeps_the_certificate_in_service(&dev, &["not provisioned", &state.display().to_string()], || {
        dev.agent.check_now()
    });
    assert!(!state.exists(), "the agent created {}", state.display());
    assert_eq!(evil.orders(), orders, "ordered without an identity");

    std::fs::rename(&away, &state).unwrap();
    renews_again(&dev);
}

/// An installed key that group or others can read may have been copied: the
/// agent replaces it with a fresh key (0600) and a new certificate, even
/// when the certificate is not due. While it cannot (here: the server is
/// down), the exposed set stays in service untouched, mode included, and
/// the check fails naming the key file and its mode.
#[test]
fn key_readable_by_others_is_replaced() {
    let env = TestEnv::new("key-mode");
    let evil = EvilServer::start(env.dir(), Mode::Good);
    let dev = device(&env, &evil);
    // A certificate that is not due: only the key's mode can make a renewal.
    evil.set_mode(Mode::GoodFresh);
    dev.agent.check_now().assert_code(0);
    dev.agent.check_now().assert_code(2);
    let key = dev.agent.config().path("key_file");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::thread::sleep(Duration::from_millis(1100));

    evil.set_mode(Mode::Down);
    let out = keeps_the_certificate_in_service(&dev, &[&evil.url()], || dev.agent.check_now());
    let warning = format!("the key file {} has mode 0644", key.display());
    assert!(
        out.stderr.lines().any(|l| l.starts_with("<4>") && l.contains(&warning)),
        "no warning naming the exposed key\n{out}"
    );
    assert_eq!(
        mode_of(&key),
        0o644,
        "the key's mode was changed while it stayed in service"
    );

    evil.set_mode(Mode::GoodFresh);
    let old = first_cert_of_file(&dev.agent.config().path("cert_file"));
    let old_key = std::fs::read(&key).unwrap();
    let out = dev.agent.check_now();
    out.assert_code(0).assert_stderr_mentions(&["has mode 0644"]);
    let leaf = SetFiles::installed(&dev.agent)
        .check_whole()
        .unwrap_or_else(|e| panic!("{e}\n{out}"));
    assert_ne!(leaf, old, "no new certificate");
    assert_eq!(
        SetFiles::backup(&dev.agent).check_whole(),
        Ok(old),
        "the backup is not the previous set"
    );
    assert_ne!(std::fs::read(&key).unwrap(), old_key, "the exposed key is still in use");
    assert_eq!(mode_of(&key), 0o600);
    assert_eq!(
        mode_of(&lancert_tests::Agent::backup_of(&key)),
        0o600,
        "the key's backup"
    );
    dev.nginx.wait_serving(&dev.hostname, &leaf);
    dev.agent.check_now().assert_code(2);
}

/// The agent's temporary names are predictable (`.{file}.tmp-{pid}`): a
/// symlink planted at one, to an existing file or to a file that an
/// attacker wants created, is never followed (`O_CREAT|O_EXCL|O_NOFOLLOW`),
/// nothing is written through it, and the install stops before anything
/// changed. The link is left for an operator to find.
#[test]
fn symlink_planted_at_a_temporary_name_is_not_followed() {
    let env = TestEnv::new("planted-link");
    let evil = EvilServer::start(env.dir(), Mode::Good);
    let dev = device(&env, &evil);
    let dir = tls_dir(&dev);

    // The new key's temporary, pointing at a file that exists.
    let victim = env.path("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = keeps_the_certificate_in_service(
        &dev,
        &[
            "something other than a file is in the way",
            &format!("{}/.device.key.tmp-", dir.display()),
        ],
        || check_with_planted_link(&env, &dev, ".device.key.tmp-", &victim),
    );
    assert_eq!(
        std::fs::read(&victim).unwrap(),
        b"precious\n",
        "written through the link\n{out}"
    );
    assert_eq!(mode_of(&victim), 0o644, "the link's target changed mode");
    assert_planted_link_left(&dir, ".device.key.tmp-", &victim);

    // The key backup's temporary, pointing where a file would be created.
    let wanted = env.path("created-through-the-link");
    let out = keeps_the_certificate_in_service(
        &dev,
        &[
            "something other than a file is in the way",
            &format!("{}/.device.key.bak.tmp-", dir.display()),
        ],
        || check_with_planted_link(&env, &dev, ".device.key.bak.tmp-", &wanted),
    );
    assert!(
        !wanted.exists(),
        "{} was created through the link\n{out}",
        wanted.display()
    );
    assert_planted_link_left(&dir, ".device.key.bak.tmp-", &wanted);
}

/// Runs `agent --check-now` after planting a symlink to `target` at
/// `{tls dir}/{prefix}{pid}`, the pid the agent will have: a shell plants
/// it, then `exec`s the agent in its own process. The link is named in
/// the `planted` file beside it for [`assert_planted_link_left`].
fn check_with_planted_link(env: &TestEnv, dev: &Device, prefix: &str, target: &Path) -> Output {
    let dir = tls_dir(dev);
    let script = r#"ln -s "$1" "$2/$3$$" && echo "$3$$" >"$2/planted-$3" && exec "$4" --config "$5" --check-now"#;
    let (bin, config) = (env.agent_bin(), dev.agent.config_path().to_path_buf());
    let args = [
        "-c",
        script,
        "sh",
        &target.display().to_string(),
        &dir.display().to_string(),
        prefix,
        &bin.display().to_string(),
        &config.display().to_string(),
    ];
    run(Path::new("/bin/sh"), &args, lancert_tests::COMMAND_TIMEOUT)
}

#[track_caller]
fn assert_planted_link_left(dir: &Path, prefix: &str, target: &Path) {
    let name = std::fs::read_to_string(dir.join(format!("planted-{prefix}"))).unwrap();
    let link = dir.join(name.trim());
    assert_eq!(
        std::fs::read_link(&link).unwrap(),
        target,
        "{} was replaced",
        link.display()
    );
    std::fs::remove_file(&link).unwrap();
    std::fs::remove_file(dir.join(format!("planted-{prefix}"))).unwrap();
}

fn mode_of(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

/// Writes `path` until the file system is full, then gives one page
/// back: the first file of an install fits and the next does not, so an
/// agent that replaced its files one by one would have changed one.
fn fill(path: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let block = [0u8; 4096];
    let mut len = 0;
    loop {
        match f.write_all(&block).and_then(|_| f.sync_all()) {
            Ok(()) => len += block.len() as u64,
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    f.set_len(len - block.len() as u64).unwrap();
}

/// A mount over a test directory, unmounted (lazily) on drop.
struct Mount {
    dir: PathBuf,
}

impl Mount {
    /// Mounts a tmpfs of `size` over `dir`, with `dir`'s files (contents and
    /// modes) copied onto it.
    fn tmpfs(dir: &Path, size: &str) -> Mount {
        let files: Vec<(PathBuf, Vec<u8>, u32)> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .map(|e| (e.path(), std::fs::read(e.path()).unwrap(), mode_of(&e.path())))
            .collect();
        let target = dir.display().to_string();
        let options = format!("size={size},mode=0755");
        let mount = Mount::new(dir, &["-t", "tmpfs", "-o", &options, "tmpfs", &target]);
        for (path, bytes, mode) in files {
            std::fs::write(&path, bytes).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        mount
    }

    /// Bind-mounts `dir` over itself, read-only.
    fn read_only(dir: &Path) -> Mount {
        let target = dir.display().to_string();
        let mount = Mount::new(dir, &["--bind", &target, &target]);
        mount_cmd(&["-o", "remount,bind,ro", &target]);
        mount
    }

    /// `mount ARGS…`, whose last argument is `dir`.
    fn new(dir: &Path, args: &[&str]) -> Mount {
        let uid = std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m));
        assert_eq!(
            uid.ok(),
            Some(0),
            "the storage fault tests mount file systems: run them as root"
        );
        mount_cmd(args);
        Mount { dir: dir.to_path_buf() }
    }
}

fn mount_cmd(args: &[&str]) {
    run(Path::new("mount"), args, Duration::from_secs(10)).assert_code(0);
}

impl Drop for Mount {
    fn drop(&mut self) {
        let dir = self.dir.display().to_string();
        let out = run(Path::new("umount"), &["-l", &dir], Duration::from_secs(10));
        if out.code != Some(0) {
            eprintln!("warning: unmounting {dir} failed\n{out}");
        }
    }
}
