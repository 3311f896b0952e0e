//! The `USER_DN` users file (gm-jwt-security's format):
//! `{"users": [{"label": "CN=jane,OU=people,O=acme", "values": {"email": ["jane@acme"]}}]}`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use super::{canonical_hash, IdentityConfigError};
use crate::model::Claims;

/// One user's claims, ready to hand out.
#[derive(Debug, Clone)]
pub(crate) struct UserEntry {
    pub(crate) claims: Claims,
    pub(crate) jwthash: String,
}

/// DN → claims. A DN matches exactly as written in the file, or else after
/// [`normalize_dn`]: proxies disagree on spacing ("CN=a, O=b" vs "CN=a,O=b") and an
/// operator should not have to guess which one theirs sends.
#[derive(Debug, Default)]
pub(crate) struct Users {
    entries: Vec<UserEntry>,
    exact: HashMap<String, usize>,
    normalized: HashMap<String, usize>,
}

impl Users {
    pub(crate) fn load(path: &Path) -> Result<Self, IdentityConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| IdentityConfigError::Io {
            action: "read users file",
            path: path.to_path_buf(),
            source,
        })?;
        let doc: Value = serde_json::from_str(&text).map_err(|e| users_err(path, e.to_string()))?;
        Self::from_json(&doc).map_err(|r| users_err(path, r))
    }

    pub(crate) fn from_json(doc: &Value) -> Result<Self, String> {
        let list = doc
            .get("users")
            .and_then(Value::as_array)
            .ok_or("expected {\"users\": [...]}")?;
        let mut users = Users::default();
        for (i, entry) in list.iter().enumerate() {
            let label = entry
                .get("label")
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .ok_or_else(|| format!("users[{i}] has no \"label\" (the DN)"))?;
            let values = match entry.get("values") {
                None | Some(Value::Null) => Value::Object(Map::new()),
                Some(v @ Value::Object(_)) => v.clone(),
                Some(_) => {
                    return Err(format!("users[{i}] ({label}): \"values\" is not an object"))
                }
            };
            let claims = json!({"label": label, "values": values});
            let idx = users.entries.len();
            if users.exact.insert(label.to_owned(), idx).is_some() {
                return Err(format!("DN {label:?} is listed twice"));
            }
            let norm = normalize_dn(label);
            if let Some(&other) = users.normalized.get(&norm) {
                return Err(format!(
                    "DNs {:?} and {label:?} differ only in spacing around commas",
                    users.entries[other].claims.label()
                ));
            }
            users.normalized.insert(norm, idx);
            users.entries.push(UserEntry {
                jwthash: canonical_hash(&claims),
                claims: Claims::new(claims),
            });
        }
        Ok(users)
    }

    /// Exact match first, then the normalised form (see [`normalize_dn`]).
    pub(crate) fn lookup(&self, dn: &str) -> Option<&UserEntry> {
        self.exact
            .get(dn)
            .or_else(|| self.normalized.get(&normalize_dn(dn)))
            .map(|&i| &self.entries[i])
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

fn users_err(path: &Path, reason: String) -> IdentityConfigError {
    IdentityConfigError::UsersFile {
        path: PathBuf::from(path),
        reason,
    }
}

/// Removes whitespace around the commas that separate RDNs, and at both ends:
/// `" CN=a , O=b"` → `"CN=a,O=b"`. Escaped commas (`\,`) belong to a value and are left
/// alone, as is an escaped trailing space (`\ `). Nothing else changes: attribute names and
/// values stay case-sensitive, so this can only merge spellings a proxy would produce for
/// the same certificate.
pub fn normalize_dn(dn: &str) -> String {
    let mut out = String::with_capacity(dn.len());
    let mut rdn = String::new();
    let mut escaped = false;
    let push_rdn = |out: &mut String, rdn: &str| {
        let trimmed = rdn.trim();
        out.push_str(trimmed);
        // Keep a trailing space that was escaped ("\ "): trim removed the space only.
        let backslashes = trimmed.chars().rev().take_while(|&c| c == '\\').count();
        if backslashes % 2 == 1 && rdn.trim_start().len() > trimmed.len() {
            out.push(' ');
        }
    };
    for c in dn.chars() {
        if escaped {
            rdn.push(c);
            escaped = false;
        } else if c == '\\' {
            rdn.push(c);
            escaped = true;
        } else if c == ',' {
            push_rdn(&mut out, &rdn);
            out.push(',');
            rdn.clear();
        } else {
            rdn.push(c);
        }
    }
    push_rdn(&mut out, &rdn);
    out
}
