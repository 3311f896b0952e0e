//! GET /show: a server-rendered HTML page for a person (SPEC §6): the object's security
//! label as a banner at top and bottom in its own colours, breadcrumbs from the root, the
//! metadata, the caller's permissions, a folder's listing with links, and for a file a
//! download link and an inline preview of text and images. It shows only what the caller
//! may read. The HTML is a maud template checked at compile time: every value spliced into
//! it is escaped (text and attribute values alike) unless wrapped in `PreEscaped`, which only
//! the constant style sheet is. Colours must look like colours.

use maud::{html, Markup, PreEscaped, DOCTYPE};
use serde_json::Value;

use crate::access::Access;
use crate::error::Result;
use crate::model::share::{Audience, ShareState};
use crate::model::{Event, EventView, ObjPath, Oid, Perms, Share};
use crate::read;
use crate::store::MetaRead;

/// Children listed on one page.
pub const PAGE: usize = 500;
/// Shares of one object listed on its page (the rest are counted).
pub const SHARES_SHOWN: usize = 500;
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
    /// The shares on the object the caller may see (SPEC §9).
    pub shares: Vec<Share>,
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
    let shares = crate::share::visible_on(s, access, event.oid)?;
    Ok(Page {
        event,
        letters,
        crumbs,
        children,
        shares,
    })
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

fn banner(e: &Event) -> Markup {
    let sec = e.security.as_ref();
    let label = sec
        .and_then(|s| s.get("label"))
        .and_then(Value::as_str)
        .unwrap_or("no security label");
    let fg = colour(sec.and_then(|s| s.get("foreground"))).unwrap_or_else(|| "#000000".into());
    let bg = colour(sec.and_then(|s| s.get("background"))).unwrap_or_else(|| "#dddddd".into());
    html! {
        div class="banner" style={ "color:" (fg) ";background-color:" (bg) } { (label) }
    }
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

/// The page's own style sheet (a constant: nothing user-supplied goes in it).
const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;color:#222}\
     .banner{text-align:center;font-weight:bold;padding:6px;letter-spacing:.05em}\
     main{padding:12px 20px} table{border-collapse:collapse}\
     td,th{text-align:left;padding:3px 10px;border-bottom:1px solid #eee;vertical-align:top}\
     pre{background:#f6f6f6;padding:10px;overflow:auto;max-height:40em}\
     img.preview{max-width:100%;max-height:40em} .perm{font-family:monospace}\
     nav a{text-decoration:none}";

/// The whole document around `body`, titled `title`.
fn document(title: &str, body: Markup) -> String {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width";
                title { (title) " · Vellum" }
                style { (PreEscaped(STYLE)) }
            }
            body { (body) }
        }
    }
    .into_string()
}

/// The page for a /show request that failed (`status` e.g. "404 Not Found"), for a browser:
/// the message and a way back to the root. It names nothing the message does not.
pub fn render_error(status: &str, message: &str, base: &str) -> String {
    document(
        status,
        html! {
            main {
                h1 { (status) }
                p id="message" { (message) }
                p { a href={ (base) "/show/" (Oid::ROOT) } { "Go to the root folder" } }
            }
        },
    )
}

/// Renders the page. `base` is the mount prefix ("" or `CLIENT_PREFIX`).
pub fn render(page: &Page, preview: &Preview, base: &str) -> String {
    let e = &page.event;
    let letters: String = page.letters.letters().collect();
    let body = html! {
        (banner(e))
        main {
            nav class="crumbs" {
                @for (oid, name) in &page.crumbs {
                    a href={ (base) "/show/" (oid) } {
                        @match name {
                            Some(_) if *oid == Oid::ROOT => "root",
                            Some(n) => (n),
                            None => (oid),
                        }
                    }
                    " / "
                }
                strong { (e.name) }
            }
            h1 { (e.name) }
            p {
                "Your permissions: "
                span class="perm" id="perms" {
                    @if letters.is_empty() { "none" } @else { (letters) }
                }
            }
            @if e.isfile && page.letters.contains(Perms::X) {
                p {
                    a id="download" href={ (base) "/stream/" (e.oid) } download=(e.name) {
                        "Download"
                    }
                    " (" (crate::model::human_bytes(e.size.unwrap_or(0))) ")"
                }
                @match preview {
                    Preview::Image => {
                        img class="preview" alt=(e.name) src={ (base) "/stream/" (e.oid) };
                    }
                    Preview::Text(t) => pre class="preview" { (t) },
                    Preview::None => {}
                }
            }
            @if let Some((children, more)) = &page.children {
                h2 { "Contents" }
                table id="listing" {
                    tr { th { "name" } th { "size" } th { "type" } th { "permissions" } }
                    @for view in children {
                        @let c = &view.event;
                        tr {
                            td {
                                a href={ (base) "/show/" (c.oid) } {
                                    (c.name) @if !c.isfile { "/" }
                                }
                            }
                            td { (c.size.map(crate::model::human_bytes).unwrap_or_default()) }
                            td {
                                (c.mimetype.as_deref().unwrap_or(if c.isfile { "" } else { "folder" }))
                            }
                            td class="perm" {
                                @if let Some(p) = view.policy {
                                    (p.letters().collect::<String>())
                                }
                            }
                        }
                    }
                }
                @if children.is_empty() {
                    p { "Nothing here that you may read." }
                }
                @if let Some(next) = more {
                    p { a href={ (base) "/show/" (e.oid) "?after=" (next) } { "More…" } }
                }
            }
            @if !page.shares.is_empty() {
                h2 { "Shares" }
                (share_table("shares", &page.shares[..page.shares.len().min(SHARES_SHOWN)], base, false))
                @if page.shares.len() > SHARES_SHOWN {
                    p { "and " (page.shares.len() - SHARES_SHOWN) " more (GET /shares?oid=" (e.oid) ")" }
                }
            }
            h2 { "Metadata" }
            table id="metadata" {
                @for (k, v) in metadata(e) {
                    tr { th { (k) } td { (v) } }
                }
            }
        }
        (banner(e))
    };
    document(&e.name, body)
}

/// A table of shares: to whom, what, in which state, by whom, until when, on what terms.
fn share_table(id: &str, shares: &[Share], base: &str, with_object: bool) -> Markup {
    html! {
        table id=(id) {
            tr {
                @if with_object { th { "object" } }
                th { "to" } th { "letters" } th { "state" } th { "by" } th { "expires" }
                th { "terms" } th { "message" }
            }
            @for sh in shares {
                tr {
                    @if with_object {
                        td {
                            @if sh.state == ShareState::Accepted {
                                a href={ (base) "/show/" (sh.oid) } { (sh.name) }
                            } @else {
                                (sh.name)
                            }
                        }
                    }
                    td {
                        @match &sh.audience {
                            Audience::Claim { claim, value } => { (claim) ": " (value) }
                            Audience::Link { .. } => "anyone with the link",
                        }
                    }
                    td class="perm" { (sh.letters.letters().collect::<String>()) }
                    td { (serde_json::to_value(sh.state).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()) }
                    td { (sh.sharer.label) }
                    td { @if let Some(e) = sh.expires { (serde_json::to_value(e).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()) } }
                    td { (sh.terms.as_deref().unwrap_or("")) }
                    td { (sh.message.as_deref().unwrap_or("")) }
                }
            }
        }
    }
}

/// `/show/shares`: the caller's incoming and outgoing shares with their terms (read-only).
pub fn render_shares(label: &str, incoming: &[Share], outgoing: &[Share], base: &str) -> String {
    document(
        "Shares",
        html! {
            main {
                nav class="crumbs" { a href={ (base) "/show/" (Oid::ROOT) } { "root" } }
                h1 { "Shares of " (label) }
                h2 { "Shared with you" }
                @if incoming.is_empty() { p { "Nothing is shared with you." } }
                @else { (share_table("incoming", incoming, base, true)) }
                h2 { "Shared by you" }
                @if outgoing.is_empty() { p { "You have shared nothing." } }
                @else { (share_table("outgoing", outgoing, base, true)) }
                p { "Accept, decline and revoke shares with the /shares endpoints or `vellum share`." }
            }
        },
    )
}

/// The metadata table's rows: the fixed fields, then the client's own fields (whose names
/// are user-supplied too).
fn metadata(e: &Event) -> Vec<(&str, String)> {
    let mut rows = vec![
        ("oid", e.oid.to_string()),
        ("version (tstamp)", e.tstamp.to_string()),
        ("action", e.action.letter().to_string()),
        ("written by", e.userpolicy.label.clone()),
    ];
    if e.isfile {
        rows.push(("size", format!("{} bytes", e.size.unwrap_or(0))));
        rows.push(("mimetype", e.mimetype.clone().unwrap_or_default()));
        rows.push(("sha256", e.sha256plain.clone().unwrap_or_default()));
    }
    if let Some(p) = &e.objectpolicy {
        rows.push((
            "policy",
            e.originalobjectpolicy
                .clone()
                .unwrap_or_else(|| serde_json::to_string_pretty(p).unwrap_or_default()),
        ));
    }
    for (k, v) in &e.extra {
        let text = match v {
            Value::String(s) => s.clone(),
            other => serde_json::to_string_pretty(other).unwrap_or_default(),
        };
        rows.push((k, text));
    }
    rows
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
}
