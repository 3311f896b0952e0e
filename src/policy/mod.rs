//! Policies (SPEC §4): the gm-data policy language ("Lisp", as JSON `requirements` or as
//! text) and Rego, validated at write time by [`PolicyEngine::prepare`] and evaluated,
//! default-deny, by [`PolicyEngine::evaluate`].
//!
//! Caching. Compiled policies are cached by a SHA-256 of the policy's canonical form (the
//! Rego text, or the requirements serialised with sorted keys; the label does not take
//! part, so policies that differ only in label share an entry). Results are cached by
//! (policy, claims, action) only when they cannot depend on anything else: always for Lisp
//! (it reads nothing but the claims; the action is left out of the key), and for Rego only
//! when the text shows it reads nothing but `input.claims`/`input.action` and calls no
//! clock, random or environment builtin (see [`rego::input_use`]); the action is part of
//! the key only if the text names `input.action`. A policy that may read `input.object`
//! is evaluated every time. A result produced while something failed (a rule error, the
//! time limit) is never cached: under load a timeout is not a property of the policy.
//!
//! Cost (release build, 2-core machine, the seed's one-line module): compiling ~130 us;
//! evaluating a cached compiled module for a new caller ~20-30 us; a cached result
//! ~0.7-1 us. Evaluation is CPU-bound and may take up to `eval_timeout`: call it from a
//! blocking-capable thread, not directly on an async executor for long listings.

pub mod guard;
pub mod lisp;
pub mod rego;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::model::Claims;
pub use crate::model::Perms;

/// Why a policy was refused at write time. Messages are meant for the API user.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PolicyError {
    #[error("objectpolicy must be a JSON object, got {0}")]
    NotAnObject(&'static str),
    #[error("objectpolicy has both requirements and rego")]
    BothForms,
    #[error(
        "objectpolicy has both {0:?} and {1:?}; field names are matched without regard to case"
    )]
    AmbiguousKey(String, String),
    #[error("{field} must be {expected}")]
    WrongType {
        field: &'static str,
        expected: &'static str,
    },
    #[error("{what} is {size} bytes; the limit is {limit}")]
    TooLarge {
        what: &'static str,
        size: usize,
        limit: usize,
    },
    /// The gm-data policy language, JSON or text form: `"objectpolicy.requirements: unknown
    /// function \"yeild\" at a[0]"`.
    #[error("{field}: {error}")]
    Lisp {
        field: &'static str,
        error: lisp::LispError,
    },
    #[error("{field} does not parse: {message}")]
    Rego {
        field: &'static str,
        message: String,
    },
}

/// Bounds on what a user-written policy may cost.
///
/// Memory. regorus can only cap memory with its `allocator-memory-limits` feature, which
/// replaces the global allocator of the whole process, so it is not used. Memory is bounded
/// by time instead: regorus checks the deadline at every statement and loop step, so an
/// evaluation can allocate about (allocation rate x `eval_timeout`) plus what the step
/// running at the deadline allocates. That last step is kept small by the size limits:
/// `max_policy_bytes` bounds literals and the number of expressions, [`guard`] bounds the
/// few builtins whose one call can produce far more than their arguments hold, and
/// [`rego::MAX_REGO_NESTING`] bounds parse time, which doubles with each level of nesting.
/// Measured on the 2-core development machine with the default 100 ms (ignored test
/// `policy::tests::pathological_memory`, run in release): doubling an array with
/// `array.concat` at every statement peaked at +122 MB RSS and came back with no
/// permissions after 0.14-0.18 s; a comprehension keeping 1 MiB strings +101 MB; a
/// 10^10-step comprehension over `numbers.range` +21 MB; doubling a string with `concat`
/// stops at the 1 MiB guard (+6 MB). The bound grows linearly with the timeout and with the
/// number of evaluations running at once (at most one per thread calling `evaluate`).
#[derive(Debug, Clone)]
pub struct PolicyLimits {
    /// Text of `rego` / `originalobjectpolicy` / serialised `requirements`.
    pub max_policy_bytes: usize,
    pub max_lisp_nodes: usize,
    pub max_lisp_depth: usize,
    /// Wall-clock budget of one evaluation (all six letters together).
    pub eval_timeout: std::time::Duration,
    pub compiled_cache_entries: usize,
    pub result_cache_entries: usize,
}

impl Default for PolicyLimits {
    fn default() -> Self {
        Self {
            max_policy_bytes: 65_536,
            max_lisp_nodes: 4_096,
            max_lisp_depth: 64,
            eval_timeout: std::time::Duration::from_millis(100),
            compiled_cache_entries: 100_000,
            result_cache_entries: 1_000_000,
        }
    }
}

/// The normalised policy fields to store on an event.
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedPolicy {
    /// Always an object with `"requirements"` or `"rego"` (plus `"label"` if given), keys
    /// lower-case, requirements in canonical form (`{"f","a"}` / `{"v"}`, `"a"` always present).
    pub objectpolicy: Value,
    /// Kept as given; `None` when absent or blank.
    pub originalobjectpolicy: Option<String>,
}

/// What a policy is evaluated against.
pub struct EvalInput<'a> {
    pub claims: &'a Claims,
    /// The operation being authorised or displayed: 'C','R','U','D','X','P'. Rego sees it as
    /// `input.action` (a one-letter string).
    pub action: char,
    /// The event being read or written (without key material). Only called when a Rego
    /// policy may read `input.object`.
    pub object: &'a dyn Fn() -> Value,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct PolicyStats {
    pub evaluations: u64,
    pub result_cache_hits: u64,
    /// Compiled-cache misses that compiled a policy.
    pub compiled: u64,
    /// Evaluations that met an error: an invalid stored policy, an erroring rule, a type
    /// error, the time limit.
    pub errors: u64,
}

/// A compiled policy, shared by every evaluation of it.
#[derive(Debug)]
enum Compiled {
    Lisp(lisp::Node),
    Rego(Box<rego::RegoPolicy>),
    /// A stored policy that does not compile (written by an older version, or by hand):
    /// cached too, so that a listing does not recompile it for every child.
    Invalid,
}

type PolicyDigest = [u8; 32];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct ResultKey {
    policy: PolicyDigest,
    claims: [u8; 16],
    /// 0 when the policy cannot see the action (Lisp, and Rego that never names `input.action`).
    action: u8,
}

#[derive(Default)]
struct Counters {
    evaluations: AtomicU64,
    result_cache_hits: AtomicU64,
    compiled: AtomicU64,
    errors: AtomicU64,
}

/// Validates, compiles, caches and evaluates policies. `Send + Sync`: share one per process.
pub struct PolicyEngine {
    limits: PolicyLimits,
    compiled: quick_cache::sync::Cache<PolicyDigest, Arc<Compiled>>,
    results: quick_cache::sync::Cache<ResultKey, Perms>,
    /// Claims converted to regorus values, by `Claims::key()`: a listing evaluates many
    /// policies for the same caller.
    claims_values: quick_cache::sync::Cache<[u8; 16], regorus::Value>,
    counters: Counters,
}

impl std::fmt::Debug for PolicyEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyEngine")
            .field("limits", &self.limits)
            .field("stats", &self.stats())
            .finish()
    }
}

/// One of the two forms, found in an `objectpolicy` object.
enum Form<'a> {
    Requirements(&'a Value),
    Rego(&'a str),
}

struct Fields<'a> {
    form: Option<Form<'a>>,
    label: Option<&'a Value>,
}

use lisp::kind;

fn get_ci<'a>(m: &'a Map<String, Value>, key: &str) -> Result<Option<&'a Value>, PolicyError> {
    lisp::get_ci(m, key).map_err(|(a, b)| PolicyError::AmbiguousKey(a, b))
}

/// Reads the fields of an `objectpolicy` object. Empty forms (`null`, `""`, `{}`, `[]`)
/// count as absent, as SPEC §5 asks.
fn fields(m: &Map<String, Value>) -> Result<Fields<'_>, PolicyError> {
    let requirements = match get_ci(m, "requirements")? {
        None | Some(Value::Null) => None,
        Some(Value::Object(o)) if o.is_empty() => None,
        Some(Value::Array(a)) if a.is_empty() => None,
        Some(v) => Some(v),
    };
    let rego = match get_ci(m, "rego")? {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.trim().is_empty() => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(_) => {
            return Err(PolicyError::WrongType {
                field: "objectpolicy.rego",
                expected: "a string",
            })
        }
    };
    let label = match get_ci(m, "label")? {
        None | Some(Value::Null) => None,
        Some(v @ Value::String(_)) => Some(v),
        Some(_) => {
            return Err(PolicyError::WrongType {
                field: "objectpolicy.label",
                expected: "a string",
            })
        }
    };
    let form = match (requirements, rego) {
        (Some(_), Some(_)) => return Err(PolicyError::BothForms),
        (Some(r), None) => Some(Form::Requirements(r)),
        (None, Some(t)) => Some(Form::Rego(t)),
        (None, None) => None,
    };
    Ok(Fields { form, label })
}

/// JSON with object keys sorted, so that equal policies hash equally whatever their key order.
fn canonical(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push(b'{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                // Serialising a string or a map's values cannot fail.
                let _ = serde_json::to_writer(&mut *out, k);
                out.push(b':');
                canonical(&m[k], out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, x) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical(x, out);
            }
            out.push(b']');
        }
        other => {
            let _ = serde_json::to_writer(&mut *out, other);
        }
    }
}

fn digest(form: &Form) -> PolicyDigest {
    let mut h = Sha256::new();
    match form {
        Form::Requirements(r) => {
            let mut buf = Vec::with_capacity(256);
            canonical(r, &mut buf);
            h.update(b"requirements\0");
            h.update(&buf);
        }
        Form::Rego(text) => {
            h.update(b"rego\0");
            h.update(text.as_bytes());
        }
    }
    h.finalize().into()
}

impl PolicyEngine {
    pub fn new(limits: PolicyLimits) -> Self {
        let compiled = quick_cache::sync::Cache::new(limits.compiled_cache_entries.max(1));
        let results = quick_cache::sync::Cache::new(limits.result_cache_entries.max(1));
        Self {
            limits,
            compiled,
            results,
            claims_values: quick_cache::sync::Cache::new(4096),
            counters: Counters::default(),
        }
    }

    pub fn limits(&self) -> &PolicyLimits {
        &self.limits
    }

    pub fn stats(&self) -> PolicyStats {
        let c = &self.counters;
        PolicyStats {
            evaluations: c.evaluations.load(Ordering::Relaxed),
            result_cache_hits: c.result_cache_hits.load(Ordering::Relaxed),
            compiled: c.compiled.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
        }
    }

    fn budget(&self) -> lisp::Budget {
        lisp::Budget {
            max_nodes: self.limits.max_lisp_nodes,
            max_depth: self.limits.max_lisp_depth,
        }
    }

    fn check_size(&self, what: &'static str, size: usize) -> Result<(), PolicyError> {
        let limit = self.limits.max_policy_bytes;
        if size > limit {
            return Err(PolicyError::TooLarge { what, size, limit });
        }
        Ok(())
    }

    /// Checks a requirements tree and returns its canonical JSON.
    fn prepare_requirements(&self, r: &Value, field: &'static str) -> Result<Value, PolicyError> {
        let node = lisp::from_json(r, self.budget())
            .map_err(|error| PolicyError::Lisp { field, error })?;
        self.store_requirements(node, field)
    }

    fn store_requirements(
        &self,
        node: lisp::Node,
        field: &'static str,
    ) -> Result<Value, PolicyError> {
        let json = node.to_json();
        let size = serde_json::to_vec(&json).map_or(usize::MAX, |v| v.len());
        self.check_size(field, size)?;
        // Warm the compiled cache: the write path usually evaluates the policy next.
        self.compiled.insert(
            digest(&Form::Requirements(&json)),
            Arc::new(Compiled::Lisp(node)),
        );
        Ok(json)
    }

    fn prepare_rego(&self, text: &str, field: &'static str) -> Result<(), PolicyError> {
        self.check_size(field, text.len())?;
        let compiled =
            rego::RegoPolicy::compile(text, self.limits.max_policy_bytes, self.limits.eval_timeout)
                .map_err(|message| PolicyError::Rego { field, message })?;
        self.compiled.insert(
            digest(&Form::Rego(text)),
            Arc::new(Compiled::Rego(Box::new(compiled))),
        );
        Ok(())
    }

    /// Validates `originalobjectpolicy` text and returns the form it compiles to.
    fn compile_original(&self, text: &str) -> Result<(&'static str, Value), PolicyError> {
        const FIELD: &str = "originalobjectpolicy";
        self.check_size(FIELD, text.len())?;
        if lisp::looks_like_lisp(text) {
            let node =
                lisp::parse_text(text, self.budget()).map_err(|error| PolicyError::Lisp {
                    field: FIELD,
                    error,
                })?;
            Ok(("requirements", self.store_requirements(node, FIELD)?))
        } else {
            self.prepare_rego(text, FIELD)?;
            Ok(("rego", Value::String(text.to_string())))
        }
    }

    /// Validates and normalises an incoming event's policy fields.
    ///
    /// `objectpolicy` keys may come in any case ("Requirements", "Rego", "Label", and "F",
    /// "A", "V" inside requirements, as gm-data's Go decoder accepted); they are stored
    /// lower-case. `Ok(None)` when no policy is given: `objectpolicy` absent or null or with
    /// neither (non-empty) requirements nor (non-empty) rego, and `originalobjectpolicy`
    /// absent or blank. When `objectpolicy` has a form it wins and `originalobjectpolicy` is
    /// kept as given (but must still compile). When only `originalobjectpolicy` is given it
    /// is compiled: Lisp text (first non-space character `(`) into `requirements`, anything
    /// else into `rego` (the text itself). A label given without a form is kept.
    pub fn prepare(
        &self,
        objectpolicy: Option<&Value>,
        originalobjectpolicy: Option<&str>,
    ) -> Result<Option<PreparedPolicy>, PolicyError> {
        let original = originalobjectpolicy.filter(|t| !t.trim().is_empty());
        let fields = match objectpolicy {
            None | Some(Value::Null) => Fields {
                form: None,
                label: None,
            },
            Some(Value::Object(m)) => fields(m)?,
            Some(other) => return Err(PolicyError::NotAnObject(kind(other))),
        };
        let mut out = Map::new();
        if let Some(label) = fields.label {
            out.insert("label".into(), label.clone());
        }
        match (fields.form, original) {
            (None, None) => return Ok(None),
            (Some(Form::Requirements(r)), _) => {
                let json = self.prepare_requirements(r, "objectpolicy.requirements")?;
                out.insert("requirements".into(), json);
                if let Some(text) = original {
                    self.compile_original(text)?;
                }
            }
            (Some(Form::Rego(text)), _) => {
                self.prepare_rego(text, "objectpolicy.rego")?;
                out.insert("rego".into(), Value::String(text.to_string()));
                if let Some(text) = original {
                    self.compile_original(text)?;
                }
            }
            (None, Some(text)) => {
                let (key, value) = self.compile_original(text)?;
                out.insert(key.into(), value);
            }
        }
        Ok(Some(PreparedPolicy {
            objectpolicy: Value::Object(out),
            // Blank means absent (SPEC §5); anything else is kept exactly as given.
            originalobjectpolicy: original.map(str::to_string),
        }))
    }

    fn compile(&self, form: &Form, key: &PolicyDigest) -> Arc<Compiled> {
        let made = self.compiled.get_or_insert_with(key, || -> Result<_, ()> {
            self.counters.compiled.fetch_add(1, Ordering::Relaxed);
            let c = match form {
                Form::Requirements(r) => lisp::from_json(r, self.budget()).map(Compiled::Lisp).ok(),
                Form::Rego(text) if text.len() <= self.limits.max_policy_bytes => {
                    rego::RegoPolicy::compile(
                        text,
                        self.limits.max_policy_bytes,
                        self.limits.eval_timeout,
                    )
                    .map(|p| Compiled::Rego(Box::new(p)))
                    .ok()
                }
                Form::Rego(_) => None,
            };
            Ok(Arc::new(c.unwrap_or(Compiled::Invalid)))
        });
        made.unwrap_or_else(|()| Arc::new(Compiled::Invalid))
    }

    fn claims_value(&self, claims: &Claims) -> regorus::Value {
        let made = self
            .claims_values
            .get_or_insert_with(&claims.key(), || -> Result<_, ()> {
                Ok(rego::to_value(claims.raw()))
            });
        made.unwrap_or(regorus::Value::Undefined)
    }

    fn fail(&self) -> Perms {
        self.counters.errors.fetch_add(1, Ordering::Relaxed);
        Perms::NONE
    }

    /// Evaluates a stored objectpolicy (as produced by [`Self::prepare`]). Never fails:
    /// default-deny. Only a rule that is literally boolean `true` grants its letter; an
    /// error, undefined, non-boolean, timeout or limit hit grants nothing.
    pub fn evaluate(&self, objectpolicy: &Value, input: &EvalInput) -> Perms {
        self.counters.evaluations.fetch_add(1, Ordering::Relaxed);
        let Value::Object(m) = objectpolicy else {
            return self.fail();
        };
        let form = match fields(m) {
            Ok(Fields { form: Some(f), .. }) => f,
            _ => return self.fail(),
        };
        let key = digest(&form);
        let compiled = self.compile(&form, &key);
        let action = u8::try_from(input.action.to_ascii_uppercase()).unwrap_or(0);
        match compiled.as_ref() {
            Compiled::Invalid => self.fail(),
            Compiled::Lisp(node) => {
                let rkey = ResultKey {
                    policy: key,
                    claims: input.claims.key(),
                    action: 0,
                };
                if let Some(p) = self.results.get(&rkey) {
                    self.counters
                        .result_cache_hits
                        .fetch_add(1, Ordering::Relaxed);
                    return p;
                }
                let (perms, type_error) = lisp::evaluate(node, input.claims);
                if type_error {
                    self.counters.errors.fetch_add(1, Ordering::Relaxed);
                }
                // Deterministic in the claims even with a type error: cache it.
                self.results.insert(rkey, perms);
                perms
            }
            Compiled::Rego(policy) => {
                let use_ = policy.input_use;
                // A module that never names input.action gets one entry for all actions.
                let action = if use_.reads_action { action } else { 0 };
                let rkey = ResultKey {
                    policy: key,
                    claims: input.claims.key(),
                    action,
                };
                if use_.claims_only {
                    if let Some(p) = self.results.get(&rkey) {
                        self.counters
                            .result_cache_hits
                            .fetch_add(1, Ordering::Relaxed);
                        return p;
                    }
                }
                let object = use_.reads_object.then(|| rego::to_value(&(input.object)()));
                let doc =
                    rego::input_document(self.claims_value(input.claims), input.action, object);
                let outcome = policy.evaluate(doc, self.limits.eval_timeout);
                if outcome.failed {
                    self.counters.errors.fetch_add(1, Ordering::Relaxed);
                } else if use_.claims_only {
                    self.results.insert(rkey, outcome.perms);
                }
                outcome.perms
            }
        }
    }
}

#[cfg(test)]
mod tests;
