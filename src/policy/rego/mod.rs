//! Rego policies through regorus: compiling a module into a program for regorus's VM, what a
//! module reads, and bounded evaluation.
//!
//! Compiling, in order, each step bounded before the next can misbehave:
//! 1. [`scan::check`] counts the text's nesting, unary chains, expression depth and parse
//!    work on its tokens, so that regorus's recursive parser and the passes after it recurse a
//!    bounded number of levels and take bounded time;
//! 2. regorus parses it (Rego v1, else v0);
//! 3. [`deps::check`] refuses recursion and over-deep chains of rules;
//! 4. regorus compiles it, with one added rule that gathers the letters the module grants,
//!    into a program for its VM, and [`guard::install`] swaps in the guarded builtins.
//!
//! Evaluating runs the program in the VM's suspendable mode, which keeps its frames on the
//! heap (no native recursion, however the rules call each other), with three budgets the VM
//! checks before every instruction: a wall-clock limit, a count of instructions, and the bytes
//! the evaluation allocates (regorus's allocator charges every allocation made on the
//! evaluating thread to it). Each check is made between instructions; the guards bound what
//! one instruction can do. Measured on the 2-core development machine (`costs`, ignored test):
//! a doubling `array.concat` stops at the 64 MiB budget after ~35 ms; squaring a number
//! repeatedly stops at the budget after ~140 ms.
//!
//! One pass evaluates every letter (helper rules shared by the letters run once). When the
//! pass fails for a reason other than a budget (a rule with conflicting values, say), each
//! letter is evaluated on its own with what is left of the time, so that one bad rule does
//! not take the others down with it.

pub mod deps;
pub mod guard;
pub mod scan;

use std::collections::BTreeMap;
use std::num::{NonZeroU32, NonZeroU64, NonZeroUsize};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use regorus::languages::rego::compiler::Compiler;
use regorus::rvm::program::Program;
use regorus::rvm::vm::{ExecutionMode, RegoVM, VmError};
use regorus::unstable::{Module, Ref, Rule, RuleHead};
use regorus::utils::limits::{ExecutionTimerConfig, PolicyLengthConfig};
use regorus::{Engine, MemoryBudgetConfig, Value};

use crate::model::Perms;

/// Source name the module is loaded under; it appears in regorus's messages.
const SOURCE: &str = "policy.rego";
/// The rule added to the module's package that gathers the granted letters into a set.
const LETTERS_RULE: &str = "__vellum_letters";

/// Letters and their rule names, in the order they are printed.
const LETTERS: [(char, Perms); 6] = [
    ('C', Perms::C),
    ('R', Perms::R),
    ('U', Perms::U),
    ('D', Perms::D),
    ('X', Perms::X),
    ('P', Perms::P),
];

/// What one evaluation may spend.
#[derive(Debug, Clone, Copy)]
pub struct EvalLimits {
    /// Wall-clock time (checked before every instruction).
    pub timeout: Duration,
    /// Instructions executed.
    pub instructions: usize,
    /// Bytes allocated, counted as requested (frees do not give any back).
    pub memory: u64,
}

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
    /// No clock, random or environment builtin: the same input gives the same result.
    pub deterministic: bool,
}

/// A compiled Rego module.
#[derive(Debug)]
pub struct RegoPolicy {
    program: Arc<Program>,
    /// Entry point of the gathered letters.
    letters_entry: String,
    /// Letters that have a rule, with the rule's entry point (for the one-by-one fallback).
    declared: Vec<(Perms, String)>,
    /// The entry point of the module's `share` rule, if it has one (SPEC §9.2: a share is
    /// made only where it is literally `true`).
    share_entry: Option<String>,
    pub input_use: InputUse,
    /// Bytes the compiled program is estimated to hold (for the cache's memory bound).
    pub weight: u64,
}

/// Bytes a compiled program holds per byte of its text, and at least: measured on regorus
/// 0.14.1's VM programs (a one-line policy ~9 KiB, a 64 KiB policy of many rules ~870 KiB,
/// 13.6 bytes per text byte), rounded up.
const WEIGHT_PER_BYTE: u64 = 16;
const WEIGHT_MIN: u64 = 8 << 10;

/// Why an evaluation did not complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// A budget ran out (time, instructions, memory, or a guarded builtin's bound): a
    /// property of the policy and its input, except that time also depends on the load.
    Budget,
    /// Something else: a rule error, a panic inside regorus.
    Error,
}

/// The outcome of one evaluation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outcome {
    pub perms: Perms,
    /// Set when something went wrong: the result is still a safe default-deny but must not
    /// be cached as the policy's answer.
    pub failed: Option<Failure>,
}

impl Outcome {
    fn denied(f: Failure) -> Outcome {
        Outcome {
            perms: Perms::NONE,
            failed: Some(f),
        }
    }
}

/// Makes a one-line message out of a regorus error ("--> policy.rego:3:7 ... error: msg").
pub fn compact_error(e: &dyn std::fmt::Display) -> String {
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
    let deterministic = !NONDETERMINISTIC.iter().any(|p| text.contains(p));
    InputUse {
        claims_only: !other && deterministic,
        reads_object: other,
        reads_action: action || other,
        deterministic,
    }
}

/// A rule path for an entry point: dotted identifiers, bracketed strings otherwise.
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

/// The future keywords (`if`, `in`, `every`, `contains`) a text uses as keywords, and which of
/// them it imports, read from regorus's own tokens: a word in a string or a comment, or a field
/// name after a `.`, is not a keyword, nor is `contains(` (the builtin).
#[derive(Debug, Default, PartialEq)]
struct Keywords {
    used: Vec<&'static str>,
    /// Used before an import of it: regorus's v0 parser warns at each such use, and an import
    /// further down (where it is an error anyway) comes too late to stop it.
    unimported: Vec<&'static str>,
    /// `import future.keywords` or `import rego.v1`.
    all_imported: bool,
    imported: Vec<String>,
    rego_v1: bool,
}

fn keywords(text: &str, max_bytes: usize) -> Keywords {
    use regorus::unstable::{Lexer, Source, TokenKind};
    const FUTURE: [&str; 4] = ["if", "in", "every", "contains"];
    let mut k = Keywords::default();
    let cap = max_bytes.max(1024).saturating_add(1);
    let Ok(source) = Source::from_contents_with_limits(
        SOURCE.into(),
        text.into(),
        NonZeroUsize::new(cap).unwrap_or(NonZeroUsize::MIN),
        NonZeroUsize::new(cap).unwrap_or(NonZeroUsize::MIN),
    ) else {
        return k;
    };
    let mut lexer = Lexer::new(&source);
    lexer.set_max_col(
        NonZeroU32::new(u32::try_from(cap).unwrap_or(u32::MAX)).unwrap_or(NonZeroU32::MIN),
    );
    // (is an identifier, text); the lexer stops where the parser would.
    let mut toks: Vec<(bool, String)> = Vec::new();
    while let Ok(t) = lexer.next_token() {
        match t.0 {
            TokenKind::Eof => break,
            kind => toks.push((kind == TokenKind::Ident, t.1.text().to_string())),
        }
    }
    let at = |i: usize| toks.get(i).map_or("", |t| t.1.as_str());
    for (i, (ident, word)) in toks.iter().enumerate() {
        let (ident, word) = (*ident, word.as_str());
        if !ident {
            continue;
        }
        if word == "import" {
            if at(i + 1) == "future" && at(i + 2) == "." && at(i + 3) == "keywords" {
                if at(i + 4) == "." {
                    k.imported.push(at(i + 5).to_string());
                } else {
                    k.all_imported = true;
                }
            } else if at(i + 1) == "rego" && at(i + 2) == "." && at(i + 3) == "v1" {
                k.all_imported = true;
                k.rego_v1 = true;
            }
            continue;
        }
        let after_dot = i > 0 && at(i - 1) == ".";
        if let Some(kw) = FUTURE.iter().find(|kw| **kw == word) {
            let call = *kw == "contains" && at(i + 1) == "(";
            if !after_dot && !call {
                if !k.used.contains(kw) {
                    k.used.push(kw);
                }
                let covered = k.all_imported || k.imported.iter().any(|i| i == kw);
                if !covered && !k.unimported.contains(kw) {
                    k.unimported.push(kw);
                }
            }
        }
    }
    k
}

impl Keywords {
    /// Picks which parser's complaint to show when neither accepts the text: the v1 one if the
    /// text uses v1 keywords, else the v0 one.
    fn looks_v1(&self) -> bool {
        self.rego_v1 || self.used.contains(&"if") || self.used.contains(&"contains")
    }

    /// Whether a text that v1 refused is worth trying as v0: not when it uses a future keyword
    /// it does not import. v0 would refuse it too (or read the keyword as a name), and regorus's
    /// v0 parser prints a warning to stderr for each such keyword it meets: a module of 3,000
    /// `r if {...}` rules printed 3,400 warnings (530 KB) to the server's log per write. Read
    /// on tokens, so that "if" in a comment or a string neither hides the warnings (`#
    /// future.keywords`) nor keeps a v0 module from being read as v0, and in order, so that an
    /// import below the uses (a parse error, reached after the warnings) does not count.
    fn try_v0(&self) -> bool {
        self.unimported.is_empty()
    }
}

fn new_engine(text: &str, v0: bool, max_bytes: usize) -> anyhow::Result<Engine> {
    let mut e = Engine::new();
    e.set_rego_v0(v0);
    // One-line modules (as gm-data clients send them) are common: allow a line as long as
    // the whole text. The byte limit itself is checked before we get here.
    let cap = max_bytes.max(1024);
    e.set_policy_length_config(PolicyLengthConfig {
        max_col: NonZeroU32::new(u32::try_from(cap).unwrap_or(u32::MAX)).unwrap_or(NonZeroU32::MIN),
        max_file_bytes: NonZeroUsize::new(cap.saturating_add(1)).unwrap_or(NonZeroUsize::MIN),
        max_lines: NonZeroUsize::new(cap).unwrap_or(NonZeroUsize::MIN),
    });
    e.add_policy(SOURCE.into(), text.into())?;
    Ok(e)
}

/// Refuses a rule that is only a head (`R`, `f(x)`), with neither a body nor a value, as Rego
/// v1 does. regorus's v0 parser accepts one, and its VM then answers the whole module wrongly:
/// with `D = true` and a bare `R`, every letter came back undefined, without an error, so the
/// denial was cached as the policy's answer.
fn refuse_bare_rules(modules: &[Ref<Module>]) -> Result<(), String> {
    for m in modules {
        for rule in &m.policy {
            if let Rule::Spec { span, head, bodies } = rule.as_ref() {
                let value = match head {
                    RuleHead::Compr { assign, .. } | RuleHead::Func { assign, .. } => {
                        assign.is_some()
                    }
                    RuleHead::Set { key, .. } => key.is_some(),
                };
                if bodies.is_empty() && !value {
                    return Err(format!(
                        "line {}, column {}: rule must have a body or assignment",
                        span.line, span.col
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Says what the VM's compiler refused in words for a policy author.
fn explain_compile_error(e: &dyn std::fmt::Display) -> String {
    let text = compact_error(e);
    if text.contains("Missing builtin function: print") {
        return "print is not available in stored policies (its output would go nowhere)".into();
    }
    if text.contains("`with` keyword is not supported") {
        return format!("{text}: `with` is not available in stored policies");
    }
    text
}

/// The stack a compile gets: the structural limits of [`scan`] and [`deps`] bound how deep
/// regorus's passes recurse; this leaves a wide margin over the deepest measured (the
/// `deep_structures_compile_within_the_compile_stack` test runs the worst shapes on it).
pub const COMPILE_STACK: usize = 16 << 20;

impl RegoPolicy {
    /// Checks, parses (as Rego v1, then v0) and compiles a module. The error is a one-line
    /// message for the API user. Runs on a helper thread with [`COMPILE_STACK`].
    pub fn compile(text: &str, max_bytes: usize) -> Result<RegoPolicy, String> {
        scan::check(text, max_bytes)?;
        let run = || catch_unwind(AssertUnwindSafe(|| Self::compile_inner(text, max_bytes)));
        let compiled = std::thread::scope(|s| {
            std::thread::Builder::new()
                .name("vellum-policy-compile".into())
                .stack_size(COMPILE_STACK)
                .spawn_scoped(s, run)
                .ok()
                .map(|h| h.join())
        });
        match compiled {
            Some(Ok(Ok(result))) => result,
            Some(_) => Err("internal error in the Rego compiler".into()),
            None => Err("no thread to compile the policy on; try again".into()),
        }
    }

    fn compile_inner(text: &str, max_bytes: usize) -> Result<RegoPolicy, String> {
        if text.contains(LETTERS_RULE) {
            return Err(format!("the name {LETTERS_RULE} is reserved"));
        }
        let mut engine = match new_engine(text, false, max_bytes) {
            Ok(e) => e,
            Err(v1_err) => {
                let k = keywords(text, max_bytes);
                if !k.try_v0() {
                    return Err(compact_error(&v1_err));
                }
                match new_engine(text, true, max_bytes) {
                    Ok(e) => e,
                    Err(v0_err) => {
                        let e = if k.looks_v1() { v1_err } else { v0_err };
                        return Err(compact_error(&e));
                    }
                }
            }
        };
        let package = engine
            .get_policy_package_components()
            .map_err(|e| compact_error(&e))?
            .into_iter()
            .next()
            .map(|p| p.components)
            .ok_or_else(|| "no package".to_string())?;
        let declared: Vec<(Perms, String)> = LETTERS
            .iter()
            .filter(|(l, _)| {
                engine
                    .has_declared_rule_rooted_at(SOURCE, &l.to_string())
                    .unwrap_or(false)
            })
            .map(|&(l, p)| (p, rule_path(&package, &l.to_string())))
            .collect();
        let share_entry = engine
            .has_declared_rule_rooted_at(SOURCE, SHARE_RULE)
            .unwrap_or(false)
            .then(|| rule_path(&package, SHARE_RULE));
        refuse_bare_rules(engine.get_modules())?;
        deps::check(engine.get_modules())?;

        // The gathering rule, in the module's own package (v1 syntax whatever the module's).
        let (last, init) = package
            .split_last()
            .ok_or_else(|| "no package".to_string())?;
        let package_decl = rule_path(init, last);
        let mut gather = format!(
            "package {}\nimport rego.v1\n{LETTERS_RULE} contains \"-\" if false\n",
            package_decl.strip_prefix("data.").unwrap_or(&package_decl)
        );
        // By full path: regorus does not resolve another module's rules by their bare names.
        for (p, entry) in &declared {
            let l = p.to_string();
            gather.push_str(&format!(
                "{LETTERS_RULE} contains \"{l}\" if {entry} == true\n"
            ));
        }
        engine.set_rego_v0(false);
        engine
            .add_policy("vellum_letters.rego".into(), gather)
            .map_err(|e| compact_error(&e))?;
        let letters_entry = rule_path(&package, LETTERS_RULE);
        let compiled = engine
            .compile_with_entrypoint(&letters_entry.as_str().into())
            .map_err(|e| explain_compile_error(&e))?;
        let mut entries: Vec<&str> = vec![letters_entry.as_str()];
        entries.extend(declared.iter().map(|(_, p)| p.as_str()));
        entries.extend(share_entry.as_deref());
        let program = Compiler::compile_from_policy(&compiled, &entries)
            .map_err(|e| explain_compile_error(&e))?;
        let mut program = Arc::unwrap_or_clone(program);
        guard::install(&mut program)?;
        Ok(RegoPolicy {
            program: Arc::new(program),
            letters_entry,
            declared,
            share_entry,
            input_use: input_use(text),
            weight: (text.len() as u64)
                .saturating_mul(WEIGHT_PER_BYTE)
                .max(WEIGHT_MIN),
        })
    }

    fn vm(&self, input: Value, limits: &EvalLimits, timeout: Duration) -> RegoVM {
        let mut vm = RegoVM::new();
        vm.load_program(self.program.clone());
        vm.set_execution_mode(ExecutionMode::Suspendable);
        vm.set_max_instructions(limits.instructions);
        vm.set_execution_timer_config(Some(ExecutionTimerConfig {
            limit: timeout,
            // Look at the clock before every instruction: a vDSO read (~20 ns) against
            // instructions that may each do a lot (a big multiplication).
            check_interval: NonZeroU32::MIN,
        }));
        vm.set_memory_budget_config(Some(MemoryBudgetConfig {
            limit: NonZeroU64::new(limits.memory).unwrap_or(NonZeroU64::MIN),
        }));
        vm.set_input(input);
        vm
    }

    /// Evaluates the module for one input within `limits`. Never fails: anything other
    /// than a rule that is literally `true` grants nothing.
    pub fn evaluate(&self, input: Value, limits: &EvalLimits) -> Outcome {
        let start = Instant::now();
        let mut vm = self.vm(input.clone(), limits, limits.timeout);
        let pass = catch_unwind(AssertUnwindSafe(|| {
            vm.execute_entry_point_by_name(&self.letters_entry)
        }));
        match pass {
            Ok(Ok(Value::Set(letters))) => {
                let perms = LETTERS.iter().fold(Perms::NONE, |acc, &(l, p)| {
                    if letters.contains(&Value::from(l.to_string())) {
                        acc | p
                    } else {
                        acc
                    }
                });
                Outcome {
                    perms,
                    failed: None,
                }
            }
            // The gathering rule always has at least its dummy element's definition, so a
            // missing set is not an answer.
            Ok(Ok(_)) => Outcome::denied(Failure::Error),
            Ok(Err(e)) if is_budget(&e) => Outcome::denied(Failure::Budget),
            Ok(Err(_)) => {
                // Some rule errors: judge each letter on its own with the time left.
                let mut perms = Perms::NONE;
                for (p, entry) in &self.declared {
                    let left = limits.timeout.saturating_sub(start.elapsed());
                    if left.is_zero() {
                        return Outcome::denied(Failure::Budget);
                    }
                    let mut vm = self.vm(input.clone(), limits, left);
                    let r =
                        catch_unwind(AssertUnwindSafe(|| vm.execute_entry_point_by_name(entry)));
                    match r {
                        Ok(Ok(Value::Bool(true))) => perms |= *p,
                        Ok(Err(e)) if is_budget(&e) => return Outcome::denied(Failure::Budget),
                        Ok(_) => {}
                        Err(_) => return Outcome::denied(Failure::Error),
                    }
                }
                Outcome {
                    perms,
                    failed: Some(Failure::Error),
                }
            }
            Err(_) => Outcome::denied(Failure::Error),
        }
    }
}

impl RegoPolicy {
    /// The module's `share` rule for `input` (`{"claims", "share", "object"}`): `None` when
    /// the module has none, else whether it is literally `true` (an error, a budget hit or
    /// any other value is a veto).
    pub fn allows_share(&self, input: Value, limits: &EvalLimits) -> Option<bool> {
        let entry = self.share_entry.as_ref()?;
        let mut vm = self.vm(input, limits, limits.timeout);
        let r = catch_unwind(AssertUnwindSafe(|| vm.execute_entry_point_by_name(entry)));
        Some(matches!(r, Ok(Ok(Value::Bool(true)))))
    }
}

/// The rule a module may define to limit how its object is shared.
pub const SHARE_RULE: &str = "share";

fn is_budget(e: &VmError) -> bool {
    matches!(
        e,
        VmError::InstructionLimitExceeded { .. }
            | VmError::TimeLimitExceeded { .. }
            | VmError::MemoryLimitExceeded { .. }
            | VmError::MemoryBudgetExceeded { .. }
            | VmError::RegexSizeLimitExceeded { .. }
    )
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
mod tests;
