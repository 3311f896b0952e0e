//! Applying one transaction's events to the store, in order, inside the writer's
//! transaction. Each event is authorised against the store as it stands after the
//! events before it (the transaction's own pending state), and the whole plan runs at
//! commit time, so the check is always against the then-current state.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};

use serde_json::{json, Value};

use super::input::{Content, Patch, RefField, WriteEvent};
use crate::access::Access;
use crate::blob::{BlobAlgorithm, BlobInfo};
use crate::crypto::MasterKeys;
use crate::error::{Code, Error, Result};
use crate::model::EventView;
use crate::model::{
    Action, Event, Letter, ObjPath, Oid, Perms, Tstamp, UserPolicy, SCHEMA_VERSION,
};
use crate::store::{BlobRow, Current, MetaRead, MetaWrite, StoreError};

/// The namespace folder (SPEC §6): where callers make their home folders.
#[derive(Debug, Clone)]
pub struct Namespace {
    pub oid: Oid,
    pub userfield: String,
}

/// What a transaction did.
#[derive(Debug, Default)]
pub struct Applied {
    /// One stored event per request event, in request order, then any folders made on
    /// the way by path parentoids, each with its end.
    pub events: Vec<EventView>,
    /// Events removed by purges.
    pub purged: Vec<Event>,
    /// Objects in the blob store (locations) that no version uses any more: delete after
    /// commit.
    pub freed_blobs: Vec<String>,
}

pub struct Planner<'a, S: MetaWrite + ?Sized> {
    store: &'a mut S,
    access: &'a Access,
    ns: &'a Namespace,
    /// Deepest folder a new object may be placed in (folders above it, the root excluded).
    max_depth: usize,
    results: Vec<Event>,
    made_dirs: Vec<Event>,
    purged: Vec<Event>,
    freed_blobs: Vec<String>,
    /// Live objects read during this transaction (bulk creates share a parent). An entry
    /// is dropped whenever this transaction appends a version of that oid, and the whole
    /// cache when a folder moves (descendants' fulldir change).
    seen: HashMap<Oid, Current>,
}

/// `mimetype` for a file that came without one: from its name's extension.
fn guess_mimetype(name: &str) -> String {
    mime_guess::from_path(name)
        .first_raw()
        .unwrap_or("application/octet-stream")
        .to_string()
}

fn forbidden(letter: Letter, what: &str, oid: Oid) -> Error {
    Error::forbidden(
        Code::PermissionDenied,
        format!("{letter} permission on {what} {oid} is required"),
    )
}

/// What a caller who may not read an object hears about it, whether it exists, is deleted or
/// was never there: the same plain 404.
fn hidden(what: &str, oid: Oid) -> Error {
    Error::not_found(Code::NotFound, format!("{what} {oid} not found"))
}

/// Folders above an object whose `fulldir` this is (the root counts).
fn depth_of(fulldir: &str) -> usize {
    fulldir.matches('/').count().saturating_sub(1)
}

/// The refusal for a caller without `letter` on `cur`, decided permission first: anything the
/// caller may not read is a plain 404, what it may read but not change a 403. A spent policy
/// budget is said as such, never passed off as a denial.
fn refusal<S: MetaRead + ?Sized>(
    s: &S,
    access: &Access,
    cur: &Event,
    letter: Letter,
    what: &str,
) -> Error {
    if let Some(e) = access.budget_error() {
        return e;
    }
    if access.letters(s, cur).contains(Perms::R) {
        forbidden(letter, what, cur.oid)
    } else if let Some(e) = access.budget_error() {
        e
    } else {
        hidden(what, cur.oid)
    }
}

/// Who made a version: the caller's claims label and the hash of its token.
fn stamp(access: &Access) -> (UserPolicy, String) {
    (
        UserPolicy {
            label: access.identity.claims.label().to_string(),
        },
        access.identity.jwthash.clone(),
    )
}

/// The policy a new child gets when it brings none: the parent's; under the namespace
/// folder, a home folder that only its owner may use (the namespace's own policy would lock
/// the owner out of their home).
fn inherited_policy(ns: &Namespace, parent: &Event, name: &str) -> (Option<Value>, Option<String>) {
    if parent.oid == ns.oid {
        let policy = json!({
            "label": format!("home of {name}"),
            "requirements": {"f": "if", "a": [
                {"f": "contains", "a": [{"v": ns.userfield}, {"v": name}]},
                {"f": "yield-all", "a": []}
            ]}
        });
        return (Some(policy), None);
    }
    (
        parent.objectpolicy.clone(),
        parent.originalobjectpolicy.clone(),
    )
}

/// The version a create makes under `p`, as policies judge it: before it has an oid, a
/// tstamp or content. The planner and the rehearsal build it the same way, so an evaluation
/// the rehearsal made is the one the writer finds cached.
/// `parts_known`: whether the file parts have been matched to events yet (a rehearsal before
/// they arrive does not ask).
fn new_child(
    p: &Event,
    we: &WriteEvent,
    access: &Access,
    ns: &Namespace,
    parts_known: bool,
) -> Result<Event> {
    let name = we
        .name
        .clone()
        .ok_or_else(|| Error::bad_request(Code::MissingName, "a create needs a name"))?;
    crate::model::path::check_new_name(&name)
        .map_err(|e| Error::bad_request(Code::BadName, e.to_string()))?;
    let isfile = we.isfile == Some(true);
    if isfile && parts_known && matches!(we.content, Content::None) {
        return Err(Error::bad_request(
            Code::MissingContent,
            "a new file needs its content as a file part (an rname cannot point a new \
             file at another object's content)",
        ));
    }
    let (objectpolicy, originalobjectpolicy) = match &we.policy {
        Some(pp) => (
            Some(pp.objectpolicy.clone()),
            pp.originalobjectpolicy.clone(),
        ),
        None => inherited_policy(ns, p, &name),
    };
    let (userpolicy, jwthash) = stamp(access);
    let mut e = Event {
        tstamp: Tstamp(0),
        userpolicy,
        jwthash,
        schemaversion: SCHEMA_VERSION,
        name,
        action: Action::C,
        oid: Oid(0),
        parentoid: p.oid,
        expiration: we.expiration.apply(None).unwrap_or(Tstamp::FOREVER),
        checkedtstamp: p.tstamp,
        objectpolicy,
        originalobjectpolicy,
        mimetype: we.mimetype.apply(None),
        rname: None,
        size: None,
        derived: we.derived.apply(None),
        isfile,
        security: we.security.apply(None),
        extra: Default::default(),
        sha256plain: None,
        fulldir: format!("{}{}/", p.fulldir, p.oid),
    };
    for (k, v) in &we.extra {
        if let Patch::Set(v) = v {
            e.extra.insert(k.clone(), v.clone());
        }
    }
    Ok(e)
}

/// No accidental lock-out: a new policy must leave the writer U and P on the object, unless
/// the event says `allowpartialpermissions`.
fn check_lockout<S: MetaRead + ?Sized>(
    s: &S,
    access: &Access,
    e: &Event,
    we: &WriteEvent,
) -> Result<()> {
    if we.allow_partial {
        return Ok(());
    }
    let u = access.may(s, e, Letter::U, e);
    let p = access.may(s, e, Letter::P, e);
    if u && p {
        return Ok(());
    }
    if let Some(e) = access.budget_error() {
        return Err(e);
    }
    Err(Error::forbidden(
        Code::WouldLockOut,
        "this policy would leave you without U and P on the object; \
         set \"allowpartialpermissions\": true if that is intended",
    ))
}

/// A create or a move into a folder that already holds a live object of that name.
fn duplicate_name(name: &str, parent: Oid) -> Error {
    Error::conflict(
        Code::DuplicateName,
        format!("{name:?} already exists in {parent}"),
    )
}

/// Rehearses, on a read snapshot and off the writer, the policy decisions of the creates that
/// open the transaction (up to the first other event or reference): C on an existing parent
/// and the lock-out check, exactly as the writer will make them. A refusal is answered now,
/// without the writer; an answer is cached, so the writer finds it instead of evaluating a
/// policy the caller brought (a transaction of slow policies costs the writer nothing).
pub fn rehearse_creates<S: MetaRead + ?Sized>(
    s: &S,
    access: &Access,
    ns: &Namespace,
    max_depth: usize,
    events: &[WriteEvent],
) -> Result<()> {
    let mut parents: HashMap<Oid, Option<Current>> = HashMap::new();
    for we in events {
        if we.action != Action::C || !we.references.is_empty() {
            return Ok(());
        }
        let Some(path) = we.parent.as_ref().filter(|p| p.names.is_empty()) else {
            return Ok(());
        };
        let parent = match parents.entry(path.start) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(v) => v.insert(s.current(path.start)?),
        };
        let Some(parent) = parent.as_ref().filter(|c| c.live && !c.event.isfile) else {
            return Ok(());
        };
        let p = &parent.event;
        let e = new_child(p, we, access, ns, false).map_err(|e| e.at(we.index))?;
        if !access.may(s, p, Letter::C, &e) {
            return Err(refusal(s, access, p, Letter::C, "parent").at(we.index));
        }
        if depth_of(&e.fulldir) > max_depth {
            // The planner says so, with its message.
            return Ok(());
        }
        check_lockout(s, access, &e, we).map_err(|e| e.at(we.index))?;
    }
    Ok(())
}

/// The response to a committed transaction, made in a read snapshot after the commit and
/// off the writer: the caller's letters on each stored event (`policy`), and its blob's
/// wrapped key (and, with `keys`, the data key itself).
pub fn respond<S: MetaRead + ?Sized>(
    s: &S,
    access: &Access,
    keys: Option<&MasterKeys>,
    mut events: Vec<EventView>,
) -> Result<Vec<EventView>> {
    for v in &mut events {
        v.policy = Some(access.letters(s, &v.event));
        crate::read::attach_keys(s, keys, v)?;
    }
    Ok(events)
}

/// Refuses, before any policy the transaction brings is compiled, the events whose refusal
/// does not depend on the rest of the transaction: from the start, creates into an existing
/// folder whose policy judges the caller alone (not the new object), and the first update,
/// delete or purge of an existing object. Each refusal is the one the planner would give at
/// commit against the same state; the planner decides everything again there.
pub fn precheck<S: MetaRead + ?Sized>(s: &S, access: &Access, events: &[WriteEvent]) -> Result<()> {
    // Bulk creates share a parent: look it up, and judge the caller on it, once.
    let mut parents: HashMap<Oid, Option<Current>> = HashMap::new();
    let mut allowed: HashSet<Oid> = HashSet::new();
    for we in events {
        if !we.references.is_empty() {
            return Ok(());
        }
        match we.action {
            Action::C => {
                let Some(path) = we.parent.as_ref().filter(|p| p.names.is_empty()) else {
                    // A path may create folders on the way: that is the planner's business.
                    return Ok(());
                };
                if allowed.contains(&path.start) {
                    continue;
                }
                let parent = match parents.entry(path.start) {
                    Entry::Occupied(e) => e.into_mut(),
                    Entry::Vacant(v) => v.insert(s.current(path.start)?),
                };
                let Some(parent) = parent.as_ref().filter(|c| c.live) else {
                    return Err(hidden("parent", path.start).at(we.index));
                };
                let p = &parent.event;
                let Some(policy) = &p.objectpolicy else {
                    if !access.is_root() {
                        return Err(refusal(s, access, p, Letter::C, "parent").at(we.index));
                    }
                    continue;
                };
                if access.engine.reads_object(policy) != Some(false) {
                    // Its answer may depend on the new object: wait for the planner.
                    return Ok(());
                }
                // The new child is not looked at: any object will do.
                if !access.may(s, p, Letter::C, p) {
                    return Err(refusal(s, access, p, Letter::C, "parent").at(we.index));
                }
                allowed.insert(path.start);
            }
            Action::U | Action::D | Action::P => {
                let letter = Letter::from(we.action);
                let what = "object";
                let Some(oid) = we.oid else {
                    return Ok(());
                };
                let Some(cur) = s.current(oid)? else {
                    return Err(hidden(what, oid).at(we.index));
                };
                if !access.may(s, &cur.event, letter, &cur.event) {
                    return Err(refusal(s, access, &cur.event, letter, what).at(we.index));
                }
                // What follows may depend on this event.
                return Ok(());
            }
        }
    }
    Ok(())
}

impl<'a, S: MetaWrite + ?Sized> Planner<'a, S> {
    pub fn new(store: &'a mut S, access: &'a Access, ns: &'a Namespace, max_depth: usize) -> Self {
        Planner {
            store,
            access,
            ns,
            max_depth,
            results: Vec::new(),
            made_dirs: Vec::new(),
            purged: Vec::new(),
            freed_blobs: Vec::new(),
            seen: HashMap::new(),
        }
    }

    /// Applies every event or fails at the first one that cannot be applied (the caller
    /// rolls the whole transaction back).
    pub fn apply_all(mut self, events: Vec<WriteEvent>) -> Result<Applied> {
        self.apply_each(events)?;
        // tstampend of a version superseded later in this same transaction: walk back,
        // remembering the next version seen for each oid.
        let mut next: HashMap<Oid, Tstamp> = HashMap::new();
        let mut events: Vec<EventView> = Vec::with_capacity(self.results.len());
        for e in self.results.into_iter().rev() {
            let end = next.get(&e.oid).copied().unwrap_or(Tstamp::FOREVER);
            if e.action != Action::P {
                next.insert(e.oid, e.tstamp);
            }
            events.push(EventView::new(e, Some(end)));
        }
        events.reverse();
        events.extend(
            self.made_dirs
                .into_iter()
                .map(|d| EventView::new(d, Some(Tstamp::FOREVER))),
        );
        // The response (the caller's letters, key material) is not made here, on the
        // writer: see `respond`.
        Ok(Applied {
            events,
            purged: self.purged,
            freed_blobs: self.freed_blobs,
        })
    }

    /// Applies every event as [`Planner::apply_all`] does, and builds no response: for a
    /// rehearsal, whose changes are rolled back.
    pub fn check_all(mut self, events: Vec<WriteEvent>) -> Result<()> {
        self.apply_each(events)
    }

    fn apply_each(&mut self, events: Vec<WriteEvent>) -> Result<()> {
        for we in events {
            let i = we.index;
            let ev = self.apply(we).map_err(|e| e.at(i))?;
            self.results.push(ev);
        }
        Ok(())
    }

    fn apply(&mut self, mut we: WriteEvent) -> Result<Event> {
        for r in we.references.clone() {
            let src = &self.results[r.source];
            let value = match r.from {
                RefField::Oid => src.oid.get(),
                RefField::ParentOid => src.parentoid.get(),
                RefField::Tstamp => src.tstamp.get(),
            };
            match r.to {
                RefField::Oid => we.oid = Some(Oid(value)),
                RefField::ParentOid => we.parent = Some(ObjPath::oid(Oid(value))),
                RefField::Tstamp => we.precondition = Some(Tstamp(value)),
            }
        }
        match we.action {
            Action::C => {
                let parent = self.parent_of(&we)?;
                self.create(parent, &we)
            }
            Action::U => match we.oid {
                Some(oid) => self.update(oid, &we),
                None => {
                    let parent = self.parent_of(&we)?;
                    let name = we.name.as_deref().ok_or_else(|| {
                        Error::bad_request(
                            Code::MissingName,
                            "an upsert (U without oid) needs a name",
                        )
                    })?;
                    // Looking a name up is listing: it needs X on the folder, or a caller could
                    // probe which names exist where it may not look.
                    let p = &parent.event;
                    if !self.access.may(&*self.store, p, Letter::X, p) {
                        return Err(refusal(&*self.store, self.access, p, Letter::X, "folder"));
                    }
                    match self.store.child_by_name(p.oid, name)? {
                        Some(oid) => {
                            let child = self.current(oid)?;
                            let readable = child.as_ref().is_some_and(|c| {
                                self.access
                                    .letters(&*self.store, &c.event)
                                    .contains(Perms::R)
                            });
                            if !readable {
                                // Taken by an object the caller may not see: the same answer
                                // as a create of a taken name, and nothing about the object.
                                if let Some(e) = self.access.budget_error() {
                                    return Err(e);
                                }
                                return Err(duplicate_name(name, p.oid));
                            }
                            self.update(oid, &we)
                        }
                        None => self.create(parent, &we),
                    }
                }
            },
            Action::D => self.delete(&we),
            Action::P => self.purge(&we),
        }
    }

    fn stamp(&self) -> (UserPolicy, String) {
        stamp(self.access)
    }

    /// The current version of `oid`, from this transaction's cache or the store.
    fn current(&mut self, oid: Oid) -> Result<Option<Current>> {
        if let Some(c) = self.seen.get(&oid) {
            return Ok(Some(c.clone()));
        }
        let c = self.store.current(oid)?;
        if let Some(c) = c.as_ref().filter(|c| c.live) {
            self.seen.insert(oid, c.clone());
        }
        Ok(c)
    }

    /// A live folder or object to act on, where the action's own letter is checked later by
    /// the caller: absent and deleted look the same (a plain 404) to whoever may not read it.
    fn live(&mut self, oid: Oid, what: &str) -> Result<Current> {
        match self.current(oid)? {
            Some(c) if c.live => Ok(c),
            Some(c)
                if self
                    .access
                    .letters(&*self.store, &c.event)
                    .contains(Perms::R) =>
            {
                Err(Error::not_found(
                    Code::Deleted,
                    format!("{what} {oid} is deleted"),
                ))
            }
            _ => Err(hidden(what, oid)),
        }
    }

    /// The live object `oid` for an action needing `letter`, decided permission first: a
    /// caller without the letter learns nothing more (no tstamp, no name) than a 403 if it
    /// may read the object, a plain 404 otherwise.
    fn target_for(&mut self, oid: Oid, letter: Letter) -> Result<Current> {
        let cur = match self.current(oid)? {
            Some(c) => c,
            None => return Err(hidden("object", oid)),
        };
        if !self
            .access
            .may(&*self.store, &cur.event, letter, &cur.event)
        {
            return Err(refusal(
                &*self.store,
                self.access,
                &cur.event,
                letter,
                "object",
            ));
        }
        if !cur.live && letter != Letter::P {
            return Err(Error::not_found(
                Code::Deleted,
                format!("object {oid} is deleted"),
            ));
        }
        Ok(cur)
    }

    /// Resolves `parentoid` (an oid or a path), creating missing folders on a path with
    /// the event's policy and security, as gm-data did.
    fn parent_of(&mut self, we: &WriteEvent) -> Result<Current> {
        let path = we
            .parent
            .as_ref()
            .ok_or_else(|| Error::bad_request(Code::MissingParentoid, "parentoid is required"))?;
        let mut cur = self.live(path.start, "parent")?;
        for name in &path.names {
            if cur.event.isfile {
                return Err(Error::conflict(
                    Code::ParentIsFile,
                    format!("{} is a file, not a folder", cur.event.oid),
                ));
            }
            // Walking through a folder needs X on it, as listing it would.
            if !self
                .access
                .may(&*self.store, &cur.event, Letter::X, &cur.event)
            {
                if let Some(e) = self.access.budget_error() {
                    return Err(e);
                }
                return Err(Error::not_found(
                    Code::NotFound,
                    format!("no folder {path} that you may use"),
                ));
            }
            cur = match self.store.child_by_name(cur.event.oid, name)? {
                Some(oid) => self.live(oid, "folder")?,
                None => {
                    let dir = WriteEvent {
                        index: we.index,
                        action: Action::C,
                        oid: None,
                        parent: None,
                        name: Some(name.clone()),
                        precondition: None,
                        purgetstamp: None,
                        raw_policy: None,
                        policy: we.policy.clone(),
                        isfile: Some(false),
                        allow_partial: we.allow_partial,
                        references: Vec::new(),
                        expiration: Patch::Keep,
                        mimetype: Patch::Keep,
                        security: we.security.clone(),
                        derived: Patch::Keep,
                        rname: None,
                        sha256plain: None,
                        algorithm: BlobAlgorithm::default(),
                        content: Content::None,
                        extra: Vec::new(),
                    };
                    let made = self.create(cur, &dir)?;
                    self.made_dirs.push(made.clone());
                    Current {
                        event: made,
                        live: true,
                    }
                }
            };
        }
        if cur.event.isfile {
            return Err(Error::conflict(
                Code::ParentIsFile,
                format!("{} is a file, not a folder", cur.event.oid),
            ));
        }
        Ok(cur)
    }

    /// Appends a version and keeps the transaction's cache of live objects true.
    fn append(&mut self, e: &Event) -> Result<()> {
        self.store.append(e)?;
        self.appended(e);
        Ok(())
    }

    /// Appends a new object whose name the store's index of live names checks; a taken
    /// name is refused as a duplicate in `parent`.
    fn append_new(&mut self, e: &Event, parent: Oid) -> Result<()> {
        match self.store.append(e) {
            Err(StoreError::UniqueName) => Err(duplicate_name(&e.name, parent)),
            other => other.map_err(Error::from),
        }?;
        self.appended(e);
        Ok(())
    }

    /// `refused`, unless `name` is taken in `parent`: a create refused for another reason
    /// hears of the duplicate first, as when the name was looked up before anything else.
    fn taken_or(&mut self, parent: Oid, name: &str, refused: Error) -> Error {
        match self.store.child_by_name(parent, name) {
            Ok(Some(_)) => duplicate_name(name, parent),
            Ok(None) => refused,
            Err(e) => e.into(),
        }
    }

    fn appended(&mut self, e: &Event) {
        match e.action {
            Action::C => {
                self.seen.insert(
                    e.oid,
                    Current {
                        event: e.clone(),
                        live: true,
                    },
                );
            }
            // A folder that changes may have moved: descendants' fulldir changed too.
            _ if !e.isfile => self.seen.clear(),
            _ => {
                self.seen.remove(&e.oid);
            }
        }
    }

    /// New objects go no deeper than the limit: `fulldir` (and so every response naming the
    /// object) stays bounded, and a chain of creates by reference cannot grow it per event.
    fn check_depth(&self, fulldir: &str) -> Result<()> {
        let depth = depth_of(fulldir);
        if depth > self.max_depth {
            return Err(Error::bad_request(
                Code::TooDeep,
                format!(
                    "this would place an object {depth} folders deep; the limit is {} \
                     (MAX_FOLDER_DEPTH)",
                    self.max_depth
                ),
            ));
        }
        Ok(())
    }

    fn create(&mut self, parent: Current, we: &WriteEvent) -> Result<Event> {
        let p = &parent.event;
        let mut e = new_child(p, we, self.access, self.ns, true)?;
        if !self.access.may(&*self.store, p, Letter::C, &e) {
            return Err(refusal(&*self.store, self.access, p, Letter::C, "parent"));
        }
        self.check_depth(&e.fulldir)?;
        // The name is left to the store's index of live names, which the append checks: on
        // PostgreSQL a round trip fewer for every create, on the writer that every node's
        // batches wait for. The answers stay those of a lookup made here first.
        if let Err(refused) = check_lockout(&*self.store, self.access, &e, we) {
            return Err(self.taken_or(p.oid, &e.name, refused));
        }
        e.oid = self.store.next_oid();
        e.tstamp = self.store.next_tstamp();
        if e.isfile {
            if let Err(refused) = self.set_content(&mut e, we) {
                return Err(self.taken_or(p.oid, &e.name, refused));
            }
        }
        self.append_new(&e, p.oid)?;
        Ok(e)
    }

    /// Points a file version at its new content (recording the blob and its wrapped key
    /// beside the log), or, without a part, keeps the current content.
    fn set_content(&mut self, e: &mut Event, we: &WriteEvent) -> Result<()> {
        if e.mimetype.is_none() {
            e.mimetype = Some(guess_mimetype(&e.name));
        }
        let info: &BlobInfo = match &we.content {
            Content::Stored(info) => info,
            // A rehearsal: the part is not uploaded yet.
            Content::Pending => return Ok(()),
            Content::None => {
                if let Some(given) = we.rname.as_ref().and_then(crate::model::event::Rname::name) {
                    if Some(given) != e.rname_str() {
                        return Err(Error::bad_request(
                            Code::RnameMismatch,
                            format!(
                                "rname {given:?} is not this file's content; send a file part \
                                 to change the content"
                            ),
                        ));
                    }
                }
                return Ok(());
            }
        };
        if let Some(want) = &we.sha256plain {
            // The Python client sends a file's props back with new content: a sha256plain
            // equal to the current version's is that echo, not a claim about the new part.
            let echoed = e.sha256plain.as_deref() == Some(want.trim());
            if !echoed && !want.trim().eq_ignore_ascii_case(&info.sha256plain) {
                return Err(Error::bad_request(
                    Code::Sha256Mismatch,
                    format!(
                        "the uploaded content's sha256 is {}, but the event says {want}",
                        info.sha256plain
                    ),
                ));
            }
        }
        self.store.put_blob(&BlobRow {
            rname: info.rname.clone(),
            algorithm: info.algorithm,
            wrapped: info.wrapped.clone(),
            size: info.size,
            sha256plain: info.sha256plain.clone(),
            inline: info.inline.clone(),
            created: e.tstamp,
            keyed: e.tstamp,
            location: None,
        })?;
        e.rname = Some(crate::model::event::Rname::s3(&info.rname));
        e.size = Some(info.size);
        e.sha256plain = Some(info.sha256plain.clone());
        // `blobalgorithm` describes the content this version points at.
        match info.algorithm {
            BlobAlgorithm::None => {
                e.extra.insert("blobalgorithm".into(), json!("none"));
            }
            BlobAlgorithm::Chunked => {
                e.extra.remove("blobalgorithm");
            }
        }
        Ok(())
    }

    fn check_precondition(cur: &Current, we: &WriteEvent) -> Result<()> {
        match we.precondition {
            Some(t) if t != cur.event.tstamp => Err(Error::conflict(
                Code::StaleTstamp,
                format!(
                    "{} has changed: you sent tstamp {t}, the current version is {}",
                    cur.event.oid, cur.event.tstamp
                ),
            )),
            _ => Ok(()),
        }
    }

    fn protected(&self, oid: Oid) -> bool {
        oid == Oid::ROOT || oid == self.ns.oid
    }

    fn update(&mut self, oid: Oid, we: &WriteEvent) -> Result<Event> {
        let cur = self.target_for(oid, Letter::U)?;
        Self::check_precondition(&cur, we)?;
        let old = &cur.event;
        if let Some(f) = we.isfile {
            if f != old.isfile {
                return Err(Error::bad_request(
                    Code::IsfileMismatch,
                    "an update cannot turn a folder into a file or back",
                ));
            }
        }
        let (userpolicy, jwthash) = self.stamp();
        let mut e = old.clone();
        e.action = Action::U;
        e.userpolicy = userpolicy;
        e.jwthash = jwthash;
        e.schemaversion = SCHEMA_VERSION;
        e.checkedtstamp = old.tstamp;
        if let Some(n) = &we.name {
            e.name = n.clone();
        }
        if let Some(pp) = &we.policy {
            e.objectpolicy = Some(pp.objectpolicy.clone());
            e.originalobjectpolicy = pp.originalobjectpolicy.clone();
        }
        e.expiration = we
            .expiration
            .apply(Some(old.expiration))
            .unwrap_or(Tstamp::FOREVER);
        e.mimetype = we.mimetype.apply(old.mimetype.clone());
        e.security = we.security.apply(old.security.clone());
        e.derived = we.derived.apply(old.derived.clone());
        for (k, v) in &we.extra {
            match v {
                Patch::Set(v) => {
                    e.extra.insert(k.clone(), v.clone());
                }
                Patch::Clear => {
                    e.extra.remove(k);
                }
                Patch::Keep => {}
            }
        }

        let moving = we
            .parent
            .as_ref()
            .is_some_and(|p| !(p.names.is_empty() && p.start == old.parentoid));
        let renaming = e.name != old.name;
        if renaming {
            crate::model::path::check_new_name(&e.name)
                .map_err(|e| Error::bad_request(Code::BadName, e.to_string()))?;
        }
        if (moving || renaming) && self.protected(oid) {
            return Err(Error::conflict(
                Code::Protected,
                format!("{oid} is the root or the namespace folder; it cannot move or be renamed"),
            ));
        }
        if moving {
            let np = self.parent_of(we)?;
            let np = np.event;
            if np.oid == oid || np.fulldir.contains(&format!("/{oid}/")) {
                return Err(Error::conflict(
                    Code::Cycle,
                    format!("cannot move {oid} inside itself"),
                ));
            }
            e.parentoid = np.oid;
            e.fulldir = format!("{}{}/", np.fulldir, np.oid);
            if !self.access.may(&*self.store, &np, Letter::C, &e) {
                return Err(refusal(
                    &*self.store,
                    self.access,
                    &np,
                    Letter::C,
                    "new parent",
                ));
            }
            self.check_depth(&e.fulldir)?;
        }
        if moving || renaming {
            if let Some(other) = self.store.child_by_name(e.parentoid, &e.name)? {
                if other != oid {
                    return Err(duplicate_name(&e.name, e.parentoid));
                }
            }
        }
        if we.policy.is_some() {
            check_lockout(&*self.store, self.access, &e, we)?;
        }
        e.tstamp = self.store.next_tstamp();
        if e.isfile {
            self.set_content(&mut e, we)?;
        }
        self.append(&e)?;
        Ok(e)
    }

    fn target(&self, we: &WriteEvent, verb: &str) -> Result<Oid> {
        we.oid.ok_or_else(|| {
            Error::bad_request(Code::MissingOid, format!("a {verb} needs the object's oid"))
        })
    }

    fn delete(&mut self, we: &WriteEvent) -> Result<Event> {
        let oid = self.target(we, "delete")?;
        let cur = self.target_for(oid, Letter::D)?;
        Self::check_precondition(&cur, we)?;
        if self.protected(oid) {
            return Err(Error::conflict(
                Code::Protected,
                format!("{oid} cannot be deleted"),
            ));
        }
        if !cur.event.isfile && self.store.has_children(oid, true)? {
            return Err(Error::conflict(
                Code::NotEmpty,
                format!("folder {oid} is not empty; delete its children first"),
            ));
        }
        let (userpolicy, jwthash) = self.stamp();
        let mut e = cur.event.clone();
        e.action = Action::D;
        e.userpolicy = userpolicy;
        e.jwthash = jwthash;
        e.checkedtstamp = cur.event.tstamp;
        e.tstamp = self.store.next_tstamp();
        self.append(&e)?;
        Ok(e)
    }

    fn purge(&mut self, we: &WriteEvent) -> Result<Event> {
        let oid = self.target(we, "purge")?;
        let cur = self.target_for(oid, Letter::P)?;
        Self::check_precondition(&cur, we)?;
        if self.protected(oid) {
            return Err(Error::conflict(
                Code::Protected,
                format!("{oid} cannot be purged"),
            ));
        }
        let whole = match we.purgetstamp {
            None => true,
            Some(t) => {
                if self.store.version(oid, t)?.is_none() {
                    return Err(Error::not_found(
                        Code::NotFound,
                        format!("object {oid} has no version {t}"),
                    ));
                }
                self.store.history(oid)?.len() == 1
            }
        };
        if whole && self.store.has_children(oid, false)? {
            return Err(Error::conflict(
                Code::NotEmpty,
                format!("folder {oid} still has children (live or deleted); purge them first"),
            ));
        }
        let (userpolicy, jwthash) = self.stamp();
        let at = self.store.next_tstamp();
        let removed = self
            .store
            .purge(oid, we.purgetstamp, at, &userpolicy, &jwthash)?;
        self.seen.clear();
        let mut rnames: Vec<String> = removed
            .iter()
            .filter_map(|e| e.rname_str().map(str::to_string))
            .collect();
        rnames.sort();
        rnames.dedup();
        for rname in rnames {
            if self.store.blob_in_use(&rname)? {
                continue;
            }
            if let Some(row) = self.store.blob(&rname)? {
                self.store.drop_blob(&rname)?;
                if row.inline.is_none() {
                    self.freed_blobs.push(row.location().to_string());
                }
            }
        }
        self.purged.extend(removed);
        // Not stored: the response's record of what happened.
        let mut e = cur.event.clone();
        e.action = Action::P;
        e.userpolicy = userpolicy;
        e.jwthash = jwthash;
        e.checkedtstamp = cur.event.tstamp;
        e.tstamp = at;
        if let Some(t) = we.purgetstamp {
            e.extra
                .insert("purgetstamp".into(), Value::String(t.to_string()));
        }
        Ok(e)
    }
}
