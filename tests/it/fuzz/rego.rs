//! Target 4: Rego, compiled and evaluated through `PolicyEngine::prepare` and `evaluate`.
//!
//! Inputs: modules generated from a small grammar (packages, imports, rules of every kind,
//! functions, comprehensions, `some`/`every`/`not`, every builtin regorus has with random
//! arguments, operators), with shapes at and past the structural limits of
//! `policy::rego::scan` and `deps` (nesting, unary and operator chains, chains of rules,
//! recursion, many rules, functions that nest their results), in v1 and v0 syntax; mutations
//! of those, of the policy table's modules and of the corpus; random text.
//! Properties: no panic, not even one caught inside; the process survives (a stack overflow
//! aborts the test binary); compiling takes well under a second; a refusal is one short line;
//! an evaluation returns within twice the evaluation timeout whatever the policy; a letter
//! whose every rule is literally `true` is granted (unless a budget stopped the evaluation)
//! and one that cannot be `true` never is.
//!
//! Cases run on a 2 MiB thread, the stack of the server's blocking threads where policies are
//! evaluated; compiles get their own thread inside `RegoPolicy::compile`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{json, Value};
use vellum::model::{Claims, Perms};
use vellum::policy::{EvalInput, Meter, PolicyEngine, PolicyLimits};

use super::gen::{self, Pick};
use super::{Rng, Target};

pub struct Input {
    pub text: String,
    /// Letters whose rules are all literally `true`.
    pub must: Perms,
    /// Letters that no rule can make `true`.
    pub never: Perms,
    pub claims: Value,
    pub object: Value,
    pub action: char,
    /// Sent as `originalobjectpolicy` instead of `objectpolicy.rego`.
    pub as_original: bool,
    /// Must be refused when written (`Some(true)`: a corpus file's `# expect: refused`) or must
    /// compile (`Some(false)`: one that says what it must grant).
    pub refused: Option<bool>,
}

const LETTERS: [char; 6] = ['C', 'R', 'U', 'D', 'X', 'P'];

/// Every builtin regorus offers in this build, with its number of arguments.
fn builtins() -> &'static [(&'static str, u8)] {
    static B: OnceLock<Vec<(&'static str, u8)>> = OnceLock::new();
    B.get_or_init(|| {
        let mut v: Vec<(&'static str, u8)> = regorus::unstable::BUILTINS
            .iter()
            .map(|(k, (_, n))| (*k, *n))
            .collect();
        v.sort();
        v
    })
}

/// Strings that mean something to some builtin: patterns, globs, CIDRs, versions, dates,
/// formats, numbers with units, encodings.
const MEANINGFUL: &[&str] = &[
    "(a+)+$",
    "(?i)A",
    "[",
    "a{1000}{1000}",
    "\\p{L}+",
    "{a,{b,{c,d}}}",
    "**/*",
    "[!a-",
    "10.0.0.0/8",
    "::/0",
    "0.0.0.0/0",
    "192.168.0.1/33",
    "1.2.3",
    "1.2.3-alpha+b",
    "v1",
    "2006-01-02T15:04:05Z",
    "RFC3339",
    "1h2m",
    "%v %d %s",
    "%1000000d",
    "%.999999f",
    "%!",
    "1e999999999G",
    "12MiB",
    "0x1p3",
    "YWJj",
    "=",
    "{\"a\":[1,{\"b\":null}]}",
    "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
    "a=b&c=%zz",
    "/a/b/0",
    "RX",
];

const NUMBERS: &[&str] = &["0", "1", "-1", "2", "3.5", "0.1", "100000", "4294967296"];

/// Numbers regorus may refuse or find hard: kept rare, or few modules would compile.
const ODD_NUMBERS: &[&str] = &[
    "-0",
    "1e308",
    "1e309",
    "1e-400",
    "18446744073709551616",
    "99999999999999999999999999999999999999",
    "9007199254740993",
];

struct Gen<'a> {
    rng: &'a mut Rng,
    v1: bool,
    package: String,
    /// Helper rules defined so far (a rule uses only earlier ones: no recursion by accident).
    helpers: Vec<String>,
    funcs: Vec<(String, usize)>,
    /// Variables bound where the next expression is written.
    scope: Vec<String>,
    fresh: usize,
    /// `import input.claims as c` was written.
    claims_alias: bool,
}

impl Gen<'_> {
    fn var(&mut self) -> String {
        self.fresh += 1;
        format!("x{}", self.fresh)
    }

    fn string(&mut self) -> String {
        let s = match self.rng.below(4u32) {
            0 => self.rng.pick(MEANINGFUL).to_string(),
            1 => gen::odd_string(self.rng),
            _ => gen::plain_word(self.rng),
        };
        if self.rng.one_in(8) && !s.contains('`') {
            format!("`{s}`")
        } else {
            serde_json::to_string(&s).unwrap()
        }
    }

    fn number(&mut self) -> String {
        if self.rng.one_in(20) {
            self.rng.pick(ODD_NUMBERS).to_string()
        } else {
            self.rng.pick(NUMBERS).to_string()
        }
    }

    fn term(&mut self) -> String {
        match self.rng.below(16u32) {
            0 | 1 => self.number(),
            2 | 3 => self.string(),
            4 => self.rng.pick(&["true", "false", "null"]).to_string(),
            5 => self
                .rng
                .pick(&[
                    "input.claims.values.email",
                    "input.claims.values.email[_]",
                    "input.claims.values",
                    "input.claims.label",
                    "input.action",
                    "input.object",
                    "input.object.name",
                    "input.object.custom",
                    "input",
                    "input.claims.values[_][_]",
                ])
                .to_string(),
            6 if self.claims_alias => "c.values".to_string(),
            7 | 8 if !self.scope.is_empty() => self.rng.pick(&self.scope).clone(),
            9 | 10 if !self.helpers.is_empty() => {
                let h = self.rng.pick(&self.helpers).clone();
                if self.rng.one_in(4) {
                    format!("data.{}.{h}", self.package)
                } else {
                    h
                }
            }
            11 => self
                .rng
                .pick(&["set()", "[]", "{}", "[1, 2, 3]", "{\"a\": 1}"])
                .to_string(),
            _ => self.number(),
        }
    }

    /// A term that can be indexed: a variable, a rule, `input`.
    fn ref_term(&mut self) -> String {
        match self.rng.below(3u32) {
            0 if !self.scope.is_empty() => self.rng.pick(&self.scope).clone(),
            1 if !self.helpers.is_empty() => self.rng.pick(&self.helpers).clone(),
            _ => self
                .rng
                .pick(&[
                    "input",
                    "input.object",
                    "input.claims.values",
                    "input.object.custom",
                ])
                .to_string(),
        }
    }

    fn builtin_call(&mut self, d: usize) -> String {
        let (name, arity) = *self.rng.pick(builtins());
        let args: Vec<String> = (0..arity).map(|_| self.expr(d)).collect();
        format!("{name}({})", args.join(", "))
    }

    fn expr(&mut self, d: usize) -> String {
        if d == 0 || self.rng.one_in(3) {
            return self.term();
        }
        let d = d - 1;
        match self.rng.below(16u32) {
            0 | 1 => {
                let op = *self.rng.pick(&[
                    "+", "-", "*", "/", "%", "==", "!=", "<", "<=", ">", ">=", "&", "|", "in",
                ]);
                {
                    let (l, r) = (self.expr(d), self.expr(d));
                    // `|` and `in` read differently inside comprehensions: bracket them.
                    if matches!(op, "|" | "&" | "in") || self.rng.one_in(2) {
                        format!("({l} {op} {r})")
                    } else {
                        format!("{l} {op} {r}")
                    }
                }
            }
            2 if self.rng.one_in(4) => format!("-{}", self.expr(d)),
            2 => format!("0 - {}", self.expr(d)),
            3..=5 => self.builtin_call(d),
            6 if !self.funcs.is_empty() => {
                let (f, n) = self.rng.pick(&self.funcs).clone();
                let args: Vec<String> = (0..n).map(|_| self.expr(d)).collect();
                format!("{f}({})", args.join(", "))
            }
            7 => {
                let items: Vec<String> = (0..self.rng.size(4)).map(|_| self.expr(d)).collect();
                format!("[{}]", items.join(", "))
            }
            8 => {
                let items: Vec<String> =
                    (0..self.rng.between(1, 3)).map(|_| self.expr(d)).collect();
                format!("{{{}}}", items.join(", "))
            }
            9 => {
                let items: Vec<String> = (0..self.rng.size(3))
                    .map(|_| format!("{}: {}", self.string(), self.expr(d)))
                    .collect();
                format!("{{{}}}", items.join(", "))
            }
            10 | 11 => {
                let mark = self.scope.len();
                let body = self.body(d, true);
                let out = match self.rng.below(3u32) {
                    0 => format!("[{} | {body}]", self.expr(d)),
                    1 => format!("{{{} | {body}}}", self.expr(d)),
                    _ => format!("{{{}: {} | {body}}}", self.expr(d), self.expr(d)),
                };
                self.scope.truncate(mark);
                out
            }
            12 => format!("{}[{}]", self.ref_term(), self.expr(d)),
            13 => format!("{}.{}", self.ref_term(), gen::plain_word(self.rng)),
            14 => format!("({})", self.expr(d)),
            _ => self.term(),
        }
    }

    fn literal(&mut self, d: usize) -> String {
        match self.rng.below(12u32) {
            0 => format!("not {}", self.expr(d)),
            1 | 2 => {
                let e = self.expr(d);
                let v = self.var();
                self.scope.push(v.clone());
                format!("{v} := {e}")
            }
            3 | 4 => {
                let e = self.expr(d);
                let v = self.var();
                self.scope.push(v.clone());
                if self.rng.one_in(2) {
                    let k = self.var();
                    self.scope.push(k.clone());
                    format!("some {k}, {v} in {e}")
                } else {
                    format!("some {v} in {e}")
                }
            }
            5 if d > 0 => {
                let e = self.expr(d - 1);
                let mark = self.scope.len();
                let v = self.var();
                self.scope.push(v.clone());
                let inner = self.body(d - 1, false);
                self.scope.truncate(mark);
                format!("every {v} in {e} {{ {inner} }}")
            }
            6 if self.rng.one_in(4) => format!("{} with input as {{}}", self.expr(d)),
            7 => format!("{} = {}", self.expr(d), self.expr(d)),
            _ => self.expr(d),
        }
    }

    /// Literals separated by `;` (in a comprehension) or newlines. Bound variables stay in
    /// scope for the caller to use.
    fn body(&mut self, d: usize, one_line: bool) -> String {
        let n = self.rng.between(1, 4);
        let lits: Vec<String> = (0..n).map(|_| self.literal(d)).collect();
        if one_line || self.rng.one_in(2) {
            lits.join("; ")
        } else {
            lits.join("\n  ")
        }
    }

    /// `head if { body }` (v1) or `head { body }` (v0).
    fn with_body(&mut self, head: &str, body: &str) -> String {
        if self.v1 {
            format!("{head} if {{\n  {body}\n}}")
        } else {
            format!("{head} {{\n  {body}\n}}")
        }
    }

    fn assign(&self) -> &'static str {
        if self.v1 {
            ":="
        } else {
            "="
        }
    }

    fn helper(&mut self, d: usize) -> String {
        let name = format!("h{}", self.helpers.len() + self.funcs.len());
        let a = self.assign();
        let mark = self.scope.len();
        let rule = match self.rng.below(8u32) {
            0 | 1 => format!("{name} {a} {}", self.expr(d)),
            2 => {
                let b = self.body(d, false);
                self.with_body(&name, &b)
            }
            3 => {
                let b = self.body(d, false);
                let e = self.expr(d);
                self.with_body(&format!("{name} {a} {e}"), &b)
            }
            4 => {
                let b = self.body(d, false);
                let e = self.expr(d);
                if self.v1 {
                    self.with_body(&format!("{name} contains {e}"), &b)
                } else {
                    self.with_body(&format!("{name}[{e}]"), &b)
                }
            }
            5 => {
                let n = self.rng.between(1, 3);
                let params: Vec<String> = (0..n).map(|_| self.var()).collect();
                self.scope.extend(params.iter().cloned());
                let b = self.body(d, false);
                let e = self.expr(d);
                let rule = self.with_body(&format!("{name}({}) {a} {e}", params.join(", ")), &b);
                self.scope.truncate(mark);
                self.funcs.push((name, n));
                return rule;
            }
            6 => format!("default {name} {a} {}", self.term()),
            _ => {
                let b = self.body(d, false);
                let e1 = self.expr(d);
                let e2 = self.term();
                let first = self.with_body(&format!("{name} {a} {e1}"), &b);
                format!("{first} else {a} {e2}")
            }
        };
        self.scope.truncate(mark);
        self.helpers.push(name);
        rule
    }

    /// The rules of one letter, and what is known of it: `Some(true)` literally true,
    /// `Some(false)` never true, `None` unknown.
    fn letter(&mut self, l: char, d: usize) -> (Vec<String>, Option<bool>) {
        let a = self.assign();
        let v1 = self.v1;
        let t: Option<bool> = match self.rng.below(4u32) {
            0 => Some(true),
            1 => Some(false),
            _ => None,
        };
        let rules = match t {
            Some(true) => vec![match self.rng.below(4u32) {
                0 if v1 => format!("{l} if true"),
                0 => format!("{l} {{ true }}"),
                1 => format!("{l} {a} true"),
                2 => format!("default {l} {a} true"),
                _ => self.with_body(&format!("{l} {a} true"), "1 == 1"),
            }],
            Some(false) => vec![match self.rng.below(6u32) {
                0 => format!("{l} {a} 1"),
                1 => format!("{l} {a} \"true\""),
                2 if v1 => format!("{l} if false"),
                2 => format!("{l} {{ false }}"),
                3 => format!("default {l} {a} false"),
                4 if v1 => format!("{l} contains \"x\" if true"),
                4 => format!("{l}[\"x\"] {{ true }}"),
                _ => format!("{l} {a} [true]"),
            }],
            None => {
                let n = self.rng.between(1, 2);
                (0..n)
                    .map(|_| {
                        let mark = self.scope.len();
                        let b = self.body(d, false);
                        let r = if self.rng.one_in(3) {
                            let e = self.expr(d);
                            self.with_body(&format!("{l} {a} {e}"), &b)
                        } else {
                            self.with_body(&l.to_string(), &b)
                        };
                        self.scope.truncate(mark);
                        r
                    })
                    .collect()
            }
        };
        (rules, t)
    }
}

/// Shapes near and past the structural limits, and constructions that make big or deep
/// values or long work: each a few helper rules and the letter `R` that uses them.
fn stress(rng: &mut Rng, v1: bool) -> String {
    let iff = if v1 { " if" } else { "" };
    let a = if v1 { ":=" } else { "=" };
    match rng.below(16u32) {
        0 => {
            let n = rng.between(18, 30);
            format!("s {a} {}1{}\nR{iff} {{ s }}", "(".repeat(n), ")".repeat(n))
        }
        1 => {
            let n = rng.between(4, 9);
            format!("s {a} {}1{}\nR{iff} {{ s }}", "[".repeat(n), "]".repeat(n))
        }
        2 => {
            let n = rng.between(5, 12);
            let sign = *rng.pick(&["-", "- ", "-(", "not "]);
            let close = if sign == "-(" { ")".repeat(n) } else { String::new() };
            format!("s {a} {}1{close}\nR{iff} {{ s }}", sign.repeat(n))
        }
        3 => {
            let n = rng.between(40, 160);
            let op = *rng.pick(&[" + 1", " == 1", ".a", "[0]", " | {1}", "\n+ 1", " * 2"]);
            format!("s {a} 1{}\nR{iff} {{ s }}", op.repeat(n))
        }
        4 => {
            // A chain of rules, around MAX_CALL_DEPTH.
            let n = rng.between(25, 40);
            let mut s = format!("r0 {a} 1\n");
            for i in 1..=n {
                s.push_str(&format!("r{i} {a} r{} + 1\n", i - 1));
            }
            s.push_str(&format!("R{iff} {{ r{n} > 0 }}"));
            s
        }
        5 => rng
            .pick(&[
                "f(x) := y if { y := f(x) }\nR if { f(1) }",
                "a if b\nb if a\nR if a",
                "a if data.p.b\nb if data.p.a\nR if a",
                "s contains x if { some x in t }\nt contains x if { some x in s }\nR if count(s) > 0",
                "R if R",
                "f(n) := 0 if n == 0\nf(n) := f(n - 1) + 1 if n > 0\nR if f(100000) > 0",
                "g(x) := h(x)\nh(x) := g(x)\nR if g(1)",
            ])
            .replace(" if", iff)
            .replace(":=", a),
        6 => {
            // Many rules, and one that uses them all.
            let n = rng.between(100, 5000);
            let mut s = String::new();
            for i in 0..n {
                s.push_str(&format!("m{i} {a} {i}\n"));
            }
            let all: Vec<String> = (0..n).map(|i| format!("m{i}")).collect();
            s.push_str(&format!("R{iff} {{ {} }}", all.join("; ")));
            s
        }
        7 => {
            // Functions that nest what they are given: each level multiplies the depth of the
            // value the last one builds.
            let k = rng.between(2, 24);
            let levels = rng.between(2, 5);
            let mut s = format!("f1(x) {a} [[[[[[x]]]]]]\n");
            for l in 2..=levels {
                let inner = format!("{}x{}", format!("f{}(", l - 1).repeat(k), ")".repeat(k));
                s.push_str(&format!("f{l}(x) {a} {inner}\n"));
            }
            let use_ = *rng.pick(&[
                "count(v) > 0",
                "v == v",
                "json.marshal(v) != \"\"",
                "is_array(v)",
                "walk(v)",
                "sort([v, v])",
                "{v} == {v}",
                "object.union({\"a\": v}, {\"a\": v})",
            ]);
            s.push_str(&format!("v {a} f{levels}(1)\nR{iff} {{ {use_} }}"));
            s
        }
        8 => {
            // A body that nests a value once per statement.
            let n = rng.between(100, 4000);
            let mut s = format!("f(x) {a} y{iff} {{\n  y0 := [x]\n");
            for i in 1..n {
                s.push_str(&format!("  y{i} := [y{}]\n", i - 1));
            }
            s.push_str(&format!("  y := y{}\n}}\n", n - 1));
            s.push_str(&format!("R{iff} {{ f(f(f(1))) == f(f(f(1))) }}"));
            s
        }
        9 => format!(
            "s {a} \"{}\"\nR{iff} {{ count(s) > 0 }}",
            "a".repeat(rng.between(1000, 64_000))
        ),
        10 => format!(
            "s {a} 1{}\nR{iff} {{ s > 0 }}",
            "0".repeat(rng.between(100, 20_000))
        ),
        11 => rng
            .pick(&[
                "R if count([x | some x in numbers.range(1, 100000); some y in numbers.range(1, 100000); x == y]) > 0",
                "R if count({x | some x in numbers.range(1, 100000)}) > 0",
                "s := concat(\"\", [\"a\" | some _ in numbers.range(1, 100000)])\nt := replace(s, \"a\", s)\nR if count(t) > 0",
                "R if regex.match(\"(a+)+$\", concat(\"\", [\"a\" | some _ in numbers.range(1, 50000)]))",
                "R if glob.match(concat(\"\", [\"{a,\" | some _ in numbers.range(1, 5000)]), [], \"a\")",
                "R if json.unmarshal(concat(\"\", [\"[\" | some _ in numbers.range(1, 100000)]))",
                "R if sprintf(\"%v\", [[x | some x in numbers.range(1, 100000)]]) != \"\"",
                "R if count(walk([[x, [x, [x]]] | some x in numbers.range(1, 30000)])) > 0",
                "R if units.parse(\"1e400000G\") > 0",
                "R if bits.lsh(1, 65536) > 0",
                "R if product([x | some x in numbers.range(1, 3000)]) > 0",
                "R if count(split(concat(\"\", [\"ab\" | some _ in numbers.range(1, 100000)]), \"\")) > 0",
                "R if strings.replace_n({\"a\": concat(\"\", [\"b\" | some _ in numbers.range(1, 10000)])}, concat(\"\", [\"a\" | some _ in numbers.range(1, 10000)])) != \"\"",
                "R if count(net.cidr_expand(\"10.0.0.0/8\")) > 0",
                "R if base64.decode(concat(\"\", [\"YWJj\" | some _ in numbers.range(1, 100000)])) != \"\"",
                "R if json.marshal_with_options([[[[[1]]]]], {\"pretty\": true, \"indent\": concat(\"\", [\" \" | some _ in numbers.range(1, 100000)])}) != \"\"",
                "R if count(object.keys({sprintf(\"%d\", [x]): x | some x in numbers.range(1, 100000)})) > 0",
                "R if time.parse_ns(\"2006-01-02\", concat(\"\", [\"9\" | some _ in numbers.range(1, 100000)])) > 0",
                "R if semver.compare(concat(\"\", [\"1.\" | some _ in numbers.range(1, 50000)]), \"1.0.0\") > 0",
                "R if urlquery.decode_object(concat(\"&\", [\"a=b\" | some _ in numbers.range(1, 100000)])) != {}",
                "R if format_int(product([2 | some _ in numbers.range(1, 60000)]), 10) != \"\"",
                "R if to_number(concat(\"\", [\"9\" | some _ in numbers.range(1, 100000)])) > 0",
                "R if count(regex.find_n(\"a*\", concat(\"\", [\"b\" | some _ in numbers.range(1, 100000)]), -1)) > 0",
                "R if count(indexof_n(concat(\"\", [\"a\" | some _ in numbers.range(1, 100000)]), \"\")) > 0",
            ])
            .replace(" if", iff)
            .replace(":=", a),
        12 => {
            // A value made deeper one rule at a time.
            let n = rng.between(5, 31);
            let mut s = format!("d0 {a} [[[[[[1]]]]]]\n");
            for i in 1..=n {
                s.push_str(&format!("d{i} {a} [[[[[[d{}]]]]]]\n", i - 1));
            }
            s.push_str(&format!("R{iff} {{ d{n} == d{n} }}"));
            s
        }
        13 => {
            // Comprehensions nested inside each other.
            let n = rng.between(3, 12);
            let mut e = String::from("x0");
            for i in (0..n).rev() {
                e = format!("[{e} | some x{i} in numbers.range(1, 40)]");
            }
            // The innermost names x0; make the outer ones bind in order.
            format!("s {a} {e}\nR{iff} {{ count(s) > 0 }}")
        }
        14 => {
            let n = rng.between(10, 24);
            let mut e = String::from("1");
            for _ in 0..n {
                e = format!("count([{e}])");
            }
            format!("s {a} {e}\nR{iff} {{ s > 0 }}")
        }
        _ => {
            // `every` and `some` nested.
            let n = rng.between(2, 10);
            let mut body = String::from("true");
            for i in 0..n {
                body = format!("every v{i} in numbers.range(1, 100) {{ {body} }}");
            }
            format!("R{iff} {{ {body} }}")
        }
    }
}

fn generate_module(rng: &mut Rng) -> Input {
    let v1 = !rng.one_in(4);
    let package = rng
        .pick(&["p", "policy", "a.b", "vellum.x", "p.q.r"])
        .to_string();
    let mut out = format!("package {package}\n");
    if v1 {
        out.push_str("import rego.v1\n");
    } else if !rng.one_in(4) {
        out.push_str(rng.pick::<&str>(&[
            "import future.keywords\n",
            "import future.keywords.in\nimport future.keywords.every\n",
        ]));
    }
    let claims_alias = rng.one_in(6);
    if claims_alias {
        out.push_str("import input.claims as c\n");
    }
    let mut g = Gen {
        rng,
        v1,
        package,
        helpers: Vec::new(),
        funcs: Vec::new(),
        scope: Vec::new(),
        fresh: 0,
        claims_alias,
    };
    let depth = g.rng.between(1, 4);
    for _ in 0..g.rng.size(8) {
        let h = g.helper(depth);
        out.push_str(&h);
        out.push('\n');
    }
    let mut must = Perms::NONE;
    let mut never = Perms::NONE;
    let stressed = g.rng.one_in(3);
    for l in LETTERS {
        if g.rng.one_in(3) || (stressed && l == 'R') {
            continue;
        }
        let (rules, known) = g.letter(l, depth);
        let p = Perms::from_letter(l).unwrap();
        match known {
            Some(true) => must |= p,
            Some(false) => never |= p,
            None => {}
        }
        for r in rules {
            out.push_str(&r);
            out.push('\n');
        }
    }
    if stressed {
        out.push_str(&stress(g.rng, v1));
        out.push('\n');
    }
    let rng = g.rng;
    Input {
        text: out,
        must,
        never,
        claims: claims(rng),
        object: super::metadata::random_value(rng, 3),
        action: *rng.pick(&LETTERS),
        as_original: rng.one_in(4),
        refused: None,
    }
}

fn claims(rng: &mut Rng) -> Value {
    match rng.below(4u32) {
        0 => json!({"label": "anonymous", "values": {}}),
        1 => {
            json!({"label": "jane", "values": {"email": ["jane.doe@deciphernow.com"], "org": ["x"]}})
        }
        2 => json!({"label": "root", "values": {"email": ["localuser@email.com"]}}),
        _ => json!({"label": gen::odd_string(rng), "values": {
            "email": [gen::odd_string(rng), gen::plain_word(rng)],
            gen::plain_word(rng): super::metadata::random_value(rng, 2)
        }}),
    }
}

const DICT: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    "(",
    ")",
    "(",
    "[",
    "{",
    " if ",
    " contains ",
    "some x in ",
    "every x in ",
    "not ",
    " with input as {}",
    ":=",
    "==",
    "=",
    "-",
    "- ",
    "input.",
    "data.",
    "\npackage q\n",
    "\nimport rego.v1\n",
    "\nimport future.keywords\n",
    "default ",
    " else := ",
    "\n",
    "`",
    "\"",
    "#",
    ".",
    "_",
    "R",
    "count(",
    "numbers.range(1, 100000)",
    "[x | some x in ",
    "f(f(f(f(",
    "\nR if true\n",
    "\nR := 1\n",
    "\nR { true }\n",
    "\u{feff}",
    "0x",
    "1e400",
];

/// The table's modules and the corpus, to mutate.
pub fn seeds() -> Vec<Vec<u8>> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/it/data/policy_cases.yaml"
    );
    let doc: Value = yaml_serde::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut out = Vec::new();
    let mut stack = vec![&doc];
    while let Some(v) = stack.pop() {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    match x {
                        Value::String(s)
                            if k.eq_ignore_ascii_case("rego")
                                || (k == "originalobjectpolicy" && !s.starts_with('(')) =>
                        {
                            out.push(s.clone().into_bytes())
                        }
                        _ => stack.push(x),
                    }
                }
            }
            Value::Array(a) => stack.extend(a.iter()),
            _ => {}
        }
    }
    out.sort();
    out.dedup();
    out
}

fn generate(rng: &mut Rng, pool: &[Vec<u8>]) -> Input {
    match rng.below(10u32) {
        0 => {
            let text = String::from_utf8_lossy(&gen::random_bytes(
                rng,
                b"package p\nimport rego.v1 R if{}[]()=:-+ \"`x1",
            ))
            .into_owned();
            bare(rng, text)
        }
        1 | 2 if !pool.is_empty() => {
            let base: &Vec<u8> = rng.pick(pool);
            let base = String::from_utf8_lossy(base).into_owned();
            let text = gen::mutate_text(rng, &base, DICT, pool);
            bare(rng, text)
        }
        3 => {
            let m = generate_module(rng);
            let text = gen::mutate_text(rng, &m.text, DICT, pool);
            bare(rng, text)
        }
        _ => generate_module(rng),
    }
}

/// A text nothing is known about.
fn bare(rng: &mut Rng, text: String) -> Input {
    Input {
        text,
        must: Perms::NONE,
        never: Perms::NONE,
        claims: claims(rng),
        object: super::metadata::random_value(rng, 2),
        action: *rng.pick(&LETTERS),
        as_original: rng.one_in(4),
        refused: None,
    }
}

fn engine() -> PolicyEngine {
    PolicyEngine::new(PolicyLimits {
        compiled_cache_bytes: 1 << 20,
        result_cache_entries: 64,
        ..PolicyLimits::default()
    })
}

/// Compiling, in the debug build on a busy machine.
const COMPILE_LIMIT: Duration = Duration::from_secs(1);

/// What became of the cases, to see what the generator reaches.
struct Outcomes {
    refused: AtomicUsize,
    evaluated: AtomicUsize,
    stopped: AtomicUsize,
    granted: AtomicUsize,
}

static OUTCOMES: Outcomes = Outcomes {
    refused: AtomicUsize::new(0),
    evaluated: AtomicUsize::new(0),
    stopped: AtomicUsize::new(0),
    granted: AtomicUsize::new(0),
};

/// Counts an outcome; with VELLUM_FUZZ_TRACE, says it.
fn note(counter: &AtomicUsize, say: impl FnOnce() -> String) {
    counter.fetch_add(1, Ordering::Relaxed);
    if std::env::var_os("VELLUM_FUZZ_TRACE").is_some() {
        eprintln!("  {}", say());
    }
}

pub fn check(input: &Input) -> Result<(), String> {
    let timeout = PolicyLimits::default().eval_timeout;
    let (objectpolicy, original) = if input.as_original {
        (None, Some(input.text.as_str()))
    } else {
        (Some(json!({ "rego": input.text })), None)
    };
    let mut e = engine();
    let (prepared, took, in_time) = super::timed(COMPILE_LIMIT, || {
        e = engine();
        e.prepare(objectpolicy.as_ref(), original)
    });
    if !in_time {
        return Err(format!("compiling took {took:?}"));
    }
    let stored = match prepared {
        Ok(Some(_)) if input.refused == Some(true) => {
            return Err("accepted, yet it must be refused".into())
        }
        Ok(Some(p)) => p.objectpolicy,
        Ok(None) => return Ok(()),
        Err(err) if input.refused == Some(false) => {
            return Err(format!("refused ({err}), yet it must grant {}", input.must))
        }
        Err(err) => {
            let m = err.to_string();
            note(&OUTCOMES.refused, || format!("refused: {m}"));
            if m.trim().is_empty() || m.contains('\n') || m.len() > super::metadata::MAX_MESSAGE {
                return Err(format!(
                    "refused with a message that is not one short line: {m:?}"
                ));
            }
            if m.contains("internal error") {
                return Err(format!("refused with {m:?}"));
            }
            return Ok(());
        }
    };
    let claims = Claims::new(input.claims.clone());
    let object = input.object.clone();
    let get = move || object.clone();
    let eval = |e: &PolicyEngine| {
        e.evaluate(
            &stored,
            &EvalInput {
                claims: &claims,
                action: input.action,
                object: &get,
                meter: Meter::unmetered(),
            },
        )
    };
    let before = e.stats();
    let (perms, took, in_time) = super::timed(timeout * 2, || eval(&e));
    if !in_time {
        return Err(format!("evaluating took {took:?}"));
    }
    let stats = e.stats();
    let stopped = stats.budget_stops > before.budget_stops;
    note(&OUTCOMES.evaluated, || {
        format!(
            "granted {perms:?}{}",
            if stopped {
                " (a budget stopped it)"
            } else {
                ""
            }
        )
    });
    if stopped {
        OUTCOMES.stopped.fetch_add(1, Ordering::Relaxed);
    }
    if !perms.is_empty() {
        OUTCOMES.granted.fetch_add(1, Ordering::Relaxed);
    }
    if !perms.minus(perms.minus(input.never)).is_empty() {
        return Err(format!(
            "granted {perms}, which includes letters that are never true ({})",
            input.never
        ));
    }
    if !stopped && !perms.contains(input.must) {
        return Err(format!(
            "granted {perms}, not every letter that is literally true ({})",
            input.must
        ));
    }
    // Again, from the result cache or evaluated afresh: the same answer.
    if !stopped && eval(&e) != perms {
        return Err("a second evaluation answered differently".into());
    }
    Ok(())
}

/// A corpus file; comment lines `# must: X`, `# never: C` and `# expect: refused` say what
/// must become of it.
fn from_corpus(_: &str, b: &[u8]) -> Option<Input> {
    let text = String::from_utf8_lossy(b).into_owned();
    let said = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| v.trim().parse::<Perms>().unwrap_or(Perms::NONE))
            .unwrap_or(Perms::NONE)
    };
    let (must, never) = (said("# must:"), said("# never:"));
    let refused = if text.lines().any(|l| l.trim() == "# expect: refused") {
        Some(true)
    } else {
        (!must.is_empty()).then_some(false)
    };
    Some(Input {
        text,
        must,
        never,
        refused,
        claims: json!({"label": "jane", "values": {"email": ["jane.doe@deciphernow.com"]}}),
        object: json!({"name": "x", "custom": {"a": [1, {"b": null}]}}),
        action: 'R',
        as_original: false,
    })
}

pub fn target() -> Target<Input> {
    Target {
        name: "rego",
        ci_cases: 1000,
        stack: 2 << 20,
        hang: Duration::from_secs(60),
        from_corpus,
        generate,
        bytes: |i| i.text.as_bytes().to_vec(),
        check,
        seeds,
    }
}

#[test]
fn rego_policies_compile_and_evaluate_within_their_bounds_and_grant_only_what_is_true() {
    super::run(target());
    let o = &OUTCOMES;
    println!(
        "fuzz rego: {} refused, {} evaluated ({} granted letters, {} stopped by a budget)",
        o.refused.load(Ordering::Relaxed),
        o.evaluated.load(Ordering::Relaxed),
        o.granted.load(Ordering::Relaxed),
        o.stopped.load(Ordering::Relaxed)
    );
}
