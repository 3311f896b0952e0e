//! Parses a request line into a closed set of endpoints. Every endpoint states what it
//! requires of the caller, so no route can skip the check.

use http::Method;
use percent_encoding::percent_decode_str;

use crate::error::{Code, Error, Result};
use crate::model::share::ShareState;
use crate::model::{ObjPath, Oid, ShareId, Tstamp};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListQuery {
    pub limit: Option<usize>,
    pub after: Option<Oid>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Write,
    Props(ObjPath),
    List(ObjPath, ListQuery),
    History(ObjPath),
    Derived(Oid),
    /// File content; `?tstamp=` names an older version.
    Stream(ObjPath, Option<Tstamp>),
    /// The HTML page; `?after=` pages a folder's listing.
    Show(ObjPath, ListQuery),
    SelfClaims,
    Config,
    Healthz,
    /// Prometheus metrics.
    Metrics,
    /// Server-Sent Events: new events the caller may read, after `?since=`.
    Notifications(Option<Tstamp>),
    /// SPEC §9.4: the share endpoints.
    Shares(ShareRoute),
    /// `/show/shares`: the caller's shares as a page.
    ShowShares,
    /// SPEC §9.7: `GET /access/{ref}?claims=|user=&at=`.
    Access(ObjPath, AccessQuery),
    /// SPEC §9.6: the task queue.
    Tasks(TaskRoute),
}

/// The task endpoints (SPEC §9.6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskRoute {
    /// `GET /tasks?oid=&state=&kind=&before=&limit=`
    List(crate::tasks::ListQuery),
    /// `GET /tasks/{id}`
    One(crate::model::TaskId),
    /// `POST /tasks/{id}/retry`
    Retry(crate::model::TaskId),
}

/// Whose access `GET /access` explains, and when.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AccessQuery {
    /// A claims document (JSON), or
    pub claims: Option<String>,
    /// a DN from the users file; neither: the caller.
    pub user: Option<String>,
    pub at: Option<Tstamp>,
}

/// The share endpoints (SPEC §9.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShareRoute {
    /// `POST /shares`
    Create,
    /// `GET /shares/incoming?state=`
    Incoming(Option<ShareState>),
    /// `GET /shares/outgoing?state=`
    Outgoing(Option<ShareState>),
    /// `GET /shares?oid=`
    OnObject(Oid),
    /// `GET /shares/{id}`
    One(ShareId),
    /// `GET /shares/{id}/log`
    Log(ShareId),
    /// `POST /shares/{id}/accept`
    Accept(ShareId),
    /// `POST /shares/{id}/decline`
    Decline(ShareId),
    /// `DELETE /shares/{id}[?tstamp=]`
    Revoke(ShareId, Option<Tstamp>),
    /// `PATCH /shares/{id}`
    Change(ShareId),
    /// `POST /shares/redeem`
    Redeem,
}

impl ShareRoute {
    /// Whether it changes the store (a readonly identity may still answer an offer).
    fn writes(&self) -> bool {
        matches!(
            self,
            ShareRoute::Create | ShareRoute::Revoke(..) | ShareRoute::Change(_)
        )
    }
}

/// What an endpoint requires before it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requirement {
    /// Nothing: liveness and public configuration.
    Nothing,
    /// An identity (possibly anonymous); the object's policy decides per object.
    Identity,
    /// An identity allowed to write at all (not `readonly`); each event is then
    /// authorised against its own policies.
    Writer,
}

impl Endpoint {
    pub fn requirement(&self) -> Requirement {
        match self {
            Endpoint::Healthz | Endpoint::Config | Endpoint::Metrics => Requirement::Nothing,
            Endpoint::Write => Requirement::Writer,
            Endpoint::Shares(r) if r.writes() => Requirement::Writer,
            Endpoint::Tasks(TaskRoute::Retry(_)) => Requirement::Writer,
            Endpoint::Tasks(_) => Requirement::Identity,
            Endpoint::Shares(_) => Requirement::Identity,
            Endpoint::Props(_)
            | Endpoint::List(..)
            | Endpoint::History(_)
            | Endpoint::Derived(_)
            | Endpoint::Stream(..)
            | Endpoint::Show(..)
            | Endpoint::Notifications(_)
            | Endpoint::Access(..)
            | Endpoint::ShowShares
            | Endpoint::SelfClaims => Requirement::Identity,
        }
    }

    /// The permission letter a read endpoint checks, for the audit log (writes are audited
    /// per event).
    pub fn letter(&self) -> Option<char> {
        match self {
            Endpoint::Props(_)
            | Endpoint::History(_)
            | Endpoint::Derived(_)
            | Endpoint::Show(..) => Some('R'),
            Endpoint::List(..) | Endpoint::Stream(..) => Some('X'),
            _ => None,
        }
    }

    /// The object addressed, for the audit log.
    pub fn target(&self) -> String {
        match self {
            Endpoint::Props(p)
            | Endpoint::History(p)
            | Endpoint::Show(p, _)
            | Endpoint::List(p, _)
            | Endpoint::Stream(p, _)
            | Endpoint::Access(p, _) => p.to_string(),
            Endpoint::Derived(oid) => oid.to_string(),
            Endpoint::Shares(
                ShareRoute::One(id)
                | ShareRoute::Log(id)
                | ShareRoute::Accept(id)
                | ShareRoute::Decline(id)
                | ShareRoute::Revoke(id, _)
                | ShareRoute::Change(id),
            ) => format!("share {id}"),
            Endpoint::Shares(ShareRoute::OnObject(oid)) => oid.to_string(),
            Endpoint::Tasks(TaskRoute::One(id) | TaskRoute::Retry(id)) => format!("task {id}"),
            _ => String::new(),
        }
    }

    /// The route's name for logs and metrics (no object names in it).
    pub fn name(&self) -> &'static str {
        match self {
            Endpoint::Write => "write",
            Endpoint::Props(_) => "props",
            Endpoint::List(..) => "list",
            Endpoint::History(_) => "history",
            Endpoint::Derived(_) => "derived",
            Endpoint::Stream(..) => "stream",
            Endpoint::Show(..) => "show",
            Endpoint::SelfClaims => "self",
            Endpoint::Config => "config",
            Endpoint::Healthz => "healthz",
            Endpoint::Metrics => "metrics",
            Endpoint::Notifications(_) => "notifications",
            Endpoint::Shares(_) => "shares",
            Endpoint::Access(..) => "access",
            Endpoint::ShowShares => "show",
            Endpoint::Tasks(_) => "tasks",
        }
    }
}

fn not_found(path: &str) -> Error {
    Error::not_found(Code::NoRoute, format!("no endpoint at {path}"))
}

fn method_not_allowed(allowed: &'static str) -> Error {
    Error::method_not_allowed(Code::MethodNotAllowed, format!("use {allowed}"))
}

fn decode_segments(rest: &str) -> Result<Vec<String>> {
    rest.split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            percent_decode_str(s)
                .decode_utf8()
                .map(|c| c.into_owned())
                .map_err(|_| Error::bad_request(Code::BadPath, "path is not UTF-8"))
        })
        .collect()
}

fn obj_path(rest: &str) -> Result<ObjPath> {
    ObjPath::from_segments(decode_segments(rest)?.into_iter())
        .map_err(|e| Error::bad_request(Code::BadPath, e.to_string()))
}

/// A query string's pairs, decoded as HTML forms encode them (`+` is a space).
fn query_pairs(q: Option<&str>) -> form_urlencoded::Parse<'_> {
    form_urlencoded::parse(q.unwrap_or("").as_bytes())
}

fn parse_query(q: Option<&str>) -> Result<ListQuery> {
    let mut out = ListQuery::default();
    for (k, v) in query_pairs(q) {
        match &*k {
            "limit" if !v.is_empty() => {
                out.limit = Some(v.parse().map_err(|_| {
                    Error::bad_request(Code::BadQuery, format!("limit {v:?} is not a number"))
                })?)
            }
            "after" if !v.is_empty() => {
                out.after = Some(v.parse().map_err(|_| {
                    Error::bad_request(Code::BadQuery, format!("after {v:?} is not an oid"))
                })?)
            }
            _ => {}
        }
    }
    Ok(out)
}

fn query_tstamp(q: Option<&str>, key: &str) -> Result<Option<Tstamp>> {
    let Some((_, v)) = query_pairs(q).find(|(k, v)| k == key && !v.is_empty()) else {
        return Ok(None);
    };
    v.parse().map(Some).map_err(|_| {
        Error::bad_request(
            Code::BadQuery,
            format!("{key} {v:?} is not a tstamp (1 to 16 hex digits)"),
        )
    })
}

fn parse_tstamp(q: Option<&str>) -> Result<Option<Tstamp>> {
    query_tstamp(q, "tstamp")
}

fn parse_since(q: Option<&str>) -> Result<Option<Tstamp>> {
    query_tstamp(q, "since")
}

fn parse_state_query(q: Option<&str>) -> Result<Option<ShareState>> {
    match query_pairs(q).find(|(k, v)| k == "state" && !v.is_empty()) {
        Some((_, v)) => crate::share::parse_state(&v).map(Some),
        None => Ok(None),
    }
}

/// Routes `/shares...` (`rest` after `shares/`).
fn share_route(method: &Method, path: &str, rest: &str, query: Option<&str>) -> Result<Endpoint> {
    let segs = decode_segments(rest)?;
    let get = *method == Method::GET || *method == Method::HEAD;
    let post = *method == Method::POST;
    let id = |s: &str| -> Result<ShareId> {
        s.parse()
            .map_err(|_| Error::not_found(Code::NotFound, format!("no share {s:?}")))
    };
    let r = match (segs.as_slice(), method) {
        ([], _) if post => ShareRoute::Create,
        ([], _) if get => {
            let oid = query_pairs(query)
                .find(|(k, v)| k == "oid" && !v.is_empty())
                .ok_or_else(|| {
                    Error::bad_request(
                        Code::BadQuery,
                        "GET /shares needs ?oid= (or use /shares/incoming, /shares/outgoing)",
                    )
                })?
                .1;
            ShareRoute::OnObject(oid.parse().map_err(|_| {
                Error::bad_request(Code::BadQuery, format!("oid {oid:?} is not an oid"))
            })?)
        }
        ([], _) => return Err(method_not_allowed("GET or POST /shares")),
        ([s], _) if s == "incoming" && get => ShareRoute::Incoming(parse_state_query(query)?),
        ([s], _) if s == "outgoing" && get => ShareRoute::Outgoing(parse_state_query(query)?),
        ([s], _) if s == "incoming" || s == "outgoing" => return Err(method_not_allowed("GET")),
        ([s], _) if s == "redeem" && post => ShareRoute::Redeem,
        ([s], _) if s == "redeem" => return Err(method_not_allowed("POST")),
        ([s], _) if get => ShareRoute::One(id(s)?),
        ([s], m) if *m == Method::DELETE => ShareRoute::Revoke(id(s)?, parse_tstamp(query)?),
        ([s], m) if *m == Method::PATCH => ShareRoute::Change(id(s)?),
        ([_], _) => return Err(method_not_allowed("GET, PATCH or DELETE /shares/{id}")),
        ([s, what], _) => match what.as_str() {
            "log" if get => ShareRoute::Log(id(s)?),
            "accept" if post => ShareRoute::Accept(id(s)?),
            "decline" if post => ShareRoute::Decline(id(s)?),
            "log" => return Err(method_not_allowed("GET")),
            "accept" | "decline" => return Err(method_not_allowed("POST")),
            _ => return Err(not_found(path)),
        },
        _ => return Err(not_found(path)),
    };
    Ok(Endpoint::Shares(r))
}

/// Routes `/tasks...` (`rest` after `tasks/`).
fn task_route(method: &Method, path: &str, rest: &str, query: Option<&str>) -> Result<Endpoint> {
    let segs = decode_segments(rest)?;
    let get = *method == Method::GET || *method == Method::HEAD;
    let id = |s: &str| -> Result<crate::model::TaskId> {
        s.parse()
            .map_err(|_| Error::not_found(Code::NotFound, format!("no task {s:?}")))
    };
    let bad = |m: String| Error::bad_request(Code::BadQuery, m);
    let r = match segs.as_slice() {
        [] if get => {
            let mut q = crate::tasks::ListQuery::default();
            for (k, v) in query_pairs(query) {
                if v.is_empty() {
                    continue;
                }
                match &*k {
                    "oid" => {
                        q.oid = Some(v.parse().map_err(|_| bad(format!("oid {v:?} is not an oid")))?)
                    }
                    "state" => {
                        q.state = Some(crate::model::TaskState::parse(&v).ok_or_else(|| {
                            bad(format!(
                                "state {v:?} is not one of todo, in_progress, done, failed"
                            ))
                        })?)
                    }
                    "kind" => {
                        q.kind = Some(crate::model::TaskKind::parse(&v).ok_or_else(|| {
                            bad(format!(
                                "kind {v:?} is not one of rotate_share, rotate_blob, expiry_sweep, webhook"
                            ))
                        })?)
                    }
                    "before" => {
                        q.before =
                            Some(v.parse().map_err(|_| bad(format!("before {v:?} is not a task id")))?)
                    }
                    "limit" => {
                        let n: usize = v
                            .parse()
                            .map_err(|_| bad(format!("limit {v:?} is not a number")))?;
                        if n == 0 || n > crate::tasks::MAX_PAGE {
                            return Err(bad(format!(
                                "limit {n} is not between 1 and {}",
                                crate::tasks::MAX_PAGE
                            )));
                        }
                        q.limit = Some(n);
                    }
                    _ => {}
                }
            }
            TaskRoute::List(q)
        }
        [] => return Err(method_not_allowed("GET /tasks")),
        [s] if get => TaskRoute::One(id(s)?),
        [_] => return Err(method_not_allowed("GET /tasks/{id}")),
        [s, what] if what == "retry" && *method == Method::POST => TaskRoute::Retry(id(s)?),
        [_, what] if what == "retry" => return Err(method_not_allowed("POST")),
        _ => return Err(not_found(path)),
    };
    Ok(Endpoint::Tasks(r))
}

/// Routes `path` (with `CLIENT_PREFIX` already removed).
pub fn route(method: &Method, path: &str, query: Option<&str>) -> Result<Endpoint> {
    let trimmed = path.trim_start_matches('/');
    let (head, rest) = trimmed.split_once('/').unwrap_or((trimmed, ""));
    let is_read = *method == Method::GET || *method == Method::HEAD;
    let ep = match head {
        "shares" => return share_route(method, path, rest, query),
        "tasks" => return task_route(method, path, rest, query),
        "write" => {
            if *method != Method::POST {
                return Err(method_not_allowed("POST /write"));
            }
            if !rest.is_empty() {
                return Err(not_found(path));
            }
            return Ok(Endpoint::Write);
        }
        "props" => Endpoint::Props(obj_path(rest)?),
        "list" => Endpoint::List(obj_path(rest)?, parse_query(query)?),
        "history" => Endpoint::History(obj_path(rest)?),
        "stream" => Endpoint::Stream(obj_path(rest)?, parse_tstamp(query)?),
        "show" if rest.trim_end_matches('/') == "shares" => Endpoint::ShowShares,
        "show" => Endpoint::Show(obj_path(rest)?, parse_query(query)?),
        "access" => {
            let mut q = AccessQuery {
                at: query_tstamp(query, "at")?,
                ..AccessQuery::default()
            };
            for (k, v) in query_pairs(query) {
                match &*k {
                    "claims" if !v.is_empty() => q.claims = Some(v.into_owned()),
                    "user" if !v.is_empty() => q.user = Some(v.into_owned()),
                    _ => {}
                }
            }
            Endpoint::Access(obj_path(rest)?, q)
        }
        "derived" => {
            let segs = decode_segments(rest)?;
            match segs.as_slice() {
                [oid] => Endpoint::Derived(oid.parse().map_err(|_| {
                    Error::bad_request(Code::BadPath, format!("{oid:?} is not an oid"))
                })?),
                _ => return Err(not_found(path)),
            }
        }
        "self" if rest.is_empty() => Endpoint::SelfClaims,
        "config" if rest.is_empty() => Endpoint::Config,
        "healthz" if rest.is_empty() => Endpoint::Healthz,
        "metrics" if rest.is_empty() => Endpoint::Metrics,
        "notifications" if rest.is_empty() => Endpoint::Notifications(parse_since(query)?),
        _ => return Err(not_found(path)),
    };
    if !is_read {
        return Err(method_not_allowed("GET or HEAD"));
    }
    Ok(ep)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_decoded_per_segment() {
        let ep = route(&Method::GET, "/props/1/world/jane%20doe/a%2Fb", None);
        // "a/b" decoded from one segment is a bad name, not two names.
        assert!(ep.is_err());
        let ep = route(&Method::GET, "/props/1/world/jane%20doe", None).unwrap();
        assert_eq!(
            ep,
            Endpoint::Props(ObjPath {
                start: Oid::ROOT,
                names: vec!["world".into(), "jane doe".into()]
            })
        );
    }

    #[test]
    fn list_takes_limit_and_after() {
        let ep = route(
            &Method::GET,
            "/list/1",
            Some("limit=10&after=00000000000000ff"),
        )
        .unwrap();
        assert_eq!(
            ep,
            Endpoint::List(
                ObjPath::oid(Oid::ROOT),
                ListQuery {
                    limit: Some(10),
                    after: Some(Oid(255))
                }
            )
        );
    }

    #[test]
    fn query_values_are_decoded_empty_ones_ignored_and_bad_ones_refused() {
        // Percent-encoded, empty and unknown pairs, in any order.
        let ep = route(
            &Method::GET,
            "/list/1",
            Some("x=1&limit=&limit=%31%30&&after=ff"),
        )
        .unwrap();
        assert_eq!(
            ep,
            Endpoint::List(
                ObjPath::oid(Oid::ROOT),
                ListQuery {
                    limit: Some(10),
                    after: Some(Oid(255))
                }
            )
        );
        for q in ["limit=ten", "limit=-1", "after=xyz", "after=%ZZ"] {
            let e = route(&Method::GET, "/list/1", Some(q)).unwrap_err();
            assert_eq!(e.code, "bad_query", "{q}");
        }
        let e = route(&Method::GET, "/stream/1", Some("tstamp=%67%67")).unwrap_err();
        assert!(e.message.contains("\"gg\""), "{}", e.message);
    }

    #[test]
    fn writes_need_post_and_reads_need_get() {
        assert!(route(&Method::GET, "/write", None).is_err());
        assert!(route(&Method::POST, "/props/1", None).is_err());
        assert_eq!(
            route(&Method::POST, "/write", None).unwrap(),
            Endpoint::Write
        );
        assert_eq!(
            route(&Method::HEAD, "/healthz", None).unwrap(),
            Endpoint::Healthz
        );
    }
}
