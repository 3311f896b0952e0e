//! The stored event: one immutable version of one object's metadata.
//!
//! Field order follows the gm-data tutorial's responses, so that Vellum's output reads
//! the same as gm-data's. Fields the server computes at read time (`tstampend`,
//! `policy`) are never stored.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{Oid, Perms, Tstamp};

/// DO NOT CHANGE: gm-data's schema version, echoed in every event and in X-Schema-Version.
pub const SCHEMA_VERSION: u32 = 6;

/// The action that produced a version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Action {
    C,
    U,
    D,
    P,
}

impl Action {
    pub fn parse(s: &str) -> Option<Action> {
        match s.trim() {
            "C" | "c" => Some(Action::C),
            "U" | "u" => Some(Action::U),
            "D" | "d" => Some(Action::D),
            "P" | "p" => Some(Action::P),
            _ => None,
        }
    }
    pub fn letter(self) -> char {
        match self {
            Action::C => 'C',
            Action::U => 'U',
            Action::D => 'D',
            Action::P => 'P',
        }
    }
}

/// `userpolicy` on an event: the label of the claims that wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct UserPolicy {
    pub label: String,
}

/// `policy` on a returned event: the caller's own letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PolicyView {
    pub policy: Perms,
}

fn is_false(b: &bool) -> bool {
    !*b
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    pub tstamp: Tstamp,
    /// Computed at read time: the next version's tstamp, or FOREVER.
    #[serde(default, skip_serializing_if = "Option::is_none", skip_deserializing)]
    pub tstampend: Option<Tstamp>,
    pub userpolicy: UserPolicy,
    pub jwthash: String,
    pub schemaversion: u32,
    pub name: String,
    pub action: Action,
    pub oid: Oid,
    pub parentoid: Oid,
    pub expiration: Tstamp,
    pub checkedtstamp: Tstamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objectpolicy: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub originalobjectpolicy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mimetype: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rname: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub derived: Option<Value>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub isfile: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security: Option<Value>,
    /// Client fields Vellum keeps as given (`custom`, `description`, `defaultfile`,
    /// `blobalgorithm`, ...), in the order the client sent them.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256plain: Option<String>,
    pub fulldir: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encrypteddata: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryptednonce: Option<Value>,
    /// Computed at read time for callers with the `blobkey` privilege: the blob's data key
    /// (base64). Never stored.
    #[serde(default, skip_serializing_if = "Option::is_none", skip_deserializing)]
    pub blobkey: Option<String>,
    /// Computed at read time: the caller's permissions on this version.
    #[serde(default, skip_serializing_if = "Option::is_none", skip_deserializing)]
    pub policy: Option<PolicyView>,
}

/// The blob name inside an `rname` value: `{"S3": "558/158340da6ed32558"}` or a string.
pub fn rname_of(v: &Value) -> Option<&str> {
    match v {
        Value::String(s) => Some(s.as_str()),
        Value::Object(m) => m.values().find_map(Value::as_str),
        _ => None,
    }
    .filter(|s| !s.is_empty())
}

impl Event {
    /// The event as policies see it in `input.object`: no key material, no read-time fields.
    pub fn policy_view(&self) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Value::Object(m) = &mut v {
            for k in [
                "encrypteddata",
                "encryptednonce",
                "blobkey",
                "policy",
                "tstampend",
            ] {
                m.remove(k);
            }
        }
        v
    }

    /// The blob this version's content is in: `rname` as `{"S3": "..."}` (gm-data's shape)
    /// or a plain string.
    pub fn rname_str(&self) -> Option<&str> {
        rname_of(self.rname.as_ref()?)
    }

    /// The `derived.oid` this event declares, if any.
    pub fn derived_oid(&self) -> Option<Oid> {
        self.derived.as_ref()?.get("oid")?.as_str()?.parse().ok()
    }

    /// `defaultfile` for a directory, with gm-data's default.
    pub fn defaultfile(&self) -> &str {
        self.extra
            .get("defaultfile")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .unwrap_or("index.html")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Event {
        Event {
            tstamp: Tstamp(0x158340da66e0d624),
            tstampend: Some(Tstamp::FOREVER),
            userpolicy: UserPolicy {
                label: "asRoot".into(),
            },
            jwthash: "ab".into(),
            schemaversion: SCHEMA_VERSION,
            name: "jane".into(),
            action: Action::C,
            oid: Oid(0x158340da66d4a444),
            parentoid: Oid::ROOT,
            expiration: Tstamp::FOREVER,
            checkedtstamp: Tstamp(0x158340d597264594),
            objectpolicy: None,
            originalobjectpolicy: None,
            mimetype: None,
            rname: None,
            size: None,
            derived: Some(serde_json::json!({})),
            isfile: false,
            security: None,
            extra: Map::new(),
            sha256plain: None,
            fulldir: "/0000000000000001/".into(),
            encrypteddata: None,
            encryptednonce: None,
            blobkey: None,
            policy: None,
        }
    }

    #[test]
    fn events_serialise_in_the_tutorials_field_order() {
        let s = serde_json::to_string(&sample()).unwrap();
        assert!(s.starts_with(r#"{"tstamp":"158340da66e0d624","tstampend":"7fffffffffffffff","userpolicy":{"label":"asRoot"},"jwthash":"ab","schemaversion":6,"name":"jane","action":"C","oid":"158340da66d4a444","parentoid":"0000000000000001","expiration":"7fffffffffffffff","checkedtstamp":"158340d597264594","derived":{},"fulldir""#), "{s}");
    }

    #[test]
    fn stored_events_round_trip_without_read_time_fields() {
        let mut e = sample();
        e.tstampend = None;
        let s = serde_json::to_string(&e).unwrap();
        let back: Event = serde_json::from_str(&s).unwrap();
        assert!(back.tstampend.is_none());
        assert!(back.extra.is_empty(), "{:?}", back.extra);
    }
}
