//! The local side: reading directories (symlinks are never followed) and sizing a tree.

use std::io;
use std::path::{Path, PathBuf};

/// One entry of a local directory, classified.
#[derive(Debug)]
pub enum Entry {
    File {
        name: String,
        path: PathBuf,
        size: u64,
    },
    Dir {
        name: String,
        path: PathBuf,
    },
    /// Left out on purpose: a symbolic link (not followed) or a special file.
    Skip {
        path: PathBuf,
        reason: String,
    },
    /// Cannot be imported: a name the server refuses, or an entry that cannot be read.
    Bad {
        path: PathBuf,
        is_dir: bool,
        reason: String,
    },
}

/// Why a local name cannot be an object name (SPEC §5), or None if it can.
fn name_problem(name: &std::ffi::OsStr) -> Option<String> {
    match name.to_str() {
        None => Some("the name is not valid UTF-8".into()),
        Some(s) => crate::model::path::check_name(s)
            .err()
            .map(|e| e.to_string()),
    }
}

/// The entries of `dir`, sorted by name (blocking).
pub fn read_dir_sorted(dir: &Path) -> io::Result<Vec<Entry>> {
    let mut raw: Vec<std::fs::DirEntry> = std::fs::read_dir(dir)?.collect::<io::Result<_>>()?;
    raw.sort_by_key(|e| e.file_name());
    let mut out = Vec::with_capacity(raw.len());
    for e in raw {
        let path = e.path();
        let os_name = e.file_name();
        let ft = match e.file_type() {
            Ok(t) => t,
            Err(err) => {
                out.push(Entry::Bad {
                    path,
                    is_dir: false,
                    reason: format!("cannot read its type: {err}"),
                });
                continue;
            }
        };
        if ft.is_symlink() {
            out.push(Entry::Skip {
                path,
                reason: "symbolic link (not followed)".into(),
            });
            continue;
        }
        if !ft.is_dir() && !ft.is_file() {
            out.push(Entry::Skip {
                path,
                reason: "not a regular file or directory".into(),
            });
            continue;
        }
        if let Some(reason) = name_problem(&os_name) {
            out.push(Entry::Bad {
                path,
                is_dir: ft.is_dir(),
                reason,
            });
            continue;
        }
        let name = os_name.to_string_lossy().into_owned();
        if ft.is_dir() {
            out.push(Entry::Dir { name, path });
            continue;
        }
        match e.metadata() {
            Ok(m) => out.push(Entry::File {
                name,
                path,
                size: m.len(),
            }),
            Err(err) => out.push(Entry::Bad {
                path,
                is_dir: false,
                reason: format!("cannot read its size: {err}"),
            }),
        }
    }
    Ok(out)
}

/// Regular files and their total size under `dir` (symlinks not followed; unreadable
/// folders are passed over): the progress bar's totals. Blocking.
pub fn totals(dir: &Path) -> (u64, u64) {
    let (mut files, mut bytes) = (0u64, 0u64);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                files += 1;
                bytes += e.metadata().map(|m| m.len()).unwrap_or(0);
            }
        }
    }
    (files, bytes)
}

/// `path` relative to the import's root, for messages.
pub fn rel(root: &Path, path: &Path) -> String {
    let r = path.strip_prefix(root).unwrap_or(path);
    let s = r.to_string_lossy();
    if s.is_empty() {
        ".".into()
    } else {
        s.into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_classified_and_sorted() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("b.txt"), b"12345").unwrap();
        std::fs::create_dir(d.path().join("a dir")).unwrap();
        std::fs::write(d.path().join("a dir/x"), b"1").unwrap();
        std::os::unix::fs::symlink("b.txt", d.path().join("c-link")).unwrap();
        let bad = {
            use std::os::unix::ffi::OsStrExt;
            std::ffi::OsStr::from_bytes(b"bad\xff").to_os_string()
        };
        std::fs::write(d.path().join(&bad), b"").unwrap();
        let got = read_dir_sorted(d.path()).unwrap();
        assert!(matches!(&got[0], Entry::Dir { name, .. } if name == "a dir"));
        assert!(matches!(&got[1], Entry::File { name, size: 5, .. } if name == "b.txt"));
        assert!(matches!(&got[2], Entry::Bad { is_dir: false, .. }));
        assert!(matches!(&got[3], Entry::Skip { .. }));
        assert_eq!(totals(d.path()), (3, 6));
        assert_eq!(totals(&d.path().join("a dir")).0, 1);
        assert_eq!(rel(d.path(), &d.path().join("a dir/x")), "a dir/x");
    }
}
