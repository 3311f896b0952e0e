//! Parsing a POST /write metadata part into typed events (parse, don't validate).
//!
//! Field names are matched without regard to case, as gm-data's Go decoder did. Fields
//! the server computes (`jwthash`, `fulldir`, ...) are ignored when a client echoes them
//! back; an empty string means absent; JSON `null` clears an optional field on update.

use std::cell::Cell;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::blob::{BlobAlgorithm, BlobInfo};
use crate::error::{Code, Error, Result};
use crate::model::{Action, ObjPath, Oid, Tstamp};
use crate::policy::{Meter, PolicyEngine, PolicyError, PreparedPolicy};

/// Most JSON values (objects, arrays, strings, numbers, ...) one metadata part may hold:
/// twenty per event the transaction may have, and at least a million. A parsed value takes
/// ~32-64 bytes plus its text, so this keeps a transaction's parsed metadata within a small
/// multiple of `MAX_METADATA_BYTES` (64 MiB) whatever its shape: a 60 MB `[0,0,...]` would
/// otherwise be two gigabytes of values.
pub fn max_metadata_nodes(max_events: usize) -> u64 {
    (max_events as u64).saturating_mul(20).max(1_000_000)
}

/// Fields the server sets; a client's copy is ignored, never an error (SPEC §5).
const SERVER_FIELDS: &[&str] = &[
    "tstampend",
    "jwthash",
    "jwt-hash",
    "userpolicy",
    "policy",
    "fulldir",
    "checkedtstamp",
    "schemaversion",
    "schema",
    "encrypteddata",
    "encryptednonce",
    "blobkey",
    "size",
];

/// Client fields with a type Vellum checks; every other field is kept as given.
const TYPED_FIELDS: &[&str] = &["mimetype", "security", "derived", "rname", "sha256plain"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefField {
    Oid,
    ParentOid,
    Tstamp,
}

/// `{"address": -1, "from": "oid", "to": "parentoid"}`: copy a field of an earlier
/// event of the same transaction.
#[derive(Debug, Clone, Copy)]
pub struct Reference {
    /// Absolute index of the source event (already range-checked).
    pub source: usize,
    pub from: RefField,
    pub to: RefField,
}

/// A change to an optional field.
#[derive(Debug, Clone, PartialEq)]
pub enum Patch<T> {
    Keep,
    Clear,
    Set(T),
}

impl<T: Clone> Patch<T> {
    pub fn apply(&self, old: Option<T>) -> Option<T> {
        match self {
            Patch::Keep => old,
            Patch::Clear => None,
            Patch::Set(v) => Some(v.clone()),
        }
    }
}

/// The file content a write event brings (SPEC §5's counting rule decides which events get
/// a part).
#[derive(Debug, Clone, Default)]
pub enum Content {
    /// No part: a new file is refused; an update keeps the current content.
    #[default]
    None,
    /// A part will be uploaded once the rehearsal has authorised the transaction.
    Pending,
    /// The part, stored.
    Stored(Box<BlobInfo>),
}

#[derive(Debug, Clone)]
pub struct WriteEvent {
    pub index: usize,
    pub action: Action,
    pub oid: Option<Oid>,
    pub parent: Option<ObjPath>,
    pub name: Option<String>,
    /// A client's `tstamp` on U/D/P: the version it read (optimistic concurrency).
    pub precondition: Option<Tstamp>,
    pub purgetstamp: Option<Tstamp>,
    /// The policy as given, until [`prepare_policies`] validates it into `policy`.
    pub raw_policy: Option<RawPolicy>,
    pub policy: Option<PreparedPolicy>,
    pub isfile: Option<bool>,
    pub allow_partial: bool,
    pub references: Vec<Reference>,
    pub expiration: Patch<Tstamp>,
    pub mimetype: Patch<String>,
    pub security: Patch<Value>,
    pub derived: Patch<Value>,
    /// A client's `rname`: names existing content (SPEC §5's counting rule).
    pub rname: Option<crate::model::event::Rname>,
    /// A client's `sha256plain`: checked against an uploaded part.
    pub sha256plain: Option<String>,
    /// How new content is stored (`blobalgorithm`; also kept in `extra` as given).
    pub algorithm: BlobAlgorithm,
    /// Set by the HTTP layer from the file parts.
    pub content: Content,
    /// Everything else (`custom`, `description`, `defaultfile`, `blobalgorithm`, ...).
    pub extra: Vec<(String, Patch<Value>)>,
}

/// An event's policy fields as given.
#[derive(Debug, Clone)]
pub struct RawPolicy {
    pub objectpolicy: Option<Value>,
    pub original: Option<String>,
}

impl WriteEvent {
    /// Whether this event can take a file part: a create or update of a file.
    pub fn takes_content(&self) -> bool {
        self.isfile == Some(true) && matches!(self.action, Action::C | Action::U)
    }
}

/// Why reading the metadata stopped before its end.
#[derive(Clone, Copy, PartialEq)]
enum Stop {
    None,
    TooManyEvents,
    TooManyNodes,
}

/// Counts what is read and stops as soon as a limit is passed, so the limits bound memory and
/// time rather than being checked after the whole document is in memory.
struct Counter {
    nodes: Cell<u64>,
    stop: Cell<Stop>,
    max_events: usize,
    max_nodes: u64,
}

impl Counter {
    fn node<E: serde::de::Error>(&self) -> std::result::Result<(), E> {
        let n = self.nodes.get() + 1;
        self.nodes.set(n);
        if n > self.max_nodes {
            self.stop.set(Stop::TooManyNodes);
            return Err(E::custom("too many values"));
        }
        Ok(())
    }
}

/// A JSON value, counted.
struct Counted<'c>(&'c Counter);

impl<'de> DeserializeSeed<'de> for Counted<'_> {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Counted<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> std::result::Result<Value, E> {
        self.0.node()?;
        Ok(Value::Bool(v))
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> std::result::Result<Value, E> {
        self.0.node()?;
        Ok(Value::from(v))
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> std::result::Result<Value, E> {
        self.0.node()?;
        Ok(Value::from(v))
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> std::result::Result<Value, E> {
        self.0.node()?;
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<Value, E> {
        self.0.node()?;
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E: serde::de::Error>(self, v: String) -> std::result::Result<Value, E> {
        self.0.node()?;
        Ok(Value::String(v))
    }
    fn visit_unit<E: serde::de::Error>(self) -> std::result::Result<Value, E> {
        self.0.node()?;
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Value, A::Error> {
        self.0.node()?;
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(Counted(self.0))? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Value, A::Error> {
        self.0.node()?;
        let mut out = Map::new();
        while let Some(k) = map.next_key::<String>()? {
            let v = map.next_value_seed(Counted(self.0))?;
            out.insert(k, v);
        }
        Ok(Value::Object(out))
    }
}

/// The top level: an array of events, counted as they come, or one event object.
struct TopLevel<'c>(&'c Counter);

impl<'de> Visitor<'de> for TopLevel<'_> {
    type Value = Vec<Value>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON array of events or one event object")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Vec<Value>, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(Counted(self.0))? {
            out.push(v);
            if out.len() > self.0.max_events {
                self.0.stop.set(Stop::TooManyEvents);
                return Err(serde::de::Error::custom("too many events"));
            }
        }
        Ok(out)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> std::result::Result<Vec<Value>, A::Error> {
        let one = Counted(self.0).visit_map(map)?;
        Ok(vec![one])
    }
}

/// Reads the metadata part into one JSON value per event, stopping at the first limit passed.
fn read_events(bytes: &[u8], max_events: usize) -> Result<Vec<Value>> {
    let counter = Counter {
        nodes: Cell::new(0),
        stop: Cell::new(Stop::None),
        max_events,
        max_nodes: max_metadata_nodes(max_events),
    };
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let read = de
        .deserialize_any(TopLevel(&counter))
        .and_then(|v| de.end().map(|()| v));
    match (read, counter.stop.get()) {
        (Ok(items), _) => Ok(items),
        (Err(_), Stop::TooManyEvents) => Err(Error::too_large(
            Code::TooManyEvents,
            format!("the transaction has more than {max_events} events; the limit is {max_events}"),
        )),
        (Err(_), Stop::TooManyNodes) => Err(Error::too_large(
            Code::MetadataTooLarge,
            format!(
                "the metadata holds more than {} JSON values",
                counter.max_nodes
            ),
        )),
        (Err(e), Stop::None) if e.is_data() => Err(Error::bad_request(
            Code::MalformedMetadata,
            "metadata must be a JSON array of events or one event object",
        )),
        (Err(e), Stop::None) => Err(Error::bad_request(
            Code::MalformedMetadata,
            format!("metadata is not JSON: {e}"),
        )),
    }
}

/// Parses the metadata part: a JSON array of events, or a single event object. Policies are
/// read but not compiled: see [`prepare_policies`].
pub fn parse_metadata(bytes: &[u8], max_events: usize) -> Result<Vec<WriteEvent>> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(Error::bad_request(
            Code::EmptyMetadata,
            "the metadata part is empty: send a JSON array of events",
        ));
    }
    let items = read_events(bytes, max_events)?;
    if items.is_empty() {
        return Err(Error::bad_request(
            Code::EmptyMetadata,
            "the transaction has no events",
        ));
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, v)| parse_event(i, v).map_err(|e| e.at(i)))
        .collect()
}

/// Validates and compiles each event's policy, in order (the first failure is the
/// transaction's answer). A policy text is compiled once however many events carry it, within
/// the request's budget and at its place at the policy gate.
pub fn prepare_policies(
    events: &mut [WriteEvent],
    engine: &PolicyEngine,
    meter: &Meter,
) -> Result<()> {
    for we in events.iter_mut() {
        let Some(raw) = we.raw_policy.take() else {
            continue;
        };
        we.policy = engine
            .prepare_metered(raw.objectpolicy.as_ref(), raw.original.as_deref(), meter)
            .map_err(|e| {
                match e {
                    PolicyError::TooLarge { .. } => {
                        Error::too_large(Code::PolicyTooLarge, e.to_string())
                    }
                    PolicyError::Budget { .. } => {
                        Error::unavailable(Code::PolicyBudgetExceeded, e.to_string())
                    }
                    _ => bad(Code::BadPolicy, e.to_string()),
                }
                .at(we.index)
            })?;
    }
    Ok(())
}

/// Most characters of a client's string that an error message quotes.
const SHOWN_CHARS: usize = 64;

/// Longest error message. It is sent back in the response: it must not grow with the input,
/// or a 64 MiB field of control characters would come back six times over (each escaped as
/// `\u{1}`). What a lower layer quotes in full (a path, a name) is cut here.
pub const MAX_MESSAGE_BYTES: usize = 512;

fn bad(code: Code, msg: impl Into<String>) -> Error {
    let mut msg = msg.into();
    if msg.len() > MAX_MESSAGE_BYTES {
        let mut cut = MAX_MESSAGE_BYTES;
        while !msg.is_char_boundary(cut) {
            cut -= 1;
        }
        msg.truncate(cut);
        msg.push_str("...");
    }
    Error::bad_request(code, msg)
}

/// A client's string as a message quotes it: at most [`SHOWN_CHARS`] characters.
fn shown(s: &str) -> String {
    let mut chars = s.chars();
    let head: String = chars.by_ref().take(SHOWN_CHARS).collect();
    if chars.next().is_none() {
        format!("{head:?}")
    } else {
        format!("{head:?}... ({} bytes)", s.len())
    }
}

/// A client's JSON value as a message quotes it: scalars as they are, strings cut, arrays and
/// objects by their kind (never serialised whole).
fn shown_value(v: &Value) -> String {
    match v {
        Value::String(s) => shown(s),
        Value::Array(_) | Value::Object(_) => crate::policy::lisp::kind(v).to_string(),
        other => other.to_string(),
    }
}

/// Lower-cases keys; "" means absent.
fn normalise(obj: Map<String, Value>) -> Map<String, Value> {
    let mut out = Map::with_capacity(obj.len());
    for (k, v) in obj {
        if matches!(&v, Value::String(s) if s.is_empty()) {
            continue;
        }
        out.insert(k.to_ascii_lowercase(), v);
    }
    out
}

fn string_field(m: &Map<String, Value>, key: &str) -> Result<Option<String>> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(bad(
            Code::BadField,
            format!("{key} must be a string, not {}", shown_value(other)),
        )),
    }
}

fn id_field<T: std::str::FromStr>(m: &Map<String, Value>, key: &str) -> Result<Option<T>> {
    match string_field(m, key)? {
        None => Ok(None),
        Some(s) => s.parse().map(Some).map_err(|_| {
            bad(
                Code::BadField,
                format!("{key} {} is not an id (1 to 16 hex digits)", shown(&s)),
            )
        }),
    }
}

fn patch_value(m: &Map<String, Value>, key: &str, want_object: bool) -> Result<Patch<Value>> {
    match m.get(key) {
        None => Ok(Patch::Keep),
        Some(Value::Null) => Ok(Patch::Clear),
        Some(v) if want_object && !v.is_object() => {
            Err(bad(Code::BadField, format!("{key} must be a JSON object")))
        }
        Some(v) => Ok(Patch::Set(v.clone())),
    }
}

fn lower_keys(v: &Value) -> Value {
    match v {
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn parse_event(index: usize, v: Value) -> Result<WriteEvent> {
    let Value::Object(raw) = v else {
        return Err(bad(
            Code::MalformedEvent,
            "each event must be a JSON object",
        ));
    };
    let m = normalise(raw);

    let action = match m.get("action") {
        None => {
            return Err(bad(
                Code::MissingAction,
                "action is required (C, U, D or P)",
            ))
        }
        Some(Value::String(s)) => Action::parse(s).ok_or_else(|| {
            bad(
                Code::UnknownAction,
                format!("unknown action {}: use C, U, D or P", shown(s)),
            )
        })?,
        Some(other) => {
            return Err(bad(
                Code::UnknownAction,
                format!("unknown action {}", shown_value(other)),
            ))
        }
    };

    let parent = match string_field(&m, "parentoid")? {
        None => None,
        Some(p) => Some(
            ObjPath::parse(&p)
                .map_err(|e| bad(Code::BadParentoid, format!("parentoid {}: {e}", shown(&p))))?,
        ),
    };
    let name = string_field(&m, "name")?;
    if let Some(n) = &name {
        crate::model::path::check_name(n).map_err(|e| bad(Code::BadName, e.to_string()))?;
    }
    let isfile = match m.get("isfile") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(Value::String(s)) if s == "true" || s == "false" => Some(s == "true"),
        Some(other) => {
            return Err(bad(
                Code::BadField,
                format!("isfile must be a boolean, not {}", shown_value(other)),
            ))
        }
    };
    let allow_partial = matches!(m.get("allowpartialpermissions"), Some(Value::Bool(true)))
        || matches!(m.get("allowpartialpermissions"), Some(Value::String(s)) if s == "true");

    let objectpolicy = m.get("objectpolicy").filter(|v| !v.is_null());
    if let Some(op) = objectpolicy {
        if !op.is_object() {
            return Err(bad(Code::BadPolicy, "objectpolicy must be a JSON object"));
        }
    }
    // gm-data's Python client sends its policy dict in this field too (beside the same dict
    // in objectpolicy when it creates folders): an object here is the policy's JSON form,
    // used only when objectpolicy is absent. Only text is stored under this name.
    let (objectpolicy, original) = match m.get("originalobjectpolicy") {
        None | Some(Value::Null) => (objectpolicy, None),
        Some(Value::String(s)) => (objectpolicy, Some(s.clone())),
        Some(form @ Value::Object(_)) => (objectpolicy.or(Some(form)), None),
        Some(other) => {
            return Err(bad(
                Code::BadField,
                format!(
                    "originalobjectpolicy must be the policy's text (or its JSON form, an \
                     object), not {}",
                    shown_value(other)
                ),
            ))
        }
    };
    let raw_policy = (objectpolicy.is_some() || original.is_some()).then(|| RawPolicy {
        objectpolicy: objectpolicy.cloned(),
        original,
    });

    let references = match m.get("references") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(refs)) => refs
            .iter()
            .map(|r| parse_reference(index, r))
            .collect::<Result<_>>()?,
        Some(_) => return Err(bad(Code::BadReference, "references must be an array")),
    };

    let expiration = match m.get("expiration") {
        None => Patch::Keep,
        Some(Value::Null) => Patch::Clear,
        Some(_) => Patch::Set(id_field::<Tstamp>(&m, "expiration")?.unwrap_or(Tstamp::FOREVER)),
    };
    let mimetype = match m.get("mimetype") {
        None => Patch::Keep,
        Some(Value::Null) => Patch::Clear,
        Some(_) => Patch::Set(string_field(&m, "mimetype")?.unwrap_or_default()),
    };
    let security = patch_value(&m, "security", true)?;
    let derived = match patch_value(&m, "derived", true)? {
        Patch::Set(d) => Patch::Set(lower_keys(&d)),
        p => p,
    };

    let algorithm = BlobAlgorithm::from_field(string_field(&m, "blobalgorithm")?.as_deref())
        .map_err(|e| {
            bad(
                Code::BadField,
                format!("blobalgorithm: {e} (use \"none\" or leave it out)"),
            )
        })?;

    let mut extra = Vec::new();
    for (k, v) in &m {
        let known = matches!(
            k.as_str(),
            "action"
                | "oid"
                | "parentoid"
                | "name"
                | "tstamp"
                | "purgetstamp"
                | "objectpolicy"
                | "originalobjectpolicy"
                | "isfile"
                | "allowpartialpermissions"
                | "references"
                | "expiration"
        );
        if known || SERVER_FIELDS.contains(&k.as_str()) || TYPED_FIELDS.contains(&k.as_str()) {
            continue;
        }
        if k == "defaultfile" {
            if let Value::String(s) = v {
                crate::model::path::check_new_name(s)
                    .map_err(|e| bad(Code::BadName, format!("defaultfile: {e}")))?;
            }
        }
        let patch = if v.is_null() {
            Patch::Clear
        } else {
            Patch::Set(v.clone())
        };
        extra.push((k.clone(), patch));
    }

    Ok(WriteEvent {
        index,
        action,
        oid: id_field(&m, "oid")?,
        parent,
        name,
        precondition: id_field(&m, "tstamp")?,
        purgetstamp: id_field(&m, "purgetstamp")?,
        raw_policy,
        policy: None,
        isfile,
        allow_partial,
        references,
        expiration,
        mimetype,
        security,
        derived,
        rname: m
            .get("rname")
            .filter(|v| !v.is_null())
            .cloned()
            .map(crate::model::event::Rname::from_value),
        sha256plain: string_field(&m, "sha256plain")?,
        algorithm,
        content: Content::None,
        extra,
    })
}

fn ref_field(v: Option<&Value>, which: &str) -> Result<RefField> {
    let s = v.and_then(Value::as_str).unwrap_or("");
    match s.to_ascii_lowercase().as_str() {
        "oid" => Ok(RefField::Oid),
        "parentoid" => Ok(RefField::ParentOid),
        "tstamp" => Ok(RefField::Tstamp),
        _ => Err(bad(
            Code::BadReference,
            format!(
                "reference {which} {}: use oid, parentoid or tstamp",
                shown(s)
            ),
        )),
    }
}

fn parse_reference(index: usize, r: &Value) -> Result<Reference> {
    let r = lower_keys(r);
    let address = r.get("address").and_then(Value::as_i64).ok_or_else(|| {
        bad(
            Code::BadReference,
            "reference address must be a negative integer",
        )
    })?;
    if address >= 0 || address.unsigned_abs() as usize > index {
        return Err(bad(
            Code::ReferenceOutOfRange,
            format!(
                "reference address {address} from event {index} does not name an earlier event of this transaction"
            ),
        ));
    }
    Ok(Reference {
        source: index - address.unsigned_abs() as usize,
        from: ref_field(r.get("from"), "from")?,
        to: ref_field(r.get("to"), "to")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by fuzzing (`fixtures/fuzz/metadata/echoed-action.json`): a wrong field was quoted
    /// whole in the error message, escaped, so a 64 MiB field of control characters came back
    /// as a message six times its size (and larger again once escaped in the response).
    #[test]
    fn a_wrong_field_is_quoted_in_a_short_excerpt_not_echoed_whole() {
        let big = "\u{1}".repeat(1 << 20);
        let s = |v: &str| serde_json::to_string(v).unwrap();
        let slash = s(&format!("a/{big}"));
        for (field, doc) in [
            ("action", format!("{{\"action\": {}}}", s(&big))),
            ("action", format!("{{\"action\": [{}]}}", s(&big))),
            (
                "name",
                format!("{{\"action\": \"C\", \"name\": [{}]}}", s(&big)),
            ),
            ("name", format!("{{\"action\": \"C\", \"name\": {slash}}}")),
            (
                "oid",
                format!("{{\"action\": \"U\", \"oid\": {}}}", s(&big)),
            ),
            (
                "parentoid",
                format!("{{\"action\": \"C\", \"parentoid\": {}}}", s(&big)),
            ),
            (
                "isfile",
                format!("{{\"action\": \"C\", \"isfile\": {}}}", s(&big)),
            ),
            (
                "defaultfile",
                format!("{{\"action\": \"C\", \"defaultfile\": {slash}}}"),
            ),
            (
                "from",
                format!(
                    "[{{\"action\": \"C\"}}, {{\"action\": \"C\", \"references\": \
                     [{{\"address\": -1, \"from\": {}, \"to\": \"oid\"}}]}}]",
                    s(&big)
                ),
            ),
        ] {
            let e = parse_metadata(doc.as_bytes(), 10).unwrap_err();
            assert!(
                e.message.len() <= MAX_MESSAGE_BYTES + 3,
                "{field}: a {}-byte message",
                e.message.len()
            );
            assert!(e.message.contains(field), "{field}: {}", e.message);
        }
    }

    #[test]
    fn short_values_are_still_quoted_whole() {
        let e = parse_metadata(br#"{"action": "Q"}"#, 10).unwrap_err();
        assert_eq!(e.message, "unknown action \"Q\": use C, U, D or P");
        let e = parse_metadata(br#"{"action": "C", "isfile": 3}"#, 10).unwrap_err();
        assert_eq!(e.message, "isfile must be a boolean, not 3");
    }
}
