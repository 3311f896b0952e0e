//! The stored event (one immutable version of one object's metadata) and [`EventView`],
//! the event as one caller is shown it.
//!
//! Field order follows the gm-data tutorial's responses, so that Vellum's output reads
//! the same as gm-data's. Fields the server computes at read time (`tstampend`, the key
//! material, `policy`) are only on the view: an `Event` cannot carry them, so nothing
//! has to strip them before storing.

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
    pub rname: Option<Rname>,
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
}

/// An event as one caller is shown it: the stored version and what each read computes.
#[derive(Debug, Clone)]
pub struct EventView {
    pub event: Event,
    /// The next version's tstamp, or FOREVER (`None`: not shown, as in the feed).
    pub tstampend: Option<Tstamp>,
    /// The blob's wrapped data key (kept beside the log, not in it).
    pub encrypteddata: Option<Value>,
    pub encryptednonce: Option<Value>,
    /// For callers with the `blobkey` privilege: the blob's data key (base64).
    pub blobkey: Option<String>,
    /// The caller's permissions on this version (`None`: not evaluated).
    pub policy: Option<Perms>,
}

impl EventView {
    /// A view of `event` with nothing computed yet beyond its end.
    pub fn new(event: Event, tstampend: Option<Tstamp>) -> EventView {
        EventView {
            event,
            tstampend,
            encrypteddata: None,
            encryptednonce: None,
            blobkey: None,
            policy: None,
        }
    }
}

/// The wire form of an [`EventView`]: the stored fields in the tutorial's order, with
/// `tstampend` after `tstamp` and the read-time fields last. Borrows, so a listing of
/// many events copies nothing to serialise them.
#[derive(Serialize)]
struct Wire<'a> {
    tstamp: Tstamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    tstampend: Option<Tstamp>,
    userpolicy: &'a UserPolicy,
    jwthash: &'a str,
    schemaversion: u32,
    name: &'a str,
    action: Action,
    oid: Oid,
    parentoid: Oid,
    expiration: Tstamp,
    checkedtstamp: Tstamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    objectpolicy: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    originalobjectpolicy: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mimetype: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rname: Option<&'a Rname>,
    #[serde(skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    derived: Option<&'a Value>,
    #[serde(skip_serializing_if = "is_false")]
    isfile: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    security: Option<&'a Value>,
    #[serde(flatten)]
    extra: &'a Map<String, Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sha256plain: Option<&'a str>,
    fulldir: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    encrypteddata: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    encryptednonce: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    blobkey: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    policy: Option<PolicyView>,
}

impl Serialize for EventView {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // No `..`: a field added to Event that the wire form forgets does not compile.
        let Event {
            tstamp,
            userpolicy,
            jwthash,
            schemaversion,
            name,
            action,
            oid,
            parentoid,
            expiration,
            checkedtstamp,
            objectpolicy,
            originalobjectpolicy,
            mimetype,
            rname,
            size,
            derived,
            isfile,
            security,
            extra,
            sha256plain,
            fulldir,
        } = &self.event;
        Wire {
            tstamp: *tstamp,
            tstampend: self.tstampend,
            userpolicy,
            jwthash,
            schemaversion: *schemaversion,
            name,
            action: *action,
            oid: *oid,
            parentoid: *parentoid,
            expiration: *expiration,
            checkedtstamp: *checkedtstamp,
            objectpolicy: objectpolicy.as_ref(),
            originalobjectpolicy: originalobjectpolicy.as_deref(),
            mimetype: mimetype.as_deref(),
            rname: rname.as_ref(),
            size: *size,
            derived: derived.as_ref(),
            isfile: *isfile,
            security: security.as_ref(),
            extra,
            sha256plain: sha256plain.as_deref(),
            fulldir,
            encrypteddata: self.encrypteddata.as_ref(),
            encryptednonce: self.encryptednonce.as_ref(),
            blobkey: self.blobkey.as_deref(),
            policy: self.policy.map(|policy| PolicyView { policy }),
        }
        .serialize(s)
    }
}

/// A version's reference to its blob, kept in the shape it was written in (gm-data's
/// `{"S3": "558/158340da6ed32558"}`, or a plain string) so that it reads back byte for byte.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Rname(Value);

impl Rname {
    /// gm-data's shape, `{"S3": name}`, for a blob Vellum stored.
    pub fn s3(name: &str) -> Rname {
        Rname(serde_json::json!({ "S3": name }))
    }

    /// The reference as a client sent it (any JSON value; [`Rname::name`] says whether it
    /// names a blob).
    pub fn from_value(v: Value) -> Rname {
        Rname(v)
    }

    /// The blob's name, if the reference holds one.
    pub fn name(&self) -> Option<&str> {
        rname_of(&self.0)
    }
}

/// The blob name inside an `rname` value: `{"S3": "558/158340da6ed32558"}` or a string.
fn rname_of(v: &Value) -> Option<&str> {
    match v {
        Value::String(s) => Some(s.as_str()),
        Value::Object(m) => m.values().find_map(Value::as_str),
        _ => None,
    }
    .filter(|s| !s.is_empty())
}

impl Event {
    /// The create of a folder `name` in `parent` at `fulldir`, with nothing else set (no
    /// tstamp, no policy): what the server writes for itself at start-up, and tests build.
    pub fn folder(oid: Oid, parent: Oid, name: &str, fulldir: String) -> Event {
        Event {
            tstamp: Tstamp(0),
            userpolicy: UserPolicy {
                label: "vellum".into(),
            },
            jwthash: String::new(),
            schemaversion: SCHEMA_VERSION,
            name: name.into(),
            action: Action::C,
            oid,
            parentoid: parent,
            expiration: Tstamp::FOREVER,
            checkedtstamp: Tstamp(0),
            objectpolicy: None,
            originalobjectpolicy: None,
            mimetype: None,
            rname: None,
            size: None,
            derived: None,
            isfile: false,
            security: None,
            extra: Map::new(),
            sha256plain: None,
            fulldir,
        }
    }

    /// The event as policies see it in `input.object`: the stored version (no key
    /// material, no read-time fields, which an `Event` does not have).
    pub fn policy_view(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// The blob this version's content is in: `rname` as `{"S3": "..."}` (gm-data's shape)
    /// or a plain string.
    pub fn rname_str(&self) -> Option<&str> {
        self.rname.as_ref()?.name()
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
        }
    }

    #[test]
    fn events_serialise_in_the_tutorials_field_order() {
        let s = serde_json::to_string(&EventView::new(sample(), Some(Tstamp::FOREVER))).unwrap();
        assert!(s.starts_with(r#"{"tstamp":"158340da66e0d624","tstampend":"7fffffffffffffff","userpolicy":{"label":"asRoot"},"jwthash":"ab","schemaversion":6,"name":"jane","action":"C","oid":"158340da66d4a444","parentoid":"0000000000000001","expiration":"7fffffffffffffff","checkedtstamp":"158340d597264594","derived":{},"fulldir""#), "{s}");
    }

    #[test]
    fn stored_events_round_trip_without_read_time_fields() {
        let s = serde_json::to_string(&sample()).unwrap();
        assert!(!s.contains("tstampend") && !s.contains("\"policy\""), "{s}");
        let back: Event = serde_json::from_str(&s).unwrap();
        assert!(back.extra.is_empty(), "{:?}", back.extra);
    }

    #[test]
    fn a_view_puts_key_material_and_letters_after_the_stored_fields() {
        let mut v = EventView::new(sample(), Some(Tstamp(5)));
        v.encrypteddata = Some(serde_json::json!({"k": "d"}));
        v.encryptednonce = Some(serde_json::json!({"k": "n"}));
        v.blobkey = Some("b".into());
        v.policy = Some("RX".parse().unwrap());
        let s = serde_json::to_string(&v).unwrap();
        assert!(
            s.ends_with(r#""fulldir":"/0000000000000001/","encrypteddata":{"k":"d"},"encryptednonce":{"k":"n"},"blobkey":"b","policy":{"policy":["R","X"]}}"#),
            "{s}"
        );
    }
}
