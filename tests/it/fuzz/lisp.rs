//! Target 3: the gm-data policy language, `vellum::policy::lisp::{parse_text, from_json}`,
//! with the limits `PolicyEngine::prepare` gives them.
//!
//! Inputs: trees generated from the grammar (well-formed, sometimes past the node and depth
//! limits) written as text with odd spacing and quoting or as JSON with keys in any case;
//! mutations of those and of the corpus; random text.
//! Properties: no panic; a well-formed tree within the limits is accepted as exactly that
//! tree, one past them refused for the limit it passes; whatever is accepted round-trips
//! through both forms to the same tree and grants the same letters; a refusal has a message
//! and a place (a line and column, or a JSON path); time linear in the text.

use std::time::Duration;

use serde_json::{json, Map, Value};
use vellum::model::Claims;
use vellum::policy::lisp::{self, Budget, LispError, Node};

use super::gen::{self, Pick};
use super::{Rng, Target};

/// What `PolicyEngine::prepare` uses (`PolicyLimits::default()`).
pub const BUDGET: Budget = Budget {
    max_nodes: 4096,
    max_depth: 64,
};

pub enum Input {
    Text(String),
    Json(Value),
    /// A tree from the grammar, written as text or JSON, with what it must parse to.
    Tree {
        tree: G,
        as_json: bool,
        written: Written,
    },
}

pub enum Written {
    Text(String),
    Json(Value),
}

/// A tree of the language as the generator sees it.
#[derive(Clone, Debug)]
pub enum G {
    /// Sibling statements (only at the top).
    Seq(Vec<G>),
    Call(&'static str, Vec<G>),
    Atom(String),
}

impl G {
    /// Nodes and depth as the parser counts them (a `Seq` is not a node).
    fn measure(&self, depth: usize, nodes: &mut usize, deepest: &mut usize) {
        match self {
            G::Seq(items) => items.iter().for_each(|i| i.measure(depth, nodes, deepest)),
            G::Call(_, args) => {
                *nodes += 1;
                *deepest = (*deepest).max(depth);
                args.iter()
                    .for_each(|a| a.measure(depth + 1, nodes, deepest));
            }
            G::Atom(_) => {
                *nodes += 1;
                *deepest = (*deepest).max(depth);
            }
        }
    }

    /// The canonical JSON form the parser must produce.
    fn canonical(&self) -> Value {
        match self {
            G::Seq(items) => Value::Array(items.iter().map(G::canonical).collect()),
            G::Call(f, args) => {
                json!({"f": f, "a": args.iter().map(G::canonical).collect::<Vec<_>>()})
            }
            G::Atom(s) => json!({ "v": s }),
        }
    }
}

const LETTERS: &[&str] = &["C", "R", "U", "D", "X", "P", "RX", "CRUDXP", "PXDURC", "RR"];
const FIELDS: &[&str] = &["email", "org", "group", "age", "values", ""];

fn atom(rng: &mut Rng) -> String {
    match rng.below(4u32) {
        0 => gen::odd_string(rng),
        1 => rng.pick(FIELDS).to_string(),
        _ => gen::plain_word(rng),
    }
}

fn condition(rng: &mut Rng, depth: usize) -> G {
    if depth == 0 || rng.one_in(2) {
        let n = rng.between(1, 3);
        let mut args = vec![G::Atom(rng.pick(FIELDS).to_string())];
        args.extend((0..n).map(|_| G::Atom(atom(rng))));
        return G::Call("contains", args);
    }
    match rng.below(3u32) {
        0 => G::Call("not", vec![condition(rng, depth - 1)]),
        1 => G::Call(
            "and",
            (0..rng.between(1, 3))
                .map(|_| condition(rng, depth - 1))
                .collect(),
        ),
        _ => G::Call(
            "or",
            (0..rng.between(1, 3))
                .map(|_| condition(rng, depth - 1))
                .collect(),
        ),
    }
}

/// A well-formed statement.
fn statement(rng: &mut Rng, depth: usize) -> G {
    match rng.below(if depth == 0 { 3u32 } else { 5 }) {
        0 => G::Call(
            "yield",
            (0..rng.between(1, 3))
                .map(|_| G::Atom(rng.pick(LETTERS).to_string()))
                .collect(),
        ),
        1 => G::Call("yield-all", vec![]),
        2 => G::Call(
            "owner-full-ro-all",
            vec![G::Atom(rng.pick(FIELDS).to_string()), G::Atom(atom(rng))],
        ),
        _ => {
            let mut args = vec![condition(rng, depth - 1), statement(rng, depth - 1)];
            if rng.one_in(2) {
                args.push(statement(rng, depth - 1));
            }
            G::Call("if", args)
        }
    }
}

/// A well-formed policy: usually small, sometimes at or past the limits.
pub fn tree(rng: &mut Rng) -> G {
    match rng.below(40u32) {
        // Deep: a chain of `not`s under an `if`, around the depth limit.
        0 => {
            let depth = rng.between(55, 70);
            let mut c = G::Call(
                "contains",
                vec![G::Atom("email".into()), G::Atom("a".into())],
            );
            for _ in 0..depth.saturating_sub(2) {
                c = G::Call("not", vec![c]);
            }
            G::Call("if", vec![c, G::Call("yield-all", vec![])])
        }
        // Wide: one `contains` with as many atoms as the node limit, give or take.
        1 => {
            let n = rng.between(4080, 4100);
            let mut args = vec![G::Atom("email".into())];
            args.extend((0..n - 2).map(|i| G::Atom(format!("a{i}"))));
            G::Call("contains", args)
        }
        2..=10 => G::Seq((0..rng.between(0, 6)).map(|_| statement(rng, 4)).collect()),
        _ => {
            let d = rng.between(0, 6);
            statement(rng, d)
        }
    }
}

fn space(rng: &mut Rng) -> &'static str {
    const SPACES: &[&str] = &[
        " ", " ", " ", "  ", "\n", "\t", "\r\n", "\u{a0}", "\u{2028}", "\u{3000}", "\u{85}",
    ];
    SPACES[rng.below(SPACES.len())]
}

fn symbol_ok(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| !(c.is_whitespace() || c == '(' || c == ')' || c == '"'))
}

fn write_text(rng: &mut Rng, g: &G, out: &mut String) {
    match g {
        G::Seq(items) => {
            for it in items {
                if rng.one_in(2) {
                    out.push_str(space(rng));
                }
                write_text(rng, it, out);
                out.push_str(space(rng));
            }
        }
        G::Call(f, args) => {
            out.push('(');
            if rng.one_in(6) {
                out.push_str(space(rng));
            }
            out.push_str(f);
            for a in args {
                out.push_str(space(rng));
                write_text(rng, a, out);
            }
            if rng.one_in(6) {
                out.push_str(space(rng));
            }
            out.push(')');
        }
        G::Atom(s) => {
            if symbol_ok(s) && !rng.one_in(4) {
                out.push_str(s);
            } else {
                out.push('"');
                for c in s.chars() {
                    if c == '"' || c == '\\' {
                        out.push('\\');
                    }
                    out.push(c);
                }
                out.push('"');
            }
        }
    }
}

fn write_json(rng: &mut Rng, g: &G) -> Value {
    match g {
        G::Seq(items) => Value::Array(items.iter().map(|i| write_json(rng, i)).collect()),
        G::Call(f, args) => {
            let mut m = Map::new();
            m.insert(gen::any_case(rng, "f"), json!(f));
            if !(args.is_empty() && rng.one_in(2)) {
                let a = args.iter().map(|x| write_json(rng, x)).collect();
                m.insert(gen::any_case(rng, "a"), Value::Array(a));
            }
            Value::Object(m)
        }
        G::Atom(s) => {
            let mut m = Map::new();
            m.insert(gen::any_case(rng, "v"), json!(s));
            Value::Object(m)
        }
    }
}

const DICT: &[&str] = &[
    "(",
    ")",
    "(",
    ")",
    "\"",
    "\\",
    " ",
    "\n",
    "yield",
    "yield-all",
    "if",
    "contains",
    "and",
    "or",
    "not",
    "owner-full-ro-all",
    "R",
    "(not ",
    "(yield R)",
    "\\\"",
    "\\n",
    "\u{a0}",
];

const JSON_DICT: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "\"f\"",
    "\"F\"",
    "\"a\"",
    "\"A\"",
    "\"v\"",
    "\"V\"",
    "null",
    "1",
    "\"yield\"",
    "{\"v\":\"R\"}",
    "{\"f\":\"not\",\"a\":[",
    "]}",
];

fn generate(rng: &mut Rng, pool: &[Vec<u8>]) -> Input {
    match rng.below(10u32) {
        0 => {
            let bytes = gen::random_bytes(rng, b"()\" \\yieldRX");
            Input::Text(gen::mutate_text(
                rng,
                &String::from_utf8_lossy(&bytes),
                DICT,
                pool,
            ))
        }
        1 | 2 if !pool.is_empty() => {
            let base = rng.pick(pool).clone();
            if base.first() == Some(&b'{') || base.first() == Some(&b'[') {
                let m = gen::mutate(rng, &base, JSON_DICT, pool);
                match serde_json::from_slice(&m) {
                    Ok(v) => Input::Json(v),
                    Err(_) => Input::Text(String::from_utf8_lossy(&m).into_owned()),
                }
            } else {
                Input::Text(gen::mutate_text(
                    rng,
                    &String::from_utf8_lossy(&base),
                    DICT,
                    pool,
                ))
            }
        }
        3 => {
            let g = tree(rng);
            let mut t = String::new();
            write_text(rng, &g, &mut t);
            Input::Text(gen::mutate_text(rng, &t, DICT, pool))
        }
        4 => {
            let g = tree(rng);
            let j = write_json(rng, &g).to_string();
            let m = gen::mutate(rng, j.as_bytes(), JSON_DICT, pool);
            match serde_json::from_slice(&m) {
                Ok(v) => Input::Json(v),
                Err(_) => Input::Json(super::metadata::random_value(rng, 4)),
            }
        }
        _ => {
            let tree = tree(rng);
            let as_json = rng.one_in(2);
            let written = if as_json {
                Written::Json(write_json(rng, &tree))
            } else {
                let mut t = String::new();
                write_text(rng, &tree, &mut t);
                Written::Text(t)
            };
            Input::Tree {
                tree,
                as_json,
                written,
            }
        }
    }
}

fn claims() -> Vec<Claims> {
    [
        json!({"label": "a", "values": {}}),
        json!({"label": "b", "values": {"email": ["a", "email"], "org": ["x"]}}),
        json!({"label": "c", "values": {"email": ["", "\u{0}"], "group": ["R", "a0"], "age": "a"}}),
    ]
    .into_iter()
    .map(Claims::new)
    .collect()
}

/// What a tree means, for comparing two trees that should mean the same: the canonical JSON,
/// a one-statement list being that statement.
fn meaning(n: &Node) -> Value {
    one_or_list(n.to_json())
}

fn one_or_list(v: Value) -> Value {
    match v {
        Value::Array(mut a) if a.len() == 1 => a.remove(0),
        v => v,
    }
}

/// An accepted tree: both round trips give it back, and grant the same letters.
fn round_trips(n: &Node, from_text: bool) -> Result<(), String> {
    let text = n.to_text();
    let json = n.to_json();
    let back = lisp::from_json(&json, BUDGET)
        .map_err(|e| format!("its JSON form {json} is refused: {e}"))?;
    if &back != n {
        return Err(format!("JSON round trip changed the tree: {json}"));
    }
    match lisp::parse_text(&text, BUDGET) {
        Ok(t) => {
            // A list of one statement (JSON only) is written as that statement.
            if meaning(&t) != meaning(n) || (from_text && &t != n) {
                return Err(format!("text round trip changed the tree: {text:?}"));
            }
            for c in claims() {
                if lisp::evaluate(&t, &c).0 != lisp::evaluate(n, &c).0 {
                    return Err(format!("text round trip changed what {text:?} grants"));
                }
            }
        }
        // Only an empty list has no text form.
        Err(_) if matches!(n, Node::Seq(s) if s.is_empty()) => {}
        Err(e) => return Err(format!("its text form {text:?} is refused: {e}")),
    }
    Ok(())
}

/// A refusal: a message and a place.
fn refusal(e: &LispError, text: Option<&str>) -> Result<(), String> {
    if e.msg.trim().is_empty() || e.at.trim().is_empty() {
        return Err(format!("a refusal without a message or a place: {e:?}"));
    }
    if e.msg.len() + e.at.len() > super::metadata::MAX_MESSAGE {
        return Err(format!(
            "a {}-byte refusal: {}...",
            e.msg.len() + e.at.len(),
            e.msg.chars().take(200).collect::<String>()
        ));
    }
    match text {
        Some(t) => {
            let place =
                e.at.strip_prefix("line ")
                    .and_then(|r| r.split_once(", column "))
                    .and_then(|(l, c)| Some((l.parse::<usize>().ok()?, c.parse::<usize>().ok()?)));
            let lines = t.matches('\n').count() + 1;
            match place {
                Some((l, c)) if l >= 1 && l <= lines && c >= 1 => Ok(()),
                _ => Err(format!("a refusal of text placed at {:?}", e.at)),
            }
        }
        None => {
            let ok = e.at == "the top" || e.at.starts_with('[') || e.at.starts_with("a[");
            if ok {
                Ok(())
            } else {
                Err(format!("a refusal of JSON placed at {:?}", e.at))
            }
        }
    }
}

/// Linear in the text, generously (debug build, busy machine).
fn limit(len: usize) -> Duration {
    Duration::from_millis(100) + Duration::from_micros(2) * len as u32
}

fn parse(
    text: Option<&str>,
    json: Option<&Value>,
) -> (Result<Node, LispError>, Result<(), String>) {
    let len = text.map_or_else(|| json.map_or(0, |j| j.to_string().len()), str::len);
    let (r, took, in_time) = super::timed(limit(len), || match (text, json) {
        (Some(t), _) => lisp::parse_text(t, BUDGET),
        (_, Some(j)) => lisp::from_json(j, BUDGET),
        _ => unreachable!(),
    });
    let time = if in_time {
        Ok(())
    } else {
        Err(format!(
            "took {took:?} for {len} bytes (limit {:?})",
            limit(len)
        ))
    };
    (r, time)
}

pub fn check(input: &Input) -> Result<(), String> {
    match input {
        Input::Text(t) => {
            let (r, time) = parse(Some(t), None);
            time?;
            match r {
                Ok(n) => round_trips(&n, true),
                Err(e) => refusal(&e, Some(t)),
            }
        }
        Input::Json(j) => {
            let (r, time) = parse(None, Some(j));
            time?;
            match r {
                Ok(n) => round_trips(&n, false),
                Err(e) => refusal(&e, None),
            }
        }
        Input::Tree {
            tree,
            as_json,
            written,
        } => {
            let (r, time) = match written {
                Written::Text(t) => parse(Some(t), None),
                Written::Json(j) => parse(None, Some(j)),
            };
            time?;
            let (mut nodes, mut deepest) = (0, 0);
            tree.measure(1, &mut nodes, &mut deepest);
            let text = match written {
                Written::Text(t) => Some(t.as_str()),
                Written::Json(_) => None,
            };
            let empty = matches!(tree, G::Seq(s) if s.is_empty());
            match r {
                Ok(_) if nodes > BUDGET.max_nodes || deepest > BUDGET.max_depth => Err(format!(
                    "accepted {nodes} nodes {deepest} deep, past the limits"
                )),
                Ok(_) if empty && !as_json => Err("accepted a text with no policy".into()),
                Ok(n) => {
                    let want = one_or_list(tree.canonical());
                    let got = n.to_json();
                    if meaning(&n) != want {
                        return Err(format!("parsed as {got}, not {want}"));
                    }
                    round_trips(&n, !as_json)
                }
                Err(e) => {
                    refusal(&e, text)?;
                    let why_nodes = nodes > BUDGET.max_nodes && e.msg.contains("nodes");
                    let why_depth = deepest > BUDGET.max_depth && e.msg.contains("deeper");
                    let why_empty = empty && !as_json && e.msg == "no policy";
                    if why_nodes || why_depth || why_empty {
                        Ok(())
                    } else {
                        Err(format!(
                            "a well-formed tree ({nodes} nodes, {deepest} deep) refused: {e}"
                        ))
                    }
                }
            }
        }
    }
}

fn bytes(input: &Input) -> Vec<u8> {
    match input {
        Input::Text(t)
        | Input::Tree {
            written: Written::Text(t),
            ..
        } => t.as_bytes().to_vec(),
        Input::Json(j)
        | Input::Tree {
            written: Written::Json(j),
            ..
        } => j.to_string().into_bytes(),
    }
}

fn from_corpus(name: &str, b: &[u8]) -> Option<Input> {
    let text = String::from_utf8_lossy(b).into_owned();
    if name.ends_with(".json") {
        serde_json::from_str(&text).ok().map(Input::Json)
    } else {
        Some(Input::Text(text))
    }
}

pub fn target() -> Target<Input> {
    Target {
        name: "lisp",
        ci_cases: 3000,
        stack: 2 << 20,
        hang: Duration::from_secs(20),
        from_corpus,
        generate,
        bytes,
        check,
        seeds: Vec::new,
    }
}

#[test]
fn the_lisp_parser_accepts_exactly_the_well_formed_trees_and_places_every_refusal() {
    super::run(target());
}
