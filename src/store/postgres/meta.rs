//! The façade's traits on PostgreSQL: each method runs the function of the same name in
//! `reads.rs`, `writes.rs`, `shares.rs` or `tasks.rs` on the snapshot's or the
//! transaction's connection.

use super::session::{HasConn, PgSnapshot, PgWriteCtx};
use super::{reads, shares, tasks, writes};
use crate::crypto::Wrapped;
use crate::model::task::QueueStats;
use crate::model::{
    Event, NewTask, Oid, Share, ShareEntry, ShareId, Task, TaskCounts, TaskId, TaskKind, TaskQuery,
    TaskUpdate, Tstamp, UserPolicy,
};
use crate::store::{BlobRow, BlobSwitch, Current, MetaRead, MetaWrite, StoreError};

/// [`MetaRead`] for a type with a connection: the same for snapshots and transactions.
macro_rules! meta_read {
    ($t:ty) => {
        impl MetaRead for $t {
            fn current(&self, oid: Oid) -> Result<Option<Current>, StoreError> {
                if let Some(c) = self.seen().borrow().get(oid) {
                    return Ok(Some(c));
                }
                let Some((c, size)) = self.with(|c| reads::current_sized(c, oid))? else {
                    return Ok(None);
                };
                self.seen().borrow_mut().put(oid, &c, size);
                Ok(Some(c))
            }
            fn child_by_name(&self, parent: Oid, name: &str) -> Result<Option<Oid>, StoreError> {
                self.with(|c| reads::child_by_name(c, parent, name))
            }
            fn has_children(&self, oid: Oid, live_only: bool) -> Result<bool, StoreError> {
                self.with(|c| reads::has_children(c, oid, live_only))
            }
            fn version(&self, oid: Oid, tstamp: Tstamp) -> Result<Option<Event>, StoreError> {
                self.with(|c| reads::version(c, oid, tstamp))
            }
            fn history(&self, oid: Oid) -> Result<Vec<Event>, StoreError> {
                self.with(|c| reads::history(c, oid))
            }
            fn children(
                &self,
                parent: Oid,
                after: Option<Oid>,
                limit: usize,
            ) -> Result<Vec<Current>, StoreError> {
                self.with(|c| reads::children(c, parent, after, limit))
            }
            fn derived_from(&self, oid: Oid) -> Result<Vec<Current>, StoreError> {
                self.with(|c| reads::derived_from(c, oid))
            }
            fn meta_get(&self, key: &str) -> Result<Option<String>, StoreError> {
                self.with(|c| reads::meta_get(c, key))
            }
            fn events_since(&self, after: Tstamp, limit: usize) -> Result<Vec<Event>, StoreError> {
                self.with(|c| reads::events_since(c, after, limit))
            }
            fn max_tstamp(&self) -> Result<Tstamp, StoreError> {
                self.with(reads::max_tstamp)
            }
            fn blob(&self, rname: &str) -> Result<Option<BlobRow>, StoreError> {
                self.with(|c| reads::blob(c, rname))
            }
            fn blobs_named(&self, rnames: &[&str]) -> Result<Vec<BlobRow>, StoreError> {
                self.with(|c| reads::blobs_named(c, rnames))
            }
            fn blob_in_use(&self, rname: &str) -> Result<bool, StoreError> {
                self.with(|c| reads::blob_in_use(c, rname))
            }
            fn blobs_after(
                &self,
                after: Option<&str>,
                limit: usize,
            ) -> Result<Vec<BlobRow>, StoreError> {
                self.with(|c| reads::blobs_after(c, after, limit))
            }
            fn location_in_use(&self, location: &str) -> Result<bool, StoreError> {
                self.with(|c| reads::location_in_use(c, location))
            }
            fn share(&self, id: ShareId) -> Result<Option<Share>, StoreError> {
                self.with(|c| shares::share(c, id))
            }
            fn shares_on(&self, oids: &[Oid]) -> Result<Vec<Share>, StoreError> {
                self.with(|c| shares::shares_on(c, oids))
            }
            fn shares_to(&self, pairs: &[(String, String)]) -> Result<Vec<Share>, StoreError> {
                self.with(|c| shares::shares_to(c, pairs))
            }
            fn shares_to_on(
                &self,
                pairs: &[(String, String)],
                oids: &[Oid],
            ) -> Result<Vec<Share>, StoreError> {
                self.with(|c| shares::shares_to_on(c, pairs, oids))
            }
            fn shares_by(&self, label: &str) -> Result<Vec<Share>, StoreError> {
                self.with(|c| shares::shares_by(c, label))
            }
            fn shares_through(&self, id: ShareId) -> Result<Vec<Share>, StoreError> {
                self.with(|c| shares::shares_through(c, id))
            }
            fn link_share(&self, hash: &str) -> Result<Option<Share>, StoreError> {
                self.with(|c| shares::link_share(c, hash))
            }
            fn share_log(&self, id: ShareId) -> Result<Vec<ShareEntry>, StoreError> {
                self.with(|c| shares::share_log(c, id))
            }
            fn share_log_since(
                &self,
                after: Tstamp,
                limit: usize,
            ) -> Result<Vec<ShareEntry>, StoreError> {
                self.with(|c| shares::share_log_since(c, after, limit))
            }
            fn shares_expired(&self, now: u64, limit: usize) -> Result<Vec<Share>, StoreError> {
                self.with(|c| shares::shares_expired(c, now, limit))
            }
            fn blobs_beneath(
                &self,
                oid: Oid,
                upto: Tstamp,
            ) -> Result<Vec<(Oid, String)>, StoreError> {
                self.with(|c| tasks::blobs_beneath(c, oid, upto))
            }
            fn task(&self, id: TaskId) -> Result<Option<Task>, StoreError> {
                self.with(|c| tasks::task(c, id))
            }
            fn tasks(&self, q: &TaskQuery) -> Result<Vec<Task>, StoreError> {
                self.with(|c| tasks::tasks(c, q))
            }
            fn task_children(&self, parent: TaskId) -> Result<TaskCounts, StoreError> {
                self.with(|c| tasks::children(c, parent))
            }
            fn failed_children(&self, parent: TaskId) -> Result<Vec<TaskId>, StoreError> {
                self.with(|c| tasks::failed_children(c, parent))
            }
            fn task_child_for(
                &self,
                parent: TaskId,
                target: &str,
            ) -> Result<Option<TaskId>, StoreError> {
                self.with(|c| tasks::child_for(c, parent, target))
            }
            fn task_parents(&self, child: TaskId) -> Result<Vec<TaskId>, StoreError> {
                self.with(|c| tasks::parents(c, child))
            }
            fn queue_stats(&self) -> Result<QueueStats, StoreError> {
                self.with(tasks::stats)
            }
            fn next_task_due(&self) -> Result<Option<u64>, StoreError> {
                self.with(tasks::next_due)
            }
        }
    };
}

meta_read!(PgSnapshot<'_>);
meta_read!(PgWriteCtx<'_>);

impl MetaWrite for PgWriteCtx<'_> {
    fn next_tstamp(&mut self) -> Tstamp {
        self.clock.tstamp()
    }

    fn next_oid(&mut self) -> Oid {
        self.clock.oid()
    }

    fn append(&mut self, event: &Event) -> Result<(), StoreError> {
        let out = self.with(|c| writes::append(c, event));
        match &out {
            // A new object: nothing read before names it.
            Ok(false) => {}
            // An object changed (and a folder that moved changed its subtree), or the
            // statement failed part way.
            _ => self.seen.borrow_mut().clear(),
        }
        self.mark(out.is_ok());
        out.map(|_| ())
    }

    fn purge(
        &mut self,
        oid: Oid,
        version: Option<Tstamp>,
        at: Tstamp,
        who: &UserPolicy,
        jwthash: &str,
    ) -> Result<Vec<Event>, StoreError> {
        let out = self.with(|c| writes::purge(c, oid, version, at, who, jwthash));
        self.seen.borrow_mut().clear();
        self.mark(out.is_ok());
        out
    }

    fn meta_set(&mut self, key: &str, value: &str) -> Result<(), StoreError> {
        let out = self.with(|c| writes::meta_set(c, key, value));
        self.mark(out.is_ok());
        out
    }

    fn put_blob(&mut self, row: &BlobRow) -> Result<(), StoreError> {
        let out = self.with(|c| writes::put_blob(c, row));
        self.mark(out.is_ok());
        out
    }

    fn log_share(&mut self, entry: &ShareEntry) -> Result<(), StoreError> {
        let out = self.with(|c| shares::log_share(c, entry));
        self.mark(out.is_ok());
        out
    }

    fn bind_link(&mut self, id: ShareId, hash: &str) -> Result<(), StoreError> {
        let out = self.with(|c| shares::bind_link(c, id, hash));
        self.mark(out.is_ok());
        out
    }

    fn drop_blob(&mut self, rname: &str) -> Result<(), StoreError> {
        let out = self.with(|c| writes::drop_blob(c, rname));
        self.mark(out.is_ok());
        out
    }

    fn rewrap_blob(
        &mut self,
        rname: &str,
        was: &Wrapped,
        wrapped: &Wrapped,
    ) -> Result<bool, StoreError> {
        let out = self.with(|c| writes::rewrap_blob(c, rname, was, wrapped));
        self.mark(out.as_ref().is_ok_and(|done| *done));
        out
    }

    fn switch_blob(
        &mut self,
        rname: &str,
        was: &Wrapped,
        to: &BlobSwitch,
        at: Tstamp,
    ) -> Result<bool, StoreError> {
        let out = self.with(|c| writes::switch_blob(c, rname, was, to, at));
        self.mark(out.as_ref().is_ok_and(|done| *done));
        out
    }

    fn share_outbox(&self) -> bool {
        self.outbox
    }

    fn enqueue_task(&mut self, t: &NewTask, now_ms: u64) -> Result<(TaskId, bool), StoreError> {
        let id = self.next_oid();
        let out = self.with(|c| tasks::enqueue(c, id, t, now_ms));
        self.mark(out.is_ok());
        out
    }

    fn link_task(&mut self, parent: TaskId, child: TaskId) -> Result<(), StoreError> {
        let out = self.with(|c| tasks::link(c, parent, child));
        self.mark(out.is_ok());
        out
    }

    fn lease_task(
        &mut self,
        now_ms: u64,
        node: &str,
        until_ms: u64,
    ) -> Result<Option<Task>, StoreError> {
        let out = self.with(|c| tasks::lease(c, now_ms, node, until_ms));
        self.mark(out.as_ref().is_ok_and(|t| t.is_some()));
        out
    }

    fn lease_more(
        &mut self,
        kind: TaskKind,
        n: usize,
        now_ms: u64,
        node: &str,
        until_ms: u64,
    ) -> Result<Vec<Task>, StoreError> {
        let out = self.with(|c| tasks::lease_more(c, kind, n, now_ms, node, until_ms));
        self.mark(out.as_ref().is_ok_and(|t| !t.is_empty()));
        out
    }

    fn renew_task(&mut self, id: TaskId, node: &str, until_ms: u64) -> Result<bool, StoreError> {
        let out = self.with(|c| tasks::renew(c, id, node, until_ms));
        self.mark(out.as_ref().is_ok_and(|done| *done));
        out
    }

    fn update_task(
        &mut self,
        id: TaskId,
        node: Option<&str>,
        u: &TaskUpdate,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        let out = self.with(|c| tasks::update(c, id, node, u, now_ms));
        self.mark(out.as_ref().is_ok_and(|done| *done));
        out
    }

    fn release_tasks(&mut self, node: &str, now_ms: u64) -> Result<u64, StoreError> {
        let out = self.with(|c| tasks::release(c, node, now_ms));
        self.mark(out.as_ref().is_ok_and(|n| *n > 0));
        out
    }

    fn prune_tasks(&mut self, before_ms: u64, limit: usize) -> Result<u64, StoreError> {
        let out = self.with(|c| tasks::prune(c, before_ms, limit));
        self.mark(out.as_ref().is_ok_and(|n| *n > 0));
        out
    }
}
