//! Structural limits on a Rego text, checked on its tokens before regorus parses it.
//!
//! regorus's parser, its analysis and its compiler recurse along the shape of a policy, and a
//! stack overflow aborts the whole process; its parser also backtracks at every `[` and `{`,
//! so parse time doubles with each level of them. Nothing here is measured in stack bytes or
//! seconds: every bound is a count taken on the tokens, one pass, no recursion, so that the
//! passes after it recurse a bounded number of levels and take bounded time whatever the
//! text. The counts are deliberately coarse (they may over-count, never under-count):
//!
//! - nesting: open `(`, `[`, `{` at once (the parser recurses once per level);
//! - bracket nesting: open `[` and `{` at once (the parser's work doubles per level);
//! - unary chains: `- - - x` recurses once per sign without going through the parser's own
//!   depth counter;
//! - expression depth: binary operators, `.field` and `[index]` steps and calls build
//!   left-deep trees in a loop, one level per operator, which every later pass walks
//!   recursively. Within one bracket level, the operators of one expression are counted;
//!   two operands side by side (`x y`) start a new expression (a new statement), as do
//!   `,` `;` `:` and statement keywords. The depth is the sum over the open levels;
//! - parse work: the sum over tokens of 2 to the power of their bracket nesting, which is
//!   what the backtracking parser spends.
//!
//! The lexer is regorus's own, so tokens are what the parser will see. A text the lexer
//! refuses stops the scan where it fails: the parser refuses it at the same point, having
//! only seen the checked tokens before it.

use std::num::{NonZeroU32, NonZeroUsize};

use regorus::unstable::{Lexer, Source, TokenKind};

/// Open brackets of all kinds at once.
pub const MAX_NESTING: usize = 24;
/// Open `[` and `{` at once. regorus 0.14.1 parses a 64 KiB text nested 2 deep in ~0.2 s
/// and 6 deep in ~3 s (twice as long per level), so the parse-work bound below is what
/// really limits; this keeps the error message about nesting where nesting is the cause.
pub const MAX_BRACKET_NESTING: usize = 6;
/// Unary minus signs in a row (`- - x`).
pub const MAX_UNARY: usize = 8;
/// Depth of an expression tree, summed over nested brackets (see the module comment).
pub const MAX_EXPR_DEPTH: usize = 96;
/// Parse work: tokens weighted by 2^(bracket nesting). A flat 64 KiB policy is ~30,000
/// tokens; nested ones pay double per level.
pub const MAX_PARSE_WORK: u64 = 1 << 16;

/// Words that start a statement or a part of one: after them a new expression begins.
const STATEMENT_WORDS: [&str; 11] = [
    "if", "else", "not", "some", "every", "default", "package", "import", "contains", "with",
    "then",
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Prev {
    /// Start, an opening bracket, a separator or a statement word: an operand comes next.
    Start,
    /// An operand or a closing bracket ended here.
    Operand,
    /// A binary or unary operator.
    Operator,
    /// `.`: the next identifier is a field name, whatever it spells.
    Dot,
}

struct Level {
    /// `(`, `[`, `{`, or 0 for the top level.
    open: u8,
    /// Operators in the current expression at this level.
    run: usize,
}

/// Checks the structural limits. `Err` is a one-line message for the API user.
pub fn check(text: &str, max_bytes: usize) -> Result<(), String> {
    let cap = max_bytes.max(1024).saturating_add(1);
    let source = match Source::from_contents_with_limits(
        "policy.rego".into(),
        text.into(),
        NonZeroUsize::new(cap).unwrap_or(NonZeroUsize::MIN),
        NonZeroUsize::new(cap).unwrap_or(NonZeroUsize::MIN),
    ) {
        Ok(s) => s,
        // The parser reports it with the same words.
        Err(_) => return Ok(()),
    };
    let mut lexer = Lexer::new(&source);
    lexer.set_max_col(
        NonZeroU32::new(u32::try_from(cap).unwrap_or(u32::MAX)).unwrap_or(NonZeroU32::MIN),
    );

    let mut levels = vec![Level { open: 0, run: 0 }];
    // Sum over levels of (run + 1), kept as levels change.
    let mut depth = 1usize;
    let mut brackets = 0usize;
    let mut unary = 0usize;
    let mut work = 0u64;
    let mut prev = Prev::Start;
    let mut prev_end = 0u32;

    loop {
        let Ok(tok) = lexer.next_token() else {
            return Ok(());
        };
        let span = &tok.1;
        let at = || format!("line {}, column {}", span.line, span.col);
        let text = span.text();
        let operand_before = prev == Prev::Operand;
        // Binary operator at this level: one more level of the expression tree.
        let bump = |levels: &mut Vec<Level>, depth: &mut usize| {
            if let Some(l) = levels.last_mut() {
                l.run += 1;
                *depth += 1;
            }
        };
        let reset = |levels: &mut Vec<Level>, depth: &mut usize| {
            if let Some(l) = levels.last_mut() {
                *depth -= l.run;
                l.run = 0;
            }
        };
        match tok.0 {
            TokenKind::Eof => return Ok(()),
            TokenKind::Ident if text == "set(" => {
                // regorus lexes the empty set `set()` as one token `set(` and a `)`: an
                // opening parenthesis, as far as nesting goes.
                if operand_before {
                    reset(&mut levels, &mut depth);
                }
                levels.push(Level { open: b'(', run: 0 });
                depth += 1;
                if levels.len() - 1 > MAX_NESTING {
                    return Err(format!(
                        "{}: brackets and parentheses nested deeper than {MAX_NESTING} levels",
                        at()
                    ));
                }
                prev = Prev::Start;
            }
            TokenKind::Ident if prev == Prev::Dot => {
                prev = Prev::Operand;
                unary = 0;
            }
            TokenKind::Ident if text == "in" || text == "as" => {
                bump(&mut levels, &mut depth);
                prev = Prev::Operator;
            }
            TokenKind::Ident if STATEMENT_WORDS.contains(&text) => {
                reset(&mut levels, &mut depth);
                prev = Prev::Start;
                unary = 0;
            }
            TokenKind::Number if text.starts_with('-') && operand_before => {
                // `x -1`: the parser reads a subtraction.
                bump(&mut levels, &mut depth);
                prev = Prev::Operand;
            }
            TokenKind::Ident | TokenKind::Number | TokenKind::String | TokenKind::RawString => {
                if operand_before {
                    // Two operands side by side: a new statement began.
                    reset(&mut levels, &mut depth);
                }
                prev = Prev::Operand;
                unary = 0;
            }
            TokenKind::Symbol => match text {
                "(" | "[" | "{" => {
                    if operand_before {
                        let call_or_index = text == "(" || (text == "[" && span.start == prev_end);
                        if call_or_index {
                            bump(&mut levels, &mut depth);
                        } else if text == "[" {
                            reset(&mut levels, &mut depth);
                        }
                    }
                    let open = text.as_bytes()[0];
                    if open != b'(' {
                        brackets += 1;
                        if brackets > MAX_BRACKET_NESTING {
                            return Err(format!(
                                "{}: brackets nested deeper than {MAX_BRACKET_NESTING} levels",
                                at()
                            ));
                        }
                    }
                    levels.push(Level { open, run: 0 });
                    depth += 1;
                    if levels.len() - 1 > MAX_NESTING {
                        return Err(format!(
                            "{}: brackets and parentheses nested deeper than {MAX_NESTING} levels",
                            at()
                        ));
                    }
                    prev = Prev::Start;
                }
                ")" | "]" | "}" => {
                    let want = match text {
                        ")" => b'(',
                        "]" => b'[',
                        _ => b'{',
                    };
                    // A closer that closes nothing open is skipped, levels left as they are
                    // (counting too much is safe, too little is not), and the scan goes on:
                    // where the parser refuses it nothing is lost, and where it reads something
                    // this scan does not know, what follows is still counted. (Stopping here
                    // let `set()`, which regorus lexes as `set(` and `)`, end the scan, and
                    // brackets nested 14 deep after it took regorus 0.6 s, doubling per level.)
                    if levels.last().is_some_and(|l| l.open == want) {
                        if let Some(l) = levels.pop() {
                            depth -= l.run + 1;
                        }
                        if want != b'(' {
                            brackets -= 1;
                        }
                    }
                    prev = Prev::Operand;
                    unary = 0;
                }
                "," | ";" | ":" => {
                    reset(&mut levels, &mut depth);
                    prev = Prev::Start;
                    unary = 0;
                }
                "." => {
                    bump(&mut levels, &mut depth);
                    prev = Prev::Dot;
                }
                "-" if !operand_before => {
                    unary += 1;
                    if unary > MAX_UNARY {
                        return Err(format!(
                            "{}: more than {MAX_UNARY} unary minus signs in a row",
                            at()
                        ));
                    }
                    bump(&mut levels, &mut depth);
                    prev = Prev::Operator;
                }
                _ => {
                    // + - * / % & | = == != < <= > >= :=
                    bump(&mut levels, &mut depth);
                    prev = Prev::Operator;
                }
            },
            #[allow(unreachable_patterns)]
            _ => prev = Prev::Operand,
        }
        if depth > MAX_EXPR_DEPTH {
            return Err(format!(
                "{}: expression nested deeper than {MAX_EXPR_DEPTH} levels (operators, \
                 references and brackets together)",
                at()
            ));
        }
        work = work.saturating_add(1u64 << brackets.min(63));
        if work > MAX_PARSE_WORK {
            return Err(format!(
                "{}: the policy is too big for its nesting (tokens weighted by 2 per level \
                 of brackets exceed {MAX_PARSE_WORK})",
                at()
            ));
        }
        prev_end = span.end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(t: &str) {
        assert_eq!(check(t, 65536), Ok(()), "{t}");
    }

    fn refused(t: &str, words: &str) {
        let e = check(t, 65536).unwrap_err();
        assert!(e.contains(words), "{e}");
        assert!(e.starts_with("line "), "{e}");
    }

    #[test]
    fn ordinary_policies_pass() {
        ok(
            r#"package policy inOrg{input.claims.values.email[_]=="localuser@email.com"}C{inOrg}R{inOrg}U{inOrg}D{inOrg}X{inOrg}P{inOrg}"#,
        );
        ok("package p\nimport rego.v1\nR if { some g in input.claims.values.group; startswith(g, \"a\") }\nX if input.action == \"R\"\n");
        // Many statements and rules do not add up: each starts a new expression.
        let mut s = String::from("package p\nimport rego.v1\n");
        for i in 0..2000 {
            s.push_str(&format!("r{i} := input.a.b.c + {i} * 2\n"));
        }
        ok(&s);
        let mut s = String::from("package p\nimport rego.v1\nx := [");
        for i in 0..5000 {
            s.push_str(&format!("{i},"));
        }
        s.push_str("1]\n");
        ok(&s);
    }

    #[test]
    fn unary_chains_are_counted() {
        refused(
            &format!("package p\nx := {}1\n", "-".repeat(1000)),
            "unary minus",
        );
        refused(
            &format!("package p\nx := {}1\n", "- ".repeat(9)),
            "unary minus",
        );
        ok("package p\nx := - - 1\n");
        // Parentheses between the signs do not break the chain.
        refused(
            &format!("package p\nx := {}1{}\n", "-(".repeat(40), ")".repeat(40)),
            "unary minus",
        );
    }

    #[test]
    fn operator_chains_are_counted() {
        refused(
            &format!("package p\nx := 1{}\n", "+1".repeat(200)),
            "expression nested",
        );
        refused(
            &format!("package p\nx := 1{}\n", "==1".repeat(200)),
            "expression nested",
        );
        refused(
            &format!("package p\nx := {{1}}{}\n", "|{1}".repeat(200)),
            "expression nested",
        );
        refused(
            &format!("package p\nx := a{}\n", ".b".repeat(200)),
            "expression nested",
        );
        refused(
            &format!("package p\nx := a{}\n", "[1]".repeat(200)),
            "expression nested",
        );
        // Across lines too: a chain does not end at a newline.
        refused(
            &format!("package p\nx := 1{}\n", "\n+ 1".repeat(200)),
            "expression nested",
        );
        ok(&format!("package p\nx := 1{}\n", "+1".repeat(60)));
    }

    #[test]
    fn calls_and_nesting_are_counted() {
        refused(
            &format!("package p\nx := {}1{}\n", "f(".repeat(100), ")".repeat(100)),
            "nested deeper",
        );
        refused(
            &format!("package p\nx := {}1{}\n", "[".repeat(7), "]".repeat(7)),
            "nested deeper than 6",
        );
        // Brackets in strings and comments are not brackets.
        ok("package p\nimport rego.v1\n# [[[[[[[[[[\nR if { \"[[[[[[[[[[[\" != `{{{{{{{{{{{{{` }\n");
    }

    /// Found by fuzzing (`fixtures/fuzz/rego/empty-set-then-deep-brackets.rego`): regorus lexes
    /// `set()` as `set(` and `)`, the scan took the `)` for an unbalanced closer and stopped
    /// there, and nothing after it was counted: brackets nested 14 deep after a `set()` took
    /// regorus 0.6 s to parse (doubling per level: a module a little deeper hung a compile
    /// for minutes).
    #[test]
    fn an_empty_set_does_not_end_the_scan() {
        let deep = format!("{}1{}", "[".repeat(8), "]".repeat(8));
        for before in [
            "x := set()",
            "x := {1} | set()",
            "x := count(set())",
            "x := )",
            "x := ]",
        ] {
            refused(
                &format!("package p\nimport rego.v1\n{before}\ns := {deep}\n"),
                "nested deeper than 6",
            );
        }
        refused(
            &format!("package p\nx := {}1{}\n", "set(".repeat(30), ")".repeat(30)),
            "nested deeper than 24",
        );
        ok("package p\nimport rego.v1\nx := set()\ny := [set(), {set()}]\nR if count(x) == 0\n");
    }

    #[test]
    fn parse_work_is_bounded() {
        let mut s = String::from("package p\nimport rego.v1\n");
        while s.len() < 65_000 {
            s.push_str("x := [[[[[1]]]]]\n");
        }
        refused(&s, "too big for its nesting");
    }
}
