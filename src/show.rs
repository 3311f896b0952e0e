//! GET /show: a server-rendered HTML page for a person (SPEC §6): the object's security
//! label as a banner at top and bottom in its own colours, breadcrumbs from the root, the
//! metadata, the caller's permissions, a folder's listing with links, and for a file a
//! download link and an inline preview of text and images. It shows only what the caller
//! may read. Everything user-supplied is escaped; colours must look like colours.

use std::fmt::Write as _;

use serde_json::Value;

use crate::access::Access;
use crate::error::Result;
use crate::model::{Event, EventView, ObjPath, Oid, Perms};
use crate::read;
use crate::store::MetaRead;

/// Children listed on one page.
pub const PAGE: usize = 500;
/// Largest text file previewed inline.
pub const PREVIEW_BYTES: u64 = 64 << 10;

/// What the page shows, gathered in one read snapshot.
pub struct Page {
    pub event: Event,
    pub letters: Perms,
    /// Ancestors from the root: (oid, name if the caller may read it).
    pub crumbs: Vec<(Oid, Option<String>)>,
    /// A folder's readable children (when the caller has X), and the oid to continue after.
    pub children: Option<(Vec<EventView>, Option<Oid>)>,
}

/// Gathers the page for `path`: 404 unless the caller may R the object.
pub fn gather<S: MetaRead + ?Sized>(
    s: &S,
    access: &Access,
    path: &ObjPath,
    after: Option<Oid>,
) -> Result<Page> {
    let view = read::props(s, access, None, path)?;
    let letters = view.policy.unwrap_or(Perms::NONE);
    let event = view.event;
    let mut crumbs = Vec::new();
    for part in event.fulldir.split('/').filter(|p| !p.is_empty()) {
        let Ok(oid) = part.parse::<Oid>() else {
            continue;
        };
        let name = s
            .current(oid)?
            .filter(|c| access.letters(s, &c.event).contains(Perms::R))
            .map(|c| c.event.name);
        crumbs.push((oid, name));
    }
    let children = if !event.isfile && letters.contains(Perms::X) {
        let mut shown = Vec::new();
        let mut cursor = after;
        let mut more = None;
        // Scan until a page of readable children is full or the folder ends.
        loop {
            let (events, last) = read::list_page(s, access, None, event.oid, cursor, PAGE)?;
            shown.extend(events);
            match last {
                Some(l) if shown.len() < PAGE => cursor = Some(l),
                Some(l) => {
                    more = Some(l);
                    break;
                }
                None => break,
            }
        }
        Some((shown, more))
    } else {
        None
    };
    Ok(Page {
        event,
        letters,
        crumbs,
        children,
    })
}

/// `& < > " '` escaped, for text and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A CSS colour from a security label, or `None`: `#rgb`, `#rrggbb`, `#rrggbbaa` or a
/// plain colour name. Anything else could break out of the style attribute.
pub fn colour(v: Option<&Value>) -> Option<String> {
    let s = v?.as_str()?.trim();
    let hex = s.strip_prefix('#').is_some_and(|h| {
        matches!(h.len(), 3 | 4 | 6 | 8) && h.bytes().all(|b| b.is_ascii_hexdigit())
    });
    let name = !s.is_empty() && s.len() <= 32 && s.bytes().all(|b| b.is_ascii_alphabetic());
    (hex || name).then(|| s.to_string())
}

fn banner(e: &Event) -> String {
    let sec = e.security.as_ref();
    let label = sec
        .and_then(|s| s.get("label"))
        .and_then(Value::as_str)
        .unwrap_or("no security label");
    let fg = colour(sec.and_then(|s| s.get("foreground"))).unwrap_or_else(|| "#000000".into());
    let bg = colour(sec.and_then(|s| s.get("background"))).unwrap_or_else(|| "#dddddd".into());
    format!(
        "<div class=\"banner\" style=\"color:{fg};background-color:{bg}\">{}</div>\n",
        escape(label)
    )
}

/// What a file preview shows.
pub enum Preview {
    None,
    Image,
    Text(String),
}

/// Whether a file's content is previewed, and how.
pub fn preview_kind(e: &Event) -> Option<bool> {
    let m = e.mimetype.as_deref().unwrap_or("");
    if m.starts_with("image/") && m != "image/svg+xml" {
        return Some(false);
    }
    let texty = m.starts_with("text/")
        || m == "application/json"
        || m.ends_with("+json")
        || m.ends_with("+xml")
        || m == "application/xml";
    (texty && e.size.unwrap_or(0) <= PREVIEW_BYTES).then_some(true)
}

/// The document's start up to `<body>`: `title` is escaped here.
fn head(title: &str) -> String {
    let title = escape(title);
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <title>{title} · Vellum</title><style>\
         body{{font-family:system-ui,sans-serif;margin:0;color:#222}}\
         .banner{{text-align:center;font-weight:bold;padding:6px;letter-spacing:.05em}}\
         main{{padding:12px 20px}} table{{border-collapse:collapse}}\
         td,th{{text-align:left;padding:3px 10px;border-bottom:1px solid #eee;vertical-align:top}}\
         pre{{background:#f6f6f6;padding:10px;overflow:auto;max-height:40em}}\
         img.preview{{max-width:100%;max-height:40em}} .perm{{font-family:monospace}}\
         nav a{{text-decoration:none}}\
         </style></head><body>\n"
    )
}

/// The page for a /show request that failed (`status` e.g. "404 Not Found"), for a browser:
/// the message, escaped, and a way back to the root. It names nothing the message does not.
pub fn render_error(status: &str, message: &str, base: &str) -> String {
    let mut h = head(status);
    let _ = write!(
        h,
        "<main>\n<h1>{}</h1>\n<p id=\"message\">{}</p>\n\
         <p><a href=\"{base}/show/{}\">Go to the root folder</a></p>\n</main>\n</body></html>\n",
        escape(status),
        escape(message),
        Oid::ROOT
    );
    h
}

/// Renders the page. `base` is the mount prefix ("" or `CLIENT_PREFIX`).
pub fn render(page: &Page, preview: &Preview, base: &str) -> String {
    let e = &page.event;
    let mut h = head(&e.name);
    let title = escape(&e.name);
    h.push_str(&banner(e));
    h.push_str("<main>\n<nav class=\"crumbs\">");
    for (oid, name) in &page.crumbs {
        let label = match name {
            Some(_) if *oid == Oid::ROOT => "root".to_string(),
            Some(n) => escape(n),
            None => oid.to_string(),
        };
        let _ = write!(h, "<a href=\"{base}/show/{oid}\">{label}</a> / ");
    }
    let _ = writeln!(h, "<strong>{title}</strong></nav>");
    let _ = writeln!(h, "<h1>{title}</h1>");
    let letters: String = page.letters.letters().collect();
    let _ = writeln!(
        h,
        "<p>Your permissions: <span class=\"perm\" id=\"perms\">{}</span></p>",
        if letters.is_empty() {
            "none".into()
        } else {
            letters
        }
    );
    if e.isfile && page.letters.contains(Perms::X) {
        let _ = writeln!(
            h,
            "<p><a id=\"download\" href=\"{base}/stream/{}\" download=\"{}\">Download</a> ({})</p>",
            e.oid,
            escape(&e.name),
            crate::model::human_bytes(e.size.unwrap_or(0))
        );
        match preview {
            Preview::Image => {
                let _ = writeln!(
                    h,
                    "<img class=\"preview\" alt=\"{}\" src=\"{base}/stream/{}\">",
                    escape(&e.name),
                    e.oid
                );
            }
            Preview::Text(t) => {
                let _ = writeln!(h, "<pre class=\"preview\">{}</pre>", escape(t));
            }
            Preview::None => {}
        }
    }
    if let Some((children, more)) = &page.children {
        let _ = writeln!(
            h,
            "<h2>Contents</h2>\n<table id=\"listing\"><tr><th>name</th><th>size</th><th>type</th><th>permissions</th></tr>"
        );
        for c in children {
            let l: String = c.policy.map(|p| p.letters().collect()).unwrap_or_default();
            let c = &c.event;
            let _ = writeln!(
                h,
                "<tr><td><a href=\"{base}/show/{}\">{}{}</a></td><td>{}</td><td>{}</td><td class=\"perm\">{l}</td></tr>",
                c.oid,
                escape(&c.name),
                if c.isfile { "" } else { "/" },
                c.size.map(crate::model::human_bytes).unwrap_or_default(),
                escape(c.mimetype.as_deref().unwrap_or(if c.isfile { "" } else { "folder" })),
            );
        }
        h.push_str("</table>\n");
        if children.is_empty() {
            h.push_str("<p>Nothing here that you may read.</p>\n");
        }
        if let Some(next) = more {
            let _ = writeln!(
                h,
                "<p><a href=\"{base}/show/{}?after={next}\">More…</a></p>",
                e.oid
            );
        }
    }
    h.push_str("<h2>Metadata</h2>\n<table id=\"metadata\">\n");
    let mut row = |k: &str, v: String| {
        let _ = writeln!(h, "<tr><th>{k}</th><td>{}</td></tr>", escape(&v));
    };
    row("oid", e.oid.to_string());
    row("version (tstamp)", e.tstamp.to_string());
    row("action", e.action.letter().to_string());
    row("written by", e.userpolicy.label.clone());
    if e.isfile {
        row("size", format!("{} bytes", e.size.unwrap_or(0)));
        row("mimetype", e.mimetype.clone().unwrap_or_default());
        row("sha256", e.sha256plain.clone().unwrap_or_default());
    }
    if let Some(p) = &e.objectpolicy {
        row(
            "policy",
            e.originalobjectpolicy
                .clone()
                .unwrap_or_else(|| serde_json::to_string_pretty(p).unwrap_or_default()),
        );
    }
    for (k, v) in &e.extra {
        let text = match v {
            Value::String(s) => s.clone(),
            other => serde_json::to_string_pretty(other).unwrap_or_default(),
        };
        row(k, text);
    }
    h.push_str("</table>\n</main>\n");
    h.push_str(&banner(e));
    h.push_str("</body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn colours_must_look_like_colours() {
        assert_eq!(colour(Some(&json!("#FFF"))), Some("#FFF".into()));
        assert_eq!(colour(Some(&json!("purple"))), Some("purple".into()));
        assert_eq!(colour(Some(&json!("#12345g"))), None);
        assert_eq!(colour(Some(&json!("red;background:url(x)"))), None);
        assert_eq!(colour(Some(&json!("\"><script>"))), None);
        assert_eq!(colour(Some(&json!(7))), None);
    }

    #[test]
    fn escape_covers_markup_and_quotes() {
        assert_eq!(
            escape("<a href=\"x\" title='y'>&</a>"),
            "&lt;a href=&quot;x&quot; title=&#39;y&#39;&gt;&amp;&lt;/a&gt;"
        );
    }
}
