//! Size guards for the few Rego builtins whose single call can allocate or compute far more
//! than its arguments hold.
//!
//! regorus checks its deadline between statements and loop iterations, never inside a
//! builtin, and without its `allocator-memory-limits` feature (which we must not enable: it
//! replaces the process-wide allocator) nothing bounds one builtin's allocation. So
//! `numbers.range(1, 1e11)` would ask for terabytes at once and abort the process, and
//! `sprintf("%1000000000d", [1])` allocates a gigabyte before the clock is looked at.
//! Everything else a policy does is paced by the deadline (see the memory note on
//! [`super::PolicyLimits`]).
//!
//! regorus looks extensions up before builtins, so each guarded name is registered as an
//! extension that first bounds the result's size from the arguments and then hands the
//! call to the real builtin, evaluated in a separate prepared engine that has no
//! extensions. The builtin's own semantics (including undefined on bad arguments) are kept
//! exactly; only oversized calls become errors, which grant nothing.

use std::sync::OnceLock;
use std::time::Duration;

use anyhow::anyhow;
use regorus::{Engine, Value};

/// Most elements a range or CIDR expansion may produce in one call.
pub const MAX_ELEMENTS: f64 = 100_000.0;
/// Most bytes a string-building builtin may produce in one call.
pub const MAX_BYTES: usize = 1 << 20;
/// Most bits of an integer that shifting, multiplying out or formatting may reach in one call.
pub const MAX_BITS: u64 = 1 << 16;

type Check = fn(&[Value]) -> Result<(), String>;

/// (builtin, number of arguments, size check).
const GUARDS: &[(&str, u8, Check)] = &[
    ("numbers.range", 2, check_range),
    ("numbers.range_step", 3, check_range_step),
    ("net.cidr_expand", 1, check_cidr_expand),
    ("bits.lsh", 2, check_lsh),
    ("product", 1, check_product),
    ("format_int", 2, check_format_int),
    ("to_number", 1, check_to_number),
    ("concat", 2, check_concat),
    ("replace", 3, check_replace),
    ("strings.replace_n", 2, check_replace_n),
    ("regex.replace", 3, check_regex_replace),
    ("sprintf", 2, check_sprintf),
    ("json.marshal_with_options", 2, check_marshal_with_options),
];

const DELEGATE_PACKAGE: &str = "vellum_guarded_builtins";

/// The delegate rule for a builtin. Prefixed: a rule named like the builtin would shadow it.
fn rule_name(builtin: &str) -> String {
    format!("call_{}", builtin.replace('.', "_"))
}

/// A prepared engine with one rule per guarded builtin: `call_numbers_range := numbers.range(input[0], input[1])`.
fn delegate_engine() -> &'static Option<Engine> {
    static ENGINE: OnceLock<Option<Engine>> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let mut text = format!("package {DELEGATE_PACKAGE}\nimport rego.v1\n");
        for (name, nargs, _) in GUARDS {
            let args: Vec<String> = (0..*nargs).map(|i| format!("input[{i}]")).collect();
            text.push_str(&format!(
                "{} := {name}({})\n",
                rule_name(name),
                args.join(", ")
            ));
        }
        let mut e = Engine::new();
        e.add_policy("guarded_builtins.rego".into(), text).ok()?;
        e.set_gather_prints(true);
        // Prepare once so that clones start ready.
        e.eval_query("true".into(), false).ok()?;
        Some(e)
    })
}

fn delegate(name: &str, args: Vec<Value>) -> anyhow::Result<Value> {
    let base = delegate_engine()
        .as_ref()
        .ok_or_else(|| anyhow!("internal error: guarded builtins unavailable"))?;
    let mut e = base.clone();
    // The checks bound the work; the timer is only a second line of defence.
    e.set_execution_timer_config(regorus::utils::limits::ExecutionTimerConfig {
        limit: Duration::from_secs(1),
        check_interval: std::num::NonZeroU32::MIN,
    });
    e.set_input(Value::from(args));
    e.eval_rule(format!("data.{DELEGATE_PACKAGE}.{}", rule_name(name)))
}

/// Registers the guarded builtins that `text` names on a policy engine. A builtin can only
/// be called by writing its name, and every registered extension is copied on every clone
/// of the engine (that is, on every evaluation), so unnamed ones are left out.
pub fn install(engine: &mut Engine, text: &str) -> anyhow::Result<()> {
    for &(name, nargs, check) in GUARDS.iter().filter(|(name, _, _)| text.contains(name)) {
        engine.add_extension(
            name.to_string(),
            nargs,
            Box::new(move |args: Vec<Value>| {
                check(&args).map_err(|m| anyhow!("{name}: {m}"))?;
                delegate(name, args)
            }),
        )?;
    }
    Ok(())
}

fn num(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        _ => None,
    }
}

fn int_bits(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_big().map(|b| b.bits()),
        _ => None,
    }
}

fn string(v: &Value) -> Option<&str> {
    match v {
        Value::String(s) => Some(s),
        _ => None,
    }
}

fn too_many(count: f64) -> Result<(), String> {
    if count.is_finite() && count <= MAX_ELEMENTS {
        Ok(())
    } else {
        Err(format!("would produce more than {MAX_ELEMENTS} elements"))
    }
}

fn too_long(bytes: usize) -> Result<(), String> {
    if bytes <= MAX_BYTES {
        Ok(())
    } else {
        Err(format!("result would exceed {MAX_BYTES} bytes"))
    }
}

fn check_range(a: &[Value]) -> Result<(), String> {
    match (num(&a[0]), num(&a[1])) {
        (Some(x), Some(y)) => too_many((y - x).abs() + 1.0),
        // Non-numbers: the builtin reports them.
        _ => Ok(()),
    }
}

fn check_range_step(a: &[Value]) -> Result<(), String> {
    match (num(&a[0]), num(&a[1]), num(&a[2])) {
        // regorus divides by the step without checking it (a zero step panics).
        (_, _, Some(s)) if s.is_nan() || s < 1.0 => Err("step must be a positive integer".into()),
        (Some(x), Some(y), Some(s)) => too_many((y - x).abs() / s + 1.0),
        _ => Ok(()),
    }
}

fn check_cidr_expand(a: &[Value]) -> Result<(), String> {
    let Some(cidr) = string(&a[0]) else {
        return Ok(());
    };
    let bits = if cidr.contains(':') { 128 } else { 32 };
    let prefix: u32 = match cidr.rsplit_once('/') {
        Some((_, p)) => p.trim().parse().unwrap_or(bits),
        None => bits,
    };
    let host_bits = bits.saturating_sub(prefix.min(bits));
    too_many(2f64.powi(host_bits as i32))
}

fn check_lsh(a: &[Value]) -> Result<(), String> {
    match num(&a[1]) {
        Some(s) if s > MAX_BITS as f64 => Err(format!("shift larger than {MAX_BITS} bits")),
        _ => Ok(()),
    }
}

fn check_product(a: &[Value]) -> Result<(), String> {
    let items: Box<dyn Iterator<Item = &Value>> = match &a[0] {
        Value::Array(xs) => Box::new(xs.iter()),
        Value::Set(xs) => Box::new(xs.iter()),
        _ => return Ok(()),
    };
    let mut bits = 0u64;
    for x in items {
        bits = bits.saturating_add(int_bits(x).unwrap_or(64));
        if bits > MAX_BITS {
            return Err(format!("result would exceed {MAX_BITS} bits"));
        }
    }
    Ok(())
}

fn check_format_int(a: &[Value]) -> Result<(), String> {
    match int_bits(&a[0]) {
        Some(b) if b > MAX_BITS => Err(format!("number larger than {MAX_BITS} bits")),
        _ => Ok(()),
    }
}

fn check_to_number(a: &[Value]) -> Result<(), String> {
    match string(&a[0]) {
        // Parsing a long run of digits into a big integer is quadratic.
        Some(s) if s.len() > 4096 => Err("string longer than 4096 bytes".into()),
        _ => Ok(()),
    }
}

fn check_concat(a: &[Value]) -> Result<(), String> {
    let delim = string(&a[0]).map_or(0, str::len);
    let items: Box<dyn Iterator<Item = &Value>> = match &a[1] {
        Value::Array(xs) => Box::new(xs.iter()),
        Value::Set(xs) => Box::new(xs.iter()),
        _ => return Ok(()),
    };
    let mut total = 0usize;
    for x in items {
        total = total.saturating_add(string(x).map_or(0, str::len) + delim);
        too_long(total)?;
    }
    Ok(())
}

fn check_replace(a: &[Value]) -> Result<(), String> {
    let (Some(s), Some(old), Some(new)) = (string(&a[0]), string(&a[1]), string(&a[2])) else {
        return Ok(());
    };
    let matches = if old.is_empty() {
        s.chars().count() + 1
    } else {
        s.len() / old.len()
    };
    too_long(s.len().saturating_add(matches.saturating_mul(new.len())))
}

fn check_replace_n(a: &[Value]) -> Result<(), String> {
    let (Value::Object(patterns), Some(s)) = (&a[0], string(&a[1])) else {
        return Ok(());
    };
    let longest = patterns
        .iter()
        .filter_map(|(_, v)| string(v))
        .map(str::len)
        .max()
        .unwrap_or(0);
    too_long(
        s.len()
            .saturating_add((s.len() + 1).saturating_mul(longest)),
    )
}

fn check_regex_replace(a: &[Value]) -> Result<(), String> {
    let (Some(s), Some(value)) = (string(&a[0]), string(&a[2])) else {
        return Ok(());
    };
    // Each match is replaced by `value`, whose `$n` references can each expand to all of `s`.
    let refs = value.matches('$').count();
    let per_match = value.len().saturating_add(refs.saturating_mul(s.len()));
    too_long(
        s.len()
            .saturating_add((s.len() + 1).saturating_mul(per_match)),
    )
}

/// An upper estimate of a value's printed size, and its nesting depth. Stops early once
/// past [`MAX_BYTES`], so it never walks much more than it allows.
fn printed_size(v: &Value, depth: usize, acc: &mut usize, max_depth: &mut usize) {
    *max_depth = (*max_depth).max(depth);
    if *acc > MAX_BYTES {
        return;
    }
    match v {
        Value::String(s) => *acc += s.len() * 6 + 2, // worst case: every byte escaped
        Value::Number(_) => *acc += int_bits(v).map_or(32, |b| (b / 3 + 2) as usize),
        Value::Array(xs) => {
            *acc += 2;
            for x in xs.iter() {
                *acc += 1;
                printed_size(x, depth + 1, acc, max_depth);
            }
        }
        Value::Set(xs) => {
            *acc += 2;
            for x in xs.iter() {
                *acc += 1;
                printed_size(x, depth + 1, acc, max_depth);
            }
        }
        Value::Object(m) => {
            *acc += 2;
            for (k, x) in m.iter() {
                *acc += 2;
                printed_size(k, depth + 1, acc, max_depth);
                printed_size(x, depth + 1, acc, max_depth);
            }
        }
        _ => *acc += 5,
    }
}

fn size_of(v: &Value) -> (usize, usize) {
    let (mut acc, mut depth) = (0, 0);
    printed_size(v, 0, &mut acc, &mut depth);
    (acc, depth)
}

fn check_sprintf(a: &[Value]) -> Result<(), String> {
    let Some(fmt) = string(&a[0]) else {
        return Ok(());
    };
    // Widths and precisions are digit runs in the format; bound each by its value.
    let mut widths = 0usize;
    for run in fmt
        .split(|c: char| !c.is_ascii_digit())
        .filter(|r| !r.is_empty())
    {
        let w: usize = run.parse().unwrap_or(usize::MAX);
        widths = widths.saturating_add(w);
    }
    let verbs = fmt.matches('%').count();
    let largest_arg = match &a[1] {
        Value::Array(xs) => xs.iter().map(|x| size_of(x).0).max().unwrap_or(0),
        _ => 0,
    };
    too_long(
        fmt.len()
            .saturating_add(widths)
            .saturating_add(verbs.saturating_mul(largest_arg)),
    )
}

fn check_marshal_with_options(a: &[Value]) -> Result<(), String> {
    let (size, depth) = size_of(&a[0]);
    let opt = |k: &str| match &a[1] {
        Value::Object(m) => m.get(&Value::from(k)).and_then(string).map_or(0, str::len),
        _ => 0,
    };
    // Pretty printing repeats the prefix on each line and the indent once per level.
    let per_line = 1 + opt("prefix") + opt("indent").saturating_mul(depth + 1);
    too_long(size.saturating_mul(per_line))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(expr: &str) -> anyhow::Result<Value> {
        let mut e = Engine::new();
        let text = format!("package t\nimport rego.v1\nx := {expr}\n");
        install(&mut e, &text)?;
        e.add_policy("t.rego".into(), text)?;
        e.eval_rule("data.t.x".into())
    }

    #[test]
    fn guarded_builtins_keep_their_meaning() {
        assert_eq!(eval("numbers.range(1, 3)").unwrap().to_string(), "[1,2,3]");
        assert_eq!(eval("numbers.range(3, 1)").unwrap().to_string(), "[3,2,1]");
        assert_eq!(
            eval("numbers.range_step(1, 6, 2)").unwrap().to_string(),
            "[1,3,5]"
        );
        assert_eq!(
            eval("concat(\"/\", [\"a\", \"b\"])").unwrap(),
            Value::from("a/b")
        );
        assert_eq!(
            eval("replace(\"aXa\", \"X\", \"b\")").unwrap(),
            Value::from("aba")
        );
        assert_eq!(
            eval("sprintf(\"%s-%d\", [\"a\", 3])").unwrap(),
            Value::from("a-3")
        );
        assert_eq!(
            eval("regex.replace(\"abc\", \"b\", \"$0$0\")").unwrap(),
            Value::from("abbc")
        );
        assert_eq!(
            eval("strings.replace_n({\"a\": \"b\"}, \"aa\")").unwrap(),
            Value::from("bb")
        );
        assert_eq!(
            eval("count(net.cidr_expand(\"10.0.0.0/30\"))").unwrap(),
            Value::from(4u64)
        );
        assert_eq!(eval("bits.lsh(1, 4)").unwrap(), Value::from(16u64));
        assert_eq!(eval("product([2, 3])").unwrap(), Value::from(6u64));
        assert_eq!(eval("to_number(\"12\")").unwrap(), Value::from(12u64));
        assert_eq!(eval("format_int(10, 2)").unwrap(), Value::from("1010"));
        // Bad arguments fail as they do with the plain builtin.
        let plain = |expr: &str| {
            let mut e = Engine::new();
            e.add_policy("t.rego".into(), format!("package t\nx := {expr}\n"))
                .unwrap();
            e.eval_rule("data.t.x".into())
        };
        for bad in [
            "concat(\"/\", [1])",
            "numbers.range(1, \"a\")",
            "sprintf(1, [])",
            "to_number(\"x\")",
        ] {
            assert_eq!(eval(bad).is_err(), plain(bad).is_err(), "{bad}");
            if let (Ok(a), Ok(b)) = (eval(bad), plain(bad)) {
                assert_eq!(a, b, "{bad}");
            }
        }
    }

    #[test]
    fn oversized_calls_are_errors() {
        for expr in [
            "numbers.range(1, 100000000000)",
            "numbers.range_step(1, 10, 0)",
            "count(net.cidr_expand(\"10.0.0.0/8\"))",
            "count(net.cidr_expand(\"::/0\"))",
            "bits.lsh(1, 4000000000)",
            "sprintf(\"%1000000000d\", [1])",
            "replace(concat(\"\", [\"a\" | some _ in numbers.range(1, 2000)]), \"\", concat(\"\", [\"b\" | some _ in numbers.range(1, 2000)]))",
        ] {
            let err = eval(expr).unwrap_err().to_string();
            assert!(
                err.contains("would") || err.contains("step") || err.contains("shift"),
                "{expr}: {err}"
            );
        }
    }
}
