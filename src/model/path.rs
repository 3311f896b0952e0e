//! Addresses of objects: an oid, optionally followed by names (`1/world/jane/pics`).

use std::fmt;

use super::Oid;

/// Longest name accepted (bytes). Names are stored as given; this bounds index keys.
pub const MAX_NAME_BYTES: usize = 1024;
/// Deepest path accepted (names after the starting oid).
pub const MAX_PATH_DEPTH: usize = 256;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PathError {
    #[error("path is empty")]
    Empty,
    #[error("path must start with an oid, not {0:?}")]
    BadStart(String),
    #[error("{0}")]
    BadName(String),
    #[error("path has more than {MAX_PATH_DEPTH} names")]
    TooDeep,
}

/// Checks a single object name (SPEC §5): not empty, no `/`, not `.` or `..`, no NUL,
/// at most MAX_NAME_BYTES.
pub fn check_name(name: &str) -> Result<(), PathError> {
    if name.is_empty() {
        return Err(PathError::BadName("name is empty".into()));
    }
    if name == "." || name == ".." {
        return Err(PathError::BadName(format!("name {name:?} is not allowed")));
    }
    if name.contains('/') || name.contains('\0') {
        return Err(PathError::BadName(format!(
            "name {name:?} may not contain '/' or NUL"
        )));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(PathError::BadName(format!(
            "name is {} bytes; the limit is {MAX_NAME_BYTES}",
            name.len()
        )));
    }
    Ok(())
}

/// An oid followed by zero or more names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjPath {
    pub start: Oid,
    pub names: Vec<String>,
}

impl ObjPath {
    /// Parses `158340da66d4a444`, `1/world/jane` or `/1/world/jane/` (already
    /// percent-decoded per segment by the caller where it came from a URL).
    /// Empty segments (double or trailing slashes) are skipped.
    pub fn parse(s: &str) -> Result<ObjPath, PathError> {
        Self::from_segments(s.split('/').filter(|p| !p.is_empty()).map(str::to_string))
    }

    pub fn from_segments(mut segs: impl Iterator<Item = String>) -> Result<ObjPath, PathError> {
        let first = segs.next().ok_or(PathError::Empty)?;
        let start: Oid = first
            .parse()
            .map_err(|_| PathError::BadStart(first.clone()))?;
        let mut names = Vec::new();
        for n in segs {
            check_name(&n)?;
            names.push(n);
            if names.len() > MAX_PATH_DEPTH {
                return Err(PathError::TooDeep);
            }
        }
        Ok(ObjPath { start, names })
    }

    pub fn oid(start: Oid) -> ObjPath {
        ObjPath {
            start,
            names: Vec::new(),
        }
    }
}

impl fmt::Display for ObjPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.start)?;
        for n in &self.names {
            write!(f, "/{n}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_start_with_an_oid_and_continue_by_names() {
        let p = ObjPath::parse("1/world/jane@x.com/pics").unwrap();
        assert_eq!(p.start, Oid::ROOT);
        assert_eq!(p.names, ["world", "jane@x.com", "pics"]);
        assert_eq!(ObjPath::parse("/158340da66d4a444/").unwrap().names.len(), 0);
    }

    #[test]
    fn bad_paths_are_refused() {
        assert_eq!(ObjPath::parse(""), Err(PathError::Empty));
        assert!(matches!(
            ObjPath::parse("world/jane"),
            Err(PathError::BadStart(_))
        ));
        assert!(matches!(
            ObjPath::parse("1/../x"),
            Err(PathError::BadName(_))
        ));
    }
}
