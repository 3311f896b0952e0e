//! Object ids and timestamps: 16 lower-case hex digits on the wire, `u64` inside.
//!
//! Both are nanosecond timestamps handed out by one clock (see `store::clock`), so they
//! are unique and strictly increasing across the whole store.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// "While current": the `tstampend` of a live version and the default `expiration`.
/// DO NOT CHANGE: part of the wire format and of stored events.
pub const FOREVER: u64 = 0x7fff_ffff_ffff_ffff;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not an id: expected up to 16 hex digits")]
pub struct BadId(pub String);

fn parse_hex16(s: &str) -> Result<u64, BadId> {
    if s.is_empty() || s.len() > 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(BadId(s.to_string()));
    }
    u64::from_str_radix(s, 16).map_err(|_| BadId(s.to_string()))
}

macro_rules! hex_id {
    ($name:ident, $doc:literal) => {
        #[doc = $doc]
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(pub u64);

        impl $name {
            pub const fn get(self) -> u64 {
                self.0
            }
            /// The value as SQLite stores it. Every id is below 2^63 (see `FOREVER`).
            pub const fn as_i64(self) -> i64 {
                self.0 as i64
            }
            pub const fn from_i64(v: i64) -> Self {
                Self(v as u64)
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:016x}", self.0)
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:016x}", self.0)
            }
        }
        impl FromStr for $name {
            type Err = BadId;
            /// Accepts 1 to 16 hex digits (`1` is the root); case-insensitive.
            fn from_str(s: &str) -> Result<Self, BadId> {
                let v = parse_hex16(s)?;
                if v > FOREVER {
                    return Err(BadId(s.to_string()));
                }
                Ok(Self(v))
            }
        }
        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

hex_id!(
    Oid,
    "An object id: 16 hex digits, the root is `0000000000000001`."
);
hex_id!(Tstamp, "A version's nanosecond timestamp: 16 hex digits.");

impl Oid {
    /// DO NOT CHANGE: the root's oid is part of the wire format.
    pub const ROOT: Oid = Oid(1);
    /// The parent recorded for the root itself.
    pub const NONE: Oid = Oid(0);
}

impl Tstamp {
    pub const FOREVER: Tstamp = Tstamp(FOREVER);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_print_as_16_lowercase_hex_digits() {
        assert_eq!(Oid::ROOT.to_string(), "0000000000000001");
        assert_eq!(Tstamp(0x158340da66e0d624).to_string(), "158340da66e0d624");
    }

    #[test]
    fn ids_parse_short_and_upper_case_forms() {
        assert_eq!("1".parse::<Oid>().unwrap(), Oid::ROOT);
        assert_eq!(
            "158340DA66D4A444".parse::<Oid>().unwrap(),
            Oid(0x158340da66d4a444)
        );
    }

    #[test]
    fn ids_reject_garbage_and_overflow() {
        for bad in [
            "",
            "xyz",
            "12345678901234567",
            "ffffffffffffffff",
            "-1",
            " 1",
        ] {
            assert!(bad.parse::<Oid>().is_err(), "{bad:?} parsed");
        }
    }
}
