//! Policies (SPEC §4): the gm-data policy language ("Lisp", as JSON `requirements` or as
//! text) and Rego, validated at write time by [`PolicyEngine::prepare`] and evaluated,
//! default-deny, by [`PolicyEngine::evaluate`].
//!
//! Caching. Compiled policies are cached by a SHA-256 of the policy's canonical form (the
//! Rego text, or the requirements serialised with sorted keys; the label does not take
//! part, so policies that differ only in label share an entry); a policy that does not
//! compile is cached with its message. Results are cached by (policy, claims, action,
//! object) where they cannot depend on anything else: for Lisp per (policy, claims); for
//! Rego per (policy, claims), plus the action if the text names `input.action`, plus a digest
//! of `input.object` if the text may read it, and only if it calls no clock, random or
//! environment builtin (see [`rego::input_use`]). A failed evaluation (a budget ran out, a
//! rule erred) is cached too, for [`PolicyLimits::failure_ttl`], whatever the policy reads:
//! a hostile policy read by a hundred feeds of one caller is evaluated once, not a hundred
//! times, and a time-out caused by load is forgotten soon.
//!
//! Budgets. Each evaluation is bounded by [`PolicyLimits::eval_timeout`], an instruction
//! count and an allocation budget (see [`rego`]); each request by its [`Budget`], which an
//! evaluation never exceeds and which ends evaluation when the request is abandoned; all
//! evaluations together by the [`Gate`]'s permits, handed out fairly between callers.
//!
//! Cost (release build, 2-core machine, the seed's one-line module): compiling ~1-2 ms;
//! evaluating a cached compiled module for a new caller ~15-30 us; a cached result
//! ~1 us. Evaluation is CPU-bound: call it from a blocking-capable thread, never directly on
//! an async executor.

pub mod budget;
pub mod lisp;
pub mod rego;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::model::Claims;
pub use crate::model::Perms;
pub use budget::{Budget, Gate, Lane};

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
    /// The request's policies took longer to compile than its budget.
    #[error("{field}: compiling this request's policies took longer than its budget allows")]
    Budget { field: &'static str },
}

/// Bounds on what a user-written policy may cost. Each is a setting (README, SECURITY.md).
///
/// Memory: one evaluation allocates at most `memory` bytes (counted as requested, frees give
/// nothing back) plus what its last instruction allocates, which the guards in
/// [`rego::guard`] keep to a few MiB; at most `concurrency` evaluations run at once, so all
/// evaluations together hold at most about `concurrency x memory`. Compiling is bounded by
/// the structural limits of [`rego::scan`] (parse time and depth) and `max_policy_bytes`.
#[derive(Debug, Clone)]
pub struct PolicyLimits {
    /// Text of `rego` / `originalobjectpolicy` / serialised `requirements`.
    pub max_policy_bytes: usize,
    pub max_lisp_nodes: usize,
    pub max_lisp_depth: usize,
    /// Wall-clock budget of one evaluation (all six letters together).
    pub eval_timeout: Duration,
    /// Instructions of regorus's VM one evaluation may execute.
    pub eval_instructions: usize,
    /// Bytes one evaluation may allocate.
    pub eval_memory: u64,
    /// Evaluations (and compiles) running at once.
    pub concurrency: usize,
    /// How long a failed evaluation's denial is reused for the same policy, caller and object.
    pub failure_ttl: Duration,
    /// Estimated bytes of compiled policies the cache keeps (a small Rego policy ~9 KiB, a
    /// 64 KiB one up to ~1 MiB): the bound, whatever the policies' sizes.
    pub compiled_cache_bytes: u64,
    pub result_cache_entries: usize,
}

impl Default for PolicyLimits {
    fn default() -> Self {
        Self {
            max_policy_bytes: 65_536,
            max_lisp_nodes: 4_096,
            max_lisp_depth: 64,
            eval_timeout: Duration::from_millis(100),
            eval_instructions: 1_000_000,
            eval_memory: 64 << 20,
            concurrency: 4,
            failure_ttl: Duration::from_secs(60),
            compiled_cache_bytes: 1 << 30,
            result_cache_entries: 250_000,
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
    /// Who pays.
    pub meter: Meter<'a>,
}

/// Who pays for compiling and evaluating: a request's [`Budget`], and its lane at the
/// [`Gate`] (the caller's claims key). `lane: None` runs without a permit: the store's writer
/// thread, which is one thread already and must not wait behind readers.
#[derive(Clone, Copy)]
pub struct Meter<'a> {
    pub budget: &'a Budget,
    pub lane: Option<Lane>,
}

/// A budget that never runs out, for start-up and tests.
pub static UNMETERED: Budget = Budget::unlimited();

impl Meter<'static> {
    /// No budget, no gate: bootstrap and tests.
    pub fn unmetered() -> Meter<'static> {
        Meter {
            budget: &UNMETERED,
            lane: None,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct PolicyStats {
    pub evaluations: u64,
    pub result_cache_hits: u64,
    /// Compiled-cache misses that compiled a policy.
    pub compiled: u64,
    /// Evaluations that met an error: an invalid stored policy, an erroring rule, a type
    /// error, a budget.
    pub errors: u64,
    /// Evaluations stopped by a budget (time, instructions, memory, a guarded builtin).
    pub budget_stops: u64,
    /// Evaluations not run because the request's budget was spent or it was abandoned.
    pub skipped: u64,
    /// Compiled policies held, and their estimated bytes.
    pub compiled_entries: u64,
    pub compiled_bytes: u64,
    /// Results held.
    pub result_entries: u64,
    /// Evaluations waiting for a gate permit.
    pub waiting: u64,
}

/// A compiled policy, shared by every evaluation of it.
#[derive(Debug)]
enum Compiled {
    Lisp(lisp::Node),
    Rego(Box<rego::RegoPolicy>),
    /// A policy that does not compile (refused at write time; stored by an older version or
    /// by hand): cached with its message, so that a listing does not recompile it for every
    /// child and a repeated write is refused without compiling again.
    Invalid(String),
}

type PolicyDigest = [u8; 32];

/// What a compiled policy holds, estimated.
#[derive(Clone)]
struct CompiledWeight;

impl quick_cache::Weighter<PolicyDigest, Arc<Compiled>> for CompiledWeight {
    fn weight(&self, _: &PolicyDigest, c: &Arc<Compiled>) -> u64 {
        match c.as_ref() {
            Compiled::Rego(p) => p.weight,
            // A Lisp tree is at most a few thousand small nodes.
            Compiled::Lisp(_) => 4 << 10,
            Compiled::Invalid(m) => 256 + m.len() as u64,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct ResultKey {
    policy: PolicyDigest,
    claims: [u8; 16],
    /// 0 when the policy cannot see the action (Lisp, and Rego that never names `input.action`).
    action: u8,
    /// A digest of `input.object` when the policy may read it, else zeros.
    object: [u8; 16],
}

/// A cached answer; a failure's expires.
#[derive(Debug, Clone, Copy)]
struct Cached {
    perms: Perms,
    expires: Option<Instant>,
}

#[derive(Default)]
struct Counters {
    evaluations: AtomicU64,
    result_cache_hits: AtomicU64,
    compiled: AtomicU64,
    errors: AtomicU64,
    budget_stops: AtomicU64,
    skipped: AtomicU64,
}

/// Validates, compiles, caches and evaluates policies. `Send + Sync`: share one per process.
pub struct PolicyEngine {
    limits: PolicyLimits,
    compiled: quick_cache::sync::Cache<PolicyDigest, Arc<Compiled>, CompiledWeight>,
    results: quick_cache::sync::Cache<ResultKey, Cached>,
    gate: Gate,
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

fn digest(form: &Form) -> PolicyDigest {
    let mut h = Sha256::new();
    match form {
        Form::Requirements(r) => {
            h.update(b"requirements\0");
            h.update(crate::model::canonical::to_vec(r));
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
        // Weighted by what each entry holds: a count of entries bounds nothing when one
        // entry may be a hundred times another.
        let compiled = quick_cache::sync::Cache::with_weighter(
            usize::try_from(limits.compiled_cache_bytes / (16 << 10))
                .unwrap_or(usize::MAX)
                .max(16),
            limits.compiled_cache_bytes.max(1 << 20),
            CompiledWeight,
        );
        let results = quick_cache::sync::Cache::new(limits.result_cache_entries.max(1));
        let gate = Gate::new(limits.concurrency);
        Self {
            limits,
            compiled,
            results,
            gate,
            claims_values: quick_cache::sync::Cache::new(4096),
            counters: Counters::default(),
        }
    }

    /// A budget of `limit` for one request.
    pub fn budget(limit: Duration) -> Arc<Budget> {
        Arc::new(Budget::new(limit))
    }

    /// Evaluations waiting for a permit right now.
    pub fn waiting(&self) -> usize {
        self.gate.waiting()
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
            budget_stops: c.budget_stops.load(Ordering::Relaxed),
            skipped: c.skipped.load(Ordering::Relaxed),
            compiled_entries: self.compiled.len() as u64,
            compiled_bytes: self.compiled.weight(),
            result_entries: self.results.len() as u64,
            waiting: self.gate.waiting() as u64,
        }
    }

    fn lisp_budget(&self) -> lisp::Budget {
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
        let node = lisp::from_json(r, self.lisp_budget())
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

    fn prepare_rego(
        &self,
        text: &str,
        field: &'static str,
        meter: &Meter,
    ) -> Result<(), PolicyError> {
        self.check_size(field, text.len())?;
        // A text already compiled (or already refused) is not compiled again: a transaction
        // repeating one policy on every event pays for it once.
        let form = Form::Rego(text);
        let key = digest(&form);
        let compiled = match self.compiled.get(&key) {
            Some(c) => c,
            None => {
                if meter.budget.exhausted() {
                    return Err(PolicyError::Budget { field });
                }
                let Some(_permit) = self.permit(meter) else {
                    return Err(PolicyError::Budget { field });
                };
                let t = Instant::now();
                let c = self.compile(&form, &key);
                meter.budget.charge(t.elapsed());
                c
            }
        };
        match compiled.as_ref() {
            Compiled::Invalid(message) => Err(PolicyError::Rego {
                field,
                message: message.clone(),
            }),
            _ => Ok(()),
        }
    }

    /// Validates `originalobjectpolicy` text and returns the form it compiles to.
    fn compile_original(
        &self,
        text: &str,
        meter: &Meter,
    ) -> Result<(&'static str, Value), PolicyError> {
        const FIELD: &str = "originalobjectpolicy";
        self.check_size(FIELD, text.len())?;
        if lisp::looks_like_lisp(text) {
            let node =
                lisp::parse_text(text, self.lisp_budget()).map_err(|error| PolicyError::Lisp {
                    field: FIELD,
                    error,
                })?;
            Ok(("requirements", self.store_requirements(node, FIELD)?))
        } else {
            self.prepare_rego(text, FIELD, meter)?;
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
        self.prepare_metered(objectpolicy, originalobjectpolicy, &Meter::unmetered())
    }

    /// [`Self::prepare`], compiling what is not compiled yet within `meter`'s budget and at
    /// its place at the gate.
    pub fn prepare_metered(
        &self,
        objectpolicy: Option<&Value>,
        originalobjectpolicy: Option<&str>,
        meter: &Meter,
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
                    self.compile_original(text, meter)?;
                }
            }
            (Some(Form::Rego(text)), _) => {
                self.prepare_rego(text, "objectpolicy.rego", meter)?;
                out.insert("rego".into(), Value::String(text.to_string()));
                if let Some(text) = original {
                    self.compile_original(text, meter)?;
                }
            }
            (None, Some(text)) => {
                let (key, value) = self.compile_original(text, meter)?;
                out.insert(key.into(), value);
            }
        }
        Ok(Some(PreparedPolicy {
            objectpolicy: Value::Object(out),
            // Blank means absent (SPEC §5); anything else is kept exactly as given.
            originalobjectpolicy: original.map(str::to_string),
        }))
    }

    /// The compiled policy from the cache, or compiled now (once, however many threads ask at
    /// the same time).
    fn compile(&self, form: &Form, key: &PolicyDigest) -> Arc<Compiled> {
        let made = self.compiled.get_or_insert_with(key, || -> Result<_, ()> {
            self.counters.compiled.fetch_add(1, Ordering::Relaxed);
            let c = match form {
                Form::Requirements(r) => lisp::from_json(r, self.lisp_budget())
                    .map(Compiled::Lisp)
                    .unwrap_or_else(|e| Compiled::Invalid(e.to_string())),
                Form::Rego(text) if text.len() <= self.limits.max_policy_bytes => {
                    match rego::RegoPolicy::compile(text, self.limits.max_policy_bytes) {
                        Ok(p) => Compiled::Rego(Box::new(p)),
                        Err(message) => Compiled::Invalid(message),
                    }
                }
                Form::Rego(text) => Compiled::Invalid(format!(
                    "the policy is {} bytes; the limit is {}",
                    text.len(),
                    self.limits.max_policy_bytes
                )),
            };
            Ok(Arc::new(c))
        });
        made.unwrap_or_else(|()| Arc::new(Compiled::Invalid("internal error".into())))
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

    fn cached(&self, key: &ResultKey) -> Option<Perms> {
        let c = self.results.get(key)?;
        if c.expires.is_some_and(|at| Instant::now() >= at) {
            self.results.remove(key);
            return None;
        }
        self.counters
            .result_cache_hits
            .fetch_add(1, Ordering::Relaxed);
        Some(c.perms)
    }

    /// Evaluates a stored objectpolicy (as produced by [`Self::prepare`]). Never fails:
    /// default-deny. Only a rule that is literally boolean `true` grants its letter; an
    /// error, undefined, non-boolean, budget hit or a spent request budget grants nothing.
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
        let claims = input.claims.key();
        if let Form::Requirements(_) = form {
            // Lisp reads nothing but the claims and costs microseconds: no gate, no budget.
            let rkey = ResultKey {
                policy: key,
                claims,
                action: 0,
                object: [0; 16],
            };
            if let Some(p) = self.cached(&rkey) {
                return p;
            }
            return match self.compile(&form, &key).as_ref() {
                Compiled::Lisp(node) => {
                    let (perms, type_error) = lisp::evaluate(node, input.claims);
                    if type_error {
                        self.counters.errors.fetch_add(1, Ordering::Relaxed);
                    }
                    // Deterministic in the claims even with a type error: cache it.
                    self.results.insert(
                        rkey,
                        Cached {
                            perms,
                            expires: None,
                        },
                    );
                    perms
                }
                _ => self.fail(),
            };
        }
        // Rego: a cached compiled policy tells what the result may depend on.
        let budget = input.meter.budget;
        let compiled = match self.compiled.get(&key) {
            Some(c) => c,
            None => {
                // Compiling a stored policy (first use since start-up) is gated and charged
                // like an evaluation.
                let Some(_permit) = self.permit(&input.meter) else {
                    return self.skip();
                };
                let t = Instant::now();
                let c = self.compile(&form, &key);
                budget.charge(t.elapsed());
                c
            }
        };
        let policy = match compiled.as_ref() {
            Compiled::Rego(p) => p,
            _ => return self.fail(),
        };
        let use_ = policy.input_use;
        let object = use_.reads_object.then(|| (input.object)());
        let action = u8::try_from(input.action.to_ascii_uppercase()).unwrap_or(0);
        let rkey = ResultKey {
            policy: key,
            claims,
            // A module that never names input.action gets one entry for all actions.
            action: if use_.reads_action { action } else { 0 },
            object: object.as_ref().map_or([0; 16], object_digest),
        };
        if let Some(p) = self.cached(&rkey) {
            return p;
        }
        if budget.exhausted() {
            return self.skip();
        }
        let Some(_permit) = self.permit(&input.meter) else {
            return self.skip();
        };
        // Never more than the request has left; an evaluation cut short by that is the
        // request's budget, not the policy's failure, and is not cached.
        let left = budget.remaining();
        let cut_short = left < self.limits.eval_timeout;
        let limits = rego::EvalLimits {
            timeout: left.min(self.limits.eval_timeout),
            instructions: self.limits.eval_instructions,
            memory: self.limits.eval_memory,
        };
        let doc = rego::input_document(
            self.claims_value(input.claims),
            input.action,
            object.as_ref().map(rego::to_value),
        );
        let t = Instant::now();
        let outcome = policy.evaluate(doc, &limits);
        budget.charge(t.elapsed());
        match outcome.failed {
            None => {
                if use_.deterministic {
                    self.results.insert(
                        rkey,
                        Cached {
                            perms: outcome.perms,
                            expires: None,
                        },
                    );
                }
            }
            Some(failure) => {
                self.counters.errors.fetch_add(1, Ordering::Relaxed);
                if failure == rego::Failure::Budget {
                    self.counters.budget_stops.fetch_add(1, Ordering::Relaxed);
                }
                if !(cut_short && failure == rego::Failure::Budget) {
                    self.results.insert(
                        rkey,
                        Cached {
                            perms: outcome.perms,
                            expires: Some(Instant::now() + self.limits.failure_ttl),
                        },
                    );
                }
            }
        }
        outcome.perms
    }

    /// Whether a Rego policy's `share` rule lets `share` be made (SPEC §9.2), with
    /// `input.claims` the sharer's, `input.share` the share asked for and `input.object` the
    /// object. True when the policy has no such rule (Lisp policies never do); otherwise only
    /// a literal `true`. Charged to the meter's budget; never cached (shares are rare).
    pub fn allows_share(
        &self,
        objectpolicy: &Value,
        claims: &Claims,
        share: &Value,
        object: &Value,
        meter: Meter,
    ) -> bool {
        let Value::Object(m) = objectpolicy else {
            return true;
        };
        let form = match fields(m) {
            Ok(Fields { form: Some(f), .. }) => f,
            _ => return true,
        };
        if let Form::Requirements(_) = form {
            return true;
        }
        let key = digest(&form);
        let budget = meter.budget;
        let Some(_permit) = self.permit(&meter) else {
            return false;
        };
        let t = Instant::now();
        let compiled = self.compile(&form, &key);
        let Compiled::Rego(policy) = compiled.as_ref() else {
            budget.charge(t.elapsed());
            return false; // a policy that does not compile vetoes (default-deny)
        };
        let left = budget.remaining();
        let limits = rego::EvalLimits {
            timeout: left.min(self.limits.eval_timeout),
            instructions: self.limits.eval_instructions,
            memory: self.limits.eval_memory,
        };
        let mut input = std::collections::BTreeMap::new();
        input.insert(regorus::Value::from("claims"), self.claims_value(claims));
        input.insert(regorus::Value::from("share"), rego::to_value(share));
        input.insert(regorus::Value::from("object"), rego::to_value(object));
        let allowed = policy.allows_share(regorus::Value::from(input), &limits);
        budget.charge(t.elapsed());
        allowed.unwrap_or(true)
    }

    /// Whether a stored policy's answer may depend on `input.object`: `Some(false)` for Lisp
    /// and for a compiled Rego module that never names it, `None` when not known without
    /// compiling (or not valid).
    pub fn reads_object(&self, objectpolicy: &Value) -> Option<bool> {
        let Value::Object(m) = objectpolicy else {
            return None;
        };
        match fields(m).ok()?.form? {
            Form::Requirements(_) => Some(false),
            form @ Form::Rego(_) => match self.compiled.get(&digest(&form))?.as_ref() {
                Compiled::Rego(p) => Some(p.input_use.reads_object),
                _ => None,
            },
        }
    }

    /// Not evaluated: the request's budget is spent or it was abandoned.
    fn skip(&self) -> Perms {
        self.counters.skipped.fetch_add(1, Ordering::Relaxed);
        Perms::NONE
    }

    /// A gate permit for a compile or an evaluation, waiting at most what the request's
    /// budget has left; `Some(None)` for an ungated meter.
    fn permit(&self, meter: &Meter) -> Option<Option<budget::Permit<'_>>> {
        let Some(lane) = meter.lane else {
            return Some(None);
        };
        let t = Instant::now();
        let p = self.gate.acquire(lane, meter.budget.remaining());
        // Waiting is spent too: a request cannot wait forever for evaluations it will not get.
        meter.budget.charge(t.elapsed());
        p.map(Some)
    }
}

/// A digest of an `input.object` document: equal documents, equal digests.
fn object_digest(v: &Value) -> [u8; 16] {
    let mut h = Sha256::new();
    h.update(crate::model::canonical::to_vec(v));
    let d: [u8; 32] = h.finalize().into();
    let mut out = [0u8; 16];
    out.copy_from_slice(&d[..16]);
    out
}

#[cfg(test)]
mod tests;
