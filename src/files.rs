//! Files the server makes for itself (the data folder, the database, development keys):
//! owner-only from the moment they exist. One place, so that the key files of `crypto/`
//! and `identity/` are created the same careful way.

use std::fs;
use std::io::{self, Write};
use std::path::Path;

/// What [`create_once`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Made {
    /// This call wrote the file.
    Created,
    /// The file was there already (perhaps written by another process just now): read it.
    Existing,
}

/// Creates `path` holding `bytes`, readable by its owner only, unless it exists. Never a
/// partly written file under `path`, even if the process dies midway or two processes race:
/// the bytes are written and synced under a temporary name in the same folder, then
/// hard-linked into place, which fails if another process's file got there first (that
/// one wins). On file systems without hard links the file is created in place, still never
/// over an existing one. The folder is synced so the new name survives a crash.
pub fn create_once(path: &Path, bytes: &[u8]) -> io::Result<Made> {
    if path.exists() {
        return Ok(Made::Existing);
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let mut suffix = [0u8; 8];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut suffix);
    let tmp = dir.join(format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        u64::from_le_bytes(suffix)
    ));
    if let Err(e) = write_new_private(&tmp, bytes) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    let made = match linked {
        Ok(()) => Made::Created,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(Made::Existing),
        Err(_) => match write_new_private(path, bytes) {
            Ok(()) => Made::Created,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(Made::Existing),
            Err(e) => return Err(e),
        },
    };
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(made)
}

/// Creates `path` (failing if it exists) readable by its owner only, and syncs it.
fn write_new_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Creates a folder (and any missing parent) readable by its owner only.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Creates an empty file readable by its owner only, if there is none (SQLite would
/// create the database 0644, and gives its -wal and -shm files the database's mode).
pub fn create_private_file(path: &Path) -> io::Result<()> {
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_created_once_owner_only_and_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        assert_eq!(create_once(&path, b"first").unwrap(), Made::Created);
        assert_eq!(create_once(&path, b"second").unwrap(), Made::Existing);
        assert_eq!(fs::read(&path).unwrap(), b"first");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        // No temporary file is left behind.
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn racing_creators_agree_on_one_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        let made: Vec<(Made, Vec<u8>)> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8u8)
                .map(|i| {
                    let path = &path;
                    s.spawn(move || (create_once(path, &[i; 32]).unwrap(), vec![i; 32]))
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let created: Vec<_> = made.iter().filter(|(m, _)| *m == Made::Created).collect();
        assert_eq!(created.len(), 1);
        assert_eq!(fs::read(&path).unwrap(), created[0].1);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
