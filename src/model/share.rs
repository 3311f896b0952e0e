//! Shares (SPEC §9): letters on an object (and everything beneath a folder) granted to an
//! audience, with terms, acceptance, expiry and caps, and the append-only log of their
//! changes. Plain types: the rules that need the store live in `crate::share`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::claims::Claims;
use super::ids::{Oid, Tstamp};
use super::perms::Perms;

/// A share's id: 16 hex digits, like an oid (drawn from the same clock).
pub type ShareId = Oid;

/// Who a share is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    /// Every identity whose claim `claim` holds `value` (an email, an org, a group: a
    /// group claim reaches everyone carrying it).
    Claim { claim: String, value: String },
    /// Whoever redeems the link's secret (SPEC §9.4).
    Link { link: bool },
}

impl Audience {
    /// Whether these claims are in the audience.
    pub fn matches(&self, claims: &Claims) -> bool {
        match self {
            Audience::Claim { claim, value } if claim == LABEL_CLAIM => claims.label() == value,
            Audience::Claim { claim, value } => claims.contains(claim, value),
            Audience::Link { .. } => false,
        }
    }
}

/// The claim an audience names to mean one identity by its label (what a redeemed link
/// binds to, when the redeemer has no email).
pub const LABEL_CLAIM: &str = "label";

/// Every (claim, value) pair an audience may name to reach these claims: their `values`,
/// and the label as [`LABEL_CLAIM`].
pub fn audience_pairs(claims: &Claims) -> Vec<(String, String)> {
    let mut pairs = claims.pairs();
    if !claims.label().is_empty() {
        pairs.push((LABEL_CLAIM.to_string(), claims.label().to_string()));
    }
    pairs
}

/// A named set of letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Reader,
    Writer,
    Full,
}

impl Role {
    pub fn letters(self) -> Perms {
        match self {
            Role::Reader => Perms::R | Perms::X,
            Role::Writer => Perms::R | Perms::X | Perms::C | Perms::U,
            Role::Full => Perms::ALL,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Acceptance {
    Required,
    NotRequired,
}

/// Whether the recipient may share on (`anyone`) or not (`owner`, the default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SharingMode {
    Owner,
    Anyone,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShareState {
    Pending,
    Accepted,
    Declined,
    Revoked,
    Expired,
}

/// Who made a share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sharer {
    pub label: String,
}

/// An RFC 3339 time, kept as given and as seconds since the epoch (for comparisons).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Expiry(pub u64);

impl Expiry {
    pub fn parse(s: &str) -> Result<Expiry, String> {
        let t = humantime::parse_rfc3339_weak(s.trim())
            .map_err(|e| format!("expires {s:?} is not an RFC 3339 time: {e}"))?;
        let secs = t
            .duration_since(UNIX_EPOCH)
            .map_err(|_| format!("expires {s:?} is before 1970"))?
            .as_secs();
        Ok(Expiry(secs))
    }

    pub fn now() -> Expiry {
        Expiry(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs(),
        )
    }

    pub fn has_passed(self) -> bool {
        self <= Expiry::now()
    }
}

impl Serialize for Expiry {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let t = UNIX_EPOCH + Duration::from_secs(self.0);
        s.collect_str(&humantime::format_rfc3339_seconds(t))
    }
}

impl<'de> Deserialize<'de> for Expiry {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Expiry::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A share as stored (its latest state) and as shown. DO NOT CHANGE field names: they are
/// the wire format and the stored JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Share {
    pub id: ShareId,
    pub oid: Oid,
    /// The object's name when the share was made (shown to a recipient who has not
    /// accepted yet, who may not read the object itself).
    pub name: String,
    /// The object's security label when it was shared (also shown before accepting).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security: Option<serde_json::Value>,
    pub audience: Audience,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    pub letters: Perms,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terms: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub acceptance: Acceptance,
    pub sharing_mode: SharingMode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<Expiry>,
    pub state: ShareState,
    pub sharer: Sharer,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<ShareId>,
    /// A link share's limit on redemptions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_redemptions: Option<u64>,
    /// How often a link share was redeemed.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub redemptions: u64,
    /// The store-wide tstamp of its latest change (the consistency token).
    pub tstamp: Tstamp,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Share {
    /// The state as shown: `expired` as soon as `expires` passes.
    pub fn state_now(&self) -> ShareState {
        match self.state {
            ShareState::Pending | ShareState::Accepted
                if self.expires.is_some_and(Expiry::has_passed) =>
            {
                ShareState::Expired
            }
            s => s,
        }
    }

    /// Whether it grants its letters now: not revoked, declined or past `expires`, and
    /// accepted or not needing acceptance.
    pub fn grants(&self) -> bool {
        match self.state_now() {
            ShareState::Accepted => true,
            ShareState::Pending => self.acceptance == Acceptance::NotRequired,
            _ => false,
        }
    }

    /// Whether it let its recipients read (R or X) before it closed, whatever its expiry:
    /// accepted, or pending without needing acceptance, to an audience of people (a link
    /// share grants only through the shares redeemed from it).
    pub fn granted_reading(&self) -> bool {
        let state = matches!(self.state, ShareState::Accepted)
            || (self.state == ShareState::Pending && self.acceptance == Acceptance::NotRequired);
        state
            && matches!(self.audience, Audience::Claim { .. })
            && (self.letters.contains(Perms::R) || self.letters.contains(Perms::X))
    }

    /// Pending or accepted as stored (its expiry not applied): what the sweep closes.
    pub fn is_open_as_stored(&self) -> bool {
        matches!(self.state, ShareState::Pending | ShareState::Accepted)
    }

    /// Not revoked, declined or expired (a pending one may still be accepted).
    pub fn is_open(&self) -> bool {
        matches!(self.state_now(), ShareState::Pending | ShareState::Accepted)
    }

    /// The share as shown now (`state` with expiry applied).
    pub fn shown(&self) -> Share {
        Share {
            state: self.state_now(),
            ..self.clone()
        }
    }
}

/// What changed, in a share log entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShareChange {
    Offered,
    Accepted,
    Declined,
    Changed,
    Revoked,
    Expired,
    Redeemed,
    Rotated,
}

/// One entry of the share log: the share after the change. DO NOT CHANGE field names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareEntry {
    pub share: ShareId,
    pub tstamp: Tstamp,
    pub kind: ShareChange,
    pub by: Sharer,
    pub state: Share,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn roles_carry_the_letters_of_spec_9_1() {
        assert_eq!(Role::Reader.letters().to_string(), "RX");
        assert_eq!(Role::Writer.letters().to_string(), "CRUX");
        assert_eq!(Role::Full.letters(), Perms::ALL);
    }

    #[test]
    fn expiry_round_trips_as_rfc_3339_and_rejects_other_text() {
        let e: Expiry = serde_json::from_value(json!("2030-01-02T03:04:05Z")).unwrap();
        assert_eq!(
            serde_json::to_value(e).unwrap(),
            json!("2030-01-02T03:04:05Z")
        );
        assert!(!e.has_passed());
        assert!(Expiry::parse("2001-01-01T00:00:00Z").unwrap().has_passed());
        assert!(Expiry::parse("next tuesday").is_err());
        assert!(Expiry::parse("").is_err());
    }

    #[test]
    fn an_audience_matches_any_value_of_its_claim() {
        let bob = Claims::new(json!({"label": "bob", "values": {"org": ["a", "b"]}}));
        let a = Audience::Claim {
            claim: "org".into(),
            value: "b".into(),
        };
        assert!(a.matches(&bob));
        assert!(!Audience::Link { link: true }.matches(&bob));
        assert_eq!(
            serde_json::to_value(&a).unwrap(),
            json!({"claim": "org", "value": "b"})
        );
    }
}
