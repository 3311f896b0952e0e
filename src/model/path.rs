//! Addresses of objects: an oid, optionally followed by names (`1/world/jane/pics`).

use std::fmt;

use super::Oid;

/// Longest name accepted (bytes). Names are stored as given; this bounds index keys.
pub const MAX_NAME_BYTES: usize = 1024;
/// Deepest path accepted (names after the starting oid).
pub const MAX_PATH_DEPTH: usize = 256;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PathError {
    #[error("path is empty")]
    Empty,
    #[error("path must start with an oid, not {0:?}")]
    BadStart(String),
    #[error("{0}")]
    BadName(String),
    #[error("path has more than {MAX_PATH_DEPTH} names")]
    TooDeep,
}

/// Checks a single object name (SPEC §5): not empty, no `/`, not `.` or `..`, no NUL,
/// at most MAX_NAME_BYTES.
pub fn check_name(name: &str) -> Result<(), PathError> {
    if name.is_empty() {
        return Err(PathError::BadName("name is empty".into()));
    }
    if name == "." || name == ".." {
        return Err(PathError::BadName(format!("name {name:?} is not allowed")));
    }
    if name.contains('/') || name.contains('\0') {
        return Err(PathError::BadName(format!(
            "name {name:?} may not contain '/' or NUL"
        )));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(PathError::BadName(format!(
            "name is {} bytes; the limit is {MAX_NAME_BYTES}",
            name.len()
        )));
    }
    Ok(())
}

/// Checks a name about to be stored (a create, a rename, a folder made on a path, a
/// `defaultfile`): [`check_name`], and no character that hides or disguises what the name
/// says, so two names that look the same are the same:
/// - controls (Unicode Cc: C0, DEL, C1) and the line and paragraph separators;
/// - format characters (Unicode Cf): bidi controls (U+061C, U+200E/F, U+202A–U+202E,
///   U+2066–U+2069), zero-width and invisible ones (U+200B, U+2060–U+2064, U+FEFF, U+00AD),
///   and the rest of the class, which no file name needs;
/// - the invisible Hangul fillers (U+115F, U+1160, U+3164, U+FFA0).
///
/// Two Cf exceptions keep real names working. ZWJ and ZWNJ (U+200D, U+200C) join emoji
/// (👩‍💻) and shape Persian and Indic words, so they are allowed between two visible
/// characters from U+0300 up: never next to ASCII or Latin letters, where they could make one
/// name look like another. Tag characters (U+E0020–U+E007E) are allowed only in an emoji tag
/// sequence: U+1F3F4, at most six tags, U+E007F (the flags of England, Scotland, Wales).
///
/// Lookups keep using [`check_name`]: a name stored before this check stays reachable.
pub fn check_new_name(name: &str) -> Result<(), PathError> {
    check_name(name)?;
    let chars: Vec<char> = name.chars().collect();
    // Characters up to this index are the tags of a well-formed emoji tag sequence.
    let mut tags_until = 0;
    for (i, &c) in chars.iter().enumerate() {
        let allowed = match c {
            '\u{200C}' | '\u{200D}' => {
                let joins = |n: Option<&char>| n.is_some_and(|&n| n >= '\u{0300}' && !invisible(n));
                i > 0 && joins(chars.get(i - 1)) && joins(chars.get(i + 1))
            }
            '\u{1F3F4}' => {
                let tags = chars[i + 1..]
                    .iter()
                    .take_while(|&&t| ('\u{E0020}'..='\u{E007E}').contains(&t))
                    .count();
                if (1..=6).contains(&tags) && chars.get(i + 1 + tags) == Some(&'\u{E007F}') {
                    tags_until = i + 1 + tags;
                }
                true
            }
            _ if i <= tags_until && i > 0 && ('\u{E0020}'..='\u{E007F}').contains(&c) => true,
            c => !invisible(c),
        };
        if !allowed {
            return Err(PathError::BadName(format!(
                "name {name:?} contains U+{:04X}: control, bidi and invisible characters are \
                 not allowed in names",
                c as u32
            )));
        }
    }
    Ok(())
}

/// Controls, separators, format characters (Unicode 15.1 Cf) and invisible fillers.
fn invisible(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' // line and paragraph separators
            | '\u{00AD}'
            | '\u{0600}'..='\u{0605}'
            | '\u{061C}'
            | '\u{06DD}'
            | '\u{070F}'
            | '\u{0890}'..='\u{0891}'
            | '\u{08E2}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
            | '\u{110BD}'
            | '\u{110CD}'
            | '\u{13430}'..='\u{1343F}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0001}'
            | '\u{E0020}'..='\u{E007F}'
            // Hangul fillers: letters that draw nothing.
            | '\u{115F}' | '\u{1160}' | '\u{3164}' | '\u{FFA0}'
        )
}

/// An oid followed by zero or more names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjPath {
    pub start: Oid,
    pub names: Vec<String>,
}

impl ObjPath {
    /// Parses `158340da66d4a444`, `1/world/jane` or `/1/world/jane/` (already
    /// percent-decoded per segment by the caller where it came from a URL).
    /// Empty segments (double or trailing slashes) are skipped.
    pub fn parse(s: &str) -> Result<ObjPath, PathError> {
        Self::from_segments(s.split('/').filter(|p| !p.is_empty()).map(str::to_string))
    }

    pub fn from_segments(mut segs: impl Iterator<Item = String>) -> Result<ObjPath, PathError> {
        let first = segs.next().ok_or(PathError::Empty)?;
        let start: Oid = first
            .parse()
            .map_err(|_| PathError::BadStart(first.clone()))?;
        let mut names = Vec::new();
        for n in segs {
            check_name(&n)?;
            names.push(n);
            if names.len() > MAX_PATH_DEPTH {
                return Err(PathError::TooDeep);
            }
        }
        Ok(ObjPath { start, names })
    }

    pub fn oid(start: Oid) -> ObjPath {
        ObjPath {
            start,
            names: Vec::new(),
        }
    }
}

impl fmt::Display for ObjPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.start)?;
        for n in &self.names {
            write!(f, "/{n}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_start_with_an_oid_and_continue_by_names() {
        let p = ObjPath::parse("1/world/jane@x.com/pics").unwrap();
        assert_eq!(p.start, Oid::ROOT);
        assert_eq!(p.names, ["world", "jane@x.com", "pics"]);
        assert_eq!(ObjPath::parse("/158340da66d4a444/").unwrap().names.len(), 0);
    }

    #[test]
    fn new_names_refuse_controls_bidi_and_invisible_characters() {
        for bad in [
            "a\u{7}b",
            "tab\tname",
            "line\nbreak",
            "del\u{7f}",
            "c1\u{85}",
            "report\u{200B}.txt",
            "soft\u{AD}hyphen",
            "bom\u{FEFF}",
            "word\u{2060}joiner",
            "evil\u{202E}txt.exe",
            "isolate\u{2066}x\u{2069}",
            "mark\u{200E}",
            "arabic\u{61C}mark",
            "para\u{2029}sep",
            "filler\u{3164}",
            // A joiner next to ASCII or Latin letters could disguise a name.
            "report\u{200D}.txt",
            "\u{200C}x",
            "caf\u{E9}\u{200D}\u{E9}",
            // Tags outside a flag sequence smuggle invisible text.
            "a\u{E0041}\u{E007F}",
            "\u{1F3F4}\u{E0067}\u{E0062}", // unterminated
        ] {
            assert!(check_new_name(bad).is_err(), "{bad:?} should be refused");
            // Stored names stay reachable by path.
            assert!(check_name(bad).is_ok(), "{bad:?} is still a valid lookup");
        }
    }

    #[test]
    fn new_names_keep_emoji_sequences_and_joined_scripts() {
        for good in [
            "report.txt",
            "Jane Doe's notes (v2).md",
            "😀.png",
            "👩\u{200D}💻 work",
            "🏳\u{FE0F}\u{200D}🌈",
            "👨\u{200D}👩\u{200D}👧",
            "می\u{200C}خواهم",
            "क्\u{200D}ष",
            "\u{1F3F4}\u{E0067}\u{E0062}\u{E0065}\u{E006E}\u{E0067}\u{E007F} flag",
            "日本語のファイル",
            "naïve café",
        ] {
            assert_eq!(check_new_name(good), Ok(()), "{good:?} should be allowed");
        }
    }

    #[test]
    fn bad_paths_are_refused() {
        assert_eq!(ObjPath::parse(""), Err(PathError::Empty));
        assert!(matches!(
            ObjPath::parse("world/jane"),
            Err(PathError::BadStart(_))
        ));
        assert!(matches!(
            ObjPath::parse("1/../x"),
            Err(PathError::BadName(_))
        ));
    }
}
