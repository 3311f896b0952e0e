//! What the user sees: a progress bar on a terminal (indicatif), plain periodic lines
//! otherwise, and the closing summary.

use crate::model::human_bytes;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Counters shared by the walk and the transactions.
#[derive(Debug, Default)]
pub struct Stats {
    /// Regular files and bytes in the local tree (measured before the import starts).
    pub files_total: AtomicU64,
    pub bytes_total: AtomicU64,
    /// Files written as new objects.
    pub created: AtomicU64,
    /// Files written as a new version of an object that had other content.
    pub updated: AtomicU64,
    /// Files already present with the same sha256plain.
    pub present: AtomicU64,
    /// Files that could not be imported (see `Report::failures`).
    pub failed: AtomicU64,
    /// Files never tried because the import stopped early.
    pub not_attempted: AtomicU64,
    pub folders_created: AtomicU64,
    /// Bytes of files settled (imported or already present).
    pub bytes_done: AtomicU64,
    /// Bytes streamed by requests still in flight.
    pub bytes_in_flight: Arc<AtomicU64>,
}

impl Stats {
    pub fn files_done(&self) -> u64 {
        self.created.load(Ordering::Relaxed)
            + self.updated.load(Ordering::Relaxed)
            + self.present.load(Ordering::Relaxed)
            + self.failed.load(Ordering::Relaxed)
    }
    fn bytes_shown(&self) -> u64 {
        self.bytes_done.load(Ordering::Relaxed) + self.bytes_in_flight.load(Ordering::Relaxed)
    }
}

/// Everything reported in the summary.
#[derive(Debug, Default)]
pub struct Report {
    pub stats: Stats,
    /// (local path relative to the root, reason), in the order they happened.
    pub failures: Mutex<Vec<(String, String)>>,
    /// Entries left out on purpose (symbolic links, special files).
    pub skipped: Mutex<Vec<(String, String)>>,
}

impl Report {
    pub fn fail(&self, rel: &str, reason: impl Into<String>) {
        self.stats.failed.fetch_add(1, Ordering::Relaxed);
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((rel.to_string(), reason.into()));
    }

    /// A folder that could not be created or read; `files` files under it are counted
    /// as failed without being listed one by one.
    pub fn fail_folder(&self, rel: &str, reason: impl Into<String>, files: u64) {
        self.stats.failed.fetch_add(files, Ordering::Relaxed);
        let mut reason = reason.into();
        if files > 0 {
            reason.push_str(&format!(" ({files} files under it not imported)"));
        }
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((format!("{rel}/"), reason));
    }

    /// Whether anything failed (a file or a folder).
    pub fn any_failure(&self) -> bool {
        !self
            .failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }

    pub fn skip(&self, rel: &str, reason: impl Into<String>) {
        self.skipped
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((rel.to_string(), reason.into()));
    }
}

fn rate(n: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        n as f64 / secs
    } else {
        0.0
    }
}

/// The live display. Dropping it without `finish` leaves the terminal clean too.
pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// How often plain lines are written when stderr is not a terminal.
const PLAIN_EVERY: Duration = Duration::from_secs(2);

impl Progress {
    /// Starts showing progress on stderr: a bar on a terminal, a line every 2 s
    /// otherwise, nothing when `quiet`.
    pub fn start(report: Arc<Report>, started: Instant, quiet: bool) -> Progress {
        if quiet {
            return Progress {
                bar: None,
                stop: None,
                task: None,
            };
        }
        let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
        let s = &report.stats;
        if std::io::stderr().is_terminal() {
            let bar = indicatif::ProgressBar::with_draw_target(
                Some(s.bytes_total.load(Ordering::Relaxed)),
                indicatif::ProgressDrawTarget::stderr(),
            );
            let style = indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} \
                 {binary_bytes_per_sec} {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
            bar.set_style(style);
            let b = bar.clone();
            let task = tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(150));
                loop {
                    tokio::select! {
                        _ = tick.tick() => {}
                        _ = &mut rx => break,
                    }
                    let s = &report.stats;
                    let done = s.files_done();
                    b.set_position(s.bytes_shown());
                    b.set_message(format!(
                        "{done}/{} files ({:.0}/s){}",
                        s.files_total.load(Ordering::Relaxed),
                        rate(done, started.elapsed().as_secs_f64()),
                        in_flight(s)
                    ));
                }
            });
            return Progress {
                bar: Some(bar),
                stop: Some(tx),
                task: Some(task),
            };
        }
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(PLAIN_EVERY);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = &mut rx => break,
                }
                eprintln!("{}", line(&report, started));
            }
        });
        Progress {
            bar: None,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// Stops the display and clears the bar.
    pub async fn finish(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

/// One plain progress line.
pub fn line(report: &Report, started: Instant) -> String {
    let s = &report.stats;
    let secs = started.elapsed().as_secs_f64();
    let done = s.files_done();
    let bytes = s.bytes_shown();
    format!(
        "import progress: {done}/{} files, {}/{} ({:.0} files/s, {}/s): {} imported, {} already present, {} failed{}",
        s.files_total.load(Ordering::Relaxed),
        human_bytes(bytes),
        human_bytes(s.bytes_total.load(Ordering::Relaxed)),
        rate(done, secs),
        human_bytes(rate(bytes, secs) as u64),
        s.created.load(Ordering::Relaxed) + s.updated.load(Ordering::Relaxed),
        s.present.load(Ordering::Relaxed),
        s.failed.load(Ordering::Relaxed),
        in_flight(s),
    )
}

/// The bytes of files sent (or being sent) whose transaction has not been answered yet: the
/// bar's bytes reach the total before the last commits do, and this says why files lag.
fn in_flight(s: &Stats) -> String {
    match s.bytes_in_flight.load(Ordering::Relaxed) {
        0 => String::new(),
        n => format!("; {} in flight", human_bytes(n)),
    }
}

/// Most failure lines printed in the summary (the count is always exact).
const MAX_LISTED: usize = 1000;

/// A summary section: `heading`, then the entries in path order (transactions finish in
/// any order), at most [`MAX_LISTED`] of them; nothing when there are none.
fn listing(out: &mut impl Write, heading: &str, entries: &Mutex<Vec<(String, String)>>) {
    let mut entries = entries.lock().unwrap_or_else(|p| p.into_inner()).clone();
    if entries.is_empty() {
        return;
    }
    entries.sort();
    let _ = writeln!(out, "{heading}");
    for (rel, why) in entries.iter().take(MAX_LISTED) {
        let _ = writeln!(out, "  {rel}: {why}");
    }
    if entries.len() > MAX_LISTED {
        let _ = writeln!(out, "  ... and {} more", entries.len() - MAX_LISTED);
    }
}

/// The closing summary, on stdout. `stopped` says why the import ended early, if it did.
pub fn summary(report: &Report, started: Instant, stopped: Option<&str>) {
    let s = &report.stats;
    let secs = started.elapsed().as_secs_f64();
    let created = s.created.load(Ordering::Relaxed);
    let updated = s.updated.load(Ordering::Relaxed);
    let imported = created + updated;
    let mut out = std::io::stdout().lock();
    listing(
        &mut out,
        "skipped (not imported on purpose):",
        &report.skipped,
    );
    listing(&mut out, "failed:", &report.failures);
    let not_attempted = s.not_attempted.load(Ordering::Relaxed);
    if let Some(why) = stopped {
        let _ = writeln!(out, "stopped early: {why}");
        let _ = writeln!(
            out,
            "  run the same command again to finish: what arrived is kept, nothing is duplicated"
        );
    }
    let _ = writeln!(
        out,
        "import: {imported} imported ({created} new, {updated} updated), {} already present, {} failed{}; \
         {} folders created; {} settled in {secs:.1} s ({:.0} files/s imported)",
        s.present.load(Ordering::Relaxed),
        s.failed.load(Ordering::Relaxed),
        if not_attempted > 0 || stopped.is_some() {
            format!(", {not_attempted} not attempted")
        } else {
            String::new()
        },
        s.folders_created.load(Ordering::Relaxed),
        human_bytes(s.bytes_done.load(Ordering::Relaxed)),
        rate(imported, secs),
    );
    let _ = out.flush();
}
