//! Data-driven policy table: `tests/data/policy_cases.yaml`. Each case is prepared as a
//! write would prepare it, then the stored form is evaluated (twice, so that a cached result
//! must agree with a fresh one) and the letters compared exactly.

use serde::Deserialize;
use serde_json::Value;
use vellum::model::{Claims, Perms};
use vellum::policy::{EvalInput, Meter, PolicyEngine, PolicyLimits};

#[derive(Deserialize)]
struct Table {
    cases: Vec<Case>,
    rejects: Vec<Reject>,
}

#[derive(Deserialize)]
struct Policy {
    objectpolicy: Option<Value>,
    originalobjectpolicy: Option<String>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    policy: Policy,
    claims: Value,
    #[serde(default)]
    object: Option<Value>,
    #[serde(default)]
    action: Option<char>,
    expect: String,
}

#[derive(Deserialize)]
struct Reject {
    name: String,
    policy: Policy,
    error: String,
}

fn table() -> Table {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/it/data/policy_cases.yaml"
    );
    let text = std::fs::read_to_string(path).expect("read policy_cases.yaml");
    yaml_serde::from_str(&text).expect("parse policy_cases.yaml")
}

#[test]
fn policy_table() {
    let t = table();
    assert!(t.cases.len() >= 45, "only {} cases", t.cases.len());
    let engine = PolicyEngine::new(PolicyLimits::default());
    let mut failures = Vec::new();
    for case in &t.cases {
        let prepared = engine.prepare(
            case.policy.objectpolicy.as_ref(),
            case.policy.originalobjectpolicy.as_deref(),
        );
        let prepared = match prepared {
            Ok(Some(p)) => p,
            Ok(None) => {
                failures.push(format!("{}: prepare() found no policy", case.name));
                continue;
            }
            Err(e) => {
                failures.push(format!("{}: prepare() refused it: {e}", case.name));
                continue;
            }
        };
        let claims = Claims::new(case.claims.clone());
        let object = case.object.clone().unwrap_or_else(|| serde_json::json!({}));
        let object_fn = move || object.clone();
        let input = EvalInput {
            claims: &claims,
            action: case.action.unwrap_or('R'),
            object: &object_fn,
            meter: Meter::unmetered(),
        };
        let want: Perms = match case.expect.parse() {
            Ok(p) => p,
            Err(c) => {
                failures.push(format!("{}: bad letter {c:?} in expect", case.name));
                continue;
            }
        };
        for round in ["first", "second"] {
            let got = engine.evaluate(&prepared.objectpolicy, &input);
            if got != want {
                failures.push(format!(
                    "{} ({round} evaluation): got {:?}, want {:?}",
                    case.name,
                    got.to_string(),
                    want.to_string()
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failing cases:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn policy_rejects() {
    let t = table();
    let engine = PolicyEngine::new(PolicyLimits::default());
    let mut failures = Vec::new();
    for r in &t.rejects {
        match engine.prepare(
            r.policy.objectpolicy.as_ref(),
            r.policy.originalobjectpolicy.as_deref(),
        ) {
            Err(e) if e.to_string().contains(&r.error) => {}
            Err(e) => failures.push(format!(
                "{}: message {:?} lacks {:?}",
                r.name,
                e.to_string(),
                r.error
            )),
            Ok(p) => failures.push(format!("{}: accepted as {p:?}", r.name)),
        }
    }
    assert!(
        failures.is_empty(),
        "{} failing rejects:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
