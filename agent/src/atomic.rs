//! Atomic file replacement, and bounded reads of small files.
//!
//! A file is replaced by writing a temporary file in the same directory,
//! fsyncing it, renaming it over the target and fsyncing the directory:
//! rename(2) within one file system is atomic (POSIX), so a reader sees the
//! old or the new file, never a torn one, and after a power cut the target is
//! one or the other (the directory fsync makes the rename itself durable).
//!
//! The temporary name is predictable (`.{name}.tmp-{pid}`), so it is opened
//! with `O_CREAT|O_EXCL|O_NOFOLLOW`: a symlink planted at that name is never
//! followed, and the write fails instead of writing through it. A process
//! killed (or a device losing power) between creating and renaming the
//! temporary leaves it behind under its pid; the next write of the same
//! file removes such leftovers, so crashes do not pile up copies (of a
//! private key, too).

use crate::error::{Error, Result};
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Writes `data` to `path` atomically with permission bits `mode`.
///
/// The temporary file `.{file_name}.tmp-{pid}` next to `path` is created
/// with `mode` from the start (never more open than `mode` at any moment)
/// and removed on any error. A leftover temporary of ours (a regular file, e.g. from a crash
/// before a reboot that reused our pid) is replaced; anything else at that
/// name (a symlink, a directory) makes the write fail with the target
/// untouched. The parent directory must exist.
///
/// If `path` is a symlink, the link itself is replaced by a regular file.
///
/// One writer per path at a time: the temporary name is per process, and
/// the agent is single-threaded and holds its run lock.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32, doing: &str) -> Result<()> {
    let staged = stage(path, data, mode, doing)?;
    staged.commit()?;
    let dir = parent_dir(path);
    fsync_dir(&dir).map_err(|e| match e {
        Error::Io { path, source, .. } => Error::io(format!("{doing}: syncing directory"), path, source),
        other => other,
    })
}

/// A new file content written and fsynced under the temporary name, not
/// yet renamed over its target. Dropping it without [`Staged::commit`]
/// removes the temporary file.
#[derive(Debug)]
pub struct Staged {
    tmp: PathBuf,
    path: PathBuf,
    doing: String,
    committed: bool,
}

impl Staged {
    /// The file this will replace.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Renames the temporary file over the target (atomic, POSIX rename(2)).
    /// The caller fsyncs the directory ([`fsync_dir`]) once all its renames
    /// are done.
    pub fn commit(mut self) -> Result<()> {
        fs::rename(&self.tmp, &self.path).map_err(|e| {
            Error::io(
                format!("{}: renaming {} to", self.doing, self.tmp.display()),
                &self.path,
                e,
            )
        })?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.committed {
            // Best effort: whatever error got us here is the one reported.
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Writes `data` with `mode` to the temporary name next to `path` and
/// fsyncs it, without touching `path` (see [`write_atomic`] for the
/// temporary file's rules). Staging every file of a set before renaming
/// any lets a full disk fail the whole set before anything visible changes.
pub fn stage(path: &Path, data: &[u8], mode: u32, doing: &str) -> Result<Staged> {
    let tmp = temp_path(path, doing)?;
    remove_stale_temps(path);
    let mut file = create_temp(&tmp, mode, doing)?;
    let staged = Staged {
        tmp,
        path: path.to_path_buf(),
        doing: doing.to_string(),
        committed: false,
    };
    fill_temp(&mut file, data, mode).map_err(|e| Error::io(format!("{doing}: writing"), &staged.tmp, e))?;
    Ok(staged)
}

/// The directory holding `path` (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Like [`write_atomic`], but leaves the file alone (returns `Ok(false)`)
/// when it already holds exactly `data` with permission bits `mode`: flash
/// has a limited number of erase cycles, and most runs change nothing.
/// Returns `Ok(true)` if the file was written.
pub fn write_if_changed(path: &Path, data: &[u8], mode: u32, doing: &str) -> Result<bool> {
    if holds_exactly(path, data, mode) {
        return Ok(false);
    }
    write_atomic(path, data, mode, doing)?;
    Ok(true)
}

/// fsyncs a directory so that a rename or unlink in it survives a power cut.
///
/// File systems that cannot sync a directory (`EINVAL`, some FUSE and
/// network file systems) are accepted: there is nothing more we could do.
pub fn fsync_dir(dir: &Path) -> Result<()> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let handle = File::open(dir).map_err(|e| Error::io("opening directory", dir, e))?;
    match handle.sync_all() {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(()),
        Err(e) => Err(Error::io("syncing directory", dir, e)),
        Ok(()) => Ok(()),
    }
}

/// Creates the missing parent directories of `path` with mode 0755.
pub fn create_parent_dirs(path: &Path, doing: &str) -> Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() && !dir.is_dir() => fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(|e| Error::io(format!("{doing}: creating directory"), dir, e)),
        _ => Ok(()),
    }
}

/// Reads a whole file of at most `limit` bytes: `Ok(None)` if it does not
/// exist, an `InvalidData` error naming the limit if it is larger (a file
/// we only ever expect to be a few KiB must not exhaust a router's RAM).
pub fn read_bounded(path: &Path, limit: u64, doing: &str) -> Result<Option<Vec<u8>>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(doing, path, e)),
    };
    let mut data = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut data)
        .map_err(|e| Error::io(doing, path, e))?;
    if data.len() as u64 > limit {
        let e = io::Error::new(io::ErrorKind::InvalidData, format!("larger than {limit} bytes"));
        return Err(Error::io(doing, path, e));
    }
    Ok(Some(data))
}

/// The temporary name next to `path`: `.{file_name}.tmp-{pid}`.
fn temp_path(path: &Path, doing: &str) -> Result<PathBuf> {
    let name = path.file_name().ok_or_else(|| {
        Error::io(
            doing,
            path,
            io::Error::new(io::ErrorKind::InvalidInput, "not a file name"),
        )
    })?;
    let mut tmp = OsString::from(".");
    tmp.push(name);
    tmp.push(format!(".tmp-{}", std::process::id()));
    Ok(parent_dir(path).join(tmp))
}

/// Removes the temporaries of `path` that other processes left behind
/// (`.{file_name}.tmp-{pid}` with another pid than ours, plain files only):
/// a writer killed between creating and renaming its temporary cannot
/// clean up. We hold the check lock (one writer per path), so no live
/// process is writing them. Anything but a plain file at such a name (a
/// planted symlink) is left for an operator to see, and unlink(2) removes
/// a name without following it. Best effort: a failure is logged and the
/// write goes on.
fn remove_stale_temps(path: &Path) {
    let Some(name) = path.file_name() else { return };
    let mut prefix = OsString::from(".");
    prefix.push(name);
    prefix.push(".tmp-");
    let own = std::process::id().to_string();
    let dir = parent_dir(path);
    let Ok(entries) = fs::read_dir(&dir) else { return };
    for entry in entries.flatten() {
        let entry_name = entry.file_name();
        let Some(pid) = entry_name.as_bytes().strip_prefix(prefix.as_bytes()) else {
            continue;
        };
        if pid.is_empty() || !pid.iter().all(u8::is_ascii_digit) || pid == own.as_bytes() {
            continue;
        }
        if !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        match fs::remove_file(entry.path()) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                log::warn!("removing the stale temporary file {}: {e}", entry.path().display());
            }
            _ => log::debug!("removed the stale temporary file {}", entry.path().display()),
        }
    }
}

/// Creates the temporary file exclusively, never through a symlink.
fn create_temp(tmp: &Path, mode: u32, doing: &str) -> Result<File> {
    let open = || {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(tmp)
    };
    match open() {
        Ok(f) => Ok(f),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            // Pids repeat across reboots on small devices, so a temporary
            // left by a crash can carry our name. Only a plain file is ours
            // to remove; unlink(2) removes a name, never follows it.
            match fs::symlink_metadata(tmp) {
                Ok(m) if m.file_type().is_file() => {
                    fs::remove_file(tmp).map_err(|e| Error::io(format!("{doing}: removing stale"), tmp, e))?;
                    open().map_err(|e| Error::io(format!("{doing}: creating"), tmp, e))
                }
                _ => Err(Error::io(
                    format!("{doing}: creating"),
                    tmp,
                    io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        "something other than a file is in the way",
                    ),
                )),
            }
        }
        Err(e) => Err(Error::io(format!("{doing}: creating"), tmp, e)),
    }
}

/// Writes and fsyncs the temporary file, with exactly `mode`.
fn fill_temp(file: &mut File, data: &[u8], mode: u32) -> io::Result<()> {
    // open(2) applies the umask, which can only remove bits: the file was
    // never more open than `mode`. Restoring the removed bits through the
    // descriptor keeps a certificate readable by a web server whose
    // workers run as another user even when we run under `umask 077`.
    if file.metadata()?.permissions().mode() & 0o7777 != mode {
        file.set_permissions(fs::Permissions::from_mode(mode))?;
    }
    file.write_all(data)?;
    file.sync_all()
}

/// Whether `path` holds exactly `data` with permission bits `mode`.
pub fn holds_exactly(path: &Path, data: &[u8], mode: u32) -> bool {
    let Ok(file) = File::open(path) else { return false };
    let Ok(meta) = file.metadata() else { return false };
    if !meta.is_file() || meta.len() != data.len() as u64 || meta.permissions().mode() & 0o7777 != mode {
        return false;
    }
    let mut current = Vec::with_capacity(data.len());
    match file.take(data.len() as u64 + 1).read_to_end(&mut current) {
        Ok(_) => current == data,
        Err(_) => false,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::symlink;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A fresh, empty directory under the system temp dir, removed on drop.
    pub(crate) struct TempDir(pub PathBuf);

    impl TempDir {
        pub(crate) fn new(tag: &str) -> TempDir {
            static N: AtomicU32 = AtomicU32::new(0);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            let dir = std::env::temp_dir().join(format!(
                "lancert-test-{tag}-{}-{}-{nanos}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        pub(crate) fn path(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    fn temps_in(dir: &Path) -> Vec<String> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp-"))
            .collect()
    }

    #[test]
    fn writes_new_and_replaces_existing_with_mode() {
        let d = TempDir::new("atomic");
        let p = d.path("a.key");
        write_atomic(&p, b"one", 0o600, "test").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"one");
        assert_eq!(mode_of(&p), 0o600);
        write_atomic(&p, b"two", 0o644, "test").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(mode_of(&p), 0o644);
        assert!(temps_in(&d.0).is_empty());
    }

    #[test]
    fn write_if_changed_skips_identical_content() {
        let d = TempDir::new("atomic");
        let p = d.path("c.pem");
        assert!(write_if_changed(&p, b"x", 0o644, "test").unwrap());
        let inode = std::os::unix::fs::MetadataExt::ino(&fs::metadata(&p).unwrap());
        assert!(!write_if_changed(&p, b"x", 0o644, "test").unwrap());
        assert_eq!(std::os::unix::fs::MetadataExt::ino(&fs::metadata(&p).unwrap()), inode);
        // Same bytes, wrong mode: rewritten so a key never stays readable.
        assert!(write_if_changed(&p, b"x", 0o600, "test").unwrap());
        assert_eq!(mode_of(&p), 0o600);
        assert!(write_if_changed(&p, b"y", 0o600, "test").unwrap());
        assert_eq!(fs::read(&p).unwrap(), b"y");
    }

    #[test]
    fn symlink_at_temp_name_is_not_followed() {
        let d = TempDir::new("atomic");
        let p = d.path("device.crt");
        let victim = d.path("victim");
        fs::write(&victim, b"precious").unwrap();
        fs::write(&p, b"old").unwrap();
        let tmp = d.path(&format!(".device.crt.tmp-{}", std::process::id()));
        symlink(&victim, &tmp).unwrap();
        let err = write_atomic(&p, b"new", 0o644, "installing certificate").unwrap_err();
        assert!(err.to_string().contains("installing certificate"), "{err}");
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        assert_eq!(fs::read(&p).unwrap(), b"old");
        // The planted link is left for an operator to see, not removed.
        assert!(fs::symlink_metadata(&tmp).unwrap().file_type().is_symlink());
    }

    #[test]
    fn stale_temp_file_of_ours_is_replaced() {
        let d = TempDir::new("atomic");
        let p = d.path("device.key");
        let tmp = d.path(&format!(".device.key.tmp-{}", std::process::id()));
        fs::write(&tmp, b"half-written by a crashed run").unwrap();
        write_atomic(&p, b"fresh", 0o600, "test").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"fresh");
        assert!(!tmp.exists());
    }

    #[test]
    fn temps_left_by_dead_writers_are_removed_but_not_links() {
        let d = TempDir::new("atomic");
        let p = d.path("device.key");
        fs::write(d.path(".device.key.tmp-4000000"), b"key copy of a killed run").unwrap();
        fs::write(d.path(".device.key.tmp-x1"), b"not a pid").unwrap();
        fs::write(d.path(".chain.pem.tmp-4000000"), b"another file's").unwrap();
        symlink(d.path("victim"), d.path(".device.key.tmp-4000001")).unwrap();
        write_atomic(&p, b"fresh", 0o600, "test").unwrap();
        let mut left = temps_in(&d.0);
        left.sort();
        assert_eq!(
            left,
            [
                ".chain.pem.tmp-4000000",
                ".device.key.tmp-4000001",
                ".device.key.tmp-x1"
            ]
        );
        assert!(!d.path("victim").exists());
    }

    #[test]
    fn failure_leaves_no_temp_and_names_path() {
        let d = TempDir::new("atomic");
        // Renaming a file over a non-empty directory fails.
        let p = d.path("dir");
        fs::create_dir(&p).unwrap();
        fs::write(p.join("inside"), b"x").unwrap();
        let err = write_atomic(&p, b"data", 0o644, "test").unwrap_err();
        assert!(err.to_string().contains("renaming"), "{err}");
        assert!(temps_in(&d.0).is_empty());
        // A missing directory is an error naming the temporary path.
        let q = d.path("missing/x.pem");
        let err = write_atomic(&q, b"data", 0o644, "test").unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
    }

    #[test]
    fn read_bounded_limits_and_missing() {
        let d = TempDir::new("atomic");
        let p = d.path("f");
        assert_eq!(read_bounded(&p, 10, "reading").unwrap(), None);
        fs::write(&p, b"0123456789").unwrap();
        assert_eq!(read_bounded(&p, 10, "reading").unwrap().unwrap(), b"0123456789");
        let err = read_bounded(&p, 9, "reading").unwrap_err();
        assert!(err.to_string().contains("larger than 9 bytes"), "{err}");
    }

    #[test]
    fn creates_parent_dirs() {
        let d = TempDir::new("atomic");
        let p = d.path("a/b/c.pem");
        create_parent_dirs(&p, "test").unwrap();
        assert_eq!(mode_of(&d.path("a/b")) & 0o777, 0o755 & !current_umask());
    }

    fn current_umask() -> u32 {
        let d = TempDir::new("umask");
        let p = d.path("probe");
        fs::DirBuilder::new().mode(0o777).create(&p).unwrap();
        0o777 & !mode_of(&p)
    }
}
