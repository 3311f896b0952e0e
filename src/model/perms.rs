//! Permission letters C R U D X P as a bit set.

use serde::{Serialize, Serializer};

#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Perms(u8);

/// DO NOT CHANGE the order: it is the order letters are printed in.
const LETTERS: [(char, u8); 6] = [('C', 1), ('R', 2), ('U', 4), ('D', 8), ('X', 16), ('P', 32)];

impl Perms {
    pub const NONE: Perms = Perms(0);
    pub const C: Perms = Perms(1);
    pub const R: Perms = Perms(2);
    pub const U: Perms = Perms(4);
    pub const D: Perms = Perms(8);
    pub const X: Perms = Perms(16);
    pub const P: Perms = Perms(32);
    pub const ALL: Perms = Perms(63);
    /// Letters that change the store; `readonly` callers lose them.
    pub const WRITES: Perms = Perms(1 | 4 | 8 | 32);

    pub fn from_letter(c: char) -> Option<Perms> {
        LETTERS
            .iter()
            .find(|(l, _)| *l == c.to_ascii_uppercase())
            .map(|&(_, b)| Perms(b))
    }

    pub const fn contains(self, other: Perms) -> bool {
        self.0 & other.0 == other.0
    }
    pub const fn union(self, other: Perms) -> Perms {
        Perms(self.0 | other.0)
    }
    pub const fn minus(self, other: Perms) -> Perms {
        Perms(self.0 & !other.0)
    }
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
    /// The letters of `bits` (only the six known ones are kept).
    pub const fn from_bits(bits: u8) -> Perms {
        Perms(bits & Perms::ALL.0)
    }

    pub const fn bits(self) -> u8 {
        self.0
    }

    pub fn letters(self) -> impl Iterator<Item = char> {
        LETTERS
            .iter()
            .filter(move |(_, b)| self.0 & b != 0)
            .map(|&(l, _)| l)
    }
}

/// One permission letter: what a decision is asked for.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Letter {
    C,
    R,
    U,
    D,
    X,
    P,
}

impl Letter {
    /// The set holding only this letter.
    pub const fn perm(self) -> Perms {
        match self {
            Letter::C => Perms::C,
            Letter::R => Perms::R,
            Letter::U => Perms::U,
            Letter::D => Perms::D,
            Letter::X => Perms::X,
            Letter::P => Perms::P,
        }
    }

    /// The letter as policies receive it (`input.action`, gm-data's Lisp `action`).
    pub const fn as_char(self) -> char {
        match self {
            Letter::C => 'C',
            Letter::R => 'R',
            Letter::U => 'U',
            Letter::D => 'D',
            Letter::X => 'X',
            Letter::P => 'P',
        }
    }
}

impl std::fmt::Display for Letter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.as_char())
    }
}

impl From<crate::model::Action> for Letter {
    /// The letter an action needs on the object it changes.
    fn from(a: crate::model::Action) -> Letter {
        match a {
            crate::model::Action::C => Letter::C,
            crate::model::Action::U => Letter::U,
            crate::model::Action::D => Letter::D,
            crate::model::Action::P => Letter::P,
        }
    }
}

impl std::ops::BitOr for Perms {
    type Output = Perms;
    fn bitor(self, rhs: Perms) -> Perms {
        self.union(rhs)
    }
}
impl std::ops::BitOrAssign for Perms {
    fn bitor_assign(&mut self, rhs: Perms) {
        *self = self.union(rhs);
    }
}

impl std::fmt::Debug for Perms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s: String = self.letters().collect();
        write!(f, "Perms({s})")
    }
}

impl std::fmt::Display for Perms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s: String = self.letters().collect();
        f.write_str(&s)
    }
}

/// Serialises as a list of one-letter strings: `["R","X"]`.
impl Serialize for Perms {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.letters().map(|c| c.to_string()))
    }
}

/// Reads a list of one-letter strings from CRUDXP (`["R","X"]`); anything else is an error.
impl<'de> serde::Deserialize<'de> for Perms {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Perms, D::Error> {
        let letters = Vec::<String>::deserialize(d)?;
        letters.iter().try_fold(Perms::NONE, |acc, l| {
            let mut chars = l.chars();
            match (chars.next().and_then(Perms::from_letter), chars.next()) {
                (Some(p), None) => Ok(acc | p),
                _ => Err(serde::de::Error::custom(format!(
                    "{l:?} is not one of the letters C, R, U, D, X, P"
                ))),
            }
        })
    }
}

impl std::str::FromStr for Perms {
    type Err = char;
    /// Parses a string of letters such as `"CRUDXP"` or `"RX"`.
    fn from_str(s: &str) -> Result<Perms, char> {
        s.chars().try_fold(Perms::NONE, |acc, c| {
            Perms::from_letter(c).map(|p| acc | p).ok_or(c)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letters_print_in_crudxp_order() {
        let p: Perms = "XPRC".parse().unwrap();
        assert_eq!(p.to_string(), "CRXP");
        assert_eq!(serde_json::to_string(&p).unwrap(), r#"["C","R","X","P"]"#);
    }

    #[test]
    fn unknown_letters_are_rejected() {
        assert_eq!("RZ".parse::<Perms>(), Err('Z'));
    }
}
