//! GET /show in a real headless browser (issue 4): Debian's `chromium`, run as a child
//! process (killed by a guard), loads a folder's page, follows its link to a file, and takes
//! a screenshot whose banner pixels are checked for the folder's colours. The screenshot is
//! kept as a test artefact in `target/test-artefacts/show-folder.png`.
//!
//! The browser sends no token, so it browses as anonymous, by oid, objects whose policy is
//! `owner-full-ro-all` (anonymous gets R and X).
//!
//! chromium is an outside program: without it the test prints a loud SKIPPED and passes,
//! unless `VELLUM_REQUIRE_EXTERNAL=1` (`.ci/run` sets it), where it fails.

use crate::common;
use crate::common::external;
use crate::common::extra;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::spawn_app;
use external::{find_program, skip_or_fail};
use extra::*;
use serde_json::{json, Value};

const JANE: &str = "jane.doe@deciphernow.com";

/// `chromium` (or `chromium-browser`) on PATH, or `None` after a loud skip message; a panic
/// instead when `VELLUM_REQUIRE_EXTERNAL=1`.
fn chromium() -> Option<PathBuf> {
    let found = find_program("chromium").or_else(|| find_program("chromium-browser"));
    if found.is_none() {
        skip_or_fail("tests/browser.rs needs chromium (Debian: apt-get install chromium)");
    }
    found
}

/// Kills the browser if the test ends (or panics) before it exits.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs headless chromium with `args` (then the URL) in a fresh profile; returns its stdout.
/// Panics if it fails or takes more than 60 s. Blocking: call it from `spawn_blocking`, so the
/// in-process server keeps serving.
fn run_chromium(bin: &Path, args: &[String], url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let (stdout, stderr) = (out_dir.path().join("out"), out_dir.path().join("err"));
    let child = Command::new(bin)
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--no-first-run",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .expect("chromium starts");
    let mut child = KillOnDrop(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            panic!(
                "chromium {args:?} {url} took over 60 s; stderr:\n{}",
                std::fs::read_to_string(&stderr).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        status.success(),
        "chromium {args:?} {url}: {status}; stderr:\n{}",
        std::fs::read_to_string(&stderr).unwrap_or_default()
    );
    std::fs::read_to_string(&stdout).unwrap()
}

async fn browse(bin: &Path, args: Vec<String>, url: String) -> String {
    let bin = bin.to_path_buf();
    tokio::task::spawn_blocking(move || run_chromium(&bin, &args, &url))
        .await
        .unwrap()
}

/// The `href` of the first `<a>` whose text is `text`, in a serialised DOM.
fn href_of_link(dom: &str, text: &str) -> String {
    let end = dom
        .find(&format!("\">{text}</a>"))
        .unwrap_or_else(|| panic!("no link {text:?} in {dom}"));
    let start = dom[..end].rfind("href=\"").expect("the link has an href") + "href=\"".len();
    dom[start..end].to_string()
}

/// RGB rows of a PNG: (width, height, bytes per pixel, pixels).
fn decode_png(bytes: Vec<u8>) -> (usize, usize, usize, Vec<u8>) {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert!(
        matches!(info.color_type, png::ColorType::Rgb | png::ColorType::Rgba),
        "unexpected screenshot colour type {:?}",
        info.color_type
    );
    let (w, h) = (info.width as usize, info.height as usize);
    let bpp = info.line_size / w;
    buf.truncate(info.line_size * h);
    (w, h, bpp, buf)
}

#[tokio::test]
async fn show_in_headless_chromium_loads_navigates_and_paints_the_banner() {
    let Some(bin) = chromium() else { return };
    let app = spawn_app().await;
    let jane = app.token_for("jane");
    let home = oid_of(&home(&app, &jane, JANE).await);
    let label = "PUBLIC TEST";
    let pics = app
        .write_ok(
            Some(&jane),
            &json!([{"action": "C", "parentoid": home, "name": "pics",
                     "objectpolicy": owner_full_ro_all(JANE),
                     "security": {"label": label, "foreground": "#FFFFFF",
                                  "background": "#8B0000"}}]),
        )
        .await;
    let pics = oid_of(&pics[0]);
    let meta = json!([{"action": "C", "parentoid": pics, "name": "notes.txt", "isfile": true,
                       "objectpolicy": owner_full_ro_all(JANE)}]);
    let out = write_parts(
        &app,
        Some(&jane),
        &meta,
        &[("a", b"hello from the browser")],
    )
    .await;
    assert_eq!(out.status(), 200);
    let files: Vec<Value> = out.json().await.unwrap();
    let file = oid_of(&files[0]);
    let folder_url = format!("{}/show/{pics}", app.base);

    // (1) The folder's page loads: the banner with its label, the link to the file.
    let dom = browse(&bin, vec!["--dump-dom".into()], folder_url.clone()).await;
    let banner = format!(
        "<div class=\"banner\" style=\"color:#FFFFFF;background-color:#8B0000\">{label}</div>"
    );
    assert!(dom.contains(&banner), "{dom}");
    assert!(dom.contains("<h1>pics</h1>"), "{dom}");

    // (2) Navigation: the file's link, followed, is the file's page with its preview.
    let href = href_of_link(&dom, "notes.txt");
    assert_eq!(href, format!("/show/{file}"));
    let dom = browse(
        &bin,
        vec!["--dump-dom".into()],
        format!("{}{href}", app.base),
    )
    .await;
    assert!(dom.contains("<h1>notes.txt</h1>"), "{dom}");
    assert!(
        dom.contains("<pre class=\"preview\">hello from the browser</pre>"),
        "{dom}"
    );

    // (3) Colours: a screenshot of the folder's page; the top banner is #8B0000 with white
    // text on it.
    let shots = tempfile::tempdir().unwrap();
    let shot = shots.path().join("show-folder.png");
    browse(
        &bin,
        vec![
            format!("--screenshot={}", shot.display()),
            "--window-size=800,600".into(),
        ],
        folder_url,
    )
    .await;
    let bytes = std::fs::read(&shot).expect("chromium wrote the screenshot");

    // (4) Kept as a test artefact (before the checks, so a failure can be looked at).
    let artefacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artefacts");
    std::fs::create_dir_all(&artefacts).unwrap();
    std::fs::write(artefacts.join("show-folder.png"), &bytes).unwrap();

    let (w, h, bpp, px) = decode_png(bytes);
    assert!(w >= 400 && h >= 100, "screenshot is {w}x{h}");
    let at = |x: usize, y: usize| {
        let i = (y * w + x) * bpp;
        (px[i], px[i + 1], px[i + 2])
    };
    let near = |(r, g, b): (u8, u8, u8), (er, eg, eb): (u8, u8, u8), tol: u8| {
        r.abs_diff(er) <= tol && g.abs_diff(eg) <= tol && b.abs_diff(eb) <= tol
    };
    let top = at(w / 2, 5);
    assert!(near(top, (0x8B, 0, 0), 6), "banner pixel is {top:?}");
    // The banner's rows (its colour at the left edge); the label centred in them is white.
    let rows = (0..h)
        .take_while(|&y| near(at(2, y), (0x8B, 0, 0), 6))
        .count();
    assert!((15..80).contains(&rows), "banner is {rows} rows high");
    let white = (0..rows)
        .flat_map(|y| (0..w).map(move |x| (x, y)))
        .filter(|&(x, y)| near(at(x, y), (0xFF, 0xFF, 0xFF), 20))
        .count();
    assert!(
        white > 10,
        "no white label text in the banner ({white} pixels)"
    );
    // And below the banner the page is the plain white background.
    let body = at(w - 5, h / 2);
    assert!(near(body, (0xFF, 0xFF, 0xFF), 6), "page pixel is {body:?}");
}
