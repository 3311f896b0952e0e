//! `vellum migrate`: copies an embedded (SQLite) store's metadata into an empty PostgreSQL
//! database, table by table in key order, a batch per transaction, each batch recording
//! how far it got in the same transaction, so an interrupted copy resumes where it
//! stopped. Blobs are not copied: their rows (with their wrapped keys and locations) are,
//! and the objects stay where they are. At the end every table's rows are counted and
//! digested on both sides, and the clock is set past the source's high-water mark.

use std::path::Path;

use rusqlite::types::ValueRef;
use sha2::{Digest, Sha256};
use tokio_postgres::types::ToSql;

use super::conn::{get, Conn};
use super::Connector;
use crate::config::PostgresConfig;
use crate::store::StoreError;

/// Rows per batch (one PostgreSQL transaction, one `INSERT … SELECT FROM unnest`).
const BATCH_ROWS: usize = 2_000;

/// The progress table, present only while a copy is under way (dropped once verified).
const PROGRESS: &str = "vellum_migration_progress";

#[derive(Clone, Copy, PartialEq)]
enum Ty {
    Int,
    Bool,
    Text,
    Bytes,
}

impl Ty {
    fn array(self) -> &'static str {
        match self {
            Ty::Int => "bigint[]",
            Ty::Bool => "boolean[]",
            Ty::Text => "text[]",
            Ty::Bytes => "bytea[]",
        }
    }
}

/// A table as both schemas have it: its columns (key columns first) and their types.
struct Table {
    name: &'static str,
    keys: usize,
    cols: &'static [(&'static str, Ty)],
}

use Ty::{Bool, Bytes, Int, Text};

/// Every table of the metadata store, in an order that needs no deferred checks.
/// DO NOT drop a table from this list: a store's data would be left behind.
const TABLES: &[Table] = &[
    Table {
        name: "meta",
        keys: 1,
        cols: &[("key", Text), ("value", Text)],
    },
    Table {
        name: "events",
        keys: 2,
        cols: &[("oid", Int), ("tstamp", Int), ("body", Text)],
    },
    Table {
        name: "objects",
        keys: 1,
        cols: &[
            ("oid", Int),
            ("tstamp", Int),
            ("parentoid", Int),
            ("name", Text),
            ("live", Bool),
            ("isfile", Bool),
            ("fulldir", Text),
            ("expiration", Int),
            ("derived_oid", Int),
        ],
    },
    Table {
        name: "purges",
        keys: 1,
        cols: &[
            ("tstamp", Int),
            ("oid", Int),
            ("purgetstamp", Int),
            ("versions", Int),
            ("label", Text),
            ("jwthash", Text),
        ],
    },
    Table {
        name: "blobs",
        keys: 1,
        cols: &[
            ("rname", Text),
            ("algorithm", Text),
            ("key_id", Text),
            ("encrypteddata", Text),
            ("encryptednonce", Text),
            ("size", Int),
            ("sha256plain", Text),
            ("inline", Bytes),
            ("created", Int),
            ("location", Text),
            ("keyed_at", Int),
        ],
    },
    Table {
        name: "event_blobs",
        keys: 2,
        cols: &[("oid", Int), ("tstamp", Int), ("rname", Text)],
    },
    Table {
        name: "share_log",
        keys: 1,
        cols: &[
            ("tstamp", Int),
            ("share", Int),
            ("kind", Text),
            ("body", Text),
        ],
    },
    Table {
        name: "shares",
        keys: 1,
        cols: &[
            ("id", Int),
            ("oid", Int),
            ("tstamp", Int),
            ("audience_claim", Text),
            ("audience_value", Text),
            ("link_hash", Text),
            ("sharer", Text),
            ("parent", Int),
            ("body", Text),
            ("expires", Int),
            ("closed", Bool),
        ],
    },
    Table {
        name: "tasks",
        keys: 1,
        cols: &[
            ("id", Int),
            ("kind", Text),
            ("target", Text),
            ("oid", Int),
            ("share", Int),
            ("actor", Text),
            ("sharer", Text),
            ("state", Text),
            ("attempts", Int),
            ("report", Text),
            ("created", Int),
            ("updated", Int),
            ("run_after", Int),
            ("lease_owner", Text),
            ("lease_until", Int),
            ("after", Int),
            ("waiting", Bool),
            ("open_children", Int),
        ],
    },
    Table {
        name: "task_links",
        keys: 2,
        cols: &[("parent", Int), ("child", Int)],
    },
];

/// One value, as both sides give it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
enum Val {
    Null,
    Int(i64),
    Bool(bool),
    Text(String),
    Bytes(Vec<u8>),
}

/// How far a copy got, and how it ended.
#[derive(Debug, Default)]
pub struct CopyReport {
    /// (table, rows in the source, rows copied by this run).
    pub tables: Vec<(String, u64, u64)>,
    /// Whether this run resumed an interrupted copy.
    pub resumed: bool,
}

/// What the copy tells its caller as it goes: (table, rows done, rows in the table).
pub type Progress<'a> = &'a mut dyn FnMut(&str, u64, u64);

fn sqlite(e: rusqlite::Error) -> StoreError {
    StoreError::from(e)
}

fn val(v: ValueRef<'_>, ty: Ty) -> Result<Val, StoreError> {
    Ok(match (v, ty) {
        (ValueRef::Null, _) => Val::Null,
        (ValueRef::Integer(i), Ty::Bool) => Val::Bool(i != 0),
        (ValueRef::Integer(i), Ty::Int) => Val::Int(i),
        (ValueRef::Text(t), Ty::Text) => Val::Text(
            std::str::from_utf8(t)
                .map_err(|e| StoreError::Row(format!("text that is not UTF-8: {e}")))?
                .to_owned(),
        ),
        (ValueRef::Blob(b), Ty::Bytes) => Val::Bytes(b.to_vec()),
        (other, _) => {
            return Err(StoreError::Row(format!(
                "a value of type {:?} where the schema says otherwise",
                other.data_type()
            )))
        }
    })
}

fn key_clause(t: &Table, first: usize) -> String {
    let keys: Vec<&str> = t.cols[..t.keys].iter().map(|c| c.0).collect();
    let params: Vec<String> = (0..t.keys).map(|i| format!("?{}", first + i)).collect();
    format!("({}) > ({})", keys.join(", "), params.join(", "))
}

fn sqlite_page(
    src: &rusqlite::Connection,
    t: &Table,
    after: Option<&[Val]>,
) -> Result<Vec<Vec<Val>>, StoreError> {
    let cols: Vec<&str> = t.cols.iter().map(|c| c.0).collect();
    let order: Vec<&str> = t.cols[..t.keys].iter().map(|c| c.0).collect();
    let sql = format!(
        "SELECT {} FROM {} {} ORDER BY {} LIMIT {BATCH_ROWS}",
        cols.join(", "),
        t.name,
        if after.is_some() {
            format!("WHERE {}", key_clause(t, 1))
        } else {
            String::new()
        },
        order.join(", ")
    );
    let mut st = src.prepare_cached(&sql).map_err(sqlite)?;
    let args: Vec<rusqlite::types::Value> = after
        .unwrap_or_default()
        .iter()
        .map(|v| match v {
            Val::Int(i) => rusqlite::types::Value::Integer(*i),
            Val::Text(s) => rusqlite::types::Value::Text(s.clone()),
            _ => rusqlite::types::Value::Null,
        })
        .collect();
    let mut rows = st.query(rusqlite::params_from_iter(args)).map_err(sqlite)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(sqlite)? {
        let mut row = Vec::with_capacity(t.cols.len());
        for (i, (_, ty)) in t.cols.iter().enumerate() {
            row.push(val(r.get_ref(i).map_err(sqlite)?, *ty)?);
        }
        out.push(row);
    }
    Ok(out)
}

/// Inserts `rows` with one statement: each column bound as an array.
fn insert(c: &mut Conn, t: &Table, rows: &[Vec<Val>]) -> Result<(), StoreError> {
    let cols: Vec<&str> = t.cols.iter().map(|c| c.0).collect();
    let unnest: Vec<String> = t
        .cols
        .iter()
        .enumerate()
        .map(|(i, (_, ty))| format!("${}::{}", i + 1, ty.array()))
        .collect();
    let sql = format!(
        "INSERT INTO {} ({}) SELECT * FROM unnest({})",
        t.name,
        cols.join(", "),
        unnest.join(", ")
    );
    let mut arrays: Vec<Box<dyn ToSql + Sync>> = Vec::new();
    for (i, (_, ty)) in t.cols.iter().enumerate() {
        let column = rows.iter().map(|r| &r[i]);
        arrays.push(match ty {
            Ty::Int => Box::new(
                column
                    .map(|v| match v {
                        Val::Int(i) => Some(*i),
                        _ => None,
                    })
                    .collect::<Vec<_>>(),
            ),
            Ty::Bool => Box::new(
                column
                    .map(|v| match v {
                        Val::Bool(b) => Some(*b),
                        _ => None,
                    })
                    .collect::<Vec<_>>(),
            ),
            Ty::Text => Box::new(
                column
                    .map(|v| match v {
                        Val::Text(s) => Some(s.clone()),
                        _ => None,
                    })
                    .collect::<Vec<_>>(),
            ),
            Ty::Bytes => Box::new(
                column
                    .map(|v| match v {
                        Val::Bytes(b) => Some(b.clone()),
                        _ => None,
                    })
                    .collect::<Vec<_>>(),
            ),
        });
    }
    let args: Vec<&(dyn ToSql + Sync)> = arrays.iter().map(|b| b.as_ref()).collect();
    c.execute(&sql, &args)?;
    Ok(())
}

/// A table's rows in key order (text in byte order), as a count and a digest of each
/// row's values.
fn digest_rows(rows: impl Iterator<Item = Vec<Val>>, into: &mut (u64, Sha256)) {
    for row in rows {
        into.0 += 1;
        // serde_json of the values: the same text from either side for equal values.
        into.1.update(serde_json::to_vec(&row).unwrap_or_default());
        into.1.update(b"\n");
    }
}

fn sqlite_digest(src: &rusqlite::Connection, t: &Table) -> Result<(u64, String), StoreError> {
    let mut acc = (0u64, Sha256::new());
    let mut after: Option<Vec<Val>> = None;
    loop {
        let page = sqlite_page(src, t, after.as_deref())?;
        let Some(last) = page.last() else { break };
        after = Some(last[..t.keys].to_vec());
        digest_rows(page.into_iter(), &mut acc);
    }
    Ok((acc.0, hex::encode(acc.1.finalize())))
}

fn pg_digest(c: &mut Conn, t: &Table) -> Result<(u64, String), StoreError> {
    let cols: Vec<&str> = t.cols.iter().map(|c| c.0).collect();
    // Byte order for text keys, as SQLite's BINARY collation.
    let order: Vec<String> = t.cols[..t.keys]
        .iter()
        .map(|(n, ty)| {
            if *ty == Ty::Text {
                format!("{n} COLLATE \"C\"")
            } else {
                n.to_string()
            }
        })
        .collect();
    // Paged by key (after the last key of the page before), never by OFFSET, which
    // would read the table again from its start for every page.
    let params: Vec<String> = t.cols[..t.keys]
        .iter()
        .enumerate()
        .map(|(i, (_, ty))| {
            if *ty == Ty::Text {
                format!("${}::text COLLATE \"C\"", i + 1)
            } else {
                format!("${}::bigint", i + 1)
            }
        })
        .collect();
    let first = format!(
        "SELECT {} FROM {} ORDER BY {} LIMIT {BATCH_ROWS}",
        cols.join(", "),
        t.name,
        order.join(", ")
    );
    let next = format!(
        "SELECT {} FROM {} WHERE ({}) > ({}) ORDER BY {} LIMIT {BATCH_ROWS}",
        cols.join(", "),
        t.name,
        order.join(", "),
        params.join(", "),
        order.join(", ")
    );
    let mut acc = (0u64, Sha256::new());
    let mut after: Option<Vec<Val>> = None;
    loop {
        let rows = match &after {
            None => c.query(&first, &[])?,
            Some(key) => {
                let bound: Vec<Box<dyn ToSql + Sync>> = key
                    .iter()
                    .map(|v| -> Box<dyn ToSql + Sync> {
                        match v {
                            Val::Int(i) => Box::new(*i),
                            Val::Text(t) => Box::new(t.clone()),
                            _ => Box::new(None::<i64>),
                        }
                    })
                    .collect();
                let args: Vec<&(dyn ToSql + Sync)> = bound.iter().map(|b| b.as_ref()).collect();
                c.query(&next, &args)?
            }
        };
        if rows.is_empty() {
            break;
        }
        let mut page = Vec::with_capacity(rows.len());
        for r in &rows {
            let mut row = Vec::with_capacity(t.cols.len());
            for (i, (_, ty)) in t.cols.iter().enumerate() {
                row.push(match ty {
                    Ty::Int => get::<Option<i64>>(r, i)?.map_or(Val::Null, Val::Int),
                    Ty::Bool => get::<Option<bool>>(r, i)?.map_or(Val::Null, Val::Bool),
                    Ty::Text => get::<Option<String>>(r, i)?.map_or(Val::Null, Val::Text),
                    Ty::Bytes => get::<Option<Vec<u8>>>(r, i)?.map_or(Val::Null, Val::Bytes),
                });
            }
            page.push(row);
        }
        after = page.last().map(|r| r[..t.keys].to_vec());
        digest_rows(page.into_iter(), &mut acc);
    }
    Ok((acc.0, hex::encode(acc.1.finalize())))
}

/// Copies the store in `data_dir` into the database `to` (migrating its schema first),
/// resuming an interrupted copy. Refuses a database that already holds a store (other
/// than one this copy began). Blocking: run it outside an async runtime.
pub fn copy_from_sqlite(
    data_dir: &Path,
    to: &PostgresConfig,
    progress: Progress<'_>,
) -> Result<CopyReport, StoreError> {
    let db = crate::store::sqlite::SqliteStore::db_file(data_dir);
    if !db.exists() {
        return Err(StoreError::Backend(format!(
            "no store at {}",
            data_dir.display()
        )));
    }
    // Read-only: the source is never changed (stop its server first: what it writes
    // meanwhile would make the digests differ, and the copy is then refused).
    let src = rusqlite::Connection::open_with_flags(
        &db,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sqlite)?;
    src.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(sqlite)?;
    let version: i64 = src
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(sqlite)?;
    let known = crate::store::sqlite::MIGRATIONS_KNOWN as i64;
    if version != known {
        return Err(StoreError::Migration(format!(
            "the store at {} is at schema {version}; this Vellum copies schema {known}: \
             open it once with this version's `vellum serve` first",
            data_dir.display()
        )));
    }
    super::migrate_blocking(to)?;
    let connector = Connector::new(to)?;
    let mut c = connector.connect()?;
    c.batch(&format!(
        "CREATE TABLE IF NOT EXISTS {PROGRESS} (
             tbl      TEXT PRIMARY KEY,
             last_key TEXT,
             copied   BIGINT NOT NULL DEFAULT 0,
             done     BOOLEAN NOT NULL DEFAULT false
         )"
    ))?;
    let begun: i64 = get(
        &c.query_one(&format!("SELECT count(*) FROM {PROGRESS}"), &[])?,
        0,
    )?;
    let mut report = CopyReport {
        resumed: begun > 0,
        ..Default::default()
    };
    if begun == 0 {
        for t in TABLES {
            let n: i64 = get(
                &c.query_one(&format!("SELECT count(*) FROM {}", t.name), &[])?,
                0,
            )?;
            if n > 0 {
                return Err(StoreError::Migration(format!(
                    "the database already holds a store ({} has {n} rows): \
                     migrate into an empty database",
                    t.name
                )));
            }
        }
        c.batch("BEGIN")?;
        for t in TABLES {
            c.execute(
                &format!("INSERT INTO {PROGRESS} (tbl) VALUES ($1)"),
                &[&t.name],
            )?;
        }
        c.batch("COMMIT")?;
    }
    for t in TABLES {
        let total: i64 = src
            .query_row(&format!("SELECT count(*) FROM {}", t.name), [], |r| {
                r.get(0)
            })
            .map_err(sqlite)?;
        let row = c.query_one(
            &format!("SELECT last_key, copied, done FROM {PROGRESS} WHERE tbl = $1"),
            &[&t.name],
        )?;
        let (last_key, mut copied, done): (Option<String>, i64, bool) =
            (get(&row, 0)?, get(&row, 1)?, get(&row, 2)?);
        let mut after: Option<Vec<Val>> = match last_key {
            Some(k) => Some(
                serde_json::from_str(&k)
                    .map_err(|e| StoreError::Corrupt(format!("{PROGRESS}.{}", t.name), e))?,
            ),
            None => None,
        };
        let mut this_run = 0u64;
        progress(t.name, copied as u64, total as u64);
        // A table copied whole before an interruption is not read again.
        if !done {
            loop {
                let page = sqlite_page(&src, t, after.as_deref())?;
                let Some(last) = page.last() else { break };
                let key = last[..t.keys].to_vec();
                let key_text = serde_json::to_string(&key).unwrap_or_default();
                // The rows and the mark of how far the copy got, in one transaction.
                c.batch("BEGIN")?;
                let step = insert(&mut c, t, &page).and_then(|()| {
                    c.execute(
                        &format!(
                            "UPDATE {PROGRESS} SET last_key = $2, copied = copied + $3 WHERE tbl = $1"
                        ),
                        &[&t.name, &key_text, &(page.len() as i64)],
                    )
                });
                if let Err(e) = step {
                    let _ = c.batch("ROLLBACK");
                    return Err(e);
                }
                c.batch("COMMIT")?;
                copied += page.len() as i64;
                this_run += page.len() as u64;
                after = Some(key);
                progress(t.name, copied as u64, total as u64);
            }
        }
        c.execute(
            &format!("UPDATE {PROGRESS} SET done = true WHERE tbl = $1"),
            &[&t.name],
        )?;
        report
            .tables
            .push((t.name.to_string(), total as u64, this_run));
    }
    // Both sides agree, table by table, or the copy is refused (and left as it is).
    for t in TABLES {
        let (n_src, d_src) = sqlite_digest(&src, t)?;
        let (n_dst, d_dst) = pg_digest(&mut c, t)?;
        if (n_src, &d_src) != (n_dst, &d_dst) {
            return Err(StoreError::Migration(format!(
                "{}: {n_src} rows (digest {d_src}) in the source, {n_dst} (digest {d_dst}) \
                 in the database: was the source written to during the copy?",
                t.name
            )));
        }
    }
    let high_water: i64 = src
        .query_row(crate::store::sqlite::HIGH_WATER_SQL, [], |r| r.get(0))
        .map_err(sqlite)?;
    c.batch("BEGIN")?;
    c.execute("UPDATE clock SET last = greatest(last, $1)", &[&high_water])?;
    c.batch(&format!("DROP TABLE {PROGRESS}"))?;
    c.batch("COMMIT")?;
    Ok(report)
}
