//! Rego policies through regorus: compilation, what a module reads, and bounded evaluation.
//!
//! A module is compiled once into a prepared [`regorus::Engine`] (parsed, analysed,
//! scheduled); every evaluation clones it (a few hundred nanoseconds: the policy is shared
//! behind `Arc`s, the `arc` feature makes it `Send + Sync`) and evaluates all of the
//! module's rules in one pass with `eval_modules`, reading the boolean rules C R U D X P of
//! its package out of the result. That measured ~1.7x cheaper than six `eval_rule` calls and
//! ~1.6x cheaper than `eval_query("data")`, because helper rules shared by the letters are
//! evaluated once. When the pass fails because some rule errors, the letters are evaluated
//! one by one within what is left of the time budget, so that one bad rule does not take
//! the others down with it.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use regorus::utils::limits::{ExecutionTimerConfig, PolicyLengthConfig};
use regorus::{Engine, Value};

use crate::model::Perms;

use super::guard;

/// Source name the module is loaded under; it appears in regorus's messages.
const SOURCE: &str = "policy.rego";

/// Deepest nesting of `[ ]` and `{ }` accepted in a Rego text.
///
/// regorus 0.14.1's parser backtracks at every `[` and `{` (array or comprehension, object
/// or set or comprehension), so its work doubles with each level: 64 KiB of text nested 7
/// deep took ~0.4 s to parse, 9 deep ~0.8 s, and a 60-byte module nested 23 deep 17 s.
/// Parsing is not covered by the evaluation deadline, so the depth is bounded up front. Six
/// levels leave room for a rule body holding a comprehension over an object of sets.
pub const MAX_REGO_NESTING: usize = 6;

/// Stack a policy may need, in bytes.
///
/// regorus's parser, analyser and interpreter recurse along the policy's structure: a chain
/// `1 + 1 + 1 ...` nests one level per operator, a rule or function that uses the next one
/// nests a few frames per rule. A stack overflow aborts the whole process, so every parse
/// and evaluation is given a stack sized from the policy: small policies (nearly all) run
/// on the calling thread, bigger ones on a helper thread whose stack is big enough. The
/// figures are twice the worst per-level use measured (1 MiB threads, bisecting the depth
/// at which each shape overflows: operator chains, forward and backward rule chains,
/// function chains, set-union chains); unoptimised builds use several times more stack per
/// frame, hence the two sets.
struct Frames {
    /// Fixed part: engine entry, the nested engine of a guarded builtin, the caller's own use.
    base: usize,
    /// Per byte of text, for parsing and analysis (an operator chain needs 2 bytes a level).
    per_byte: usize,
    /// Per rule or function, for evaluation.
    per_rule: usize,
    /// Per expression or statement, for evaluation.
    per_expr: usize,
}

#[cfg(debug_assertions)]
const FRAMES: Frames = Frames {
    base: 128 << 10,
    per_byte: 5 << 10,
    per_rule: 48 << 10,
    per_expr: 5 << 10,
};
#[cfg(not(debug_assertions))]
const FRAMES: Frames = Frames {
    base: 64 << 10,
    per_byte: 600,
    per_rule: 7 << 10,
    per_expr: 600,
};

/// Largest stack need run on the calling thread. Callers must have at least this much (plus
/// their own use) free: tokio's worker and blocking threads have 2 MiB.
pub const INLINE_STACK: usize = 512 << 10;

/// Runs `f` on this thread if `need` fits [`INLINE_STACK`], else on a helper thread with a
/// stack of `need` bytes (reserved, only touched pages are committed). `None` if no thread
/// could be started.
fn with_stack<T: Send>(need: usize, f: impl FnOnce() -> T + Send) -> Option<T> {
    if need <= INLINE_STACK {
        return Some(f());
    }
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("vellum-policy".into())
            .stack_size(need)
            .spawn_scoped(s, f)
            .ok()?
            .join()
            .ok()
    })
}

/// Letters and their rule names, in the order they are printed.
const LETTERS: [(char, Perms); 6] = [
    ('C', Perms::C),
    ('R', Perms::R),
    ('U', Perms::U),
    ('D', Perms::D),
    ('X', Perms::X),
    ('P', Perms::P),
];

/// What of `input` a module may read, judged from its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputUse {
    /// Results depend only on the claims (and the action): safe to cache per
    /// (policy, claims, action). False if the text names `input` other than as
    /// `input.claims` / `input.action`, or mentions a time, random or environment builtin.
    pub claims_only: bool,
    /// The module may read `input.object` (any use of `input` other than `input.claims` or
    /// `input.action`), so the caller must supply it.
    pub reads_object: bool,
    /// The module may read `input.action`: results must be cached per action.
    pub reads_action: bool,
}

/// A compiled Rego module.
#[derive(Debug)]
pub struct RegoPolicy {
    engine: Engine,
    /// Package path components, e.g. `["policy"]` for `package policy`.
    package: Vec<String>,
    /// Letters that have a rule, with the rule's path for `eval_rule`.
    declared: Vec<(Perms, String)>,
    pub input_use: InputUse,
    /// Stack an evaluation may need (see [`Frames`]).
    eval_stack: usize,
}

/// The outcome of one evaluation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outcome {
    pub perms: Perms,
    /// Something went wrong (an erroring rule, the time limit, a panic inside regorus):
    /// the result is still a safe default-deny but must not be cached.
    pub failed: bool,
}

fn timer(limit: Duration) -> ExecutionTimerConfig {
    // Check the clock at every statement: the check is a vDSO clock read (~20 ns) and a
    // coarser interval lets expensive statements (big-integer squaring) run on for many
    // steps past the deadline.
    ExecutionTimerConfig {
        limit,
        check_interval: NonZeroU32::MIN,
    }
}

/// Makes a one-line message out of a regorus error ("--> policy.rego:3:7 ... error: msg").
pub fn compact_error(e: &anyhow::Error) -> String {
    let text = e.to_string();
    let mut location = None;
    let mut message = None;
    for line in text.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("-->") {
            let rest = rest.trim();
            let rest = rest
                .strip_prefix(SOURCE)
                .and_then(|r| r.strip_prefix(':'))
                .unwrap_or(rest);
            if let Some((l, c)) = rest.split_once(':') {
                location = Some(format!("line {l}, column {c}"));
            }
        } else if let Some(m) = line.strip_prefix("error:") {
            message = Some(m.trim().to_string());
        }
    }
    match (location, message) {
        (Some(l), Some(m)) => format!("{l}: {m}"),
        (None, Some(m)) => m,
        _ => text.split_whitespace().collect::<Vec<_>>().join(" "),
    }
}

/// Fails if `[ ]`/`{ }` nest deeper than [`MAX_REGO_NESTING`] outside strings and comments.
fn check_nesting(text: &str) -> Result<(), String> {
    let mut depth = 0usize;
    let mut line = 1;
    let mut col = 0;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        col += 1;
        match c {
            '\n' => {
                line += 1;
                col = 0;
            }
            '#' => {
                // A comment runs to the end of the line.
                for c in chars.by_ref() {
                    if c == '\n' {
                        line += 1;
                        col = 0;
                        break;
                    }
                }
            }
            '"' => {
                while let Some(c) = chars.next() {
                    col += 1;
                    match c {
                        '\\' => {
                            chars.next();
                            col += 1;
                        }
                        '"' | '\n' => break,
                        _ => {}
                    }
                }
            }
            '`' => {
                for c in chars.by_ref() {
                    col += 1;
                    if c == '\n' {
                        line += 1;
                        col = 0;
                    }
                    if c == '`' {
                        break;
                    }
                }
            }
            '[' | '{' => {
                depth += 1;
                if depth > MAX_REGO_NESTING {
                    return Err(format!(
                        "line {line}, column {col}: brackets nested deeper than {MAX_REGO_NESTING} levels"
                    ));
                }
            }
            ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// Builtin name prefixes whose results depend on the clock, randomness or the environment.
/// Matched anywhere in the text (so `runtime.` also matches `time.`): doubt means no caching.
const NONDETERMINISTIC: [&str; 8] = [
    "time.",
    "rand.",
    "uuid.",
    "opa.",
    "http.",
    "crypto.",
    "io.",
    "net.lookup",
];

/// Judges from the text what of `input` a module reads. Conservative: `input` in a
/// comment or string also counts, and any form other than `input.claims` / `input.action`
/// (for example `input["claims"]`, `x := input`, `with input as`, `import input`) counts as
/// reading everything.
pub fn input_use(text: &str) -> InputUse {
    let b = text.as_bytes();
    let mut other = false;
    let mut action = false;
    let mut at = 0;
    while let Some(i) = text[at..].find("input").map(|i| i + at) {
        at = i + 5;
        let before_ok = i == 0 || !is_ident(b[i - 1]);
        let after_ok = at >= b.len() || !is_ident(b[at]);
        if !(before_ok && after_ok) {
            continue;
        }
        let rest = &b[at..];
        let field_ok =
            |f: &[u8]| rest.starts_with(f) && rest.get(f.len()).is_none_or(|&c| !is_ident(c));
        if field_ok(b".action") {
            action = true;
        } else if !field_ok(b".claims") {
            other = true;
            break;
        }
    }
    let nondeterministic = NONDETERMINISTIC.iter().any(|p| text.contains(p));
    InputUse {
        claims_only: !other && !nondeterministic,
        reads_object: other,
        reads_action: action || other,
    }
}

/// A rule path for `eval_rule`: dotted identifiers, bracketed strings otherwise.
fn rule_path(package: &[String], rule: &str) -> String {
    let mut p = String::from("data");
    for c in package
        .iter()
        .map(String::as_str)
        .chain(std::iter::once(rule))
    {
        let plain = !c.is_empty() && c.bytes().all(is_ident) && !c.as_bytes()[0].is_ascii_digit();
        if plain {
            p.push('.');
            p.push_str(c);
        } else {
            p.push('[');
            p.push_str(&serde_json::to_string(c).unwrap_or_default());
            p.push(']');
        }
    }
    p
}

fn new_engine(text: &str, v0: bool, max_bytes: usize, timeout: Duration) -> anyhow::Result<Engine> {
    let mut e = Engine::new();
    e.set_rego_v0(v0);
    // One-line modules (as gm-data clients send them) are common: allow a line as long as
    // the whole text. The byte limit itself is checked before we get here.
    let cap = max_bytes.max(1024);
    e.set_policy_length_config(PolicyLengthConfig {
        max_col: NonZeroU32::new(u32::try_from(cap).unwrap_or(u32::MAX)).unwrap_or(NonZeroU32::MIN),
        max_file_bytes: std::num::NonZeroUsize::new(cap.saturating_add(1))
            .unwrap_or(std::num::NonZeroUsize::MIN),
        max_lines: std::num::NonZeroUsize::new(cap).unwrap_or(std::num::NonZeroUsize::MIN),
    });
    e.set_execution_timer_config(timer(timeout));
    // print() would otherwise write to stderr; gathered prints die with the clone.
    e.set_gather_prints(true);
    guard::install(&mut e, text)?;
    e.add_policy(SOURCE.into(), text.into())?;
    Ok(e)
}

fn has_word(text: &str, word: &str) -> bool {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .any(|w| w == word)
}

/// Picks which parser's complaint to show when neither accepts the text: the v1 one if the
/// text uses v1 keywords, else the v0 one.
fn looks_v1(text: &str) -> bool {
    text.contains("rego.v1") || has_word(text, "if") || has_word(text, "contains")
}

/// Whether a text that v1 refused is worth trying as v0. Not when it uses `if` without
/// importing the future keywords: v0 would refuse it too, and regorus's v0 parser prints a
/// warning about such keywords straight to stderr, which a writer could use to spam the log.
fn try_v0(text: &str) -> bool {
    text.contains("future.keywords") || !has_word(text, "if")
}

impl RegoPolicy {
    /// Parses (as Rego v1, then v0) and prepares a module. The error is a one-line message.
    pub fn compile(text: &str, max_bytes: usize, timeout: Duration) -> Result<RegoPolicy, String> {
        check_nesting(text)?;
        let need = FRAMES
            .base
            .saturating_add(text.len().saturating_mul(FRAMES.per_byte));
        let compiled = with_stack(need, || {
            catch_unwind(AssertUnwindSafe(|| {
                Self::compile_inner(text, max_bytes, timeout)
            }))
        });
        match compiled {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err("internal error in the Rego compiler".into()),
            None => Err("no thread to compile the policy on; try again".into()),
        }
    }

    fn compile_inner(
        text: &str,
        max_bytes: usize,
        timeout: Duration,
    ) -> Result<RegoPolicy, String> {
        let mut engine = match new_engine(text, false, max_bytes, timeout) {
            Ok(e) => e,
            Err(v1_err) if !try_v0(text) => return Err(compact_error(&v1_err)),
            Err(v1_err) => match new_engine(text, true, max_bytes, timeout) {
                Ok(e) => e,
                Err(v0_err) => {
                    let e = if looks_v1(text) { v1_err } else { v0_err };
                    return Err(compact_error(&e));
                }
            },
        };
        // Runs regorus's analysis (unsafe variables, recursion, imports, scheduling) without
        // evaluating any rule, and leaves the engine prepared for cheap clones.
        engine
            .eval_query("true".into(), false)
            .map_err(|e| compact_error(&e))?;
        let package = engine
            .get_policy_package_components()
            .map_err(|e| compact_error(&e))?
            .into_iter()
            .next()
            .map(|p| p.components)
            .ok_or_else(|| "no package".to_string())?;
        let declared = LETTERS
            .iter()
            .filter(|(l, _)| {
                engine
                    .has_declared_rule_rooted_at(SOURCE, &l.to_string())
                    .unwrap_or(false)
            })
            .map(|&(l, p)| (p, rule_path(&package, &l.to_string())))
            .collect();
        // Evaluation nests at most once per rule and once per expression or statement on
        // the way down, none of which can recur (regorus rejects recursion).
        let (rules, exprs) = engine
            .get_modules()
            .iter()
            .fold((0usize, 0usize), |(r, x), m| {
                (
                    r + m.policy.len(),
                    x + m.num_expressions as usize + m.num_statements as usize,
                )
            });
        let eval_stack = FRAMES
            .base
            .saturating_add(rules.saturating_mul(FRAMES.per_rule))
            .saturating_add(exprs.saturating_mul(FRAMES.per_expr));
        Ok(RegoPolicy {
            engine,
            package,
            declared,
            input_use: input_use(text),
            eval_stack,
        })
    }

    /// Evaluates the module for one input within `timeout`. Never fails: anything other
    /// than a rule that is literally `true` grants nothing.
    pub fn evaluate(&self, input: Value, timeout: Duration) -> Outcome {
        with_stack(self.eval_stack, || self.evaluate_here(input, timeout)).unwrap_or(Outcome {
            perms: Perms::NONE,
            failed: true,
        })
    }

    fn evaluate_here(&self, input: Value, timeout: Duration) -> Outcome {
        let start = Instant::now();
        let mut e = self.engine.clone();
        e.set_input(input);
        e.set_execution_timer_config(timer(timeout));
        let pass = catch_unwind(AssertUnwindSafe(|| e.eval_modules(false)));
        match pass {
            Ok(Ok(data)) => {
                let mut doc = &data;
                for c in &self.package {
                    doc = &doc[c.as_str()];
                }
                let perms = LETTERS.iter().fold(Perms::NONE, |acc, &(l, p)| {
                    if doc[l.to_string().as_str()] == Value::Bool(true) {
                        acc | p
                    } else {
                        acc
                    }
                });
                Outcome {
                    perms,
                    failed: false,
                }
            }
            Ok(Err(err)) => {
                if err.downcast_ref::<regorus::LimitError>().is_some() || start.elapsed() >= timeout
                {
                    return Outcome {
                        perms: Perms::NONE,
                        failed: true,
                    };
                }
                // Some rule errors: judge each letter on its own with the time left.
                let mut perms = Perms::NONE;
                for (p, path) in &self.declared {
                    let left = timeout.saturating_sub(start.elapsed());
                    if left.is_zero() {
                        break;
                    }
                    e.set_execution_timer_config(timer(left));
                    let r = catch_unwind(AssertUnwindSafe(|| e.eval_rule(path.clone())));
                    match r {
                        Ok(Ok(Value::Bool(true))) => perms |= *p,
                        Ok(_) => {}
                        Err(_) => {
                            return Outcome {
                                perms: Perms::NONE,
                                failed: true,
                            }
                        }
                    }
                }
                Outcome {
                    perms,
                    failed: true,
                }
            }
            Err(_) => Outcome {
                perms: Perms::NONE,
                failed: true,
            },
        }
    }
}

/// Dropping a module's syntax tree recurses as deep as evaluating it, so a big module is
/// dropped on a helper thread with the stack its evaluation would get. If no thread can be
/// started it is leaked rather than risk overflowing this thread's stack.
impl Drop for RegoPolicy {
    fn drop(&mut self) {
        if self.eval_stack <= INLINE_STACK {
            return;
        }
        let engine = std::mem::take(&mut self.engine);
        let (tx, rx) = std::sync::mpsc::channel::<Engine>();
        let spawned = std::thread::Builder::new()
            .name("vellum-policy-drop".into())
            .stack_size(self.eval_stack)
            .spawn(move || drop(rx.recv()));
        match spawned {
            Ok(_) => {
                if let Err(std::sync::mpsc::SendError(engine)) = tx.send(engine) {
                    std::mem::forget(engine);
                }
            }
            Err(_) => std::mem::forget(engine),
        }
    }
}

/// Builds the input document `{"claims": .., "action": "R", "object": ..}`.
pub fn input_document(claims: Value, action: char, object: Option<Value>) -> Value {
    let mut m = BTreeMap::new();
    m.insert(Value::from("claims"), claims);
    m.insert(Value::from("action"), Value::from(action.to_string()));
    if let Some(o) = object {
        m.insert(Value::from("object"), o);
    }
    Value::from(m)
}

/// Converts JSON to a regorus value without a text round trip.
pub fn to_value(v: &serde_json::Value) -> Value {
    use serde::Deserialize;
    Value::deserialize(v).unwrap_or(Value::Undefined)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const T: Duration = Duration::from_millis(100);

    fn eval(text: &str, input: serde_json::Value) -> Outcome {
        RegoPolicy::compile(text, 65536, T)
            .unwrap()
            .evaluate(to_value(&input), T)
    }

    #[test]
    fn seed_module_is_v0() {
        let seed = r#"package policy inOrg{input.claims.values.email[_]=="localuser@email.com"}C{inOrg}R{inOrg}U{inOrg}D{inOrg}X{inOrg}P{inOrg}"#;
        let p = RegoPolicy::compile(seed, 65536, T).unwrap();
        assert_eq!(p.declared.len(), 6);
        let o = p.evaluate(
            to_value(&json!({"claims": {"values": {"email": ["localuser@email.com"]}}})),
            T,
        );
        assert_eq!(
            o,
            Outcome {
                perms: Perms::ALL,
                failed: false
            }
        );
        let o = p.evaluate(
            to_value(&json!({"claims": {"values": {"email": ["x"]}}})),
            T,
        );
        assert_eq!(o.perms, Perms::NONE);
        assert!(p.input_use.claims_only);
        assert!(!p.input_use.reads_object);
    }

    #[test]
    fn one_erroring_rule_does_not_hide_the_others() {
        let o = eval(
            "package p\nimport rego.v1\nC := 1/0\nR if true\nU := \"yes\"\nhelper := 1/0\n",
            json!({}),
        );
        assert_eq!(o.perms, Perms::R);
        assert!(o.failed);
    }

    #[test]
    fn package_paths_with_odd_components() {
        let o = eval("package a.b\nimport rego.v1\nX if true\n", json!({}));
        assert_eq!(o.perms, Perms::X);
        assert_eq!(
            rule_path(&["a".into(), "1.0".into()], "R"),
            "data.a[\"1.0\"].R"
        );
    }

    #[test]
    fn parse_errors_are_one_line() {
        let e = RegoPolicy::compile("package p\nimport rego.v1\nR if {", 65536, T).unwrap_err();
        assert!(!e.contains('\n'), "{e}");
        assert!(e.starts_with("line "), "{e}");
        let e = RegoPolicy::compile("package p\nR { x }", 65536, T).unwrap_err();
        assert!(e.contains("`x`"), "{e}");
    }

    #[test]
    fn nesting_is_bounded_before_parsing() {
        let deep = format!("package p\nx := {}1{}\n", "[".repeat(30), "]".repeat(30));
        let t = Instant::now();
        let e = RegoPolicy::compile(&deep, 65536, T).unwrap_err();
        assert!(e.contains("nested deeper"), "{e}");
        assert!(t.elapsed() < Duration::from_millis(50));
        // Brackets in strings and comments do not count.
        let ok = "package p\nimport rego.v1\n# [[[[[[[[[[\nR if { \"[[[[[[[[[[[\" != `{{{{{{{{{{{{{` }\n";
        assert_eq!(eval(ok, json!({})).perms, Perms::R);
    }

    #[test]
    fn input_use_is_judged_conservatively() {
        let u = |t: &str| input_use(t);
        assert!(u("R if input.claims.values.email[_] == \"a\"").claims_only);
        assert!(u("R if input.action == \"R\"").claims_only);
        assert!(u("R if input.action == \"R\"").reads_action);
        assert!(!u("R if input.claims.label == \"R\"").reads_action);
        assert!(u("R if true").claims_only);
        for t in [
            "R if input.object.name == \"a\"",
            "R if input[\"claims\"]",
            "R if { x := input; x.claims }",
            "R if input.claimsx",
            "import input.object as o",
            "R if input.claims with input as {}",
        ] {
            let r = u(t);
            assert!(!r.claims_only && r.reads_object && r.reads_action, "{t}");
        }
        assert!(!u("R if time.now_ns() > 0").claims_only);
        assert!(!u("R if input.claims; x := rand.intn(\"a\", 3)").claims_only);
        // Other identifiers that contain "input" are not `input`.
        assert!(u("myinput := 1\ninput_x := 2\nR if input.claims").claims_only);
    }

    #[test]
    fn timeouts_deny_promptly() {
        let text = "package p\nimport rego.v1\nR if count([x | some x in numbers.range(1, 100000); some y in numbers.range(1, 100000); x == y]) > 0\nX if true\n";
        let t = Instant::now();
        let o = eval(text, json!({}));
        assert!(
            t.elapsed() < Duration::from_millis(600),
            "{:?}",
            t.elapsed()
        );
        assert_eq!(o.perms, Perms::NONE);
        assert!(o.failed);
    }

    /// Shapes that make regorus recurse one level per few bytes, filled up to ~60 KiB. A
    /// wrong stack estimate aborts the test process.
    fn deep_shapes() -> Vec<(&'static str, String)> {
        let fill = |head: &str, item: &dyn Fn(usize) -> String, tail: &dyn Fn(usize) -> String| {
            let mut s = head.to_string();
            let mut i = 1;
            while s.len() < 60_000 {
                s.push_str(&item(i));
                i += 1;
            }
            s.push_str(&tail(i - 1));
            s
        };
        vec![
            (
                "operator chain",
                fill("package p\nx := 1", &|_| "+1".into(), &|_| {
                    "\nR if x > 1\n".into()
                }),
            ),
            (
                "comparison chain",
                fill("package p\nx := 1", &|_| "==1".into(), &|_| {
                    "\nR if x\n".into()
                }),
            ),
            (
                "set-union chain",
                fill("package p\nx := {1}", &|_| "|{1}".into(), &|_| {
                    "\nR if count(x) > 0\n".into()
                }),
            ),
            (
                "rule chain",
                fill(
                    "package p\nr0 := 0\n",
                    &|i| format!("r{i} := r{}\n", i - 1),
                    &|n| format!("R if r{n} == 0\n"),
                ),
            ),
            ("backward rule chain", {
                let n = 3500;
                let mut s = format!("package p\nR if r{n} == 0\n");
                for i in (1..=n).rev() {
                    s.push_str(&format!("r{i} := r{}+1\n", i - 1));
                }
                s.push_str("r0 := 0\n");
                s
            }),
            (
                "function chain",
                fill(
                    "package p\nf0(x) := x\n",
                    &|i| format!("f{i}(x) := f{}(x)\n", i - 1),
                    &|n| format!("R if f{n}(1) == 1\n"),
                ),
            ),
        ]
    }

    #[test]
    fn deep_structures_do_not_overflow_the_stack() {
        // Run where a tokio worker would: a 2 MiB stack.
        std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(|| {
                for (name, text) in deep_shapes() {
                    assert!(text.len() <= 65536, "{name}");
                    let t = Instant::now();
                    let compiled = RegoPolicy::compile(&text, 65536, T);
                    let took = t.elapsed();
                    let Ok(p) = compiled else {
                        println!("{name}: {} bytes, refused in {took:?}", text.len());
                        continue;
                    };
                    let t = Instant::now();
                    let o = p.evaluate(to_value(&json!({})), T);
                    println!(
                        "{name}: {} bytes, compiled in {took:?}, stack {} KiB, {o:?} in {:?}",
                        text.len(),
                        p.eval_stack >> 10,
                        t.elapsed()
                    );
                    assert!(!o.perms.contains(Perms::C), "{name}");
                }
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn small_policies_run_on_the_calling_thread() {
        if cfg!(debug_assertions) {
            // Unoptimised frames are several times bigger: only release builds promise this.
            return;
        }
        let seed = r#"package policy inOrg{input.claims.values.email[_]=="localuser@email.com"}C{inOrg}R{inOrg}U{inOrg}D{inOrg}X{inOrg}P{inOrg}"#;
        let p = RegoPolicy::compile(seed, 65536, T).unwrap();
        assert!(p.eval_stack <= INLINE_STACK, "{}", p.eval_stack);
    }

    #[test]
    fn print_does_not_reach_stderr_and_still_grants() {
        let o = eval(
            "package p\nimport rego.v1\nR if { print(\"hello\"); true }\n",
            json!({}),
        );
        assert_eq!(o.perms, Perms::R);
    }
}
