//! Building blocks shared by the generators: choices, odd strings, byte and text mutations.

use super::Rng;

pub trait Pick {
    /// True once in `n` times.
    fn one_in(&mut self, n: u64) -> bool;
    /// In `lo..=hi`.
    fn between(&mut self, lo: usize, hi: usize) -> usize;
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T;
    /// A size that is usually small and sometimes large: up to `max`, log-uniform.
    fn size(&mut self, max: usize) -> usize;
}

impl Pick for Rng {
    fn one_in(&mut self, n: u64) -> bool {
        self.below(n.max(1)) == 0
    }
    fn between(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi.saturating_sub(lo) + 1)
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
    fn size(&mut self, max: usize) -> usize {
        let bits = usize::BITS - max.leading_zeros();
        let b = self.below(bits as usize + 1);
        self.below((1usize << b).min(max.saturating_add(1)))
    }
}

/// Strings that have broken parsers before: empty, blank, control characters, byte order
/// marks, right-to-left marks, combining marks, characters whose lower case is not ASCII's,
/// path tricks, quotes and escapes, the highest code point.
pub const ODD: &[&str] = &[
    "",
    " ",
    "\t",
    "\n",
    "\r\n",
    "\u{0}",
    "\u{1}",
    "\u{7f}",
    "\u{85}",
    "\u{a0}",
    "\u{2028}",
    "\u{202e}",
    "\u{feff}",
    "\u{fffd}",
    "\u{10ffff}",
    "e\u{301}",
    "\u{e9}",
    "\u{212a}",
    "\u{130}",
    "\u{df}",
    "\u{1f600}",
    "\u{540d}\u{524d}",
    "/",
    ".",
    "..",
    "a/b",
    "..%2f",
    "%00",
    "\\",
    "\"",
    "'",
    "`",
    "(",
    ")",
    "{",
    "}",
    "[",
    "]",
    "#",
    "--",
    "null",
    "true",
    "0",
    "-1",
    "1e999",
    "NaN",
    "R",
    "CRUDXP",
    "yield",
    "input",
    "data",
    "package",
];

/// An odd string, sometimes several glued together, sometimes repeated to a length.
pub fn odd_string(rng: &mut Rng) -> String {
    let mut s = String::new();
    for _ in 0..rng.between(1, 3) {
        s.push_str(rng.pick::<&str>(ODD));
    }
    if rng.one_in(8) {
        let n = rng.size(5000);
        s = s.repeat(n.max(1));
    }
    if rng.one_in(6) {
        s.push_str(&plain_word(rng));
    }
    s
}

/// A short ASCII word.
pub fn plain_word(rng: &mut Rng) -> String {
    const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyz";
    let n = rng.between(1, 8);
    (0..n).map(|_| *rng.pick(LETTERS) as char).collect()
}

/// A word in a random mix of upper and lower case (field names are matched without case).
pub fn any_case(rng: &mut Rng, word: &str) -> String {
    match rng.below(4u32) {
        0 | 1 => word.to_string(),
        2 => word.to_ascii_uppercase(),
        _ => word
            .chars()
            .map(|c| {
                if rng.one_in(2) {
                    c.to_ascii_uppercase()
                } else {
                    c
                }
            })
            .collect(),
    }
}

/// A few byte-level mutations of `data`: flips, random bytes, insertions of dictionary
/// tokens, deletions, duplications (which nest brackets deeper), splices from `pool`,
/// truncation.
pub fn mutate(rng: &mut Rng, data: &[u8], dict: &[&str], pool: &[Vec<u8>]) -> Vec<u8> {
    let mut d = data.to_vec();
    for _ in 0..rng.between(1, 6) {
        let len = d.len();
        let at = if len == 0 { 0 } else { rng.below(len + 1) };
        match rng.below(10u32) {
            0 if len > 0 => {
                let i = rng.below(len);
                d[i] ^= 1 << rng.below(8u32);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                d[i] = rng.next() as u8;
            }
            2 | 3 if !dict.is_empty() => {
                let tok = rng.pick(dict).as_bytes().to_vec();
                let times = if rng.one_in(8) {
                    rng.size(200).max(1)
                } else {
                    1
                };
                for _ in 0..times {
                    d.splice(at..at, tok.iter().copied());
                }
            }
            4 if len > 0 => {
                let n = rng.size(len - at.min(len)).max(1).min(len - at.min(len));
                d.drain(at..at + n);
            }
            5 if len > 0 => {
                // Duplicate a span, sometimes many times: nesting and repetition.
                let from = rng.below(len);
                let n = rng.size(len - from).max(1);
                let span = d[from..from + n].to_vec();
                let times = if rng.one_in(6) {
                    rng.size(100).max(1)
                } else {
                    1
                };
                for _ in 0..times {
                    d.splice(at..at, span.iter().copied());
                }
            }
            6 if !pool.is_empty() => {
                let other = rng.pick(pool);
                if !other.is_empty() {
                    let from = rng.below(other.len());
                    let n = rng.size(other.len() - from).max(1);
                    d.splice(at..at, other[from..from + n].iter().copied());
                }
            }
            7 if len > 0 => d.truncate(at),
            8 => {
                let s = odd_string(rng);
                d.splice(at..at, s.bytes());
            }
            _ => {
                let n = rng.size(16).max(1);
                let bytes = rng.bytes(n);
                d.splice(at..at, bytes);
            }
        }
        if d.len() > 1 << 20 {
            d.truncate(1 << 20);
        }
    }
    d
}

/// `mutate`, kept valid UTF-8 (what a text parser can be given).
pub fn mutate_text(rng: &mut Rng, text: &str, dict: &[&str], pool: &[Vec<u8>]) -> String {
    String::from_utf8_lossy(&mutate(rng, text.as_bytes(), dict, pool)).into_owned()
}

/// Random bytes, sometimes drawn from a small alphabet so that structure appears.
pub fn random_bytes(rng: &mut Rng, alphabet: &[u8]) -> Vec<u8> {
    let n = rng.size(512);
    if alphabet.is_empty() || rng.one_in(3) {
        return rng.bytes(n);
    }
    (0..n).map(|_| *rng.pick(alphabet)).collect()
}
