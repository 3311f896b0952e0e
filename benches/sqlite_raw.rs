//! Baseline for the write benchmark: the raw rate of single-row SQLite commits in WAL
//! mode with synchronous=FULL on this disk, one commit per row, one writer.
//!
//! `cargo bench --bench sqlite_raw -- DIR SECONDS RUNS` prints one line per run and the
//! median. Run by benches/run.sh next to the server's figures; never a timed test.

use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().filter(|a| a != "--bench").collect();
    let dir = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| std::env::temp_dir().display().to_string());
    let secs: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(5);
    let runs: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(3);
    let mut rates = Vec::new();
    for run in 0..runs {
        let path = std::path::Path::new(&dir).join(format!("raw-{run}.db"));
        let _ = std::fs::remove_file(&path);
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.pragma_update(None, "synchronous", "FULL").unwrap();
        conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
            .unwrap();
        let body = "x".repeat(600); // about one event's JSON
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed() < Duration::from_secs(secs) {
            conn.execute("INSERT INTO t (body) VALUES (?1)", [&body])
                .unwrap();
            n += 1;
        }
        let rate = n as f64 / start.elapsed().as_secs_f64();
        println!("run {run}: {rate:.0} commits/s");
        rates.push(rate);
        drop(conn);
        let _ = std::fs::remove_file(&path);
    }
    rates.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!("median {:.0} commits/s", rates[rates.len() / 2]);
}
