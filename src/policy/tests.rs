//! Engine-level tests: prepare, evaluate, caching, limits. The per-case table lives in
//! `tests/it/policy_table.rs`.

use super::*;
use serde_json::json;
use std::time::{Duration, Instant};

const SEED_REGO: &str = r#"package policy inOrg{input.claims.values.email[_]=="localuser@email.com"}C{inOrg}R{inOrg}U{inOrg}D{inOrg}X{inOrg}P{inOrg}"#;

fn engine() -> PolicyEngine {
    PolicyEngine::new(PolicyLimits::default())
}

fn claims(email: &str) -> Claims {
    Claims::new(json!({"label": email, "values": {"email": [email]}}))
}

fn eval_with(e: &PolicyEngine, op: &Value, c: &Claims, action: char, object: Value) -> Perms {
    let object = move || object.clone();
    e.evaluate(
        op,
        &EvalInput {
            claims: c,
            action,
            object: &object,
            meter: Meter::unmetered(),
        },
    )
}

fn eval(e: &PolicyEngine, op: &Value, c: &Claims) -> Perms {
    eval_with(e, op, c, 'R', json!({}))
}

#[test]
fn engine_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<PolicyEngine>();
}

#[test]
fn nothing_given_is_none() {
    let e = engine();
    assert_eq!(e.prepare(None, None).unwrap(), None);
    assert_eq!(e.prepare(Some(&Value::Null), Some("")).unwrap(), None);
    assert_eq!(e.prepare(Some(&json!({})), Some("  ")).unwrap(), None);
    assert_eq!(
        e.prepare(Some(&json!({"label": "x", "requirements": {}})), None)
            .unwrap(),
        None
    );
    assert_eq!(
        e.prepare(Some(&json!({"rego": "", "requirements": []})), None)
            .unwrap(),
        None
    );
    assert_eq!(e.prepare(Some(&json!({"Rego": null})), None).unwrap(), None);
}

#[test]
fn keys_are_normalised_to_lower_case() {
    let e = engine();
    let p = e
        .prepare(
            Some(&json!({"Label": "L", "Requirements": {"F": "yield", "A": [{"V": "R"}]}, "other": 1})),
            None,
        )
        .unwrap()
        .unwrap();
    assert_eq!(
        p.objectpolicy,
        json!({"label": "L", "requirements": {"f": "yield", "a": [{"v": "R"}]}})
    );
    assert_eq!(p.originalobjectpolicy, None);
}

#[test]
fn original_lisp_compiles_to_requirements() {
    let e = engine();
    let text = r#"(if (contains email "a@b.c")(yield-all)(yield R X))"#;
    let p = e.prepare(None, Some(text)).unwrap().unwrap();
    assert_eq!(
        p.objectpolicy,
        json!({"requirements": {"f":"if","a":[
            {"f":"contains","a":[{"v":"email"},{"v":"a@b.c"}]},
            {"f":"yield-all","a":[]},
            {"f":"yield","a":[{"v":"R"},{"v":"X"}]}]}})
    );
    assert_eq!(p.originalobjectpolicy.as_deref(), Some(text));
    // Preparing the stored form again changes nothing.
    let again = e
        .prepare(Some(&p.objectpolicy), Some(text))
        .unwrap()
        .unwrap();
    assert_eq!(again, p);
    // Two top-level forms become an array of siblings.
    let p = e
        .prepare(None, Some("(yield R)\n(yield X)"))
        .unwrap()
        .unwrap();
    assert_eq!(
        p.objectpolicy,
        json!({"requirements": [{"f":"yield","a":[{"v":"R"}]}, {"f":"yield","a":[{"v":"X"}]}]})
    );
}

#[test]
fn original_rego_becomes_rego() {
    let e = engine();
    let p = e
        .prepare(Some(&json!({"label": "L"})), Some(SEED_REGO))
        .unwrap()
        .unwrap();
    assert_eq!(p.objectpolicy, json!({"label": "L", "rego": SEED_REGO}));
    assert_eq!(p.originalobjectpolicy.as_deref(), Some(SEED_REGO));
}

#[test]
fn the_objectpolicy_form_wins_but_the_original_must_compile() {
    let e = engine();
    let op = json!({"requirements": {"f": "yield", "a": [{"v": "R"}]}});
    let p = e.prepare(Some(&op), Some("(yield-all)")).unwrap().unwrap();
    assert_eq!(
        p.objectpolicy,
        json!({"requirements": {"f": "yield", "a": [{"v": "R"}]}})
    );
    assert_eq!(p.originalobjectpolicy.as_deref(), Some("(yield-all)"));
    let p = e.prepare(Some(&op), Some("  ")).unwrap().unwrap();
    assert_eq!(p.originalobjectpolicy, None);
    let err = e.prepare(Some(&op), Some("(yeild R)")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "originalobjectpolicy: unknown function \"yeild\" at line 1, column 1"
    );
    let err = e.prepare(Some(&op), Some("package p\nR if {")).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("originalobjectpolicy does not parse: "),
        "{err}"
    );
}

#[test]
fn rejections_have_clear_messages() {
    let e = engine();
    let cases: Vec<(Value, Option<&str>, &str)> = vec![
        (
            json!({"requirements": {"f":"if","a":[{"f":"yeild","a":[]}]}}),
            None,
            "objectpolicy.requirements: unknown function \"yeild\" at a[0]",
        ),
        (
            json!({"requirements": {"f":"yield"}, "rego": "package p"}),
            None,
            "objectpolicy has both requirements and rego",
        ),
        (
            json!("yield"),
            None,
            "objectpolicy must be a JSON object, got a string",
        ),
        (
            json!({"rego": 3}),
            None,
            "objectpolicy.rego must be a string",
        ),
        (
            json!({"label": 3, "rego": "package p"}),
            None,
            "objectpolicy.label must be a string",
        ),
        (
            json!({"rego": "package p", "REGO": "package q"}),
            None,
            "objectpolicy has both \"rego\" and \"REGO\"",
        ),
        (
            json!({"rego": "package p\nR if {"}),
            None,
            "objectpolicy.rego does not parse: line 2, column 7: expecting expression",
        ),
        (
            json!({"rego": "not rego at all"}),
            None,
            "objectpolicy.rego does not parse: ",
        ),
    ];
    for (op, orig, want) in cases {
        let err = e.prepare(Some(&op), orig).unwrap_err().to_string();
        assert!(err.starts_with(want), "{op}: got {err:?}, want {want:?}");
    }
}

#[test]
fn size_limits() {
    let e = PolicyEngine::new(PolicyLimits {
        max_policy_bytes: 100,
        ..PolicyLimits::default()
    });
    let long = format!(
        "package p\nimport rego.v1\n# {}\nR if true\n",
        "x".repeat(200)
    );
    let err = e.prepare(Some(&json!({ "rego": long })), None).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "objectpolicy.rego is {} bytes; the limit is 100",
            long.len()
        )
    );
    let err = e.prepare(None, Some(&long)).unwrap_err();
    assert!(
        err.to_string().starts_with("originalobjectpolicy is "),
        "{err}"
    );
    let many = format!("({})", ["yield R"; 20].join(")("));
    let err = e.prepare(None, Some(&many)).unwrap_err();
    assert!(err.to_string().contains("the limit is 100"), "{err}");
    let req = json!({"requirements": {"f": "contains", "a": (0..30).map(|i| json!({"v": i.to_string()})).collect::<Vec<_>>()}});
    let err = e.prepare(Some(&req), None).unwrap_err();
    assert!(
        err.to_string().starts_with("objectpolicy.requirements is "),
        "{err}"
    );
    // A stored policy over the limit is not evaluated.
    assert_eq!(
        e.evaluate(
            &json!({"rego": long}),
            &EvalInput {
                claims: &claims("a"),
                action: 'R',
                object: &|| json!({}),
                meter: Meter::unmetered(),
            }
        ),
        Perms::NONE
    );
}

#[test]
fn a_long_single_line_rego_module_is_accepted() {
    // regorus refuses lines over 1024 columns by default; gm-data clients send one-liners.
    let e = engine();
    let emails: Vec<String> = (0..100)
        .map(|i| format!("\"user{i}@example.com\""))
        .collect();
    let text = format!(
        "package policy inOrg{{input.claims.values.email[_]==[{}][_]}}R{{inOrg}}",
        emails.join(",")
    );
    assert!(text.len() > 2000);
    let p = e
        .prepare(Some(&json!({ "rego": text })), None)
        .unwrap()
        .unwrap();
    assert_eq!(
        eval(&e, &p.objectpolicy, &claims("user42@example.com")),
        Perms::R
    );
}

#[test]
fn evaluation_is_default_deny() {
    let e = engine();
    let c = claims("a");
    for op in [
        Value::Null,
        json!("x"),
        json!({}),
        json!({"label": "only"}),
        json!({"rego": "package p\nR if {"}),
        json!({"requirements": {"f": "nope"}}),
        json!({"requirements": {"f": "yield", "a": [{"v": "R"}]}, "rego": "package p\nR := true"}),
    ] {
        assert_eq!(eval(&e, &op, &c), Perms::NONE, "{op}");
    }
    assert_eq!(e.stats().errors, 7);
}

#[test]
fn lisp_results_are_cached_per_claims() {
    let e = engine();
    let op = e
        .prepare(
            None,
            Some(r#"(if (contains email "x")(yield-all)(yield R X))"#),
        )
        .unwrap()
        .unwrap()
        .objectpolicy;
    let (x, y) = (claims("x"), claims("y"));
    assert_eq!(eval(&e, &op, &x), Perms::ALL);
    assert_eq!(eval(&e, &op, &y), Perms::R | Perms::X);
    // The action does not matter to Lisp: a hit under another action.
    assert_eq!(eval_with(&e, &op, &x, 'U', json!({})), Perms::ALL);
    assert_eq!(eval(&e, &op, &y), Perms::R | Perms::X);
    let s = e.stats();
    assert_eq!(s.evaluations, 4);
    assert_eq!(s.result_cache_hits, 2);
    // prepare() already compiled it.
    assert_eq!(s.compiled, 0);
}

#[test]
fn rego_reading_only_claims_is_cached() {
    let e = engine();
    let op = json!({ "rego": SEED_REGO });
    let yes = claims("localuser@email.com");
    let no = claims("other@email.com");
    for action in ['R', 'R', 'X'] {
        assert_eq!(eval_with(&e, &op, &yes, action, json!({})), Perms::ALL);
        assert_eq!(eval_with(&e, &op, &no, action, json!({})), Perms::NONE);
    }
    // The module never names input.action: one entry serves every action.
    let s = e.stats();
    assert_eq!(
        (s.evaluations, s.result_cache_hits, s.compiled, s.errors),
        (6, 4, 1, 0)
    );
}

#[test]
fn rego_reading_the_object_shares_results_only_for_the_same_object() {
    let e = engine();
    let op = json!({"rego": "package p\nimport rego.v1\nC if input.object.name in input.claims.values.email\nR if true\n"});
    let c = claims("a@b.c");
    let mine = json!({"name": "a@b.c"});
    let theirs = json!({"name": "z@b.c"});
    for _ in 0..3 {
        assert_eq!(
            eval_with(&e, &op, &c, 'R', mine.clone()),
            Perms::C | Perms::R
        );
        assert_eq!(eval_with(&e, &op, &c, 'R', theirs.clone()), Perms::R);
    }
    // Two objects, three rounds: the second and third rounds are answered from the cache.
    assert_eq!(e.stats().result_cache_hits, 4);
    assert_eq!(e.stats().compiled, 1);
}

#[test]
fn the_object_is_only_built_when_the_policy_may_read_it() {
    let e = engine();
    let c = claims("a");
    let calls = std::sync::atomic::AtomicUsize::new(0);
    let object = || {
        calls.fetch_add(1, Ordering::Relaxed);
        json!({"name": "n"})
    };
    let input = EvalInput {
        claims: &c,
        action: 'R',
        object: &object,
        meter: Meter::unmetered(),
    };
    e.evaluate(
        &json!({"rego": "package p\nimport rego.v1\nR if input.claims.label == \"a\""}),
        &input,
    );
    e.evaluate(&json!({"requirements": {"f": "yield-all"}}), &input);
    assert_eq!(calls.load(Ordering::Relaxed), 0);
    assert_eq!(
        e.evaluate(
            &json!({"rego": "package p\nimport rego.v1\nR if input.object.name == \"n\""}),
            &input
        ),
        Perms::R
    );
    assert_eq!(calls.load(Ordering::Relaxed), 1);
}

#[test]
fn rego_reading_the_action_is_cached_per_action() {
    let e = engine();
    let op = json!({"rego": "package p\nimport rego.v1\nR if input.action == \"R\"\nX if input.action == \"X\"\n"});
    let c = claims("a");
    for _ in 0..2 {
        assert_eq!(eval_with(&e, &op, &c, 'R', json!({})), Perms::R);
        assert_eq!(eval_with(&e, &op, &c, 'X', json!({})), Perms::X);
    }
    assert_eq!(e.stats().result_cache_hits, 2);
}

#[test]
fn clock_reading_rego_is_not_cached() {
    let e = engine();
    let op = json!({"rego": "package p\nimport rego.v1\nR if time.now_ns() > 0\n"});
    let c = claims("a");
    assert_eq!(eval(&e, &op, &c), Perms::R);
    assert_eq!(eval(&e, &op, &c), Perms::R);
    assert_eq!(e.stats().result_cache_hits, 0);
}

#[test]
fn a_timeout_denies_promptly_and_its_denial_is_reused_for_a_while() {
    let e = engine();
    let op = json!({"rego": "package p\nimport rego.v1\nR if count([x | some x in numbers.range(1, 100000); some y in numbers.range(1, 100000); x == y]) > 0\nX if true\n"});
    let c = claims("a");
    let t = Instant::now();
    assert_eq!(eval(&e, &op, &c), Perms::NONE);
    assert!(
        t.elapsed() < Duration::from_millis(600),
        "{:?}",
        t.elapsed()
    );
    // The same caller again (a second feed, a retry): the failure is reused, not re-run.
    assert_eq!(eval(&e, &op, &c), Perms::NONE);
    let s = e.stats();
    assert_eq!((s.result_cache_hits, s.errors, s.budget_stops), (1, 1, 1));
}

#[test]
fn a_spent_request_budget_evaluates_nothing_and_is_not_a_policy_failure() {
    let e = engine();
    let op = json!({"rego": "package p\nimport rego.v1\nR if true\n"});
    let c = claims("a");
    let spent = Budget::new(Duration::from_millis(1));
    spent.charge(Duration::from_millis(2));
    let object = || json!({});
    let input = EvalInput {
        claims: &c,
        action: 'R',
        object: &object,
        meter: Meter {
            budget: &spent,
            lane: Some(c.key()),
        },
    };
    assert_eq!(e.evaluate(&op, &input), Perms::NONE);
    assert_eq!(e.stats().skipped, 1);
    // Nothing was cached: with budget, the same evaluation grants.
    assert_eq!(eval(&e, &op, &c), Perms::R);
}

#[test]
fn a_policy_reading_the_object_is_cached_per_object() {
    let e = engine();
    let op = json!({"rego": "package p\nimport rego.v1\nR if input.object.name == \"a\"\n"});
    let c = claims("x");
    assert_eq!(eval_with(&e, &op, &c, 'R', json!({"name": "a"})), Perms::R);
    assert_eq!(
        eval_with(&e, &op, &c, 'R', json!({"name": "b"})),
        Perms::NONE
    );
    assert_eq!(eval_with(&e, &op, &c, 'R', json!({"name": "a"})), Perms::R);
    assert_eq!(e.stats().result_cache_hits, 1);
}

#[test]
fn equal_policies_share_a_compiled_entry_whatever_their_label_or_key_order() {
    let e = engine();
    let c = claims("a");
    let a = json!({"label": "one", "requirements": {"f": "yield", "a": [{"v": "R"}]}});
    let b = json!({"requirements": {"a": [{"v": "R"}], "f": "yield"}, "label": "two"});
    assert_eq!(eval(&e, &a, &c), Perms::R);
    assert_eq!(eval(&e, &b, &c), Perms::R);
    assert_eq!(e.stats().compiled, 1);
    assert_eq!(e.stats().result_cache_hits, 1);
}

#[test]
fn evaluation_from_many_threads() {
    let e = std::sync::Arc::new(engine());
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let e = e.clone();
            std::thread::spawn(move || {
                for i in 0..50 {
                    let op =
                        json!({"rego": SEED_REGO.replace("localuser", &format!("u{}", i % 5))});
                    let who = claims(&format!("u{}@email.com", (i + t) % 5));
                    let want = if (i + t) % 5 == i % 5 {
                        Perms::ALL
                    } else {
                        Perms::NONE
                    };
                    assert_eq!(eval(&e, &op, &who), want);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(e.stats().compiled, 5);
}

/// Rough costs, printed: `cargo test --release --lib policy::tests::costs -- --ignored --nocapture`.
#[test]
#[ignore]
fn costs() {
    let n = 5_000;
    let limits = PolicyLimits::default();
    let texts: Vec<String> = (0..n)
        .map(|i| SEED_REGO.replace("localuser", &format!("user{i}")))
        .collect();
    let t = Instant::now();
    let compiled: Vec<_> = texts
        .iter()
        .map(|t| rego::RegoPolicy::compile(t, limits.max_policy_bytes).unwrap())
        .collect();
    println!("(a) compile a small Rego module: {:?}", t.elapsed() / n);

    let e = engine();
    let c = claims("user7@email.com");
    let ops: Vec<Value> = texts.iter().map(|t| json!({ "rego": t })).collect();
    for op in &ops {
        eval(&e, op, &c);
    }
    let c2 = claims("someone@else.com");
    let t = Instant::now();
    for op in &ops {
        eval(&e, op, &c2);
    }
    println!(
        "(b) evaluate a cached compiled module, new input (engine.evaluate): {:?}",
        t.elapsed() / n
    );
    let t = Instant::now();
    for op in &ops {
        eval(&e, op, &c2);
    }
    println!(
        "(c) cached-result hit (engine.evaluate): {:?}",
        t.elapsed() / n
    );
    let input = rego::input_document(rego::to_value(c2.raw()), 'R', None);
    let eval_limits = rego::EvalLimits {
        timeout: limits.eval_timeout,
        instructions: limits.eval_instructions,
        memory: limits.eval_memory,
    };
    let t = Instant::now();
    for p in &compiled {
        p.evaluate(input.clone(), &eval_limits);
    }
    println!(
        "    bare RegoPolicy::evaluate (a VM per evaluation): {:?}",
        t.elapsed() / n
    );
    let t = Instant::now();
    for op in &ops {
        let _ = digest(&Form::Rego(op["rego"].as_str().unwrap()));
    }
    println!("    digest of the text: {:?}", t.elapsed() / n);
    let lisp = e
        .prepare(
            None,
            Some(r#"(if (contains email "x")(yield-all)(yield R X))"#),
        )
        .unwrap()
        .unwrap()
        .objectpolicy;
    let t = Instant::now();
    for i in 0..n {
        eval(&e, &lisp, &claims(&format!("{i}")));
    }
    println!(
        "    Lisp evaluate, result-cache misses (incl. building Claims): {:?}",
        t.elapsed() / n
    );
    let t = Instant::now();
    for _ in 0..n {
        eval(&e, &lisp, &c);
    }
    println!(
        "    Lisp evaluate, result-cache hits: {:?}",
        t.elapsed() / n
    );
    let before = rss_kb();
    let many: Vec<_> = (0..2000)
        .map(|i| {
            rego::RegoPolicy::compile(&SEED_REGO.replace("localuser", &format!("m{i}")), 65536)
                .unwrap()
        })
        .collect();
    println!(
        "    memory per compiled seed module: ~{} KB",
        (rss_kb() - before) / 2000
    );
    drop(many);
}

fn rss_kb() -> i64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn peak_rss_kb() -> i64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Peak RSS growth of pathological policies, one per process run:
/// `VELLUM_PATHOLOGICAL=arrays cargo test --release --lib policy::tests::pathological_memory -- --ignored --nocapture`
/// (`strings`, `copies`, `arrays`, `objects`, `range`; unset runs them all in one process).
#[test]
#[ignore]
fn pathological_memory() {
    let e = engine();
    let c = claims("a");
    let mut strings =
        String::from("package p\nimport rego.v1\ns0 := \"0123456789abcdef0123456789abcdef\"\n");
    let mut arrays = String::from("package p\nimport rego.v1\na0 := [1, 2, 3, 4, 5, 6, 7, 8]\n");
    let mut objects = String::from("package p\nimport rego.v1\no0 := {\"k\": 1}\n");
    for i in 1..60 {
        strings.push_str(&format!("s{i} := concat(\"\", [s{0}, s{0}])\n", i - 1));
        arrays.push_str(&format!("a{i} := array.concat(a{0}, a{0})\n", i - 1));
        objects.push_str(&format!(
            "o{i} := object.union(o{0}, {{sprintf(\"%d-%s\", [{i}, k]): v | some k, v in o{0}}})\n",
            i - 1
        ));
    }
    strings.push_str("R if count(s59) > 0\n");
    arrays.push_str("R if count(a59) > 0\n");
    objects.push_str("R if count(o59) > 0\n");
    let range = "package p\nimport rego.v1\nR if count([[x, y] | some x in numbers.range(1, 100000); some y in numbers.range(1, 100000)]) > 0\n".to_string();
    // Many guarded-size strings kept alive by a comprehension: pure allocation rate.
    let mut copies =
        String::from("package p\nimport rego.v1\ns0 := \"0123456789abcdef0123456789abcdef\"\n");
    for i in 1..15 {
        copies.push_str(&format!("s{i} := concat(\"\", [s{0}, s{0}])\n", i - 1));
    }
    copies.push_str("big := [concat(\"\", [s14, s14]) | some _ in numbers.range(1, 100000)]\nR if count(big) > 0\n");
    let only = std::env::var("VELLUM_PATHOLOGICAL").ok();
    for (name, text) in [
        ("strings", strings),
        ("copies", copies),
        ("arrays", arrays),
        ("objects", objects),
        ("range", range),
    ] {
        if only.as_deref().is_some_and(|o| o != name) {
            continue;
        }
        // Writing 5 to clear_refs resets the peak (VmHWM) to the current RSS.
        let _ = std::fs::write("/proc/self/clear_refs", "5");
        let base = rss_kb();
        let t = Instant::now();
        let p = eval(&e, &json!({ "rego": text }), &c);
        println!(
            "{name}: {p:?} in {:?}, peak RSS +{} MB",
            t.elapsed(),
            (peak_rss_kb() - base) / 1024
        );
    }
}
