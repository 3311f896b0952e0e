//! Target 1: the metadata parser, `vellum::write::parse_metadata`.
//!
//! Inputs: random bytes, mutated transactions (the seed's and the corpus's), events generated
//! field by field with right and wrong types, keys in any case and repeated in another case,
//! references to anywhere, deep nesting, huge numbers and odd Unicode.
//! Properties: no panic; the answer is events or a 400/413 with a code and a short message;
//! an accepted document is JSON with that many events; time linear in the input.

use std::time::Duration;

use serde_json::Value;
use vellum::error::Kind;
use vellum::write::parse_metadata;

use super::gen::{self, Pick};
use super::{Rng, Target};

pub struct Input {
    pub bytes: Vec<u8>,
    pub max_events: usize,
}

/// Fields a client sends, the ones the server computes, and a few unknown ones.
const FIELDS: &[&str] = &[
    "action",
    "oid",
    "parentoid",
    "name",
    "tstamp",
    "purgetstamp",
    "objectpolicy",
    "originalobjectpolicy",
    "isfile",
    "allowpartialpermissions",
    "references",
    "expiration",
    "mimetype",
    "security",
    "derived",
    "rname",
    "sha256plain",
    "blobalgorithm",
    "custom",
    "description",
    "defaultfile",
    "tstampend",
    "jwthash",
    "userpolicy",
    "policy",
    "fulldir",
    "checkedtstamp",
    "schemaversion",
    "size",
    "encrypteddata",
    "x-unknown",
];

pub const DICT: &[&str] = &[
    "[",
    "]",
    "{",
    "}",
    ",",
    ":",
    "\"",
    "\\",
    "\\u0000",
    "\\ud800",
    "\\udc00",
    "null",
    "true",
    "-0",
    "1e999",
    "-1",
    "18446744073709551616",
    "\"action\"",
    "\"C\"",
    "\"oid\"",
    "\"references\"",
    "{\"address\":-1,\"from\":\"oid\",\"to\":\"parentoid\"}",
    "\"ACTION\"",
    "\"Action\":\"U\"",
    "[[[[[[[[",
    "{\"a\":",
    "\u{feff}",
    " ",
    "\n",
];

/// The seed's transactions and the bodies the tests send, to mutate.
pub fn seeds() -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/seed");
    let mut out: Vec<Vec<u8>> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    out.sort();
    out
}

fn id(rng: &mut Rng) -> Value {
    const IDS: &[&str] = &[
        "1",
        "0",
        "0000000000000001",
        "ffffffffffffffff",
        "FFFFFFFFFFFFFFFF",
        "10000000000000000",
        "-1",
        "0x1",
        " 1",
        "1 ",
        "g",
        "+1",
        "1_0",
        "\u{ff11}",
    ];
    match rng.below(6u32) {
        0 => Value::from(rng.next()),
        1 => Value::from(format!("{:x}", rng.next())),
        2 => Value::from(format!("{:016x}", rng.next())),
        3 => Value::from(gen::odd_string(rng)),
        _ => Value::from(*rng.pick(IDS)),
    }
}

fn path(rng: &mut Rng) -> Value {
    let mut p =
        String::from(*rng.pick(&["1", "0000000000000001", "", "/1", "x", "ffffffffffffffff"]));
    for _ in 0..rng.size(40) {
        p.push('/');
        if rng.one_in(3) {
            p.push_str(&gen::odd_string(rng));
        } else {
            p.push_str(&gen::plain_word(rng));
        }
    }
    Value::from(p)
}

fn reference(rng: &mut Rng) -> Value {
    let field = |rng: &mut Rng| -> Value {
        match rng.below(5u32) {
            0 => Value::from("oid"),
            1 => Value::from("PARENTOID"),
            2 => Value::from("tstamp"),
            3 => Value::from(gen::odd_string(rng)),
            _ => random_value(rng, 1),
        }
    };
    let address: Value = match rng.below(8u32) {
        0 => Value::from(-1),
        1 => Value::from(-(rng.size(20) as i64)),
        2 => Value::from(i64::MIN),
        3 => Value::from(u64::MAX),
        4 => serde_json::json!(-1.5),
        5 => Value::from("-1"),
        6 => Value::from(rng.next() as i64),
        _ => random_value(rng, 1),
    };
    let mut m = serde_json::Map::new();
    m.insert(gen::any_case(rng, "address"), address);
    m.insert(gen::any_case(rng, "from"), field(rng));
    m.insert(gen::any_case(rng, "to"), field(rng));
    if rng.one_in(5) {
        let k = rng.pick(&["address", "from", "to"]).to_string();
        m.remove(&k);
    }
    Value::Object(m)
}

fn lisp_json(rng: &mut Rng, depth: usize) -> Value {
    const F: &[&str] = &[
        "yield",
        "yield-all",
        "if",
        "contains",
        "and",
        "or",
        "not",
        "owner-full-ro-all",
        "nope",
    ];
    if depth == 0 || rng.one_in(3) {
        return serde_json::json!({ gen::any_case(rng, "v"): *rng.pick(&["R", "X", "email", "a@b.c", "Q", ""]) });
    }
    let args: Vec<Value> = (0..rng.size(4))
        .map(|_| lisp_json(rng, depth - 1))
        .collect();
    serde_json::json!({ gen::any_case(rng, "f"): *rng.pick(F), gen::any_case(rng, "a"): args })
}

/// A value the right type for `field`, or (sometimes) any value at all.
fn field_value(rng: &mut Rng, field: &str) -> Value {
    if rng.one_in(5) {
        return random_value(rng, 3);
    }
    match field {
        "action" => Value::from(*rng.pick(&["C", "U", "D", "P", "c", "u", "X", "CU", "", " C"])),
        "oid" | "tstamp" | "purgetstamp" | "expiration" => id(rng),
        "parentoid" => {
            if rng.one_in(2) {
                id(rng)
            } else {
                path(rng)
            }
        }
        "name" | "defaultfile" | "mimetype" | "description" | "rname" => {
            if rng.one_in(2) {
                Value::from(gen::plain_word(rng))
            } else {
                Value::from(gen::odd_string(rng))
            }
        }
        "isfile" | "allowpartialpermissions" => {
            Value::from(*rng.pick(&["true", "false", "TRUE", "1", "yes"]))
        }
        "references" => Value::Array((0..rng.size(6)).map(|_| reference(rng)).collect()),
        "objectpolicy" => {
            let mut m = serde_json::Map::new();
            match rng.below(4u32) {
                0 => {
                    m.insert(gen::any_case(rng, "requirements"), lisp_json(rng, 4));
                }
                1 => {
                    m.insert(
                        gen::any_case(rng, "rego"),
                        Value::from("package p\nR := true"),
                    );
                }
                2 => {
                    m.insert(
                        gen::any_case(rng, "label"),
                        Value::from(gen::odd_string(rng)),
                    );
                }
                _ => {
                    m.insert("requirements".into(), lisp_json(rng, 2));
                    m.insert("Requirements".into(), random_value(rng, 2));
                }
            }
            Value::Object(m)
        }
        "originalobjectpolicy" => Value::from(*rng.pick(&[
            "(yield-all)",
            "(if (contains email \"a\") (yield R))",
            "package p\nR := true",
            "(",
            "",
        ])),
        "security" | "derived" | "custom" => random_object(rng, 3),
        "sha256plain" => Value::from(format!("{:064x}", rng.next())),
        "blobalgorithm" => Value::from(*rng.pick(&["none", "NONE", "aes", "", "\u{0}"])),
        _ => random_value(rng, 3),
    }
}

fn random_object(rng: &mut Rng, depth: usize) -> Value {
    let mut m = serde_json::Map::new();
    for _ in 0..rng.size(6) {
        let k = if rng.one_in(2) {
            gen::plain_word(rng)
        } else {
            gen::odd_string(rng)
        };
        m.insert(k, random_value(rng, depth.saturating_sub(1)));
    }
    Value::Object(m)
}

/// Any JSON value, nested at most `depth` deep.
pub fn random_value(rng: &mut Rng, depth: usize) -> Value {
    let top = if depth == 0 { 6 } else { 8 };
    match rng.below(top) {
        0 => Value::Null,
        1 => Value::from(rng.one_in(2)),
        2 => Value::from(rng.next() as i64),
        3 => serde_json::json!(f64::from_bits(rng.next() & 0x7fef_ffff_ffff_ffff)),
        4 => Value::from(gen::odd_string(rng)),
        5 => Value::from(gen::plain_word(rng)),
        6 => Value::Array(
            (0..rng.size(6))
                .map(|_| random_value(rng, depth - 1))
                .collect(),
        ),
        _ => random_object(rng, depth),
    }
}

/// Writes an event object as text, keys in any case; sometimes a key twice in two cases
/// (a Map cannot hold that, so the text is written by hand).
fn event_text(rng: &mut Rng) -> String {
    let mut pairs: Vec<(String, Value)> = Vec::new();
    if !rng.one_in(10) {
        pairs.push((gen::any_case(rng, "action"), field_value(rng, "action")));
    }
    for _ in 0..rng.size(8) {
        let f = *rng.pick(FIELDS);
        pairs.push((gen::any_case(rng, f), field_value(rng, f)));
    }
    if rng.one_in(4) && !pairs.is_empty() {
        let (k, _) = pairs[rng.below(pairs.len())].clone();
        let other = gen::any_case(rng, &k.to_ascii_lowercase());
        let v = field_value(rng, &k.to_ascii_lowercase());
        pairs.push((other, v));
    }
    let ws = |rng: &mut Rng| *rng.pick(&["", "", " ", "\n", "\t", "\r\n  "]);
    let mut s = String::from("{");
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(ws(rng));
        s.push_str(&serde_json::to_string(k).unwrap());
        s.push(':');
        s.push_str(ws(rng));
        s.push_str(&v.to_string());
    }
    s.push('}');
    s
}

fn transaction(rng: &mut Rng) -> Vec<u8> {
    let n = rng.size(12);
    if n == 1 && rng.one_in(3) {
        return event_text(rng).into_bytes();
    }
    let events: Vec<String> = (0..n).map(|_| event_text(rng)).collect();
    format!("[{}]", events.join(",")).into_bytes()
}

/// Shapes that stress a JSON reader: nesting at and past serde_json's 128 levels, long
/// numbers, long strings of escapes, many small values.
fn stress(rng: &mut Rng) -> Vec<u8> {
    let n = *rng.pick(&[1usize, 64, 126, 127, 128, 129, 500, 5000, 100_000]);
    let close = rng.one_in(2);
    match rng.below(8u32) {
        0 => {
            let mut s = "[".repeat(n);
            if close {
                s.push_str(&"]".repeat(n));
            }
            s.into_bytes()
        }
        1 => {
            let mut s = String::from("[{\"action\":\"C\",\"custom\":");
            s.push_str(&"{\"a\":".repeat(n));
            s.push('1');
            if close {
                s.push_str(&"}".repeat(n));
                s.push_str("}]");
            }
            s.into_bytes()
        }
        2 => format!("[{{\"action\":\"C\",\"x\":1{}}}]", "0".repeat(n)).into_bytes(),
        3 => format!("[{{\"action\":\"C\",\"x\":-0.{}e-99999}}]", "0".repeat(n)).into_bytes(),
        4 => format!(
            "[{{\"action\":\"C\",\"name\":\"{}\"}}]",
            "\\u0001".repeat(n)
        )
        .into_bytes(),
        5 => format!("[{}0]", "0,".repeat(n)).into_bytes(),
        6 => format!("[{}]", vec!["{}"; n.min(20_000)].join(",")).into_bytes(),
        _ => format!(
            "[{{\"action\":\"C\",\"references\":[{}]}}]",
            vec!["{\"address\":-1}"; n.min(20_000)].join(",")
        )
        .into_bytes(),
    }
}

fn generate(rng: &mut Rng, pool: &[Vec<u8>]) -> Input {
    let bytes = match rng.below(10u32) {
        0 => gen::random_bytes(rng, b"[]{}\":,0123456789-eE.truefalsn \\u"),
        1..=3 if !pool.is_empty() => {
            let base = rng.pick(pool).clone();
            gen::mutate(rng, &base, DICT, pool)
        }
        4 => stress(rng),
        5 => {
            let t = transaction(rng);
            gen::mutate(rng, &t, DICT, pool)
        }
        _ => transaction(rng),
    };
    let max_events = *rng.pick(&[1usize, 2, 3, 10, 10_000]);
    Input { bytes, max_events }
}

/// A time every input must parse within: generous (debug build, a busy machine), linear.
fn limit(len: usize) -> Duration {
    Duration::from_millis(200) + Duration::from_micros(2) * len as u32
}

/// The longest error message: it is sent back in the response, so it must not grow with the
/// input (a message that quotes a 64 MiB field would be sent back several times over).
pub const MAX_MESSAGE: usize = 1024;

pub fn check(input: &Input) -> Result<(), String> {
    let (r, took, in_time) = super::timed(limit(input.bytes.len()), || {
        parse_metadata(&input.bytes, input.max_events)
    });
    if !in_time {
        return Err(format!(
            "took {took:?} for {} bytes (limit {:?})",
            input.bytes.len(),
            limit(input.bytes.len())
        ));
    }
    match r {
        Ok(events) => {
            let doc: Value = serde_json::from_slice(&input.bytes)
                .map_err(|e| format!("accepted, yet it is not JSON: {e}"))?;
            let n = match &doc {
                Value::Array(a) => a.len(),
                Value::Object(_) => 1,
                other => return Err(format!("accepted a {other} as a transaction")),
            };
            if events.len() != n || n == 0 || n > input.max_events {
                return Err(format!(
                    "{} events parsed from a document of {n} (max {})",
                    events.len(),
                    input.max_events
                ));
            }
            for (i, e) in events.iter().enumerate() {
                if e.index != i {
                    return Err(format!("event {i} has index {}", e.index));
                }
                for r in &e.references {
                    if r.source >= i {
                        return Err(format!("event {i} refers to event {}", r.source));
                    }
                }
            }
            Ok(())
        }
        Err(e) => {
            if !matches!(e.kind, Kind::BadRequest | Kind::TooLarge) {
                return Err(format!("refused with {:?}: {}", e.kind, e.message));
            }
            if e.message.trim().is_empty() {
                return Err(format!("refused without a message: {e:?}"));
            }
            if e.message.len() > MAX_MESSAGE {
                return Err(format!(
                    "refused with a {}-byte message ({}): {}...",
                    e.message.len(),
                    e.code,
                    e.message.chars().take(200).collect::<String>()
                ));
            }
            Ok(())
        }
    }
}

fn from_corpus(name: &str, bytes: &[u8]) -> Option<Input> {
    // `name.max1.json` runs with at most one event, and so on; the default is the server's.
    let max_events = name
        .split('.')
        .find_map(|p| p.strip_prefix("max").and_then(|n| n.parse().ok()))
        .unwrap_or(10_000);
    Some(Input {
        bytes: bytes.to_vec(),
        max_events,
    })
}

pub fn target() -> Target<Input> {
    Target {
        name: "metadata",
        ci_cases: 5000,
        stack: 2 << 20,
        hang: Duration::from_secs(20),
        from_corpus,
        generate,
        bytes: |i| i.bytes.clone(),
        check,
        seeds,
    }
}

#[test]
fn the_metadata_parser_answers_every_generated_input_with_events_or_a_short_4xx() {
    super::run(target());
}
