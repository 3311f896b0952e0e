//! Property tests with generated inputs (issue 10, item 9): the metadata parser, multipart
//! handling, the Lisp parser and Rego's compile-and-evaluate path, fed random, mutated and
//! grammar-generated inputs. There is no nightly toolchain for `cargo fuzz`, so this is fuzzing
//! inside `cargo test`:
//!
//! - deterministic: case `i` of a target is generated from a seed derived from
//!   `VELLUM_FUZZ_SEED` (a fixed default), the target's name and `i`; a failure prints the
//!   case's seed, and `VELLUM_FUZZ_REPLAY=<target>:<seed>` runs that case alone
//!   (`<target>:<file>` runs a file as if it were in the corpus);
//! - small by default (CI runs every test); `VELLUM_FUZZ_CASES=100000` runs that many
//!   generated cases per target instead, by hand;
//! - the corpus, `fixtures/fuzz/<target>/`, is replayed on every run and seeds the mutations:
//!   every input that once broke something is kept there, next to a named regression test;
//! - each library target runs on a thread of its own with the stack the server gives such work
//!   (a stack overflow aborts the whole test binary, which is itself the finding), and a case
//!   that runs past its target's hang limit fails the test instead of stalling it.
//!
//! The generator is the project's own splitmix64 (`common::rng`), not proptest: the inputs
//! that matter here are grammar-shaped (Rego modules, multipart bodies, event lists), written
//! as text by hand-made generators that proptest's strategies would only wrap, and a seed per
//! case already reproduces a failure; a failing input is minimised by hand into the corpus.
//!
//! A failing case's whole input is written to `$CARGO_TARGET_TMPDIR/fuzz-failures/`; with
//! `VELLUM_FUZZ_TRACE=1` each case is named on stderr as it starts and its input written to
//! `fuzz-failures/<target>-last` (a stack overflow aborts the process before anything else can
//! report it).

mod gen;
mod lisp;
mod metadata;
mod multipart;
mod rego;

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub use crate::common::rng::Rng;

/// The base seed when `VELLUM_FUZZ_SEED` is not set.
const DEFAULT_SEED: u64 = 0x007e_110f_f022_5eed;

/// How many generated cases a target runs: `VELLUM_FUZZ_CASES`, else its CI default.
pub fn cases(ci: usize) -> usize {
    std::env::var("VELLUM_FUZZ_CASES")
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(ci)
}

fn parse_seed(s: &str) -> Option<u64> {
    let s = s.trim().replace('_', "");
    match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

fn base_seed() -> u64 {
    std::env::var("VELLUM_FUZZ_SEED")
        .ok()
        .and_then(|s| parse_seed(&s))
        .unwrap_or(DEFAULT_SEED)
}

/// The seed of case `i` of `target`: independent of the other targets and of the case count.
pub fn case_seed(target: &str, i: u64) -> u64 {
    // FNV-1a of the name, mixed with the base seed and the index through splitmix64.
    let name = target.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    Rng(base_seed() ^ name ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15)).next()
}

/// What `VELLUM_FUZZ_REPLAY=<target>:<what>` asks of `target`.
pub enum Replay {
    /// Run this seed alone.
    Seed(u64),
    /// Run this file alone, as a corpus file.
    File(PathBuf),
}

/// `VELLUM_FUZZ_REPLAY=<target>:<seed>` or `<target>:<file>`: the one case to run for `target`.
pub fn replay(target: &str) -> Option<Replay> {
    let v = std::env::var("VELLUM_FUZZ_REPLAY").ok()?;
    let (t, what) = v.split_once(':')?;
    if t != target {
        return None;
    }
    match parse_seed(what) {
        Some(seed) => Some(Replay::Seed(seed)),
        None => Some(Replay::File(PathBuf::from(what))),
    }
}

/// The seeds to run for `target`: none or the one a replay names, else `cases(ci)` fresh ones.
pub fn seeds(target: &str, ci: usize) -> Vec<u64> {
    match replay(target) {
        Some(Replay::Seed(s)) => vec![s],
        Some(Replay::File(_)) => Vec::new(),
        None => (0..cases(ci) as u64)
            .map(|i| case_seed(target, i))
            .collect(),
    }
}

/// The corpus to replay for `target`: its files, or the one file a replay names, or none when
/// a seed is replayed.
pub fn corpus_to_replay(target: &str) -> Vec<(String, Vec<u8>)> {
    match replay(target) {
        Some(Replay::Seed(_)) => Vec::new(),
        Some(Replay::File(p)) => {
            let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            let name = p
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
            vec![(name, bytes)]
        }
        None => corpus(target),
    }
}

/// The corpus files of a target, sorted by name: (name, bytes).
pub fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/fuzz")
        .join(target);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && p.extension().is_none_or(|x| x != "md"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    out.sort();
    out
}

/// Keeps a failing input for a look at it whole; returns where.
pub fn save_failure(target: &str, label: &str, bytes: &[u8]) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-failures");
    let _ = std::fs::create_dir_all(&dir);
    let safe: String = label
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let p = dir.join(format!("{target}-{safe}"));
    let _ = std::fs::write(&p, bytes);
    p
}

/// The start of an input for a failure message, printable.
pub fn excerpt(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(&bytes[..bytes.len().min(600)]);
    let more = if bytes.len() > 600 {
        format!("... ({} bytes)", bytes.len())
    } else {
        String::new()
    };
    format!("{s:?}{more}")
}

thread_local! {
    /// The last panic on this thread, even one caught by the code under test (regorus's
    /// evaluation catches its panics and reports a plain error).
    static PANICKED: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Records panics on the harness's own threads (named `fuzz-...`), then lets the previous
/// hook print them as usual.
fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current()
                .name()
                .is_some_and(|n| n.starts_with("fuzz-"))
            {
                let at = info
                    .location()
                    .map(|l| format!(" at {}:{}", l.file(), l.line()))
                    .unwrap_or_default();
                PANICKED
                    .with(|p| *p.borrow_mut() = Some(format!("{}{at}", payload(info.payload()))));
            }
            previous(info);
        }));
    });
}

fn payload(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".into())
}

/// The panic recorded on this thread since the last call, if any.
pub fn take_panic() -> Option<String> {
    PANICKED.with(|p| p.borrow_mut().take())
}

/// A library target: how to make an input and what must hold for it.
pub struct Target<I> {
    pub name: &'static str,
    /// Generated cases in CI.
    pub ci_cases: usize,
    /// The stack of the thread the cases run on.
    pub stack: usize,
    /// A case running longer than this has hung.
    pub hang: Duration,
    /// An input from a corpus file (`None`: the file is only a seed for mutations).
    pub from_corpus: fn(&str, &[u8]) -> Option<I>,
    /// A fresh input; the corpus and the target's other seeds are there to mutate.
    pub generate: fn(&mut Rng, &[Vec<u8>]) -> I,
    /// The input as bytes, to save a failure.
    pub bytes: fn(&I) -> Vec<u8>,
    /// `Err` says which property failed.
    pub check: fn(&I) -> Result<(), String>,
    /// Inputs to mutate besides the corpus.
    pub seeds: fn() -> Vec<Vec<u8>>,
}

enum Msg {
    Start(String),
    Done(String, Result<(), (String, Vec<u8>)>),
    Finished(usize, Duration),
}

/// Replays the corpus, then runs the generated cases, on one thread with the target's stack.
/// Panics with every failure (at most a few shown), naming each case's seed.
pub fn run<I: 'static>(t: Target<I>) {
    install_panic_hook();
    let name = t.name;
    let (tx, rx) = mpsc::channel::<Msg>();
    let worker = std::thread::Builder::new()
        .name(format!("fuzz-{name}"))
        .stack_size(t.stack)
        .spawn(move || {
            let started = Instant::now();
            let files = corpus_to_replay(t.name);
            // What generated cases mutate: the whole corpus whatever is replayed, so that a
            // seed replayed alone makes the same input it made in the full run.
            let mut pool: Vec<Vec<u8>> = corpus(t.name).into_iter().map(|(_, b)| b).collect();
            pool.extend((t.seeds)());
            // A stack overflow aborts the process before any report: VELLUM_FUZZ_TRACE=1 names
            // each case on stderr as it starts, so the last one named is the culprit.
            let trace = std::env::var_os("VELLUM_FUZZ_TRACE").is_some();
            let one = |label: String, make: &mut dyn FnMut() -> Option<I>| {
                if trace {
                    eprintln!("fuzz {} {label}", t.name);
                }
                let _ = tx.send(Msg::Start(label.clone()));
                let _ = take_panic();
                let mut input = None;
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    input = make();
                    if let (true, Some(i)) = (trace, &input) {
                        save_failure(t.name, "last", &(t.bytes)(i));
                    }
                    match &input {
                        Some(i) => (t.check)(i),
                        None => Ok(()),
                    }
                }));
                let r = match (r, take_panic()) {
                    (Ok(Ok(())), None) => Ok(()),
                    (Ok(Ok(())), Some(p)) => Err(format!("a panic was caught inside: {p}")),
                    (Ok(Err(e)), _) => Err(e),
                    (Err(p), recorded) => Err(format!(
                        "panicked: {}",
                        recorded.unwrap_or_else(|| payload(&*p))
                    )),
                };
                let bytes = input.as_ref().map(|i| (t.bytes)(i)).unwrap_or_default();
                let _ = tx.send(Msg::Done(label, r.map_err(|e| (e, bytes))));
            };
            let mut n = 0;
            for (file, bytes) in &files {
                one(format!("corpus {file}"), &mut || {
                    (t.from_corpus)(file, bytes)
                });
                n += 1;
            }
            for seed in seeds(t.name, t.ci_cases) {
                one(format!("seed {seed:#018x}"), &mut || {
                    Some((t.generate)(&mut Rng(seed), &pool))
                });
                n += 1;
            }
            let _ = tx.send(Msg::Finished(n, started.elapsed()));
        })
        .expect("spawn the fuzz worker");

    let mut failures: Vec<String> = Vec::new();
    let mut current = String::from("start-up");
    loop {
        match rx.recv_timeout(t.hang) {
            Ok(Msg::Start(label)) => current = label,
            Ok(Msg::Done(_, Ok(()))) => {}
            Ok(Msg::Done(label, Err((why, bytes)))) => {
                let saved = save_failure(name, &label, &bytes);
                let replay = label
                    .strip_prefix("seed ")
                    .map(|s| format!("; replay: VELLUM_FUZZ_REPLAY={name}:{s}"))
                    .unwrap_or_default();
                failures.push(format!(
                    "{name} {label}: {why}\n  input: {}\n  saved: {}{replay}",
                    excerpt(&bytes),
                    saved.display()
                ));
            }
            Ok(Msg::Finished(n, took)) => {
                println!("fuzz {name}: {n} cases in {took:.2?}");
                break;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                failures.push(format!(
                    "{name} {current}: still running after {:?} (a hang); replay: \
                     VELLUM_FUZZ_REPLAY={name}:{}",
                    t.hang,
                    current.strip_prefix("seed ").unwrap_or(&current)
                ));
                // The worker is left behind; the test fails now rather than stall.
                break;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                failures.push(format!("{name} {current}: the worker thread died"));
                break;
            }
        }
    }
    if failures.is_empty() {
        let _ = worker.join();
        return;
    }
    let shown: Vec<&String> = failures.iter().take(5).collect();
    panic!(
        "{} failing case(s) of {name}:\n{}",
        failures.len(),
        shown
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Runs `f`; if it takes longer than `limit`, runs it again (the machine may have been busy)
/// and reports the second time if that is over too. Returns `f`'s result and its time.
pub fn timed<T>(limit: Duration, mut f: impl FnMut() -> T) -> (T, Duration, bool) {
    let t = Instant::now();
    let r = f();
    let took = t.elapsed();
    if took <= limit {
        return (r, took, true);
    }
    let t = Instant::now();
    let r = f();
    let again = t.elapsed();
    (r, again, again <= limit)
}
