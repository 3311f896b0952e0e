//! The caller's claims, as policies see them.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// Privileges recognised in `values.privilege` (SPEC §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Privilege {
    /// Every permission everywhere.
    Root,
    /// No writes at all.
    ReadOnly,
    /// Responses also show each blob's unwrapped data key.
    BlobKey,
}

/// A caller's claims: `{"label": ..., "exp": ..., "values": {"email": [...], ...}}`.
///
/// `key` is a digest of the canonical JSON (keys sorted), so that policy results can be cached per
/// (policy, claims) pair without comparing whole documents.
#[derive(Debug, Clone)]
pub struct Claims {
    raw: Value,
    key: [u8; 16],
}

impl Claims {
    /// Wraps a claims document. A document that is not an object, or whose `values` is not
    /// an object, is kept as given: policies simply find nothing in it.
    pub fn new(raw: Value) -> Self {
        // Canonical, so that equal claims in another key order share cached results.
        let digest = Sha256::digest(super::canonical::to_vec(&raw));
        let mut key = [0u8; 16];
        key.copy_from_slice(&digest[..16]);
        Self { raw, key }
    }

    pub fn anonymous() -> Self {
        Self::new(serde_json::json!({"label": "anonymous", "values": {}}))
    }

    pub fn raw(&self) -> &Value {
        &self.raw
    }

    pub fn key(&self) -> [u8; 16] {
        self.key
    }

    pub fn label(&self) -> &str {
        self.raw.get("label").and_then(Value::as_str).unwrap_or("")
    }

    fn values_map(&self) -> Option<&Map<String, Value>> {
        self.raw.get("values").and_then(Value::as_object)
    }

    /// The values of claim `field` (`values.<field>`), as strings. A single string is
    /// treated as a one-element list; numbers and booleans are rendered as text.
    pub fn values(&self, field: &str) -> Vec<String> {
        let Some(v) = self.values_map().and_then(|m| m.get(field)) else {
            return Vec::new();
        };
        match v {
            Value::Array(items) => items.iter().filter_map(scalar_text).collect(),
            other => scalar_text(other).into_iter().collect(),
        }
    }

    /// Every (claim, value) pair in `values`, as [`Claims::values`] reads them.
    pub fn pairs(&self) -> Vec<(String, String)> {
        let Some(map) = self.values_map() else {
            return Vec::new();
        };
        map.keys()
            .flat_map(|k| self.values(k).into_iter().map(move |v| (k.clone(), v)))
            .collect()
    }

    /// True if claim `field` holds `value`.
    pub fn contains(&self, field: &str, value: &str) -> bool {
        self.values(field).iter().any(|v| v == value)
    }

    pub fn has_privilege(&self, p: Privilege) -> bool {
        let name = match p {
            Privilege::Root => "root",
            Privilege::ReadOnly => "readonly",
            Privilege::BlobKey => "blobkey",
        };
        self.contains("privilege", name)
    }
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_accept_lists_and_single_strings() {
        let c = Claims::new(json!({"label":"x","values":{"email":["a@b","c@d"],"org":"acme"}}));
        assert!(c.contains("email", "c@d"));
        assert!(c.contains("org", "acme"));
        assert!(!c.contains("email", "zzz"));
        assert!(c.values("missing").is_empty());
    }

    #[test]
    fn privileges_come_from_values_privilege() {
        let c = Claims::new(json!({"label":"r","values":{"privilege":["root"]}}));
        assert!(c.has_privilege(Privilege::Root));
        assert!(!c.has_privilege(Privilege::ReadOnly));
    }

    #[test]
    fn equal_claims_share_a_key() {
        let a = Claims::new(json!({"label":"x","values":{"email":["a"]}}));
        let b = Claims::new(json!({"label":"x","values":{"email":["a"]}}));
        let c = Claims::new(json!({"label":"y","values":{"email":["a"]}}));
        assert_eq!(a.key(), b.key());
        assert_ne!(a.key(), c.key());
    }

    #[test]
    fn equal_claims_in_another_key_order_share_a_key() {
        // serde_json keeps key order (preserve_order): two tokens with the same claims
        // written in another order must still share cached policy results.
        let a: Value =
            serde_json::from_str(r#"{"label":"x","values":{"email":["a"],"org":["o"]}}"#).unwrap();
        let b: Value =
            serde_json::from_str(r#"{"values":{"org":["o"],"email":["a"]},"label":"x"}"#).unwrap();
        assert_eq!(Claims::new(a).key(), Claims::new(b).key());
    }
}
