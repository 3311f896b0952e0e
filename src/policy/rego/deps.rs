//! Which rules of a module use which, found on its syntax tree: recursion is refused, as OPA
//! refuses it (`rego_recursion_error`), and so are chains of rules using rules deeper than
//! [`MAX_CALL_DEPTH`].
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
}

fn walk<'a>(start: Vec<Node<'a>>, package: &[&str], uses: &mut Uses<'a>) {
    let mut stack = start;
    while let Some(n) = stack.pop() {
        match n {
            Node::Query(q) => {
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
                    uses.vars.insert(span.text());
                }
                Expr::RefDot { refr, .. } | Expr::RefBrack { refr, .. } => {
                    if let Some(parts) = dotted(e) {
                        if parts.len() > package.len() + 1
                            && parts[0] == "data"
                            && parts[1..=package.len()] == *package
                        {
                            uses.data.insert(parts[package.len() + 1]);
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

/// Refuses recursion and over-deep chains of rules in `modules` (one package).
pub fn check(modules: &[Ref<Module>]) -> Result<(), String> {
    // name -> names it uses (rules only), merged over every definition of the name.
    let mut graph: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut used: Vec<(&str, Uses<'_>)> = Vec::new();
    for m in modules {
        let package: Vec<&str> = match dotted(&m.package.refr) {
            Some(p) => p,
            None => continue,
        };
        // `package a.b` is the chain `data.a.b` for references.
        let package: Vec<&str> = package.into_iter().filter(|p| *p != "data").collect();
        for rule in &m.policy {
            let Some((name, nodes, args)) = rule_parts(rule) else {
                continue;
            };
            graph.entry(name).or_default();
            let mut uses = Uses::default();
            for a in args {
                let mut b = BTreeSet::new();
                let mut stack = vec![a];
                while let Some(e) = stack.pop() {
                    match e {
                        Expr::Var { span, .. } => {
                            b.insert(span.text());
                        }
                        Expr::Array { items, .. } | Expr::Set { items, .. } => {
                            stack.extend(items.iter().map(|i| i.as_ref()))
                        }
                        Expr::Object { fields, .. } => {
                            stack.extend(fields.iter().map(|(_, _, v)| v.as_ref()))
                        }
                        _ => {}
                    }
                }
                uses.bound.extend(b);
            }
            walk(nodes, &package, &mut uses);
            used.push((name, uses));
        }
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
    // Depth-first search with an explicit stack: colours find cycles, and the longest chain
    // below each name is known once all its uses are done.
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
            let uses: Vec<&str> = graph[name].iter().copied().collect();
            if *next < uses.len() {
                let u = uses[*next];
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
                colour.insert(name, Colour::Black(depth));
                path.pop();
            }
        }
    }
    Ok(())
}
