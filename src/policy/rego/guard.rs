//! Size guards for the Rego builtins whose single call can allocate or compute far more than
//! its arguments hold.
//!
//! The VM checks its time, instruction and memory budgets between instructions, never inside
//! one, and one builtin call is one instruction. So `numbers.range(1, 1e11)` would ask for
//! terabytes at once and abort the process, `units.parse("1e999999999G")` computes a
//! billion-digit number and never returns, and `split(s, "")` of a 60 MB string builds sixty
//! million strings before the budget is looked at. Everything else a policy does is paced by
//! the budgets, which the VM checks at every instruction.
//!
//! The VM calls builtins through function pointers its program resolves once
//! (`Program::resolved_builtins`), so each guarded builtin is replaced there by a function
//! that first bounds the call from its arguments and then calls the real builtin from
//! regorus's own table. The builtin's semantics (including undefined on bad arguments) are
//! kept exactly; an oversized call fails as a resource limit, which the VM propagates even
//! where builtin errors are otherwise undefined, so it grants nothing (a guard cannot make
//! `not f(x)` true).

use anyhow::anyhow;
use regorus::rvm::program::Program;
use regorus::unstable::{Expr, Ref, Span, BUILTINS};
use regorus::{LimitError, Value};

/// Most elements a range, split, expansion or concatenation may produce in one call.
pub const MAX_ELEMENTS: f64 = 100_000.0;
/// Most bytes a string-building builtin may produce in one call.
pub const MAX_BYTES: usize = 1 << 20;
/// Most bytes an encoder (`json.marshal`, `hex.encode`, ...) may produce in one call.
pub const MAX_ENCODED_BYTES: usize = 4 << 20;
/// Most bits of an integer that shifting, multiplying out or formatting may reach in one call.
pub const MAX_BITS: u64 = 1 << 16;
/// Largest decimal exponent a number read from a string may carry (`1e400` is already
/// beyond every float; `1e999999999` would take forever to expand into an integer).
pub const MAX_EXPONENT: i64 = 400;

type Check = fn(&[Value]) -> Result<(), String>;
type Builtin = fn(&Span, &[Ref<Expr>], &[Value], bool) -> anyhow::Result<Value>;

/// Calls the real builtin `name` once `check` accepts the arguments.
fn guarded(
    name: &str,
    check: Check,
    span: &Span,
    params: &[Ref<Expr>],
    args: &[Value],
    strict: bool,
) -> anyhow::Result<Value> {
    if check(args).is_err() {
        // A resource limit: the VM stops the evaluation instead of reading it as undefined.
        return Err(anyhow::Error::new(LimitError::MemoryLimitExceeded {
            usage: u64::MAX,
            limit: MAX_ENCODED_BYTES as u64,
        }));
    }
    let (real, _) = BUILTINS
        .get(name)
        .ok_or_else(|| anyhow!("internal error: builtin {name} is missing"))?;
    real(span, params, args, strict)
}

macro_rules! guards {
    ($($fname:ident: $name:literal => $check:path,)*) => {
        $(
            fn $fname(span: &Span, params: &[Ref<Expr>], args: &[Value], strict: bool)
                -> anyhow::Result<Value> {
                guarded($name, $check, span, params, args, strict)
            }
        )*
        /// (builtin, guarded replacement, check).
        const GUARDS: &[(&str, Builtin, Check)] = &[$(($name, $fname, $check),)*];
    };
}

guards! {
    g_numbers_range: "numbers.range" => check_range,
    g_numbers_range_step: "numbers.range_step" => check_range_step,
    g_net_cidr_expand: "net.cidr_expand" => check_cidr_expand,
    g_bits_lsh: "bits.lsh" => check_lsh,
    g_product: "product" => check_product,
    g_format_int: "format_int" => check_format_int,
    g_to_number: "to_number" => check_to_number,
    g_units_parse: "units.parse" => check_units,
    g_units_parse_bytes: "units.parse_bytes" => check_units,
    g_concat: "concat" => check_concat,
    g_array_concat: "array.concat" => check_array_concat,
    g_replace: "replace" => check_replace,
    g_strings_replace_n: "strings.replace_n" => check_replace_n,
    g_regex_replace: "regex.replace" => check_regex_replace,
    g_sprintf: "sprintf" => check_sprintf,
    g_json_marshal: "json.marshal" => check_encode,
    g_json_marshal_with_options: "json.marshal_with_options" => check_marshal_with_options,
    g_hex_encode: "hex.encode" => check_encode,
    g_base64_encode: "base64.encode" => check_encode,
    g_base64url_encode: "base64url.encode" => check_encode,
    g_base64url_encode_no_pad: "base64url.encode_no_pad" => check_encode,
    g_glob_quote_meta: "glob.quote_meta" => check_encode,
    g_split: "split" => check_split,
    g_indexof_n: "indexof_n" => check_split,
    g_regex_split: "regex.split" => check_regex_pieces,
    g_regex_find_n: "regex.find_n" => check_regex_pieces,
}

/// Calls the real builtin `name` once `check` accepts the arguments; otherwise fails the way
/// the builtin fails on a wrong argument (undefined, or an error in strict mode).
fn checked(
    name: &str,
    check: Check,
    span: &Span,
    params: &[Ref<Expr>],
    args: &[Value],
    strict: bool,
) -> anyhow::Result<Value> {
    if let Err(why) = check(args) {
        return Err(anyhow!("{name}: {why}"));
    }
    let (real, _) = BUILTINS
        .get(name)
        .ok_or_else(|| anyhow!("internal error: builtin {name} is missing"))?;
    real(span, params, args, strict)
}

fn c_time_parse_ns(
    span: &Span,
    params: &[Ref<Expr>],
    args: &[Value],
    strict: bool,
) -> anyhow::Result<Value> {
    checked(
        "time.parse_ns",
        check_time_parse,
        span,
        params,
        args,
        strict,
    )
}

fn c_time_format(
    span: &Span,
    params: &[Ref<Expr>],
    args: &[Value],
    strict: bool,
) -> anyhow::Result<Value> {
    checked("time.format", check_time_format, span, params, args, strict)
}

/// Builtins regorus panics on for some arguments, with the check that keeps those from it. A
/// panic is caught, but it denies every letter of the evaluation (even one literally true) and
/// prints a backtrace to the log; the checked call is an ordinary wrong argument instead.
const CHECKS: &[(&str, Builtin, Check)] = &[
    ("time.parse_ns", c_time_parse_ns, check_time_parse),
    ("time.format", c_time_format, check_time_format),
];

/// Replaces the guarded and checked builtins a compiled program calls by their guarded
/// versions.
pub fn install(program: &mut Program) -> Result<(), String> {
    if program.resolved_builtins.len() != program.builtin_info_table.len() {
        return Err("internal error: the program's builtins are not resolved".into());
    }
    for (i, info) in program.builtin_info_table.iter().enumerate() {
        let found = GUARDS
            .iter()
            .chain(CHECKS)
            .find(|(n, _, _)| *n == info.name);
        if let Some((_, replacement, _)) = found {
            program.resolved_builtins[i].0 = *replacement;
        }
    }
    Ok(())
}

/// regorus 0.14.1 cuts a time layout after its first byte wherever it meets a character it
/// does not know (`GoTimeFormatItems`), which panics inside a character of several bytes: a
/// layout must be ASCII.
fn ascii_layout(layout: &str) -> Result<(), String> {
    if layout.is_ascii() {
        Ok(())
    } else {
        Err("the layout must be ASCII".into())
    }
}

/// `time.parse_ns(layout, value)`.
fn check_time_parse(a: &[Value]) -> Result<(), String> {
    string(&a[0]).map_or(Ok(()), ascii_layout)
}

/// `time.format([ns, tz, layout])`.
fn check_time_format(a: &[Value]) -> Result<(), String> {
    match &a[0] {
        Value::Array(xs) => xs.get(2).and_then(string).map_or(Ok(()), ascii_layout),
        _ => Ok(()),
    }
}

/// The check for a builtin, for tests.
#[cfg(test)]
fn check_for(name: &str) -> Option<Check> {
    GUARDS
        .iter()
        .chain(CHECKS)
        .find(|(n, _, _)| *n == name)
        .map(|(_, _, c)| *c)
}

/// A number as an f64; `None` for what is not a number. A number regorus will not give as an
/// f64 (an integer too big or too precise for one, like 2^53 + 1) is taken as infinite, so
/// that a size worked out from it is refused rather than waved through (see [`span`]).
fn num(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => Some(n.as_f64().unwrap_or(f64::INFINITY)),
        _ => None,
    }
}

/// `|y - x|` of two numbers, exactly where regorus counts exactly: with big integers when
/// either is not an f64 (`numbers.range(9007199254740993, 0)` once passed the guard, whose
/// f64s were `None`, and regorus asked for 2^53 elements at once: the allocation failed and
/// aborted the process).
fn span(x: &Value, y: &Value) -> Option<f64> {
    let (Value::Number(a), Value::Number(b)) = (x, y) else {
        return None;
    };
    if let (Some(a), Some(b)) = (a.as_f64(), b.as_f64()) {
        return Some((b - a).abs());
    }
    match (a.as_big(), b.as_big()) {
        (Some(a), Some(b)) => {
            let d = &*b - &*a;
            if d.bits() > 64 {
                return Some(f64::INFINITY);
            }
            let text = d.to_string();
            Some(
                text.trim_start_matches('-')
                    .parse()
                    .unwrap_or(f64::INFINITY),
            )
        }
        _ => Some(f64::INFINITY),
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
    match span(&a[0], &a[1]) {
        Some(d) => too_many(d + 1.0),
        // Non-numbers: the builtin reports them.
        None => Ok(()),
    }
}

fn check_range_step(a: &[Value]) -> Result<(), String> {
    match (span(&a[0], &a[1]), num(&a[2])) {
        // regorus divides by the step without checking it (a zero step panics).
        (_, Some(s)) if s.is_nan() || s < 1.0 => Err("step must be a positive integer".into()),
        (Some(d), Some(s)) => too_many(d / s + 1.0),
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

/// A number written as text: digits bounded (parsing a long run of digits into a big integer is
/// quadratic) and, in scientific notation, the exponent too (`1e999999999` would be expanded
/// into a billion-digit integer).
fn check_numeric_text(s: &str) -> Result<(), String> {
    if s.len() > 4096 {
        return Err("string longer than 4096 bytes".into());
    }
    if let Some(i) = s.find(['e', 'E']) {
        let exp = s[i + 1..]
            .trim_start_matches('+')
            .trim_start_matches('-')
            .trim_start_matches('0');
        let digits = exp.bytes().take_while(u8::is_ascii_digit).count();
        let value: i64 = exp[..digits].parse().unwrap_or(0);
        if digits > 6 || value > MAX_EXPONENT {
            return Err(format!("exponent larger than {MAX_EXPONENT}"));
        }
    }
    Ok(())
}

fn check_to_number(a: &[Value]) -> Result<(), String> {
    match string(&a[0]) {
        Some(s) => check_numeric_text(s),
        None => Ok(()),
    }
}

/// `units.parse("1e999999999G")`: the number part before the unit suffix.
fn check_units(a: &[Value]) -> Result<(), String> {
    match string(&a[0]) {
        Some(s) => check_numeric_text(
            s.trim_end_matches(|c: char| c.is_ascii_alphabetic() && c != 'e' && c != 'E'),
        ),
        None => Ok(()),
    }
}

fn len_of(v: &Value) -> usize {
    match v {
        Value::Array(xs) => xs.len(),
        Value::Set(xs) => xs.len(),
        Value::Object(m) => m.len(),
        _ => 0,
    }
}

fn check_array_concat(a: &[Value]) -> Result<(), String> {
    too_many((len_of(&a[0]) + len_of(&a[1])) as f64)
}

/// Encoders write at most a few bytes per byte of what they are given (JSON escapes a
/// control character as six).
fn check_encode(a: &[Value]) -> Result<(), String> {
    let (size, _) = size_of(&a[0]);
    if size <= MAX_ENCODED_BYTES {
        Ok(())
    } else {
        Err(format!("result would exceed {MAX_ENCODED_BYTES} bytes"))
    }
}

/// `split(s, d)`, `indexof_n(s, d)`: one element per occurrence of `d` (per character when
/// `d` is empty).
fn check_split(a: &[Value]) -> Result<(), String> {
    let (Some(s), Some(d)) = (string(&a[0]), string(&a[1])) else {
        return Ok(());
    };
    if d.is_empty() {
        // Cheap upper bound first: bytes bound characters.
        if s.len() as f64 <= MAX_ELEMENTS {
            return Ok(());
        }
        return too_many(s.chars().count() as f64);
    }
    too_many(s.matches(d).count() as f64 + 1.0)
}

/// `regex.split(pattern, s)`, `regex.find_n(pattern, s, n)`: at most one piece per character
/// and one more, whatever the pattern.
fn check_regex_pieces(a: &[Value]) -> Result<(), String> {
    match string(&a[1]) {
        Some(s) if s.len() as f64 > MAX_ELEMENTS => too_many(s.chars().count() as f64 + 1.0),
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

/// An upper estimate of a value's printed size, and its nesting depth. Stops early once past
/// [`MAX_BYTES`], so it never walks much more than it allows. It keeps its own stack: a value
/// can be nested deeper than a recursive walk fits in a thread's stack (a recursive version
/// overflowed 2 MiB at 2,600 levels in the debug build).
fn size_of(v: &Value) -> (usize, usize) {
    let (mut acc, mut max_depth) = (0usize, 0usize);
    let mut stack: Vec<(&Value, usize)> = vec![(v, 0)];
    while let Some((v, depth)) = stack.pop() {
        max_depth = max_depth.max(depth);
        if acc > MAX_BYTES {
            break;
        }
        match v {
            Value::String(s) => acc += s.len() * 6 + 2, // worst case: every byte escaped
            Value::Number(_) => acc += int_bits(v).map_or(32, |b| (b / 3 + 2) as usize),
            Value::Array(xs) => {
                acc += 2 + xs.len();
                stack.extend(xs.iter().map(|x| (x, depth + 1)));
            }
            Value::Set(xs) => {
                acc += 2 + xs.len();
                stack.extend(xs.iter().map(|x| (x, depth + 1)));
            }
            Value::Object(m) => {
                acc += 2 + 2 * m.len();
                for (k, x) in m.iter() {
                    stack.push((k, depth + 1));
                    stack.push((x, depth + 1));
                }
            }
            _ => acc += 5,
        }
    }
    (acc, max_depth)
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

    fn call(name: &str, args: Vec<Value>) -> Result<(), String> {
        check_for(name).expect("guarded")(&args)
    }

    fn s(v: &str) -> Value {
        Value::from(v)
    }

    #[test]
    fn every_guard_names_a_real_builtin() {
        for (name, _, _) in GUARDS.iter().chain(CHECKS) {
            assert!(BUILTINS.get(name).is_some(), "{name}");
        }
    }

    #[test]
    fn oversized_arguments_are_refused() {
        let n = |x: f64| Value::from(x);
        for (name, args) in [
            ("numbers.range", vec![n(1.0), n(1e11)]),
            ("numbers.range_step", vec![n(1.0), n(10.0), n(0.0)]),
            ("net.cidr_expand", vec![s("10.0.0.0/8")]),
            ("net.cidr_expand", vec![s("::/0")]),
            ("bits.lsh", vec![n(1.0), n(4e9)]),
            (
                "sprintf",
                vec![s("%1000000000d"), Value::from(vec![n(1.0)])],
            ),
            ("units.parse", vec![s("1e999999999G")]),
            ("units.parse_bytes", vec![s("1e999999999GB")]),
            ("units.parse", vec![s("1E+401")]),
            ("to_number", vec![s("1e999999999")]),
            ("to_number", vec![s(&"9".repeat(5000))]),
            ("split", vec![s(&"a".repeat(200_001)), s("")]),
            ("split", vec![s(&"a,".repeat(100_001)), s(",")]),
            ("regex.split", vec![s(""), s(&"a".repeat(200_001))]),
            ("json.marshal", vec![s(&"\u{1}".repeat(1 << 20))]),
            ("hex.encode", vec![s(&"a".repeat(5 << 20))]),
            (
                "array.concat",
                vec![
                    Value::from(vec![n(1.0); 60_000]),
                    Value::from(vec![n(1.0); 60_000]),
                ],
            ),
        ] {
            assert!(call(name, args).is_err(), "{name}");
        }
    }

    /// Found by fuzzing (`fixtures/fuzz/rego/marshal-a-deep-value.rego`): the size estimate
    /// behind the `json.marshal` and `sprintf` guards recursed once per level of the value, and
    /// overflowed a 2 MiB stack (aborting the process) on a value 2,600 levels deep.
    #[test]
    fn sizing_a_deep_value_does_not_overflow_the_stack() {
        let run = || {
            let mut v = Value::from(1.0);
            for _ in 0..20_000 {
                v = Value::from(vec![v]);
            }
            std::thread::scope(|s| {
                std::thread::Builder::new()
                    .stack_size(2 << 20)
                    .spawn_scoped(s, || {
                        assert_eq!(call("json.marshal", vec![v.clone()]), Ok(()));
                        assert_eq!(size_of(&v).1, 20_000);
                    })
                    .unwrap()
                    .join()
                    .unwrap();
            });
            // Dropping the value recurses in regorus: done here, on the big stack.
            drop(v);
        };
        std::thread::Builder::new()
            .stack_size(256 << 20)
            .spawn(run)
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn ordinary_arguments_pass() {
        let n = |x: f64| Value::from(x);
        for (name, args) in [
            ("numbers.range", vec![n(1.0), n(1000.0)]),
            ("units.parse", vec![s("1.5e3Ki")]),
            ("units.parse", vec![s("10G")]),
            ("units.parse_bytes", vec![s("12MB")]),
            ("to_number", vec![s("1e308")]),
            ("split", vec![s("a,b,c"), s(",")]),
            ("json.marshal", vec![Value::from(vec![s("x"); 100])]),
        ] {
            assert_eq!(call(name, args), Ok(()), "{name}");
        }
    }
}
