//! `vellum migrate --from DATA_DIR --to postgres://…`: an embedded store's metadata into
//! an empty PostgreSQL database (`store::postgres::copy_from_sqlite`), with a progress bar
//! on a terminal and a line per table otherwise.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Instant;

use crate::config::PostgresConfig;

#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    /// The data folder of the embedded store to copy (its server stopped). Its blobs stay
    /// there: serve the new store with the same --data-dir (or the same bucket).
    #[arg(long)]
    pub from: PathBuf,
    /// The PostgreSQL database to copy into (empty, or holding an interrupted copy of the
    /// same store, which resumes).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub to: String,
    /// Certificates (PEM) to trust for TLS to PostgreSQL, besides the system's.
    #[arg(long, env = "DATABASE_CA")]
    pub database_ca: Option<PathBuf>,
}

/// Exit 0: copied and verified; 1: refused or failed (what was copied so far stays, and
/// the next run resumes).
pub fn main(a: MigrateArgs) -> anyhow::Result<()> {
    crate::cli::init_logging(crate::config::LogFormat::Text);
    let to = PostgresConfig::new(a.to, 1).with_ca_file(a.database_ca);
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(0);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{msg:>12} [{bar:30}] {pos}/{len} rows, {per_sec}, {eta} left",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar
    });
    let started = Instant::now();
    let mut current = String::new();
    let mut on_progress = |table: &str, done: u64, total: u64| {
        if let Some(bar) = &bar {
            if table != current {
                bar.reset();
                bar.set_message(table.to_string());
            }
            bar.set_length(total);
            bar.set_position(done);
        } else if table != current && !current.is_empty() {
            eprintln!("migrate: {current} copied");
        }
        current = table.to_string();
    };
    let result = crate::store::postgres::copy_from_sqlite(&a.from, &to, &mut on_progress);
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    match result {
        Ok(r) => {
            let secs = started.elapsed().as_secs_f64();
            if r.resumed {
                println!("migrate: resumed an interrupted copy");
            }
            let mut events = 0;
            for (table, total, copied) in &r.tables {
                println!("migrate: {table}: {total} rows ({copied} copied by this run)");
                if table == "events" {
                    events = *copied;
                }
            }
            println!(
                "migrate: every table's rows counted and digested on both sides: equal; \
                 {events} events in {secs:.1} s ({:.0} events/s)",
                events as f64 / secs.max(1e-9)
            );
            Ok(())
        }
        Err(e) => {
            eprintln!("migrate: {e}");
            std::process::exit(1);
        }
    }
}
