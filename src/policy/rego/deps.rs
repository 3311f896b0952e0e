//! Which rules of a module use which, found on its syntax tree: recursion is refused, as OPA
//! refuses it (`rego_recursion_error`), and so are chains of rules using rules deeper than
//! [`MAX_CALL_DEPTH`] and rules that may build values nested deeper than [`MAX_VALUE_DEPTH`].
//!
//! regorus accepts a rule or function that uses itself (`f(x) := y if { y := f(x) }`); its VM
//! then loops until a budget stops it, and its tree-walking interpreter recursed until the
//! process's stack overflowed. Refusing it when the policy is written tells the author why;
//! the evaluation budgets stay as the second line. The depth bound keeps values a policy can
//! build (each rule nests what it uses at most a bracket-nesting deeper) shallow enough for
//! the builtins that recurse over values.
//!
//! The walk has its own stack (no recursion): it may run before anything else has bounded
//! the tree. Names are approximate in the safe direction for the author: a variable that
//! the rule binds itself (function arguments, `some`, `every`, the left side of `:=`) is not
//! taken for the rule of the same name.

use std::collections::{BTreeMap, BTreeSet};

use regorus::unstable::{AssignOp, Expr, Literal, Module, Query, Ref, Rule, RuleHead};

/// Longest chain of rules using rules (a rule that uses none counts 1).
pub const MAX_CALL_DEPTH: usize = 32;

/// Deepest nesting a rule may add to the values it reads (or a function to its arguments).
///
/// regorus's VM keeps its own frames on the heap, but dropping, comparing, hashing and
/// printing a value recurse once per level of it, natively: on the 2 MiB stack of a blocking
/// thread, comparing a value ~16,000 levels deep overflowed (aborting the process), dropping
/// one ~48,000. Nothing else bounds how deep a policy can build within its budgets: a function
/// that nests its argument six times, applied to itself 20 times over three levels of
/// functions, builds 48,000 levels in a few thousand instructions. 1,000 levels, plus the 128
/// of JSON read from the input or by `json.unmarshal`, leaves more than a tenfold margin.
pub const MAX_VALUE_DEPTH: u64 = 1000;

/// Most statements in one query (a rule's body, a comprehension's, an `every`'s). regorus's VM
/// compiler keeps a register per statement of a query and refuses more than 255; before it
/// gets there, regorus's analysis of a body of statements that name rules is superlinear (a
/// 60 KB body of 2,900 took 0.6-1.2 s in the debug build). So a longer query is refused here,
/// before regorus sees it, with the reason.
pub const MAX_STATEMENTS: usize = 255;

/// What one builtin call may add to the depth of its arguments (`walk` adds two; the builtins
/// that parse text, like `json.unmarshal`, make at most serde_json's 128 levels, which are
/// counted with the input's).
const BUILTIN_STEP: u64 = 2;

enum Node<'a> {
    Expr(&'a Expr),
    Query(&'a Query),
}

/// The name of the variable at the root of a reference (`a` for `a.b[c]`), or `None`.
fn root_var(e: &Expr) -> Option<&str> {
    let mut cur = e;
    loop {
        match cur {
            Expr::Var { span, .. } => return Some(span.text()),
            Expr::RefDot { refr, .. } | Expr::RefBrack { refr, .. } => cur = refr,
            _ => return None,
        }
    }
}

/// `data.a.b.name...` as its components, when the chain is made of plain fields.
fn dotted(e: &Expr) -> Option<Vec<&str>> {
    let mut parts = Vec::new();
    let mut cur = e;
    loop {
        match cur {
            Expr::Var { span, .. } => {
                parts.push(span.text());
                parts.reverse();
                return Some(parts);
            }
            Expr::RefDot { refr, field, .. } => {
                parts.push(field.0.text());
                cur = refr;
            }
            Expr::RefBrack { refr, index, .. } => {
                match index.as_ref() {
                    Expr::String { span, .. } => {
                        parts.push(span.text().trim_matches('"'));
                    }
                    _ => return None,
                }
                cur = refr;
            }
            _ => return None,
        }
    }
}

/// Names a rule body uses, and the names it binds itself.
#[derive(Default)]
struct Uses<'a> {
    vars: BTreeSet<&'a str>,
    /// `data.<package>.<name>` references, by name.
    data: BTreeSet<&'a str>,
    bound: BTreeSet<&'a str>,
    /// `data`, `data.<package>` or an index into it that is not a rule's name: the whole
    /// package document, so every rule.
    whole: bool,
    /// The first query longer than [`MAX_STATEMENTS`]: where it is.
    long_query: Option<(u32, u32)>,
}

/// `import data.a.b as x`: `x` stands for the path `data.a.b` (an import without `as` is
/// named by its last component).
type Imports<'a> = BTreeMap<&'a str, Vec<&'a str>>;

/// A dotted path with an imported name at its root replaced by what it stands for.
fn resolve<'a>(parts: Vec<&'a str>, imports: &Imports<'a>) -> Vec<&'a str> {
    match parts.first().and_then(|p| imports.get(p)) {
        Some(path) => path.iter().chain(&parts[1..]).copied().collect(),
        None => parts,
    }
}

/// `parts` (a dotted `data...` path) names a rule of `package`: its name.
fn data_rule<'a>(parts: &[&'a str], package: &[&str]) -> Option<&'a str> {
    (parts.len() > package.len() + 1 && parts[0] == "data" && parts[1..=package.len()] == *package)
        .then(|| parts[package.len() + 1])
}

/// `parts` is `data` or a path to the package or above it: the whole package document.
fn data_whole(parts: &[&str], package: &[&str]) -> bool {
    parts.first() == Some(&"data")
        && parts.len() <= package.len() + 1
        && package[..parts.len() - 1] == parts[1..]
}

fn walk<'a>(start: Vec<Node<'a>>, package: &[&str], imports: &Imports<'a>, uses: &mut Uses<'a>) {
    let mut stack = start;
    while let Some(n) = stack.pop() {
        match n {
            Node::Query(q) => {
                if q.stmts.len() > MAX_STATEMENTS && uses.long_query.is_none() {
                    uses.long_query = Some((q.span.line, q.span.col));
                }
                for s in &q.stmts {
                    for w in &s.with_mods {
                        stack.push(Node::Expr(&w.refr));
                        stack.push(Node::Expr(&w.r#as));
                    }
                    match &s.literal {
                        Literal::SomeVars { vars, .. } => {
                            uses.bound.extend(vars.iter().map(|v| v.text()));
                        }
                        Literal::SomeIn {
                            key,
                            value,
                            collection,
                            ..
                        } => {
                            for e in key.iter().chain(std::iter::once(value)) {
                                if let Expr::Var { span, .. } = e.as_ref() {
                                    uses.bound.insert(span.text());
                                }
                                stack.push(Node::Expr(e));
                            }
                            stack.push(Node::Expr(collection));
                        }
                        Literal::Expr { expr, .. } | Literal::NotExpr { expr, .. } => {
                            stack.push(Node::Expr(expr))
                        }
                        Literal::Every {
                            key,
                            value,
                            domain,
                            query,
                            ..
                        } => {
                            if let Some(k) = key {
                                uses.bound.insert(k.text());
                            }
                            uses.bound.insert(value.text());
                            stack.push(Node::Expr(domain));
                            stack.push(Node::Query(query));
                        }
                    }
                }
            }
            Node::Expr(e) => match e {
                Expr::Var { span, .. } => {
                    let parts = resolve(vec![span.text()], imports);
                    if let Some(rule) = data_rule(&parts, package) {
                        uses.data.insert(rule);
                    }
                    uses.whole |= data_whole(&parts, package);
                    uses.vars.insert(span.text());
                }
                Expr::RefDot { refr, .. } | Expr::RefBrack { refr, .. } => {
                    if let Some(parts) = dotted(e).map(|p| resolve(p, imports)) {
                        if let Some(rule) = data_rule(&parts, package) {
                            uses.data.insert(rule);
                            continue;
                        }
                        if data_whole(&parts, package) {
                            uses.whole = true;
                            continue;
                        }
                        if parts[0] == "data" {
                            // Another package's document: there is none.
                            continue;
                        }
                    }
                    stack.push(Node::Expr(refr));
                    if let Expr::RefBrack { index, .. } = e {
                        stack.push(Node::Expr(index));
                    }
                }
                Expr::String { .. }
                | Expr::RawString { .. }
                | Expr::Number { .. }
                | Expr::Bool { .. }
                | Expr::Null { .. } => {}
                Expr::Array { items, .. } | Expr::Set { items, .. } => {
                    stack.extend(items.iter().map(|i| Node::Expr(i)));
                }
                Expr::Object { fields, .. } => {
                    for (_, k, v) in fields {
                        stack.push(Node::Expr(k));
                        stack.push(Node::Expr(v));
                    }
                }
                Expr::ArrayCompr { term, query, .. } | Expr::SetCompr { term, query, .. } => {
                    stack.push(Node::Expr(term));
                    stack.push(Node::Query(query));
                }
                Expr::ObjectCompr {
                    key, value, query, ..
                } => {
                    stack.push(Node::Expr(key));
                    stack.push(Node::Expr(value));
                    stack.push(Node::Query(query));
                }
                Expr::Call { fcn, params, .. } => {
                    stack.push(Node::Expr(fcn));
                    stack.extend(params.iter().map(|p| Node::Expr(p)));
                }
                Expr::UnaryExpr { expr, .. } => stack.push(Node::Expr(expr)),
                Expr::AssignExpr { op, lhs, rhs, .. } => {
                    if *op == AssignOp::ColEq {
                        bind_all(lhs, &mut uses.bound);
                    }
                    stack.push(Node::Expr(lhs));
                    stack.push(Node::Expr(rhs));
                }
                Expr::BinExpr { lhs, rhs, .. }
                | Expr::BoolExpr { lhs, rhs, .. }
                | Expr::ArithExpr { lhs, rhs, .. } => {
                    stack.push(Node::Expr(lhs));
                    stack.push(Node::Expr(rhs));
                }
                Expr::Membership {
                    key,
                    value,
                    collection,
                    ..
                } => {
                    stack.extend(key.iter().map(|k| Node::Expr(k)));
                    stack.push(Node::Expr(value));
                    stack.push(Node::Expr(collection));
                }
                #[allow(unreachable_patterns)]
                _ => {}
            },
        }
    }
}

/// Marks every variable of an assignment's left side (`x`, `[x, y]`, `{"k": x}`) as bound.
fn bind_all<'a>(e: &'a Ref<Expr>, bound: &mut BTreeSet<&'a str>) {
    let mut stack = vec![e.as_ref()];
    while let Some(e) = stack.pop() {
        match e {
            Expr::Var { span, .. } => {
                bound.insert(span.text());
            }
            Expr::Array { items, .. } | Expr::Set { items, .. } => {
                stack.extend(items.iter().map(|i| i.as_ref()))
            }
            Expr::Object { fields, .. } => stack.extend(fields.iter().map(|(_, _, v)| v.as_ref())),
            _ => {}
        }
    }
}

/// The rule's name (the root of its head) and the nodes its head and bodies hold.
fn rule_parts(rule: &Rule) -> Option<(&str, Vec<Node<'_>>, Vec<&Expr>)> {
    let mut nodes = Vec::new();
    let mut args = Vec::new();
    let name = match rule {
        Rule::Spec { head, bodies, .. } => {
            let refr = match head {
                RuleHead::Compr { refr, assign, .. } => {
                    if let Some(a) = assign {
                        nodes.push(Node::Expr(&a.value));
                    }
                    refr
                }
                RuleHead::Set { refr, key, .. } => {
                    if let Some(k) = key {
                        nodes.push(Node::Expr(k));
                    }
                    refr
                }
                RuleHead::Func {
                    refr,
                    args: a,
                    assign,
                    ..
                } => {
                    args.extend(a.iter().map(|x| x.as_ref()));
                    if let Some(asg) = assign {
                        nodes.push(Node::Expr(&asg.value));
                    }
                    refr
                }
            };
            // Brackets in a reference head (`a[x] := ...`) may use names too.
            if let Expr::RefBrack { index, .. } = refr.as_ref() {
                nodes.push(Node::Expr(index));
            }
            for b in bodies {
                if let Some(a) = &b.assign {
                    nodes.push(Node::Expr(&a.value));
                }
                nodes.push(Node::Query(&b.query));
            }
            root_var(refr)?
        }
        Rule::Default {
            refr,
            args: a,
            value,
            ..
        } => {
            args.extend(a.iter().map(|x| x.as_ref()));
            nodes.push(Node::Expr(value));
            root_var(refr)?
        }
    };
    Some((name, nodes, args))
}

/// Refuses recursion, over-deep chains of rules and rules that may build over-deep values in
/// `modules` (one package).
pub fn check(modules: &[Ref<Module>]) -> Result<(), String> {
    // name -> names it uses (rules only), merged over every definition of the name.
    let mut graph: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut used: Vec<(&str, Uses<'_>)> = Vec::new();
    let mut defs: BTreeMap<&str, Vec<&Rule>> = BTreeMap::new();
    let mut imports: Imports<'_> = BTreeMap::new();
    let mut package_of: Vec<&str> = Vec::new();
    for m in modules {
        let package: Vec<&str> = match dotted(&m.package.refr) {
            Some(p) => p,
            None => continue,
        };
        // `package a.b` is the chain `data.a.b` for references.
        let package: Vec<&str> = package.into_iter().filter(|p| *p != "data").collect();
        for imp in &m.imports {
            if let Some(path) = dotted(&imp.refr).filter(|p| p.len() > 1 && p[0] == "data") {
                let name = imp.r#as.as_ref().map_or(path[path.len() - 1], |a| a.text());
                imports.insert(name, path);
            }
        }
        for rule in &m.policy {
            let Some((name, nodes, args)) = rule_parts(rule) else {
                continue;
            };
            graph.entry(name).or_default();
            defs.entry(name).or_default().push(rule.as_ref());
            let mut uses = Uses::default();
            for a in args {
                uses.bound.extend(pattern_vars(a));
            }
            walk(nodes, &package, &imports, &mut uses);
            if let Some((line, col)) = uses.long_query {
                return Err(format!(
                    "line {line}, column {col}: a query of more than {MAX_STATEMENTS} statements \
                     (split it into rules)"
                ));
            }
            if uses.whole {
                // The package's document holds the rule itself (OPA refuses it too).
                return Err(format!(
                    "rego_recursion_error: rule {name} is recursive: it reads the document of \
                     its own package"
                ));
            }
            used.push((name, uses));
        }
        package_of = package;
    }
    for (name, uses) in used {
        let deps: Vec<&str> = uses
            .vars
            .iter()
            .filter(|v| !uses.bound.contains(*v))
            .chain(uses.data.iter())
            .copied()
            .filter(|v| graph.contains_key(v))
            .collect();
        if let Some(set) = graph.get_mut(name) {
            set.extend(deps);
        }
    }
    // Each name's uses as a list, to step through by index.
    let graph: BTreeMap<&str, Vec<&str>> = graph
        .into_iter()
        .map(|(k, v)| (k, v.into_iter().collect()))
        .collect();
    let mut depths = Depths {
        known: BTreeMap::new(),
        imports: &imports,
        package: &package_of,
    };
    // Depth-first search with an explicit stack: colours find cycles, and the longest chain
    // below each name is known once all its uses are done (and so is how deep the values it
    // uses may be).
    #[derive(Clone, Copy, PartialEq)]
    enum Colour {
        White,
        Grey,
        Black(usize),
    }
    let names: Vec<&str> = graph.keys().copied().collect();
    let mut colour: BTreeMap<&str, Colour> = names.iter().map(|n| (*n, Colour::White)).collect();
    for &root in &names {
        if colour[root] != Colour::White {
            continue;
        }
        // (name, index of the next use to visit)
        let mut path: Vec<(&str, usize)> = vec![(root, 0)];
        colour.insert(root, Colour::Grey);
        while let Some(&mut (name, ref mut next)) = path.last_mut() {
            let uses = &graph[name];
            if let Some(&u) = uses.get(*next) {
                *next += 1;
                match colour[u] {
                    Colour::White => {
                        colour.insert(u, Colour::Grey);
                        path.push((u, 0));
                    }
                    Colour::Grey => {
                        let from = path.iter().position(|(n, _)| *n == u).unwrap_or(0);
                        let mut cycle: Vec<&str> = path[from..].iter().map(|(n, _)| *n).collect();
                        cycle.push(u);
                        return Err(format!(
                            "rego_recursion_error: rule {u} is recursive: {}",
                            cycle.join(" -> ")
                        ));
                    }
                    Colour::Black(_) => {}
                }
            } else {
                let depth = 1 + uses
                    .iter()
                    .map(|u| match colour[u] {
                        Colour::Black(d) => d,
                        _ => 0,
                    })
                    .max()
                    .unwrap_or(0);
                if depth > MAX_CALL_DEPTH {
                    return Err(format!(
                        "rule {name} uses a chain of more than {MAX_CALL_DEPTH} rules"
                    ));
                }
                let built = defs[name].iter().map(|r| depths.rule(r)).max().unwrap_or(0);
                if built > MAX_VALUE_DEPTH {
                    return Err(format!(
                        "rule {name} may build values nested more than {MAX_VALUE_DEPTH} levels \
                         deep (each call of a function adds the nesting it builds)"
                    ));
                }
                depths.known.insert(name, built);
                colour.insert(name, Colour::Black(depth));
                path.pop();
            }
        }
    }
    Ok(())
}

/// The variables of a pattern (`x`, `[x, y]`, `{"k": x}`).
fn pattern_vars(e: &Expr) -> Vec<&str> {
    let mut out = Vec::new();
    let mut stack = vec![e];
    while let Some(e) = stack.pop() {
        match e {
            Expr::Var { span, .. } => out.push(span.text()),
            Expr::Array { items, .. } | Expr::Set { items, .. } => {
                stack.extend(items.iter().map(|i| i.as_ref()))
            }
            Expr::Object { fields, .. } => stack.extend(fields.iter().map(|(_, _, v)| v.as_ref())),
            _ => {}
        }
    }
    out
}

/// Pushes the sub-expressions of `e` (not those inside comprehensions' queries).
fn push_children<'a>(e: &'a Expr, stack: &mut Vec<&'a Expr>) {
    match e {
        Expr::Array { items, .. } | Expr::Set { items, .. } => {
            stack.extend(items.iter().map(|i| i.as_ref()))
        }
        Expr::Object { fields, .. } => {
            for (_, k, v) in fields {
                stack.push(k);
                stack.push(v);
            }
        }
        Expr::ArrayCompr { term, .. } | Expr::SetCompr { term, .. } => stack.push(term),
        Expr::ObjectCompr { key, value, .. } => {
            stack.push(key);
            stack.push(value);
        }
        Expr::Call { params, .. } => stack.extend(params.iter().map(|p| p.as_ref())),
        Expr::UnaryExpr { expr, .. } => stack.push(expr),
        Expr::RefDot { refr, .. } => stack.push(refr),
        Expr::RefBrack { refr, index, .. } => {
            stack.push(refr);
            stack.push(index);
        }
        Expr::BinExpr { lhs, rhs, .. }
        | Expr::BoolExpr { lhs, rhs, .. }
        | Expr::ArithExpr { lhs, rhs, .. }
        | Expr::AssignExpr { lhs, rhs, .. } => {
            stack.push(lhs);
            stack.push(rhs);
        }
        Expr::Membership {
            key,
            value,
            collection,
            ..
        } => {
            stack.extend(key.iter().map(|k| k.as_ref()));
            stack.push(value);
            stack.push(collection);
        }
        _ => {}
    }
}

/// How deep the values a rule makes may be nested beyond what it reads: an upper bound,
/// worked out on its syntax tree. A container adds one level to what it holds; a call of a
/// function adds what the function adds to its arguments (so `f(f(x))` adds it twice); a
/// builtin adds [`BUILTIN_STEP`]; a variable is as deep as what it was bound to; a rule is as
/// deep as its value. What a rule reads (`input`, JSON it parses) is outside the count.
///
/// It recurses along expressions: [`super::scan`] has bounded their depth before the text
/// was parsed, and this runs on the compile thread.
struct Depths<'a> {
    /// Rules already worked out (every rule a rule uses is, when it is worked out).
    known: BTreeMap<&'a str, u64>,
    imports: &'a Imports<'a>,
    package: &'a [&'a str],
}

impl<'a> Depths<'a> {
    /// A rule's depth, by its name or an import of it.
    fn named(&self, name: &'a str) -> Option<u64> {
        let parts = resolve(vec![name], self.imports);
        let rule = match parts.as_slice() {
            [one] => *one,
            _ => data_rule(&parts, self.package)?,
        };
        self.known.get(rule).copied()
    }

    /// The package document: every rule's value under the package's path.
    fn whole(&self) -> u64 {
        let deepest = self.known.values().copied().max().unwrap_or(0);
        deepest.saturating_add(self.package.len() as u64 + 1)
    }

    fn expr(&self, e: &'a Expr, env: &BTreeMap<&'a str, u64>) -> u64 {
        let most = |items: &mut dyn Iterator<Item = &'a Ref<Expr>>| {
            items.map(|i| self.expr(i, env)).max().unwrap_or(0)
        };
        match e {
            Expr::Var { span, .. } => {
                let n = span.text();
                match env.get(n) {
                    Some(d) => *d,
                    None => self.named(n).unwrap_or(0),
                }
            }
            Expr::RefDot { refr, .. } | Expr::RefBrack { refr, .. } => {
                if let Some(parts) = dotted(e).map(|p| resolve(p, self.imports)) {
                    if let Some(rule) = data_rule(&parts, self.package) {
                        return self.named(rule).unwrap_or(0);
                    }
                    if data_whole(&parts, self.package) {
                        return self.whole();
                    }
                }
                // A part of a value is no deeper than the value.
                self.expr(refr, env)
            }
            Expr::Array { items, .. } | Expr::Set { items, .. } => {
                most(&mut items.iter()).saturating_add(1)
            }
            Expr::Object { fields, .. } => {
                most(&mut fields.iter().flat_map(|(_, k, v)| [k, v])).saturating_add(1)
            }
            Expr::ArrayCompr { term, .. } | Expr::SetCompr { term, .. } => {
                self.expr(term, env).saturating_add(1)
            }
            Expr::ObjectCompr { key, value, .. } => self
                .expr(key, env)
                .max(self.expr(value, env))
                .saturating_add(1),
            Expr::Call { fcn, params, .. } => {
                let args = most(&mut params.iter());
                // A function of this package by its name, its `data.` path, an import of it or
                // a ref head (`a.f(x)`, named by its root); anything else is a builtin.
                let callee = match fcn.as_ref() {
                    Expr::Var { span, .. } => self.named(span.text()),
                    other => dotted(other)
                        .map(|p| resolve(p, self.imports))
                        .and_then(|p| data_rule(&p, self.package))
                        .or_else(|| root_var(other))
                        .and_then(|r| self.named(r)),
                };
                callee.unwrap_or(BUILTIN_STEP).saturating_add(args)
            }
            Expr::UnaryExpr { expr, .. } => self.expr(expr, env),
            Expr::BinExpr { lhs, rhs, .. } | Expr::ArithExpr { lhs, rhs, .. } => {
                self.expr(lhs, env).max(self.expr(rhs, env))
            }
            // Scalars, comparisons, membership and assignment (true) nest nothing.
            _ => 0,
        }
    }

    /// The variables a rule binds, with what they are bound to: `x := e`, `x = e` (both
    /// ways), `some k, v in e`, `every k, v in e`, in its bodies and in the comprehensions
    /// inside them.
    fn bindings(rule: &'a Rule) -> Vec<(Vec<&'a str>, &'a Expr)> {
        let mut out = Vec::new();
        let (_, nodes, _) = match rule_parts(rule) {
            Some(p) => p,
            None => return out,
        };
        let mut stack = nodes;
        while let Some(n) = stack.pop() {
            match n {
                Node::Query(q) => {
                    for st in &q.stmts {
                        match &st.literal {
                            Literal::SomeIn {
                                key,
                                value,
                                collection,
                                ..
                            } => {
                                let mut vars = pattern_vars(value);
                                if let Some(k) = key {
                                    vars.extend(pattern_vars(k));
                                }
                                out.push((vars, collection.as_ref()));
                                stack.push(Node::Expr(collection));
                            }
                            Literal::Every {
                                key,
                                value,
                                domain,
                                query,
                                ..
                            } => {
                                let mut vars = vec![value.text()];
                                vars.extend(key.iter().map(|k| k.text()));
                                out.push((vars, domain.as_ref()));
                                stack.push(Node::Expr(domain));
                                stack.push(Node::Query(query));
                            }
                            Literal::Expr { expr, .. } | Literal::NotExpr { expr, .. } => {
                                stack.push(Node::Expr(expr))
                            }
                            Literal::SomeVars { .. } => {}
                        }
                    }
                }
                Node::Expr(e) => match e {
                    Expr::AssignExpr { op, lhs, rhs, .. } => {
                        out.push((pattern_vars(lhs), rhs.as_ref()));
                        if *op != AssignOp::ColEq {
                            out.push((pattern_vars(rhs), lhs.as_ref()));
                        }
                        stack.push(Node::Expr(lhs));
                        stack.push(Node::Expr(rhs));
                    }
                    Expr::ArrayCompr { term, query, .. } | Expr::SetCompr { term, query, .. } => {
                        stack.push(Node::Expr(term));
                        stack.push(Node::Query(query));
                    }
                    Expr::ObjectCompr {
                        key, value, query, ..
                    } => {
                        stack.push(Node::Expr(key));
                        stack.push(Node::Expr(value));
                        stack.push(Node::Query(query));
                    }
                    Expr::Array { items, .. } | Expr::Set { items, .. } => {
                        stack.extend(items.iter().map(|i| Node::Expr(i)))
                    }
                    Expr::Object { fields, .. } => {
                        for (_, k, v) in fields {
                            stack.push(Node::Expr(k));
                            stack.push(Node::Expr(v));
                        }
                    }
                    Expr::Call { params, .. } => stack.extend(params.iter().map(|p| Node::Expr(p))),
                    Expr::UnaryExpr { expr, .. } => stack.push(Node::Expr(expr)),
                    Expr::RefBrack { refr, index, .. } => {
                        stack.push(Node::Expr(refr));
                        stack.push(Node::Expr(index));
                    }
                    Expr::RefDot { refr, .. } => stack.push(Node::Expr(refr)),
                    Expr::BinExpr { lhs, rhs, .. }
                    | Expr::BoolExpr { lhs, rhs, .. }
                    | Expr::ArithExpr { lhs, rhs, .. } => {
                        stack.push(Node::Expr(lhs));
                        stack.push(Node::Expr(rhs));
                    }
                    Expr::Membership {
                        key,
                        value,
                        collection,
                        ..
                    } => {
                        stack.extend(key.iter().map(|k| Node::Expr(k)));
                        stack.push(Node::Expr(value));
                        stack.push(Node::Expr(collection));
                    }
                    _ => {}
                },
            }
        }
        out
    }

    /// How deep each variable may be, from what binds it. Variables are taken in the order of
    /// what they depend on, so the passes settle at once (a body may bind them in any order,
    /// and a pass per binding would be quadratic in a body of thousands); bindings that feed
    /// each other (`x = y`, `y = x`) take a few passes. `None` if they never settle: each pass
    /// made something deeper, which only values feeding their own nesting do, and no valid
    /// rule has those.
    fn bind(&self, eqs: Vec<(Vec<&'a str>, &'a Expr)>) -> Option<BTreeMap<&'a str, u64>> {
        let bound: BTreeSet<&str> = eqs.iter().flat_map(|(vs, _)| vs.iter().copied()).collect();
        // What each binding reads, of the variables bound here.
        let reads: Vec<BTreeSet<&str>> = eqs
            .iter()
            .map(|(_, e)| {
                let mut r = BTreeSet::new();
                let mut stack = vec![*e];
                while let Some(e) = stack.pop() {
                    if let Expr::Var { span, .. } = e {
                        if bound.contains(span.text()) {
                            r.insert(span.text());
                        }
                    }
                    push_children(e, &mut stack);
                }
                r
            })
            .collect();
        // Kahn's order over the bindings: one whose reads are all bound comes first.
        let mut binders: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, (vs, _)) in eqs.iter().enumerate() {
            for v in vs {
                binders.entry(v).or_default().push(i);
            }
        }
        let mut waiting: Vec<usize> = reads.iter().map(BTreeSet::len).collect();
        let mut readers: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, r) in reads.iter().enumerate() {
            for v in r {
                readers.entry(v).or_default().push(i);
            }
        }
        let mut left: BTreeMap<&str, usize> = binders.iter().map(|(v, b)| (*v, b.len())).collect();
        let mut ready: Vec<usize> = (0..eqs.len()).filter(|&i| waiting[i] == 0).collect();
        let mut order = Vec::with_capacity(eqs.len());
        let mut placed = vec![false; eqs.len()];
        while let Some(i) = ready.pop() {
            if placed[i] {
                continue;
            }
            placed[i] = true;
            order.push(i);
            for v in &eqs[i].0 {
                let l = left.entry(v).or_insert(0);
                *l = l.saturating_sub(1);
                if *l == 0 {
                    for &j in readers.get(v).map_or(&[][..], Vec::as_slice) {
                        waiting[j] = waiting[j].saturating_sub(1);
                        if waiting[j] == 0 {
                            ready.push(j);
                        }
                    }
                }
            }
        }
        // Bindings in a cycle go last, in any order.
        order.extend((0..eqs.len()).filter(|&i| !placed[i]));
        let mut env: BTreeMap<&'a str, u64> = BTreeMap::new();
        for _ in 0..8 {
            let mut changed = false;
            for &i in &order {
                let (vars, e) = &eqs[i];
                let d = self.expr(e, &env).min(MAX_VALUE_DEPTH + 1);
                for v in vars {
                    let slot = env.entry(v).or_insert(0);
                    if d > *slot {
                        *slot = d;
                        changed = true;
                    }
                }
            }
            if !changed {
                return Some(env);
            }
        }
        None
    }

    /// How deep one definition's value may be.
    fn rule(&self, rule: &'a Rule) -> u64 {
        let env = match self.bind(Self::bindings(rule)) {
            Some(env) => env,
            None => return MAX_VALUE_DEPTH + 1,
        };
        // A rule head's path (`a.b[k] := v`) nests its value under it.
        let head_path = |refr: &'a Expr| {
            let (mut steps, mut keys, mut cur) = (0u64, 0u64, refr);
            loop {
                match cur {
                    Expr::RefDot { refr, .. } => {
                        steps += 1;
                        cur = refr;
                    }
                    Expr::RefBrack { refr, index, .. } => {
                        steps += 1;
                        keys = keys.max(self.expr(index, &env));
                        cur = refr;
                    }
                    _ => return (steps, keys),
                }
            }
        };
        match rule {
            Rule::Spec { head, bodies, .. } => {
                let elses = bodies
                    .iter()
                    .filter_map(|b| b.assign.as_ref())
                    .map(|a| self.expr(&a.value, &env))
                    .max()
                    .unwrap_or(0);
                let value = match head {
                    RuleHead::Compr { refr, assign, .. } => {
                        let (steps, keys) = head_path(refr);
                        let v = assign.as_ref().map_or(0, |a| self.expr(&a.value, &env));
                        steps.saturating_add(keys.max(v).max(elses))
                    }
                    RuleHead::Set { refr, key, .. } => {
                        let (steps, keys) = head_path(refr);
                        let k = key.as_ref().map_or(0, |k| self.expr(k, &env));
                        steps.saturating_add(1).saturating_add(keys.max(k))
                    }
                    RuleHead::Func { assign, .. } => assign
                        .as_ref()
                        .map_or(0, |a| self.expr(&a.value, &env))
                        .max(elses),
                };
                value.max(elses)
            }
            Rule::Default { refr, value, .. } => {
                let (steps, keys) = head_path(refr);
                steps.saturating_add(keys.max(self.expr(value, &env)))
            }
        }
    }
}
