//! Private keys the agent keeps in its state directory: the device identity
//! key (which signs every request to the server) and the key of an order in
//! flight. Both are created 0600 from the first byte (never chmod-ed after
//! the fact) and refused if anyone else can read them.

use crate::error::{Error, Result};
use crate::keygen::CertKey;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// Largest key file read.
const MAX_KEY_BYTES: u64 = 16 * 1024;

/// Reads a PEM key; `Ok(None)` if the file does not exist. A key readable
/// by group or others is refused with the fix in the message.
pub fn load(path: &Path, what: &str) -> Result<Option<CertKey>> {
    let doing = format!("reading {what}");
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(doing, path, e)),
    };
    let mode = file.metadata().map_err(|e| Error::io(&doing, path, e))?.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::Other(format!(
            "{doing} {}: mode {mode:04o} lets others read the key; refusing to use it (chmod 600 it if it was not exposed, \
             otherwise remove it)",
            path.display()
        )));
    }
    let mut pem = String::new();
    file.take(MAX_KEY_BYTES)
        .read_to_string(&mut pem)
        .map_err(|e| Error::io(&doing, path, e))?;
    CertKey::from_pkcs8_pem(&pem)
        .map(Some)
        .map_err(|why| Error::Other(format!("{doing} {}: not a P-256 PKCS#8 PEM key: {why}", path.display())))
}

/// Generates a key and writes it to `path`, which must not exist yet
/// (`O_EXCL`, so two provisioning runs cannot both write one).
pub fn create(path: &Path, what: &str) -> Result<CertKey> {
    let doing = format!("creating {what}");
    let key = CertKey::generate()?;
    let pem = key.to_pkcs8_pem()?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| Error::io(&doing, path, e))?;
    let written = file.write_all(pem.as_bytes()).and_then(|_| file.sync_all());
    if let Err(e) = written {
        let _ = std::fs::remove_file(path);
        return Err(Error::io(doing, path, e));
    }
    if let Some(dir) = path.parent() {
        crate::atomic::fsync_dir(dir)?;
    }
    Ok(key)
}
