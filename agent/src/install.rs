//! Installing a certificate set (key, leaf, chain, fullchain) with a backup
//! of the previous set and rollback.
//!
//! What is guaranteed, honestly: each file is replaced atomically (a reader
//! sees the old or the new file, never a torn one, also after a power cut);
//! every changed backup and every new file is written and fsynced under a
//! temporary name before anything is renamed, so a full disk or a
//! permission problem fails the install before any file on disk has
//! changed; then the previous set is put in place as `<file>.bak` (the
//! key's backup removed first and renamed in last, so a `.bak` key always
//! belongs to the `.bak` certificate beside it) and made durable before the
//! first rename of the set.
//!
//! What cannot be guaranteed with four separate files is that the set
//! changes at one instant: rename(2) swaps one name at a time, and any order
//! of the renames has a moment where the key belongs to the new certificate
//! and another file to the old one. The order chain, certificate, key,
//! fullchain puts the key between the two files web servers pair it with,
//! the leaf (uhttpd `cert`+`key`, lighttpd `ssl.pemfile`+`ssl.privkey`) and
//! the fullchain (nginx `ssl_certificate`+`ssl_certificate_key`), so each
//! pair is out of step for one rename only. The renames follow each other
//! with nothing in between, and web servers only read these files when
//! told to reload, which happens after the install. If the agent dies or
//! the power fails between two renames, the `.bak` set is whole and on the
//! storage, and the next check puts it back before anything else, without
//! the server (`renew::repair_torn_set`); then it renews if due.
use crate::atomic::{self, Staged};
use crate::certificate;
use crate::error::{Error, Result};
use crate::keygen::CertKey;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// Permission bits of the private key file, set at creation.
pub const KEY_MODE: u32 = 0o600;
/// Permission bits of certificate files (public data).
pub const CERT_MODE: u32 = 0o644;
/// Largest installed file read back: 1 MiB (they are a few KiB).
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// Where the certificate set is installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// Private key, PKCS#8 PEM, mode 0600.
    pub key: PathBuf,
    /// Leaf certificate, PEM.
    pub cert: PathBuf,
    /// Intermediates, PEM (may be empty).
    pub chain: PathBuf,
    /// Leaf followed by intermediates, PEM.
    pub fullchain: PathBuf,
}

/// A certificate set's contents.
#[derive(Clone, PartialEq, Eq)]
pub struct Material {
    /// Private key, PKCS#8 PEM.
    pub key_pem: String,
    /// Leaf certificate, PEM.
    pub cert_pem: String,
    /// Intermediates, PEM.
    pub chain_pem: String,
    /// Leaf then intermediates, PEM.
    pub fullchain_pem: String,
}

impl fmt::Debug for Material {
    // Never print the private key, not even in a debug log or a test
    // failure.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Material")
            .field("key_pem", &format_args!("<{} bytes, hidden>", self.key_pem.len()))
            .field("cert_pem", &self.cert_pem)
            .field("chain_pem", &self.chain_pem)
            .field("fullchain_pem", &self.fullchain_pem)
            .finish()
    }
}

/// Where the previous set was saved: the `.bak` file of each part, or
/// `None` where the part did not exist before the install (rollback then
/// removes it).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Backup {
    /// Backup of the key.
    pub key: Option<PathBuf>,
    /// Backup of the leaf certificate.
    pub cert: Option<PathBuf>,
    /// Backup of the chain.
    pub chain: Option<PathBuf>,
    /// Backup of the fullchain.
    pub fullchain: Option<PathBuf>,
}

impl Backup {
    /// Whether nothing existed before (a first install).
    pub fn is_empty(&self) -> bool {
        self.key.is_none() && self.cert.is_none() && self.chain.is_none() && self.fullchain.is_none()
    }
}

/// One file of the set.
struct Part<'a> {
    path: &'a Path,
    mode: u32,
    what: &'static str,
}

/// The parts in the order they are renamed: chain, cert, key, fullchain.
/// The key sits between the two files web servers pair it with: the leaf
/// (uhttpd `cert`+`key`, lighttpd `ssl.pemfile`+`ssl.privkey`) and the
/// fullchain (nginx `ssl_certificate`+`ssl_certificate_key`), so each pair
/// is out of step for one rename only.
fn parts(paths: &Paths) -> [Part<'_>; 4] {
    [
        Part {
            path: &paths.chain,
            mode: CERT_MODE,
            what: "chain",
        },
        Part {
            path: &paths.cert,
            mode: CERT_MODE,
            what: "certificate",
        },
        Part {
            path: &paths.key,
            mode: KEY_MODE,
            what: "key",
        },
        Part {
            path: &paths.fullchain,
            mode: CERT_MODE,
            what: "fullchain",
        },
    ]
}

fn contents(m: &Material) -> [&str; 4] {
    [&m.chain_pem, &m.cert_pem, &m.key_pem, &m.fullchain_pem]
}

fn backups(b: &mut Backup) -> [&mut Option<PathBuf>; 4] {
    [&mut b.chain, &mut b.cert, &mut b.key, &mut b.fullchain]
}

fn backups_ref(b: &Backup) -> [&Option<PathBuf>; 4] {
    [&b.chain, &b.cert, &b.key, &b.fullchain]
}

/// `<file>.bak` next to `path`.
pub fn backup_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".bak");
    path.with_file_name(name)
}

/// Installs `new` at `paths`: saves the current files as `<file>.bak`,
/// stages all new files, then renames them into place (see the module
/// documentation for the guarantees). On a failed rename the previous set
/// is put back. Missing directories are created (0755).
pub fn install(paths: &Paths, new: &Material) -> Result<Backup> {
    install_with(paths, new, Staged::commit)
}

/// [`install`] with the rename step passed in, so tests can make one fail.
fn install_with(paths: &Paths, new: &Material, commit: impl Fn(Staged) -> Result<()>) -> Result<Backup> {
    const DOING: &str = "installing certificate";
    check_distinct(paths)?;
    let parts = parts(paths);
    for part in &parts {
        atomic::create_parent_dirs(part.path, DOING)?;
    }

    // Everything is written and fsynced under temporary names first: the
    // backups that change, then the new files. A full disk or a read-only
    // directory fails here, before any file on disk has changed, and
    // dropping what was staged removes the temporaries.
    let plan = plan_backup(&parts)?;
    let mut staged_backups: Vec<(usize, Staged)> = Vec::with_capacity(plan.write.len());
    for (i, data) in &plan.write {
        let part = &parts[*i];
        let doing = format!("{DOING}: backing up {}", part.what);
        staged_backups.push((*i, atomic::stage(&backup_path(part.path), data, part.mode, &doing)?));
    }
    let mut staged: Vec<Staged> = Vec::with_capacity(4);
    for (part, data) in parts.iter().zip(contents(new)) {
        staged.push(atomic::stage(
            part.path,
            data.as_bytes(),
            part.mode,
            &format!("{DOING}: {}", part.what),
        )?);
    }

    commit_backups(&parts, &plan, staged_backups)?;
    // Dropping the not yet committed ones below removes their temporaries.
    for file in staged {
        if let Err(e) = commit(file) {
            return Err(with_rollback(e, rollback(paths, &plan.backup)));
        }
    }
    if let Err(e) = sync_dirs(&parts) {
        return Err(with_rollback(e, rollback(paths, &plan.backup)));
    }
    Ok(plan.backup)
}

/// Puts the backed-up set back, each file atomically; parts that did not
/// exist before the install are removed. Every saved file is read and
/// staged before the first rename, so an unreadable backup or a full disk
/// changes nothing; then every part is tried and the first failure is
/// reported.
pub fn rollback(paths: &Paths, backup: &Backup) -> Result<()> {
    const DOING: &str = "rolling back certificate";
    let parts = parts(paths);
    let mut staged: Vec<Option<Staged>> = Vec::with_capacity(4);
    for (part, saved) in parts.iter().zip(backups_ref(backup)) {
        staged.push(match saved {
            Some(bak) => {
                let doing = format!("{DOING}: reading backup");
                let data = atomic::read_bounded(bak, MAX_FILE_BYTES, &doing)?
                    .ok_or_else(|| Error::io(doing, bak, io::Error::from(io::ErrorKind::NotFound)))?;
                Some(atomic::stage(
                    part.path,
                    &data,
                    part.mode,
                    &format!("{DOING}: {}", part.what),
                )?)
            }
            None => None,
        });
    }
    let mut first_error = None;
    for (part, file) in parts.iter().zip(staged) {
        let restored = match file {
            Some(file) => file.commit(),
            None => match std::fs::remove_file(part.path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    Err(Error::io(format!("{DOING}: removing new {}", part.what), part.path, e))
                }
                _ => Ok(()),
            },
        };
        if let Err(e) = restored {
            first_error.get_or_insert(e);
        }
    }
    if let Err(e) = sync_dirs(&parts) {
        first_error.get_or_insert(e);
    }
    first_error.map_or(Ok(()), Err)
}

/// The `.bak` set as a [`Backup`] to restore with [`rollback`], if all four
/// files are there and the key, certificate and fullchain belong together
/// ([`belong_together`]); `None` otherwise.
pub fn whole_backup(paths: &Paths) -> Option<Backup> {
    let parts = parts(paths);
    let saved = read_parts(&parts, backup_path);
    if saved.iter().any(Option::is_none) || !set_is_whole(&saved) {
        return None;
    }
    Some(Backup {
        key: Some(backup_path(&paths.key)),
        cert: Some(backup_path(&paths.cert)),
        chain: Some(backup_path(&paths.chain)),
        fullchain: Some(backup_path(&paths.fullchain)),
    })
}

/// Whether a key, a leaf certificate and a fullchain belong together as a
/// web server needs them: the key is the certificate's and the fullchain
/// starts with that certificate. Costs one P-256 public-key derivation.
pub fn belong_together(key_pem: &[u8], cert_pem: &[u8], fullchain_pem: &[u8]) -> bool {
    let Ok(key_pem) = std::str::from_utf8(key_pem) else {
        return false;
    };
    let Ok(key) = CertKey::from_pkcs8_pem(key_pem) else {
        return false;
    };
    let (Ok(cert), Ok(fullchain)) = (
        certificate::pem_to_der_chain(cert_pem),
        certificate::pem_to_der_chain(fullchain_pem),
    ) else {
        return false;
    };
    let Some(leaf) = cert.first() else {
        return false;
    };
    fullchain.first() == Some(leaf) && certificate::inspect(leaf).is_ok_and(|info| info.spki_der == key.spki_der())
}

/// Reads the installed set back: `Ok(None)` if the certificate file is
/// missing; other missing parts read as empty strings.
pub fn read_installed(paths: &Paths) -> Result<Option<Material>> {
    let read = |path: &Path, what: &str| -> Result<Option<String>> {
        let doing = format!("reading installed {what}");
        match atomic::read_bounded(path, MAX_FILE_BYTES, &doing)? {
            None => Ok(None),
            Some(bytes) => String::from_utf8(bytes).map(Some).map_err(|_| {
                Error::io(
                    doing,
                    path,
                    io::Error::new(io::ErrorKind::InvalidData, "not UTF-8 text"),
                )
            }),
        }
    };
    let Some(cert_pem) = read(&paths.cert, "certificate")? else {
        return Ok(None);
    };
    Ok(Some(Material {
        key_pem: read(&paths.key, "key")?.unwrap_or_default(),
        cert_pem,
        chain_pem: read(&paths.chain, "chain")?.unwrap_or_default(),
        fullchain_pem: read(&paths.fullchain, "fullchain")?.unwrap_or_default(),
    }))
}

/// Two parts at one path would overwrite each other (and collide on the
/// temporary name); the configuration already refuses that.
fn check_distinct(paths: &Paths) -> Result<()> {
    let parts = parts(paths);
    for (i, a) in parts.iter().enumerate() {
        if let Some(b) = parts[..i].iter().find(|b| b.path == a.path) {
            return Err(Error::Other(format!(
                "installing certificate: the {} and the {} would both be written to {}",
                b.what,
                a.what,
                a.path.display()
            )));
        }
    }
    Ok(())
}

/// Index of the key in [`parts`].
const KEY: usize = 2;

/// What an install does to the `.bak` files before it touches the set.
#[derive(Default)]
struct BackupPlan {
    /// Where the previous set is kept (what [`install`] returns).
    backup: Backup,
    /// Backups to write: index in [`parts`], content.
    write: Vec<(usize, Vec<u8>)>,
    /// Backups to remove: parts that do not exist now.
    remove: Vec<usize>,
}

/// Decides what to back up. The installed files are copied to `<file>.bak`
/// (the key's backup 0600 like the key) where the backup differs; a stale
/// `.bak` of a part that no longer exists is removed, so the files on disk
/// tell the same story as the returned [`Backup`]. One exception: when the
/// installed key, certificate and fullchain do not belong together (an
/// install interrupted by a crash that no run could repair yet) while the
/// backup does, the backup is kept: it is the last set known to work, and
/// what a failed reload rolls back to.
fn plan_backup(parts: &[Part<'_>; 4]) -> Result<BackupPlan> {
    let mut current = Vec::with_capacity(4);
    for part in parts {
        let doing = format!("installing certificate: backing up {}", part.what);
        current.push(atomic::read_bounded(part.path, MAX_FILE_BYTES, &doing)?);
    }
    let mut plan = BackupPlan::default();
    if !set_is_whole(&current) && set_is_whole(&read_parts(parts, backup_path)) {
        log::warn!(
            "the installed key, certificate and fullchain ({}) do not belong together; \
             keeping the backup (*.bak) of the last set that did",
            parts[1].path.display()
        );
        for (part, slot) in parts.iter().zip(backups(&mut plan.backup)) {
            *slot = Some(backup_path(part.path));
        }
        return Ok(plan);
    }
    for (i, (part, data)) in parts.iter().zip(current).enumerate() {
        let bak = backup_path(part.path);
        match data {
            Some(data) => {
                if !atomic::holds_exactly(&bak, &data, part.mode) {
                    plan.write.push((i, data));
                }
                *backups(&mut plan.backup)[i] = Some(bak);
            }
            None => plan.remove.push(i),
        }
    }
    // The key's backup is rewritten whenever any backup changes (see
    // [`commit_backups`]).
    let changes = !plan.write.is_empty() || plan.remove.iter().any(|i| backup_path(parts[*i].path).exists());
    if changes && !plan.write.iter().any(|(i, _)| *i == KEY) && !plan.remove.contains(&KEY) {
        let doing = "installing certificate: backing up key";
        if let Some(key) = atomic::read_bounded(parts[KEY].path, MAX_FILE_BYTES, doing)? {
            plan.write.push((KEY, key));
        }
    }
    Ok(plan)
}

/// Puts the staged backups in place. The key's backup goes first and comes
/// back last, each step made durable (directory fsync) before the next: so
/// whenever the install is interrupted, a `.bak` key on disk belongs to
/// the `.bak` certificate and fullchain beside it, and the whole backup is
/// on the storage before the first rename of the set.
fn commit_backups(parts: &[Part<'_>; 4], plan: &BackupPlan, staged: Vec<(usize, Staged)>) -> Result<()> {
    if staged.is_empty() && plan.remove.is_empty() {
        return Ok(());
    }
    let remove = |i: usize| -> Result<()> {
        let bak = backup_path(parts[i].path);
        match std::fs::remove_file(&bak) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(Error::io(
                format!(
                    "installing certificate: backing up {}: removing the old backup",
                    parts[i].what
                ),
                &bak,
                e,
            )),
            _ => Ok(()),
        }
    };
    remove(KEY)?;
    atomic::fsync_dir(&atomic::parent_dir(parts[KEY].path))?;
    for i in plan.remove.iter().filter(|i| **i != KEY) {
        remove(*i)?;
    }
    let (key, others): (Vec<_>, Vec<_>) = staged.into_iter().partition(|(i, _)| *i == KEY);
    for (_, file) in others.into_iter().chain(key) {
        file.commit()?;
    }
    sync_dirs(parts)
}

/// Reads each part at `path_of(part path)`; a missing or unreadable file
/// is `None`.
fn read_parts(parts: &[Part<'_>; 4], path_of: impl Fn(&Path) -> PathBuf) -> Vec<Option<Vec<u8>>> {
    parts
        .iter()
        .map(|part| {
            atomic::read_bounded(&path_of(part.path), MAX_FILE_BYTES, "reading")
                .ok()
                .flatten()
        })
        .collect()
}

/// [`belong_together`] for parts read in [`parts`] order.
fn set_is_whole(read: &[Option<Vec<u8>>]) -> bool {
    match read {
        [_, Some(cert), Some(key), Some(fullchain)] => belong_together(key, cert, fullchain),
        _ => false,
    }
}

/// fsyncs each distinct directory of the set once, making the renames
/// durable.
fn sync_dirs(parts: &[Part<'_>]) -> Result<()> {
    let mut done: Vec<PathBuf> = Vec::with_capacity(parts.len());
    for part in parts {
        let dir = atomic::parent_dir(part.path);
        if !done.contains(&dir) {
            atomic::fsync_dir(&dir)?;
            done.push(dir);
        }
    }
    Ok(())
}

/// The install error, with the rollback's failure appended if it failed
/// too (the operator then has to restore the `.bak` files by hand).
fn with_rollback(error: Error, rolled_back: Result<()>) -> Error {
    match rolled_back {
        Ok(()) => error,
        Err(again) => Error::Other(format!(
            "{error}; rolling back also failed: {again} (the previous files are saved as *.bak)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::atomic::tests::TempDir;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    fn paths_in(d: &TempDir, sub: &str) -> Paths {
        Paths {
            key: d.path(&format!("{sub}/private/device.key")),
            cert: d.path(&format!("{sub}/device.crt")),
            chain: d.path(&format!("{sub}/chain.pem")),
            fullchain: d.path(&format!("{sub}/fullchain.pem")),
        }
    }

    fn material(tag: &str) -> Material {
        Material {
            key_pem: format!("KEY {tag}\n"),
            cert_pem: format!("CERT {tag}\n"),
            chain_pem: format!("CHAIN {tag}\n"),
            fullchain_pem: format!("FULL {tag}\n"),
        }
    }

    fn mode_of(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn first_install_creates_dirs_and_modes() {
        let d = TempDir::new("install");
        let paths = paths_in(&d, "etc/lancert");
        let backup = install(&paths, &material("one")).unwrap();
        assert!(backup.is_empty());
        assert_eq!(read_installed(&paths).unwrap().unwrap(), material("one"));
        assert_eq!(mode_of(&paths.key), 0o600);
        assert_eq!(mode_of(&paths.cert), 0o644);
        assert_eq!(mode_of(&paths.fullchain), 0o644);
        assert!(!backup_path(&paths.cert).exists());
        // No temporaries left behind.
        for dir in [d.path("etc/lancert"), d.path("etc/lancert/private")] {
            for entry in fs::read_dir(dir).unwrap() {
                assert!(!entry.unwrap().file_name().to_string_lossy().contains(".tmp-"));
            }
        }
    }

    #[test]
    fn backup_and_rollback_restore_byte_for_byte() {
        let d = TempDir::new("install");
        let paths = paths_in(&d, "x");
        install(&paths, &material("old")).unwrap();
        let backup = install(&paths, &material("new")).unwrap();
        assert_eq!(read_installed(&paths).unwrap().unwrap(), material("new"));
        let key_bak = backup.key.clone().unwrap();
        assert_eq!(key_bak, d.path("x/private/device.key.bak"));
        assert_eq!(fs::read(&key_bak).unwrap(), b"KEY old\n");
        assert_eq!(mode_of(&key_bak), 0o600);
        assert_eq!(fs::read(backup.fullchain.as_ref().unwrap()).unwrap(), b"FULL old\n");
        rollback(&paths, &backup).unwrap();
        assert_eq!(read_installed(&paths).unwrap().unwrap(), material("old"));
        assert_eq!(mode_of(&paths.key), 0o600);
    }

    #[test]
    fn rollback_removes_parts_that_were_new() {
        let d = TempDir::new("install");
        let paths = paths_in(&d, "y");
        fs::create_dir_all(d.path("y")).unwrap();
        fs::write(&paths.cert, "CERT before\n").unwrap();
        let backup = install(&paths, &material("new")).unwrap();
        assert!(backup.key.is_none() && backup.cert.is_some());
        rollback(&paths, &backup).unwrap();
        assert_eq!(fs::read(&paths.cert).unwrap(), b"CERT before\n");
        assert!(!paths.key.exists() && !paths.chain.exists() && !paths.fullchain.exists());
    }

    #[test]
    fn failed_rename_rolls_back() {
        let d = TempDir::new("install");
        let paths = paths_in(&d, "z");
        install(&paths, &material("old")).unwrap();
        // The fullchain is renamed last: fail it after the others are in.
        let fullchain = paths.fullchain.clone();
        let err = install_with(&paths, &material("new"), |staged| {
            if staged.path() == fullchain {
                return Err(Error::io(
                    "test: renaming",
                    staged.path(),
                    io::Error::from_raw_os_error(libc::ENOSPC),
                ));
            }
            staged.commit()
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("No space left on device"), "{err}");
        assert_eq!(read_installed(&paths).unwrap().unwrap(), material("old"));
        assert_eq!(mode_of(&paths.key), 0o600);
        // The uncommitted temporary was removed.
        assert!(!d.path(&format!("z/.fullchain.pem.tmp-{}", std::process::id())).exists());
    }

    #[test]
    fn symlink_at_temp_path_fails_cleanly() {
        let d = TempDir::new("install");
        let paths = paths_in(&d, "s");
        install(&paths, &material("old")).unwrap();
        let victim = d.path("victim");
        fs::write(&victim, "precious").unwrap();
        let tmp = d.path(&format!("s/private/.device.key.tmp-{}", std::process::id()));
        std::os::unix::fs::symlink(&victim, &tmp).unwrap();
        assert!(install(&paths, &material("new")).is_err());
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        assert_eq!(read_installed(&paths).unwrap().unwrap(), material("old"));
        assert!(!d.path(&format!("s/.device.crt.tmp-{}", std::process::id())).exists());
    }

    #[test]
    fn read_installed_missing_cert() {
        let d = TempDir::new("install");
        assert_eq!(read_installed(&paths_in(&d, "m")).unwrap(), None);
    }

    #[test]
    fn same_path_twice_is_refused() {
        let d = TempDir::new("install");
        let mut paths = paths_in(&d, "dup");
        paths.fullchain = paths.cert.clone();
        let err = install(&paths, &material("x")).unwrap_err().to_string();
        assert!(err.contains("both be written"), "{err}");
    }

    /// A real set (key, self-signed leaf) that [`belong_together`] accepts.
    fn real(tag: &str) -> Material {
        let key = CertKey::generate().unwrap();
        crate::self_signed::generate(&key, &format!("{tag}.example.com"), 1_700_000_000).unwrap()
    }

    fn backup_of(paths: &Paths) -> Material {
        let read = |p: &Path| fs::read_to_string(backup_path(p)).unwrap();
        Material {
            key_pem: read(&paths.key),
            cert_pem: read(&paths.cert),
            chain_pem: read(&paths.chain),
            fullchain_pem: read(&paths.fullchain),
        }
    }

    #[test]
    fn whole_sets_and_torn_ones() {
        let (a, b) = (real("a"), real("b"));
        let whole =
            |m: &Material| belong_together(m.key_pem.as_bytes(), m.cert_pem.as_bytes(), m.fullchain_pem.as_bytes());
        assert!(whole(&a));
        assert!(!whole(&Material {
            key_pem: b.key_pem.clone(),
            ..a.clone()
        }));
        assert!(!whole(&Material {
            fullchain_pem: b.fullchain_pem.clone(),
            ..a.clone()
        }));
        assert!(!whole(&material("fake")));

        let d = TempDir::new("install");
        let paths = paths_in(&d, "w");
        install(&paths, &a).unwrap();
        assert_eq!(whole_backup(&paths), None, "no backup after a first install");
        install(&paths, &b).unwrap();
        assert_eq!(backup_of(&paths), a);
        assert_eq!(whole_backup(&paths).unwrap().key, Some(backup_path(&paths.key)));
        fs::write(backup_path(&paths.key), &b.key_pem).unwrap();
        assert_eq!(whole_backup(&paths), None, "a backup key of another set");
    }

    #[test]
    fn a_torn_set_is_not_backed_up_over_a_whole_backup() {
        let (a, b, c) = (real("a"), real("b"), real("c"));
        let d = TempDir::new("install");
        let paths = paths_in(&d, "t");
        install(&paths, &a).unwrap();
        install(&paths, &b).unwrap();
        // An install of c interrupted after the certificate's rename: c's
        // leaf with b's key.
        fs::write(&paths.cert, &c.cert_pem).unwrap();
        fs::write(&paths.chain, &c.chain_pem).unwrap();
        let backup = install(&paths, &c).unwrap();
        assert_eq!(backup_of(&paths), a, "the last whole set was replaced by a torn one");
        assert_eq!(read_installed(&paths).unwrap().unwrap(), c);
        // A failed reload rolls back to the last whole set.
        rollback(&paths, &backup).unwrap();
        assert_eq!(read_installed(&paths).unwrap().unwrap(), a);
    }

    #[test]
    fn unchanged_backups_are_not_rewritten() {
        let (a, b) = (real("a"), real("b"));
        let d = TempDir::new("install");
        let paths = paths_in(&d, "k");
        install(&paths, &a).unwrap();
        install(&paths, &b).unwrap();
        install(&paths, &b).unwrap();
        assert_eq!(backup_of(&paths), b);
        let key_bak = backup_path(&paths.key);
        let before = fs::metadata(&key_bak).unwrap().modified().unwrap();
        // The same set once more: the backups already hold it (flash wears).
        install(&paths, &b).unwrap();
        assert_eq!(fs::metadata(&key_bak).unwrap().modified().unwrap(), before);
        assert_eq!(backup_of(&paths), b);
        assert_eq!(mode_of(&key_bak), 0o600);
    }

    #[test]
    fn debug_hides_key() {
        let text = format!("{:?}", material("secret"));
        assert!(!text.contains("KEY secret"), "{text}");
    }
}
