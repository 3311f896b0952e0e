use super::*;
use serde_json::json;

const LIMITS: EvalLimits = EvalLimits {
    timeout: Duration::from_millis(100),
    instructions: 1_000_000,
    memory: 64 << 20,
};

fn compile(text: &str) -> Result<RegoPolicy, String> {
    RegoPolicy::compile(text, 65536)
}

fn eval(text: &str, input: serde_json::Value) -> Outcome {
    compile(text).unwrap().evaluate(to_value(&input), &LIMITS)
}

const SEED: &str = r#"package policy inOrg{input.claims.values.email[_]=="localuser@email.com"}C{inOrg}R{inOrg}U{inOrg}D{inOrg}X{inOrg}P{inOrg}"#;

#[test]
fn seed_module_is_v0() {
    let p = compile(SEED).unwrap();
    assert_eq!(p.declared.len(), 6);
    let o = p.evaluate(
        to_value(&json!({"claims": {"values": {"email": ["localuser@email.com"]}}})),
        &LIMITS,
    );
    assert_eq!(
        o,
        Outcome {
            perms: Perms::ALL,
            failed: None
        }
    );
    let o = p.evaluate(
        to_value(&json!({"claims": {"values": {"email": ["x"]}}})),
        &LIMITS,
    );
    assert_eq!(o.perms, Perms::NONE);
    assert!(p.input_use.claims_only);
    assert!(!p.input_use.reads_object);
}

#[test]
fn a_module_granting_nothing_grants_nothing_without_failing() {
    let o = eval(
        "package p\nimport rego.v1\nR if false\nhelper := 1\n",
        json!({}),
    );
    assert_eq!(o.perms, Perms::NONE);
    assert_eq!(o.failed, None);
    let o = eval("package p\nimport rego.v1\nhelper := 1\n", json!({}));
    assert_eq!(o.perms, Perms::NONE);
    assert_eq!(o.failed, None);
}

#[test]
fn non_boolean_letters_grant_nothing() {
    let o = eval(
        "package p\nimport rego.v1\nR := \"yes\"\nX := 1\nC if true\n",
        json!({}),
    );
    assert_eq!(o.perms, Perms::C);
}

#[test]
fn one_erroring_rule_does_not_hide_the_others() {
    // Conflicting values for one complete rule make it an error; R is still judged alone.
    let o = eval(
        "package p\nimport rego.v1\nC := true if true\nC := false if true\nR if true\n",
        json!({}),
    );
    assert_eq!(o.perms, Perms::R);
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
    let e = compile("package p\nimport rego.v1\nR if {").unwrap_err();
    assert!(!e.contains('\n'), "{e}");
    assert!(e.starts_with("line "), "{e}");
    let e = compile("package p\nR { x }").unwrap_err();
    assert!(e.contains("`x`"), "{e}");
}

#[test]
fn nesting_is_bounded_before_parsing() {
    let deep = format!("package p\nx := {}1{}\n", "[".repeat(30), "]".repeat(30));
    let t = Instant::now();
    let e = compile(&deep).unwrap_err();
    assert!(e.contains("nested deeper"), "{e}");
    assert!(t.elapsed() < Duration::from_millis(500));
    // Brackets in strings and comments do not count.
    let ok =
        "package p\nimport rego.v1\n# [[[[[[[[[[\nR if { \"[[[[[[[[[[[\" != `{{{{{{{{{{{{{` }\n";
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
    assert!(!u("R if time.now_ns() > 0").deterministic);
    assert!(!u("R if input.claims; x := rand.intn(\"a\", 3)").claims_only);
    // Other identifiers that contain "input" are not `input`.
    assert!(u("myinput := 1\ninput_x := 2\nR if input.claims").claims_only);
}

#[test]
fn timeouts_deny_promptly() {
    let text = "package p\nimport rego.v1\nR if count([x | some x in numbers.range(1, 100000); some y in numbers.range(1, 100000); x == y]) > 0\nX if true\n";
    let p = compile(text).unwrap();
    let limits = EvalLimits {
        instructions: usize::MAX,
        ..LIMITS
    };
    let t = Instant::now();
    let o = p.evaluate(to_value(&json!({})), &limits);
    // At most twice the limit (the issue's bound), however loaded the machine.
    assert!(
        t.elapsed() < Duration::from_millis(600),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(o, Outcome::denied(Failure::Budget));
}

#[test]
fn recursion_is_refused_when_the_policy_is_written() {
    for text in [
        "package p\nimport rego.v1\nf(x) := y if { y := f(x) }\nR if { f(1) }\n",
        "package p\nimport rego.v1\nf(n) := 0 if n == 0\nf(n) := f(n-1)+1 if n > 0\nR if { f(200000) > 0 }\n",
        "package p\nimport rego.v1\na if b\nb if a\nR if a\n",
        "package p\nimport rego.v1\na if data.p.b\nb if data.p.a\nR if a\n",
        "package p\nimport rego.v1\ns contains x if { some x in t }\nt contains x if { some x in s }\nR if count(s) > 0\n",
        "package p\nR { R }\n",
    ] {
        let e = compile(text).unwrap_err();
        assert!(e.contains("rego_recursion_error"), "{text}: {e}");
    }
    // A local variable named like a rule is not the rule.
    let o = eval(
        "package p\nimport rego.v1\nx := 1\nf(x) := x + 1\nR if { f(1) == 2 }\n",
        json!({}),
    );
    assert_eq!(o.perms, Perms::R);
}

#[test]
fn long_chains_of_rules_are_refused() {
    let mut s = String::from("package p\nimport rego.v1\nr0 := 0\n");
    for i in 1..=40 {
        s.push_str(&format!("r{i} := r{} + 1\n", i - 1));
    }
    s.push_str("R if r40 > 0\n");
    let e = compile(&s).unwrap_err();
    assert!(e.contains("chain of more than"), "{e}");
}

#[test]
fn unbounded_builtins_stop_without_stalling() {
    for (name, text) in [
        (
            "units.parse",
            "package p\nimport rego.v1\nR if { units.parse(\"1e999999999G\") > 0 }\nX if true\n",
        ),
        (
            "to_number",
            "package p\nimport rego.v1\nR if { to_number(\"1e999999999\") > 0 }\nX if true\n",
        ),
        (
            "numbers.range",
            "package p\nimport rego.v1\nR if { count(numbers.range(1, 100000000000)) > 0 }\nX if true\n",
        ),
    ] {
        let t = Instant::now();
        let o = eval(text, json!({}));
        assert!(t.elapsed() < Duration::from_secs(1), "{name}: {:?}", t.elapsed());
        // A guard is a budget: the whole evaluation stops, X included.
        assert_eq!(o, Outcome::denied(Failure::Budget), "{name}");
    }
}

#[test]
fn a_guard_cannot_make_not_true() {
    let o = eval(
        "package p\nimport rego.v1\nR if { not numbers.range(1, 100000000000) }\n",
        json!({}),
    );
    assert_eq!(o.perms, Perms::NONE);
}

#[test]
fn doubling_allocations_stop_at_the_memory_budget() {
    let mut s =
        String::from("package p\nimport rego.v1\nx0 := [1 | some i in numbers.range(1, 1000)]\n");
    for i in 1..=20 {
        s.push_str(&format!("x{i} := array.concat(x{}, x{})\n", i - 1, i - 1));
    }
    s.push_str("R if count(x20) > 0\n");
    let o = eval(&s, json!({}));
    assert_eq!(o, Outcome::denied(Failure::Budget));
}

#[test]
fn instruction_budget_stops_loops() {
    let text = "package p\nimport rego.v1\nR if count([x | some x in numbers.range(1, 100000); x > 0]) > 0\n";
    let p = compile(text).unwrap();
    let o = p.evaluate(
        to_value(&json!({})),
        &EvalLimits {
            instructions: 1000,
            timeout: Duration::from_secs(10),
            ..LIMITS
        },
    );
    assert_eq!(o, Outcome::denied(Failure::Budget));
}

#[test]
fn print_and_with_are_refused_with_a_reason() {
    let e = compile("package p\nimport rego.v1\nR if { print(\"x\"); true }\n").unwrap_err();
    assert!(e.contains("print is not available"), "{e}");
    let e =
        compile("package p\nimport rego.v1\nR if { input.x with input.x as true }\n").unwrap_err();
    assert!(e.contains("`with`"), "{e}");
}

/// Shapes that make regorus's passes recurse one level per few bytes, filled up to ~60 KiB.
/// They must be refused by counting, or compile and evaluate within the fixed stacks.
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
            "unary chain",
            format!(
                "package p\nimport rego.v1\nx := {}1\nR if x\n",
                "-".repeat(1000)
            ),
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
            "ref chain",
            fill("package p\nx := input", &|_| ".a".into(), &|_| {
                "\nR if x\n".into()
            }),
        ),
        (
            "call nesting",
            format!(
                "package p\nimport rego.v1\nx := {}1{}\nR if x\n",
                "abs(".repeat(5000),
                ")".repeat(5000)
            ),
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
        (
            "allowed depth everywhere",
            fill(
                "package p\nimport rego.v1\n",
                &|i| format!("r{i} := [[[[[{}]]]]]\n", "1+".repeat(20) + "1"),
                &|_| "R if true\n".into(),
            ),
        ),
        // Accepted shapes at the limits: the deepest the counts allow.
        (
            "deepest expression allowed",
            format!(
                "package p\nimport rego.v1\nx := {}\nR if x > 0\n",
                "1+".repeat(scan::MAX_EXPR_DEPTH - 6) + "1"
            ),
        ),
        (
            "deepest nesting allowed",
            format!(
                "package p\nimport rego.v1\nx := {}{}1{}{}\nR if count(x) > 0\n",
                "abs(".repeat(scan::MAX_NESTING - scan::MAX_BRACKET_NESTING),
                "[".repeat(scan::MAX_BRACKET_NESTING),
                "]".repeat(scan::MAX_BRACKET_NESTING),
                ")".repeat(scan::MAX_NESTING - scan::MAX_BRACKET_NESTING)
            ),
        ),
        ("longest chain of rules allowed, each as deep as allowed", {
            let deep = "1+".repeat(scan::MAX_EXPR_DEPTH - 8) + "1";
            let mut s = format!("package p\nimport rego.v1\nr0 := [[[[[{deep}]]]]]\n");
            // Each rule nests the one before five brackets deeper (values 150 deep), and
            // uses a helper as deep as expressions may be.
            for i in 1..deps::MAX_CALL_DEPTH - 2 {
                s.push_str(&format!(
                    "e{i} := {deep}\nr{i} := [[[[[r{}, e{i}]]]]]\n",
                    i - 1
                ));
            }
            s.push_str(&format!(
                "R if {{ count(r{0}) > 0; json.marshal(r{0}) != \"\"; r{0} == r{0} }}\n",
                deps::MAX_CALL_DEPTH - 3
            ));
            s
        }),
        ("widest flat policy", {
            let mut s = String::from("package p\nimport rego.v1\n");
            let mut i = 0;
            while s.len() < 65_000 {
                s.push_str(&format!("r{i} := input.a.b + {i}\n"));
                i += 1;
            }
            s.push_str("R if true\n");
            s
        }),
    ]
}

#[test]
fn deep_structures_do_not_overflow_the_stack() {
    // Run where a tokio worker would: a 2 MiB stack (compiles get their own thread).
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(|| {
            for (name, text) in deep_shapes() {
                assert!(text.len() <= 65536, "{name}");
                let t = Instant::now();
                let compiled = compile(&text);
                let took = t.elapsed();
                let p = match compiled {
                    Ok(p) => p,
                    Err(e) => {
                        println!("{name}: {} bytes, refused in {took:?}: {e}", text.len());
                        continue;
                    }
                };
                let t = Instant::now();
                let o = p.evaluate(to_value(&json!({})), &LIMITS);
                println!(
                    "{name}: {} bytes, compiled in {took:?}, {o:?} in {:?}",
                    text.len(),
                    t.elapsed()
                );
                assert!(!o.perms.contains(Perms::C), "{name}");
                // Dropping a compiled policy walks its tree too.
                drop(p);
            }
        })
        .unwrap()
        .join()
        .unwrap();
}

#[test]
fn the_gathering_rule_name_is_reserved() {
    let e = compile("package p\nimport rego.v1\n__vellum_letters := 1\nR if true\n").unwrap_err();
    assert!(e.contains("reserved"), "{e}");
}

/// Found by fuzzing (`fixtures/fuzz/rego/functions-nesting-their-argument.rego`): a function
/// that nests its argument, applied to itself over a few levels of functions, built a value
/// 48,000 levels deep within every budget, and dropping or comparing it recursed natively and
/// overflowed the 2 MiB stack the server evaluates on, aborting the process.
#[test]
fn policies_that_may_build_values_too_deep_are_refused_when_written() {
    let tower = |k: usize, levels: usize| {
        let mut s = String::from("package p\nimport rego.v1\nf1(x) := [[[[[[x]]]]]]\n");
        for l in 2..=levels {
            let inner = format!("{}x{}", format!("f{}(", l - 1).repeat(k), ")".repeat(k));
            s.push_str(&format!("f{l}(x) := {inner}\n"));
        }
        s.push_str(&format!(
            "v := f{levels}(1)\nR if {{ count(sort([v, v])) > 0 }}\n"
        ));
        s
    };
    let statements = |n: usize, calls: usize| {
        let mut s = String::from("package p\nimport rego.v1\nf(x) := y if {\n  y0 := [x]\n");
        for i in 1..n {
            s.push_str(&format!("  y{i} := [y{}]\n", i - 1));
        }
        s.push_str(&format!("  y := y{}\n}}\n", n - 1));
        s.push_str(&format!(
            "v := {}1{}\nR if {{ v == v }}\n",
            "f(".repeat(calls),
            ")".repeat(calls)
        ));
        s
    };
    for (name, text) in [
        ("tower 20 x 3", tower(20, 4)),
        ("tower 12 x 4", tower(12, 5)),
        ("statements composed", statements(200, 20)),
        (
            "through an import",
            "package p\nimport rego.v1\nimport data.p.f as g\nf(x) := [[[[[[x]]]]]]\n\
             h(x) := g(g(g(g(g(g(g(g(g(g(g(g(x))))))))))))\n\
             k(x) := h(h(h(h(h(h(h(h(h(h(h(h(x))))))))))))\nm(x) := k(k(x))\nR if m(1)\n"
                .to_string(),
        ),
        (
            "through the package path",
            "package p\nimport rego.v1\nf(x) := [[[[[[x]]]]]]\n\
             h(x) := data.p.f(data.p.f(data.p.f(data.p.f(data.p.f(data.p.f(data.p.f(data.p.f(data.p.f(data.p.f(data.p.f(data.p.f(x))))))))))))\n\
             k(x) := h(h(h(h(h(h(h(h(h(h(h(h(x))))))))))))\nm(x) := k(k(x))\nR if m(1)\n"
                .to_string(),
        ),
    ] {
        let e = compile(&text).unwrap_err();
        assert!(e.contains("nested more than"), "{name}: {e}");
    }
    // Reading the package's own document is recursion (it holds the rule), as OPA says.
    let e = compile("package p\nimport rego.v1\nx := [data.p]\nR if x\n").unwrap_err();
    assert!(e.contains("rego_recursion_error"), "{e}");
}

#[test]
fn the_deepest_values_allowed_are_handled_on_a_2_mib_stack() {
    // 6 x 12 x 12 = 864 levels, within the limit, on a 128-level input: compared, sorted,
    // hashed into a set, marshalled and dropped on the stack the server evaluates on.
    let text = "package p\nimport rego.v1\nf(x) := [[[[[[x]]]]]]\n\
                g(x) := f(f(f(f(f(f(f(f(f(f(f(f(x))))))))))))\n\
                h(x) := g(g(g(g(g(g(g(g(g(g(g(g(x))))))))))))\n\
                v := h(input.object)\n\
                R if { count(sort([v, [v]])) > 0 }\nU if { count({v, [v]}) > 0 }\n\
                X if { json.marshal(v) != \"\" }\nD if { v == h(input.object) }\n";
    let p = compile(text).unwrap();
    let mut object = json!(1);
    for _ in 0..127 {
        object = json!([object]);
    }
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || {
            let o = p.evaluate(to_value(&json!({ "object": object })), &LIMITS);
            assert_eq!(o.perms, Perms::R | Perms::U | Perms::X | Perms::D, "{o:?}");
        })
        .unwrap()
        .join()
        .unwrap();
}

#[test]
fn a_long_chain_of_bindings_is_judged_in_linear_time() {
    // 1,500 bindings, each in a comprehension of one statement, written last to first: judged
    // in the order they depend on, not a pass per binding (which took seconds).
    let comps: Vec<String> = (1..1500)
        .rev()
        .map(|i| format!("[b{i}|b{i}:=f(b{})]", i - 1))
        .collect();
    let s = format!(
        "package p\nimport rego.v1\nf(x) := [x]\ng(x) := [{}, [b0|b0:=f(x)]]\nR if g(1)\n",
        comps.join(",")
    );
    assert!(s.len() <= 65536, "{}", s.len());
    // The best of three, so that a busy machine does not fail it.
    let best = (0..3)
        .map(|_| {
            let t = Instant::now();
            let e = compile(&s).unwrap_err();
            assert!(e.contains("nested more than"), "{e}");
            t.elapsed()
        })
        .min()
        .unwrap();
    assert!(best < Duration::from_secs(1), "{best:?}");
}

#[test]
fn ordinary_nesting_is_not_refused() {
    // A function that nests 20 levels, called 60 times side by side: the calls do not add up.
    let calls: Vec<String> = (0..60).map(|i| format!("wrap({i})")).collect();
    let mut s = format!(
        "package p\nimport rego.v1\nw(x) := [[[[[x]]]]]\nwrap(x) := w(w(w(w(x))))\n\
         R if {{ count([{}]) == 60 }}\n",
        calls.join(", ")
    );
    // Rules built on rules, each a few levels deeper, up to the chain limit.
    for i in 1..30 {
        s.push_str(&format!("r{i} := [{{\"up\": r{}}}]\n", i - 1));
    }
    s.push_str("r0 := {\"a\": [1, [2, [3]]]}\nX if count(r29) > 0\n");
    let o = eval(&s, json!({}));
    assert_eq!(o.perms, Perms::R | Perms::X, "{o:?}");
}

/// Found by fuzzing (`fixtures/fuzz/rego/bare-rule-hides-the-others.rego`): regorus's v0 parser
/// accepts a rule that is only a name, and its VM then left every letter undefined without an
/// error, so `D = true` beside a bare `R` granted nothing, and that was cached as the answer.
#[test]
fn a_rule_that_is_only_a_name_is_refused() {
    for text in [
        "package p\nD = true\nR\n",
        "package p\nD = true\nh\nR { h }\n",
        "package p\nD = true\nf(x)\n",
    ] {
        let e = compile(text).unwrap_err();
        assert!(
            e.contains("rule must have a body or assignment"),
            "{text:?}: {e}"
        );
    }
    // What has a body, a value or a key is not touched.
    let o = eval(
        "package p\nimport future.keywords\nD = true\nR { true }\nh contains 1\nX = h\n",
        json!({}),
    );
    assert_eq!(o.perms, Perms::R | Perms::D);
}

/// Found by fuzzing (`fixtures/fuzz/rego/time-layout-not-ascii.rego`): regorus panicked on a time
/// layout holding a character of several bytes. The panic was caught, but it denied every
/// letter of the evaluation, even `X := true`, and printed a backtrace to the log.
#[test]
fn a_time_layout_that_is_not_ascii_is_a_wrong_argument_not_a_panic() {
    let o = eval(
        "package p\nimport rego.v1\nC if time.parse_ns(\"\u{540d}\u{524d}\", \"x\")\n\
         R if time.format([0, \"UTC\", \"\u{e9}\"])\n\
         U if time.format([0, \"UTC\", \"2006\"]) == \"1970\"\nX := true\n",
        json!({}),
    );
    assert_eq!(o.perms, Perms::U | Perms::X, "{o:?}");
}

/// Found by fuzzing (`fixtures/fuzz/rego/if-without-import-under-a-comment.rego`): whether to
/// try regorus's v0 parser was judged on the words of the text. "future.keywords" in a comment
/// let a v0 parse run over thousands of `if`s, each printing a warning to the server's stderr
/// (3,400 warnings, 530 KB, from one 60 KB write); and "if" in a comment or a string kept a v0
/// module from being read as v0 at all.
#[test]
fn v0_is_tried_only_where_it_prints_no_warning_and_words_in_comments_do_not_count() {
    let k = |t: &str| keywords(t, 65536);
    let mut spam = String::from("package p\n# future.keywords\nq { true }\n");
    for i in 0..3000 {
        spam.push_str(&format!("r{i} if {{ true }}\n"));
    }
    for (text, v0) in [
        (spam.as_str(), false),
        (
            "package p\nimport future.keywords.in\nr { every x in [1] { x } }\n",
            false,
        ),
        ("package p\nr { some x in [1] }\n", false),
        (
            "package p\nimport future.keywords\nr if { some x in [1] }\n",
            true,
        ),
        (
            "package p\nimport future.keywords.if\nr if { true }\n",
            true,
        ),
        (
            "package p\n# allow if the caller owns it\nR { input.x }\n",
            true,
        ),
        (
            "package p\nR { contains(input.s, \"if\") }\nX { input.if }\n",
            true,
        ),
        // Found by a long fuzz run: an import below the uses came too late to stop warnings.
        (
            "package p\nq { true }\nr if { true }\nimport future.keywords\n",
            false,
        ),
    ] {
        assert_eq!(k(text).try_v0(), v0, "{text:.80}");
    }
    // The module whose comment has an "if" is read as v0, as it is.
    let o = eval(
        "package p\n# R if the caller is root\nR { input.claims.label == \"root\" }\nX { true }\n",
        json!({"claims": {"label": "root"}}),
    );
    assert_eq!(o.perms, Perms::R | Perms::X, "{o:?}");
    // The spamming one is refused with the v1 parser's complaint.
    let e = compile(&spam).unwrap_err();
    assert!(e.contains("line 3"), "{e}");
}

/// Found by fuzzing (`fixtures/fuzz/rego/a-body-naming-thousands-of-rules.rego`): regorus's
/// analysis of a body whose statements name rules is superlinear, and a 60 KB body of 2,900
/// such statements took 0.6-1.2 s to compile before its VM compiler refused it anyway (a
/// register per statement, 255 at most).
#[test]
fn a_query_of_more_than_255_statements_is_refused_before_regorus_analyses_it() {
    let body = |n: usize| {
        let mut s = String::from("package p\nimport rego.v1\n");
        for i in 0..n {
            s.push_str(&format!("m{i} := {i}\n"));
        }
        let all: Vec<String> = (0..n).map(|i| format!("m{i}")).collect();
        s.push_str(&format!("R if {{ {} }}\n", all.join("; ")));
        s
    };
    let text = body(2900);
    assert!(text.len() <= 65536);
    // The best of three, so that a busy machine does not fail it.
    let best = (0..3)
        .map(|_| {
            let t = Instant::now();
            let e = compile(&text).unwrap_err();
            assert!(e.contains("more than 255 statements"), "{e}");
            t.elapsed()
        })
        .min()
        .unwrap();
    assert!(best < Duration::from_millis(500), "{best:?}");
    assert_eq!(eval(&body(200), json!({})).perms, Perms::R);
}

/// Found by fuzzing (`fixtures/fuzz/rego/range-from-past-f64-precision.rego`): the guards saw no
/// number in 2^53 + 1 (regorus gives no f64 for it) and let the call through, and
/// `numbers.range(9007199254740993, 1e-400)` asked for 2^53 elements at once: the allocation
/// failed and aborted the process.
#[test]
fn sizes_from_numbers_past_f64_precision_are_refused_not_allocated() {
    for call in [
        "count(numbers.range(9007199254740993, 1e-400)) > 0",
        "count(numbers.range(0, 9007199254740993)) > 0",
        "count(numbers.range_step(0, 9007199254740993, 1)) > 0",
        "bits.lsh(1, 9007199254740993) > 0",
    ] {
        let o = eval(
            &format!("package p\nimport rego.v1\nR if {call}\nX := true\n"),
            json!({}),
        );
        assert_eq!(o, Outcome::denied(Failure::Budget), "{call}");
    }
    // A small range between big numbers is counted exactly, and allowed.
    let o = eval(
        "package p\nimport rego.v1\nR if count(numbers.range(9007199254740993, 9007199254740995)) == 3\n",
        json!({}),
    );
    assert_eq!(o.perms, Perms::R, "{o:?}");
}
