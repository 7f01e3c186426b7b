//! What people see: small, accessible, responsive HTML pages with inline CSS, no external assets and
//! no JavaScript, in French or English. HTML is written with maud's `html!` templates, which escape
//! every value they interpolate: no page can forget to.

use maud::{html, Markup, PreEscaped, DOCTYPE};

/// The language of a page, chosen from the user's `locale` (or the browser's `Accept-Language`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    /// English (the default).
    En,
    /// French.
    Fr,
}

impl Lang {
    /// Picks French for any `fr*` locale tag, English otherwise. The tag is the `locale` claim,
    /// any text at all (`中文`, empty, one byte): it is compared as bytes, never cut.
    pub fn from_locale(locale: Option<&str>) -> Lang {
        match locale {
            Some(l) if has_prefix_ignore_case(l, "fr") => Lang::Fr,
            _ => Lang::En,
        }
    }

    /// Picks French or English from an `Accept-Language` header: the one with the higher quality
    /// (`q=`), the earlier on a tie; a tag with `q=0` is refused. English when neither is named.
    pub fn from_accept_language(header: Option<&str>) -> Lang {
        let Some(header) = header else { return Lang::En };
        let mut best: Option<(u16, Lang)> = None;
        for part in header.split(',') {
            let mut params = part.split(';');
            let tag = params.next().unwrap_or("").trim();
            let lang = if has_prefix_ignore_case(tag, "fr") {
                Lang::Fr
            } else if has_prefix_ignore_case(tag, "en") {
                Lang::En
            } else {
                continue;
            };
            let quality = params.find_map(|p| p.trim().strip_prefix("q=").or_else(|| p.trim().strip_prefix("Q="))).map_or(1000, quality);
            if quality > 0 && best.is_none_or(|(q, _)| quality > q) {
                best = Some((quality, lang));
            }
        }
        best.map_or(Lang::En, |(_, lang)| lang)
    }

    /// The language for a reader: the user's `locale` claim when the session has one, else the
    /// browser's `Accept-Language`.
    pub fn for_reader(locale: Option<&str>, accept_language: Option<&http::HeaderValue>) -> Lang {
        match locale {
            Some(locale) => Lang::from_locale(Some(locale)),
            None => Lang::from_accept_language(accept_language.and_then(|v| v.to_str().ok())),
        }
    }

    /// The BCP-47 tag for the `lang` attribute.
    pub fn tag(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Fr => "fr",
        }
    }

    /// Chooses between an English and a French text.
    pub fn pick<'a>(self, en: &'a str, fr: &'a str) -> &'a str {
        match self {
            Lang::En => en,
            Lang::Fr => fr,
        }
    }
}

/// An RFC 9110 `qvalue` in thousandths (`1`, `0.8`, `0.125`); anything unreadable counts as 0.
fn quality(text: &str) -> u16 {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return 0;
    }
    let thousandths = format!("{fraction:0<3}").parse::<u16>().unwrap_or(0);
    match whole {
        "1" if thousandths == 0 => 1000,
        "0" => thousandths,
        _ => 0,
    }
}

/// Whether `text` starts with the ASCII `prefix`, ignoring ASCII case. Byte-wise, so text of any
/// length or script is fine (slicing a `str` at a byte index panics inside a multi-byte character).
fn has_prefix_ignore_case(text: &str, prefix: &str) -> bool {
    text.as_bytes().get(..prefix.len()).is_some_and(|start| start.eq_ignore_ascii_case(prefix.as_bytes()))
}

/// Escapes text for HTML element content and double-quoted attribute values: for the dev-only
/// pages (`devidp`, the demo app), still written with `format!`; the proxy's own pages use maud.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
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

/// How a page is framed around its `<main>`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Frame<'a> {
    /// A wider column, for pages that show data side by side (the demo app, the dev IdP's index).
    pub wide: bool,
    /// A short label beside the brand, e.g. "Development" on every page of the dev IdP.
    pub tag: Option<&'a str>,
    /// Let this page's same-origin form posts carry their `Origin` header. The proxy answers with
    /// `Referrer-Policy: no-referrer`, which makes browsers send `Origin: null` on form posts; a
    /// page whose POST handler checks `Origin` opts back in to `same-origin` (never cross-origin).
    pub same_origin_referrer: bool,
}

/// The shared frame of every page: `title` (plain text) and `main`, the inside of `<main>`.
pub fn layout(lang: Lang, title: &str, main: Markup) -> String {
    page(lang, title, main, Frame::default())
}

/// [`layout`] with a [`Frame`]: width, a tag beside the brand, referrer policy. Text is escaped by
/// the template (maud): only markup built as [`Markup`] is taken as HTML.
pub fn page(lang: Lang, title: &str, main: Markup, frame: Frame<'_>) -> String {
    let width = if frame.wide { "wrap wide" } else { "wrap" };
    html! {
        (DOCTYPE)
        html lang=(lang.tag()) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="color-scheme" content="light dark";
                @if frame.same_origin_referrer { meta name="referrer" content="same-origin"; }
                title { (title) " · Trousseau" }
                style { (PreEscaped(CSS)) }
            }
            body {
                header.top {
                    div class=(width) {
                        span.brand { span.mark aria-hidden="true" {} "Keysuite " span.sep aria-hidden="true" { "·" } " Trousseau" }
                        @if let Some(tag) = frame.tag { " " span.tag { (tag) } }
                    }
                }
                main class=(width) { (main) }
            }
        }
    }
    .into_string()
}

/// One stylesheet for every page: calm, readable, high contrast (WCAG AA in both schemes),
/// responsive down to 320px, visible keyboard focus, no external fonts or images.
pub const CSS: &str = r#"
:root{--bg:#f3f4f7;--card:#fff;--ink:#17202a;--muted:#56606c;--accent:#1f4fd1;--accent-ink:#fff;--accent-soft:#eaf0ff;--line:#d8dde4;--warn:#9a3412;--warn-soft:#fff3ea;--ok:#166534;--ok-soft:#ebf7ef;--danger:#b42318;--danger-soft:#fdefed;--code-bg:#f5f6f8;--shadow:0 1px 2px rgba(16,24,40,.06),0 4px 16px rgba(16,24,40,.06);font-family:system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",sans-serif}
@media (prefers-color-scheme:dark){:root{--bg:#0e1115;--card:#171c23;--ink:#e8ecf1;--muted:#a6b0bc;--accent:#8fb0ff;--accent-ink:#0b1020;--accent-soft:#1b2744;--line:#2c3440;--warn:#fdba74;--warn-soft:#2a1c10;--ok:#86efac;--ok-soft:#10241a;--danger:#fca5a5;--danger-soft:#2b1616;--code-bg:#11161c;--shadow:none}}
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%}
body{margin:0;background:var(--bg);color:var(--ink);line-height:1.5;font-size:1rem}
.wrap{max-width:38rem;margin:0 auto}
.wrap.wide{max-width:68rem}
.top{padding:1.1rem 1.25rem .9rem}
.top .wrap{display:flex;align-items:center;gap:.6rem;flex-wrap:wrap}
.brand{font-weight:650;color:var(--ink);letter-spacing:.01em;display:inline-flex;align-items:center;gap:.5rem}
.brand .sep{color:var(--muted)}
.mark{width:.8rem;height:.8rem;background:var(--accent);transform:rotate(45deg);border-radius:2px;display:inline-block}
.tag{font-size:.78rem;font-weight:650;padding:.1rem .55rem;border-radius:999px;background:var(--warn-soft);color:var(--warn);border:1px solid currentColor}
main{background:var(--card);border:1px solid var(--line);border-radius:14px;padding:2rem 2.25rem;margin-bottom:3rem;box-shadow:var(--shadow)}
h1{font-size:1.55rem;margin:0 0 .6rem;line-height:1.25;letter-spacing:-.01em}
h2{font-size:1.05rem;margin:1.75rem 0 .6rem;line-height:1.3}
p{margin:.55rem 0}
.lead{font-size:1.05rem}
.muted{color:var(--muted)}
.small{font-size:.875rem}
code,.code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,"DejaVu Sans Mono",monospace;font-size:.875em}
code{background:var(--code-bg);border:1px solid var(--line);border-radius:5px;padding:.05rem .3rem;overflow-wrap:anywhere}
.status{display:inline-block;font-weight:600;color:var(--warn)}
.ok{font-weight:600;color:var(--ok)}
a{color:var(--accent);text-underline-offset:.15em}
a:hover{text-decoration-thickness:2px}
:focus-visible{outline:3px solid var(--accent);outline-offset:2px}
.button,button{display:inline-flex;align-items:center;justify-content:center;gap:.4rem;font:inherit;font-weight:600;line-height:1.3;padding:.6rem 1.1rem;min-height:2.75rem;border-radius:9px;border:1px solid var(--accent);background:var(--accent);color:var(--accent-ink);text-decoration:none;cursor:pointer;text-align:center}
.button:hover,button:hover{filter:brightness(1.08)}
.button.secondary,button.secondary{background:transparent;color:var(--accent)}
.button.secondary:hover,button.secondary:hover{background:var(--accent-soft);filter:none}
.actions{display:flex;gap:.75rem;flex-wrap:wrap;margin-top:1.6rem;align-items:center}
.actions form{margin:0}
.icon{width:3rem;height:3rem;border-radius:50%;display:grid;place-items:center;margin-bottom:1rem;background:var(--accent-soft);color:var(--accent)}
.icon svg{width:1.5rem;height:1.5rem}
.icon.warn{background:var(--warn-soft);color:var(--warn)}
.icon.danger{background:var(--danger-soft);color:var(--danger)}
.icon.ok{background:var(--ok-soft);color:var(--ok)}
.error-code{font-size:.875rem;color:var(--muted);margin-top:1rem}
blockquote{margin:.75rem 0;padding:.6rem .9rem;border-left:3px solid var(--line);background:var(--code-bg);border-radius:0 8px 8px 0}
.callout{display:flex;gap:.6rem;align-items:flex-start;padding:.7rem .9rem;border-radius:10px;background:var(--warn-soft);color:var(--warn);font-weight:600;margin:0 0 1.4rem;border:1px solid currentColor}
.callout svg{flex:none;width:1.25rem;height:1.25rem;margin-top:.1rem}
ul.choices{list-style:none;padding:0;margin:1rem 0;display:grid;gap:.6rem}
ul.choices button{width:100%;min-height:3.5rem;text-align:left;display:flex;justify-content:flex-start;align-items:center;gap:.9rem;padding:.8rem 1rem;background:var(--card);color:var(--ink);border:1px solid var(--line);font-weight:400;flex-wrap:wrap}
ul.choices button:hover{border-color:var(--accent);background:var(--accent-soft);filter:none}
ul.choices button[aria-current]{border-color:var(--accent);box-shadow:inset 3px 0 0 var(--accent)}
.choice-main{flex:1 1 8rem;min-width:0;display:flex;flex-direction:column;overflow-wrap:anywhere}
.choice-main strong{font-weight:650}
.choice-main .badges{display:flex;flex-wrap:wrap;gap:.3rem;margin-top:.4rem}
.choice-side{display:flex;flex-wrap:wrap;gap:.3rem;justify-content:flex-end;margin-left:auto}
.avatar{flex:none;width:2.25rem;height:2.25rem;border-radius:50%;display:grid;place-items:center;font-weight:700;font-size:.85rem;letter-spacing:.02em;background:hsl(var(--h,220) 70% 92%);color:hsl(var(--h,220) 55% 28%)}
.avatar.large{width:3.25rem;height:3.25rem;font-size:1.15rem}
@media (prefers-color-scheme:dark){.avatar{background:hsl(var(--h,220) 30% 24%);color:hsl(var(--h,220) 85% 85%)}}
.badge{display:inline-block;font-size:.8rem;font-weight:600;line-height:1.4;padding:.1rem .55rem;border-radius:999px;border:1px solid var(--line);color:var(--muted);white-space:nowrap}
.badge.accent{color:var(--accent);border-color:currentColor;background:var(--accent-soft)}
.badge.warn{color:var(--warn);border-color:currentColor;background:var(--warn-soft)}
.badge.ok{color:var(--ok);border-color:currentColor;background:var(--ok-soft)}
.chips{display:flex;flex-wrap:wrap;gap:.3rem;margin:.4rem 0 0;padding:0;list-style:none}
.chips li{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,"DejaVu Sans Mono",monospace;font-size:.8rem;padding:.05rem .45rem;border-radius:6px;background:var(--code-bg);border:1px solid var(--line);color:var(--muted)}
table{border-collapse:collapse;width:100%;margin:.5rem 0}
th,td{text-align:left;vertical-align:top;padding:.45rem .6rem;border-bottom:1px solid var(--line);overflow-wrap:anywhere}
th{width:35%;color:var(--muted);font-weight:600}
tr:last-child th,tr:last-child td{border-bottom:0}
label{display:block;font-weight:600;margin:.75rem 0 .3rem}
input,select,textarea{font:inherit;width:100%;min-height:2.75rem;padding:.5rem .7rem;border:1px solid var(--muted);border-radius:9px;background:var(--card);color:var(--ink)}
.field-row{display:flex;gap:.6rem;flex-wrap:wrap}
.field-row input{flex:1 1 14rem;width:auto}
pre{white-space:pre-wrap;overflow-wrap:anywhere;background:var(--code-bg);padding:.8rem 1rem;border-radius:10px;border:1px solid var(--line);font-size:.84rem;line-height:1.45;margin:.5rem 0}
details{margin:.75rem 0}
summary{cursor:pointer;font-weight:600;color:var(--accent)}
hr{border:0;border-top:1px solid var(--line);margin:1.75rem 0}
.panel{border:1px solid var(--line);border-radius:12px;padding:1rem 1.2rem;min-width:0}
.panel h2{margin-top:0}
.grid{display:grid;gap:1rem;grid-template-columns:repeat(auto-fit,minmax(min(100%,24rem),1fr));margin:1.25rem 0}
@media (min-width:56rem){.grid.wide-first{grid-template-columns:minmax(0,3fr) minmax(0,2fr)}.grid.narrow-first{grid-template-columns:minmax(0,1fr) minmax(0,2fr);align-items:start}}
.hello{display:flex;gap:1rem;align-items:center;flex-wrap:wrap}
.hello h1{margin:0}
.hello p{margin:.1rem 0 0}
.hello .aside{margin-left:auto}
@media (max-width:30rem){.hello .aside{margin-left:0}}
dl.facts{display:grid;grid-template-columns:minmax(7rem,auto) 1fr;gap:.35rem 1rem;margin:.25rem 0}
dl.facts dt{color:var(--muted);font-weight:600}
dl.facts dd{margin:0;overflow-wrap:anywhere}
@media (max-width:30rem){dl.facts{grid-template-columns:1fr}dl.facts dd{margin-bottom:.4rem}}
.visually-hidden{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap}
/* Phones: full-bleed card, stacked tables, full-width buttons. Last, so they win. */
@media (max-width:40rem){.top{padding:.9rem 1rem}.brand{font-size:.95rem}.tag{font-size:.72rem}main{border-radius:0;border-left:0;border-right:0;padding:1.4rem 1.1rem;margin-bottom:0}.panel{padding:.9rem}}
@media (max-width:30rem){.actions>*,.actions form button{flex:1 1 100%;width:100%}th,td{display:block;width:auto}th{border-bottom:0;padding-bottom:0}td{padding-top:.1rem}}
"#;

/// A small inline icon (SVG, no external asset), drawn in the current text color.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Icon {
    /// Access refused.
    Lock,
    /// Something expired.
    Clock,
    /// A service does not answer.
    Pulse,
    /// Something went wrong.
    Alert,
    /// Nothing here.
    Search,
    /// Organizations.
    Building,
    /// Done, verified.
    Check,
    /// Signed out.
    Door,
    /// A person.
    User,
}

impl Icon {
    /// The `<svg>` markup, hidden from screen readers (the text next to it says the same).
    pub fn svg(self) -> Markup {
        let paths = match self {
            Icon::Lock => r#"<rect x="5" y="11" width="14" height="10" rx="2"/><path d="M8 11V7a4 4 0 0 1 8 0v4"/>"#,
            Icon::Clock => r#"<circle cx="12" cy="12" r="9"/><path d="M12 7v5l3 2"/>"#,
            Icon::Pulse => r#"<path d="M3 12h4l3-7 4 14 3-7h4"/>"#,
            Icon::Alert => r#"<path d="M12 3.5 2.5 20h19z"/><path d="M12 10v4.5M12 17.5v.01"/>"#,
            Icon::Search => r#"<circle cx="11" cy="11" r="6.5"/><path d="m20 20-4.2-4.2"/>"#,
            Icon::Building => r#"<path d="M4 21V5a2 2 0 0 1 2-2h7a2 2 0 0 1 2 2v16M15 9h3a2 2 0 0 1 2 2v10M3 21h18M8 7h3M8 11h3M8 15h3"/>"#,
            Icon::Check => r#"<path d="m5 12.5 4.5 4.5L19 7.5"/>"#,
            Icon::Door => r#"<path d="M14 4h4a2 2 0 0 1 2 2v12a2 2 0 0 1-2 2h-4M10 16l-4-4 4-4M6 12h10"/>"#,
            Icon::User => r#"<circle cx="12" cy="8" r="4"/><path d="M4 21a8 8 0 0 1 16 0"/>"#,
        };
        html! {
            svg viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round"
                stroke-linejoin="round" aria-hidden="true" focusable="false" {
                // Constant drawing commands of ours, never input.
                (PreEscaped(paths))
            }
        }
    }

    /// The icon in its round badge, as at the top of a message page; `tone` is `""`, `warn`,
    /// `danger` or `ok`.
    pub fn badge(self, tone: &str) -> Markup {
        html! { div class={ "icon " (tone) } { (self.svg()) } }
    }
}

/// A round badge with a person's or organization's initials, in a color derived from the name
/// (pictures are never loaded: no external assets).
pub fn avatar(name: &str, large: bool) -> Markup {
    let initials: String = name
        .split(|c: char| c.is_whitespace() || c == '-' || c == '.' || c == '@')
        .filter_map(|w| w.chars().find(|c| c.is_alphanumeric()))
        .take(2)
        .flat_map(char::to_uppercase)
        .collect();
    let hue = name.bytes().fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b))) % 360;
    html! {
        span class={ "avatar" @if large { " large" } } style={ "--h:" (hue) } aria-hidden="true" { (initials) }
    }
}

/// A message page: an icon, a heading, the body (its first paragraph `lead`), an optional error
/// code and action links (`href`, label, primary?).
fn message(lang: Lang, icon: (Icon, &str), title: &str, body: Markup, code: Option<&str>, actions: &[(&str, &str, bool)]) -> String {
    let main = html! {
        (icon.0.badge(icon.1))
        h1 { (title) }
        (body)
        @if let Some(code) = code {
            p.error-code { (lang.pick("Error code:", "Code d'erreur :")) " " code { (code) } }
        }
        @if !actions.is_empty() {
            div.actions {
                @for (href, label, primary) in actions {
                    a class={ "button" @if !primary { " secondary" } } href=(href) { (label) }
                }
            }
        }
    };
    layout(lang, title, main)
}

/// A message page's body of one paragraph.
fn lead(text: &str) -> Markup {
    html! { p.lead { (text) } }
}

/// 503: Trousseau cannot be reached.
pub fn unavailable(lang: Lang) -> String {
    let body = lead(lang.pick(
        "Trousseau, the Keysuite sign-in service, cannot be reached right now. Nothing is lost: try again in a few seconds.",
        "Trousseau, le service de connexion Keysuite, ne répond pas pour le moment. Rien n'est perdu : réessayez dans quelques secondes.",
    ));
    let title = lang.pick("Sign-in is temporarily unavailable", "La connexion est momentanément indisponible");
    message(lang, (Icon::Pulse, "warn"), title, body, None, &[("/", lang.pick("Try again", "Réessayer"), true)])
}

/// 502/504: the app behind the proxy did not answer.
pub fn upstream_failed(lang: Lang, status: http::StatusCode) -> String {
    let timeout = status == http::StatusCode::GATEWAY_TIMEOUT;
    let body = html! {
        p.lead {
            @if timeout {
                (lang.pick("You are signed in, but the application took too long to answer.", "Vous êtes connecté, mais l'application a mis trop de temps à répondre."))
            } @else {
                (lang.pick("You are signed in, but the application behind this address cannot be reached.", "Vous êtes connecté, mais l'application derrière cette adresse est injoignable."))
            }
        }
        p {
            (lang.pick(
                "Try again in a moment. If it lasts, tell the application's administrator.",
                "Réessayez dans un instant. Si cela persiste, prévenez l'administrateur de l'application.",
            ))
        }
    };
    let title = lang.pick("The application is not answering", "L'application ne répond pas");
    let code = if timeout { "504" } else { "502" };
    message(lang, (Icon::Pulse, "warn"), title, body, Some(code), &[("/", lang.pick("Try again", "Réessayer"), true)])
}

/// Why a policy denial happened, in words.
pub fn denial_text(lang: Lang, denial: &crate::policy::Denial) -> String {
    use crate::policy::Denial;
    match denial {
        Denial::NoOrganization => lang
            .pick(
                "This application is for members of an organization, and your Trousseau account has no organization it accepts.",
                "Cette application est réservée aux membres d'une organisation, et votre compte Trousseau n'a aucune organisation acceptée.",
            )
            .to_string(),
        Denial::OrganizationNotAllowed => lang
            .pick("The selected organization does not have access to this page.", "L'organisation sélectionnée n'a pas accès à cette page.")
            .to_string(),
        Denial::RoleNotAllowed { role, allowed } => {
            let allowed: Vec<String> = allowed.iter().map(|r| role_label(lang, r)).collect();
            match lang {
                Lang::En => format!(
                    "This page needs the role {} in your organization; you have the role {}.",
                    allowed.join(" or "),
                    if role.is_empty() { "none".to_string() } else { role_label(lang, role) }
                ),
                Lang::Fr => format!(
                    "Cette page demande le rôle {} dans votre organisation ; vous avez le rôle {}.",
                    allowed.join(" ou "),
                    if role.is_empty() { "aucun".to_string() } else { role_label(lang, role) }
                ),
            }
        }
        Denial::EmailNotAllowed => lang
            .pick("Your account's email address is not on the list allowed for this page.", "L'adresse e-mail de votre compte n'est pas autorisée pour cette page.")
            .to_string(),
    }
}

/// 403: the policy denied the request.
pub fn forbidden(lang: Lang, denial: &crate::policy::Denial, session: &crate::session::Session) -> String {
    let who = session.identity.email.as_deref().or(session.identity.name.as_deref()).unwrap_or(&session.identity.sub);
    let mut actions = vec![("/", lang.pick("Back to the start", "Retour à l'accueil"), true)];
    if session.identity.organizations.as_ref().is_some_and(|o| o.len() > 1) {
        actions.push(("/.trousseau/organizations", lang.pick("Switch organization", "Changer d'organisation"), false));
    }
    actions.push(("/.trousseau/logout", lang.pick("Sign out", "Se déconnecter"), false));
    let body = html! {
        p.lead { (denial_text(lang, denial)) }
        p { (lang.pick("You are signed in as ", "Vous êtes connecté en tant que ")) strong { (who) } "." }
        p {
            (lang.pick(
                "If you think you should have access, ask your organization's administrator.",
                "Si vous pensez devoir y accéder, demandez à l'administrateur de votre organisation.",
            ))
        }
    };
    let title = lang.pick("You don't have access to this page", "Vous n'avez pas accès à cette page");
    message(lang, (Icon::Lock, "danger"), title, body, Some(denial.code()), &actions)
}

/// Trousseau answered the callback with an error.
pub fn idp_error(lang: Lang, error: &str, description: Option<&str>) -> String {
    let (icon, title, explanation) = if error == "access_denied" {
        (
            (Icon::Lock, "danger"),
            lang.pick("Access denied by Trousseau", "Accès refusé par Trousseau"),
            lang.pick(
                "Trousseau did not let this account into this application. Usually the account is not in the application's access group.",
                "Trousseau n'a pas autorisé ce compte pour cette application. En général, le compte ne fait pas partie du groupe d'accès de l'application.",
            ),
        )
    } else {
        (
            (Icon::Alert, "warn"),
            lang.pick("Sign-in did not complete", "La connexion n'a pas abouti"),
            lang.pick(
                "Trousseau refused the sign-in request. The application's administrator may need to check its Trousseau settings.",
                "Trousseau a refusé la demande de connexion. L'administrateur de l'application doit peut-être vérifier sa configuration Trousseau.",
            ),
        )
    };
    let body = html! {
        p.lead { (explanation) }
        @if let Some(d) = description.filter(|d| !d.is_empty()) {
            p { (lang.pick("Trousseau says:", "Trousseau indique :")) }
            blockquote { (d) }
        }
        p {
            (lang.pick(
                "If this account should have access, ask the application's administrator to add it to the application in Trousseau.",
                "Si ce compte doit y avoir accès, demandez à l'administrateur de l'application de l'ajouter dans Trousseau.",
            ))
        }
    };
    let again = lang.pick("Sign in with another account", "Se connecter avec un autre compte");
    message(lang, icon, title, body, Some(error), &[("/.trousseau/logout", again, true)])
}

/// The callback matched no sign-in attempt of this browser.
///
/// `start_again` is the sign-in link the page offers (`/.trousseau/login?rd=…`): back to where the
/// user was when the attempt is known.
pub fn login_expired(lang: Lang, start_again: &str) -> String {
    let body = lead(lang.pick(
        "The sign-in was started too long ago, in another browser, or was already used. Start again: it only takes a moment.",
        "La connexion a été commencée il y a trop longtemps, dans un autre navigateur, ou a déjà été utilisée. Recommencez : cela ne prend qu'un instant.",
    ));
    let title = lang.pick("This sign-in link has expired", "Ce lien de connexion a expiré");
    message(lang, (Icon::Clock, ""), title, body, None, &[(start_again, lang.pick("Sign in again", "Se reconnecter"), true)])
}

/// What the callback knows when a browser came back without its sign-in cookie.
pub struct CookieLost<'a> {
    /// `public_url`: where the app must be opened.
    pub public_url: &'a str,
    /// The host the callback was reached as, when it is not `public_url`'s.
    pub callback_host: Option<&'a str>,
    /// `public_url` is https, and this request did not come over https (as far as the proxy can
    /// tell: `X-Forwarded-Proto: https` from a trusted proxy).
    pub over_http: bool,
}

/// The callback came back without this browser's sign-in cookie: the likely causes, the
/// applicable ones first, and the way out.
pub fn cookie_lost(lang: Lang, facts: &CookieLost<'_>) -> String {
    let open_here = format!("{}/", facts.public_url);
    let body = html! {
        p.lead { (lang.pick(
            "Your browser came back from Trousseau without the cookie this proxy set when the sign-in started, so the sign-in cannot be completed. Sending you round again would only repeat this. The usual causes:",
            "Votre navigateur est revenu de Trousseau sans le cookie posé par ce proxy au début de la connexion : elle ne peut pas aboutir, et recommencer ne ferait que répéter cela. Les causes habituelles :",
        )) }
        ul {
            @if facts.over_http {
                li { (lang.pick(
                    "The application is configured for https (public_url), but this request reached the proxy over plain http: browsers refuse secure cookies there. Serve it over https, or have the TLS front end send X-Forwarded-Proto: https and set proxy.trust_forwarded_headers.",
                    "L'application est configurée en https (public_url), mais cette requête est arrivée au proxy en http : les navigateurs y refusent les cookies sécurisés. Servez-la en https, ou faites envoyer X-Forwarded-Proto: https par le frontal TLS et activez proxy.trust_forwarded_headers.",
                )) }
            }
            @if let Some(host) = facts.callback_host {
                li { (lang.pick("This page was reached as ", "Cette page a été atteinte sous le nom ")) code { (host) } (lang.pick(
                    ", which is not the host of public_url: the sign-in's cookies belong to one name, Trousseau sends the browser back to the other.",
                    ", qui n'est pas l'hôte de public_url : les cookies de la connexion appartiennent à un nom, Trousseau renvoie le navigateur vers l'autre.",
                )) }
            }
            li { (lang.pick("The application was opened under another name than ", "L'application a été ouverte sous un autre nom que ")) code { (facts.public_url) } (lang.pick(
                " (localhost instead of 127.0.0.1, an IP address, another domain): open it at that address.",
                " (localhost au lieu de 127.0.0.1, une adresse IP, un autre domaine) : ouvrez-la à cette adresse.",
            )) }
            li { (lang.pick("This browser blocks cookies for this site.", "Ce navigateur bloque les cookies de ce site.")) }
        }
    };
    let title = lang.pick("The sign-in cookie did not come back", "Le cookie de connexion n'est pas revenu");
    message(lang, (Icon::Alert, "warn"), title, body, Some("sign_in_cookie_lost"), &[(&open_here, lang.pick("Open the application", "Ouvrir l'application"), true)])
}

/// What [`sign_in_loop`] says about the cause, from what the request and the trail tell.
fn loop_cause(lang: Lang, facts: &crate::session::sign_ins::LoopFacts) -> Markup {
    use crate::session::sign_ins::SessionTrouble;
    match facts.trouble {
        SessionTrouble::Unreadable if facts.other_secret => lead(lang.pick(
            "Your sign-in was completed by an instance of this proxy that seals sessions with another key than this one: the instances have different session.secrets (or a different issuer, client_id or public_url). Give every replica the same configuration; when rotating, add the new secret to all of them first, and make it the first only then.",
            "Votre connexion a été finalisée par une instance de ce proxy qui scelle les sessions avec une autre clé que celle-ci : les instances ont des session.secrets différents (ou un autre issuer, client_id ou public_url). Donnez la même configuration à toutes les répliques ; pour une rotation, ajoutez d'abord le nouveau secret partout, et mettez-le en premier ensuite seulement.",
        )),
        SessionTrouble::Unreadable => lead(lang.pick(
            "Your browser sends a session cookie this proxy cannot open: it was damaged on the way, or sealed by an instance with another configuration. Clear this site's cookies and try again; if it repeats, compare the replicas' session settings.",
            "Votre navigateur envoie un cookie de session que ce proxy ne peut pas ouvrir : il a été abîmé en route, ou scellé par une instance configurée autrement. Effacez les cookies de ce site et réessayez ; si cela se répète, comparez les réglages de session des répliques.",
        )),
        SessionTrouble::UnknownHandle if facts.shared_store => lead(lang.pick(
            "Your session was stored in Redis at sign-in, and Redis no longer has it: the replicas use different Redis servers or databases, or Redis evicts keys. Point every replica at the same session.redis_url, and use a maxmemory-policy that does not evict (noeviction or volatile-*).",
            "Votre session a été enregistrée dans Redis à la connexion, et Redis ne l'a plus : les répliques utilisent des serveurs ou des bases Redis différents, ou Redis évince des clés. Faites pointer toutes les répliques vers le même session.redis_url, avec une maxmemory-policy qui n'évince pas (noeviction ou volatile-*).",
        )),
        SessionTrouble::UnknownHandle => lead(if facts.other_replica {
            lang.pick(
                "Sessions are kept in each instance's memory (session.store: memory), and your sign-in was completed by another instance than the one answering now (or before a restart). With several replicas, use session.store: redis (or cookie), or send each browser to the same instance.",
                "Les sessions sont gardées dans la mémoire de chaque instance (session.store: memory), et votre connexion a été finalisée par une autre instance que celle qui répond (ou avant un redémarrage). Avec plusieurs répliques, utilisez session.store: redis (ou cookie), ou envoyez chaque navigateur vers la même instance.",
            )
        } else {
            lang.pick(
                "Sessions are kept in this instance's memory (session.store: memory), and it no longer has yours: it was removed right after sign-in (the per-user session cap, session.max_sessions_per_user, or the memory bound, session.memory_store_max_mib).",
                "Les sessions sont gardées dans la mémoire de cette instance (session.store: memory), et elle n'a plus la vôtre : elle a été retirée juste après la connexion (le plafond de sessions par utilisateur, session.max_sessions_per_user, ou la borne mémoire, session.memory_store_max_mib).",
            )
        }),
        SessionTrouble::Ended => lead(lang.pick(
            "Your session opens but is refused right after each sign-in: its times do not fit. The clock of this server and the one of the instance that signed you in differ by more than a minute, or either is off: compare them with trousseau-proxy check-config --probe.",
            "Votre session s'ouvre mais est refusée juste après chaque connexion : ses horodatages ne concordent pas. L'horloge de ce serveur et celle de l'instance qui vous a connecté diffèrent de plus d'une minute, ou l'une est décalée : comparez-les avec trousseau-proxy check-config --probe.",
        )),
        SessionTrouble::NoCookie => html! {
            p.lead { (lang.pick(
                "Your browser did not send back the session cookie this proxy set at sign-in (",
                "Votre navigateur n'a pas renvoyé le cookie de session posé par ce proxy à la connexion (",
            )) (facts.trail.cookie_bytes) (lang.pick(" bytes). The usual causes:", " octets). Les causes habituelles :")) }
            ul {
                @if facts.trail.cookie_bytes > 4096 {
                    li { (lang.pick(
                        "It is large, and a proxy or load balancer in front drops or refuses large cookies: session.store: memory or redis keeps the cookie under 200 bytes.",
                        "Il est volumineux, et un proxy ou répartiteur en amont supprime ou refuse les gros cookies : session.store: memory ou redis garde le cookie sous 200 octets.",
                    )) }
                }
                li { (lang.pick(
                    "Something between the browser and this proxy removes cookies (a CDN or a cache that strips Cookie headers).",
                    "Un intermédiaire entre le navigateur et ce proxy retire les cookies (un CDN ou un cache qui supprime l'en-tête Cookie).",
                )) }
                li { (lang.pick(
                    "The site sets so many cookies that the browser drops older ones (about 180 per site).",
                    "Le site pose tant de cookies que le navigateur supprime les plus anciens (environ 180 par site).",
                )) }
            }
        },
    }
}

/// A browser completed sign-ins within the last minute and its session still does not come back:
/// the cause the facts point to, and the way out. `try_again` starts one more sign-in anyway.
pub fn sign_in_loop(lang: Lang, facts: &crate::session::sign_ins::LoopFacts, try_again: &str) -> String {
    let signed_in = facts.recent.to_string();
    let cause = loop_cause(lang, facts);
    let body = html! {
        p { (lang.pick("You signed in ", "Vous vous êtes connecté ")) (signed_in) (lang.pick(
            " times in the last minute, and each time the session did not stick. Sending you round again would only repeat this.",
            " fois dans la dernière minute, et la session n'a jamais tenu. Vous renvoyer vers la connexion ne ferait que le répéter.",
        )) }
        (cause)
        p { (lang.pick(
            "The administrator will find the same diagnosis in the proxy's log.",
            "L'administrateur trouvera le même diagnostic dans le journal du proxy.",
        )) }
    };
    let title = lang.pick("Signing in keeps starting over", "La connexion recommence sans cesse");
    message(lang, (Icon::Alert, "warn"), title, body, Some("sign_in_loop"), &[(try_again, lang.pick("Try again", "Réessayer"), true)])
}

/// The code exchange or ID-token validation failed. The error itself is for the log, not the page.
pub fn sign_in_failed(lang: Lang, error: &crate::oidc::OidcError) -> String {
    let body = if error.is_clock_skew() {
        lead(lang.pick(
            "Trousseau's answer carries times this server does not accept (issued in the future, or already expired): the clocks of this server and of Trousseau most likely disagree. The administrator can compare them with trousseau-proxy check-config --probe and fix this server's time (NTP).",
            "La réponse de Trousseau porte des heures que ce serveur n'accepte pas (émise dans le futur, ou déjà expirée) : les horloges de ce serveur et de Trousseau sont très probablement décalées. L'administrateur peut les comparer avec trousseau-proxy check-config --probe et corriger l'heure de ce serveur (NTP).",
        ))
    } else {
        lead(lang.pick(
            "Trousseau's answer could not be verified, so you were not signed in. Try again; if it keeps happening, the administrator will find the details in the proxy's log.",
            "La réponse de Trousseau n'a pas pu être vérifiée, vous n'avez donc pas été connecté. Réessayez ; si cela se reproduit, l'administrateur trouvera les détails dans le journal du proxy.",
        ))
    };
    let title = lang.pick("Sign-in could not be completed", "La connexion n'a pas pu être finalisée");
    message(lang, (Icon::Alert, "warn"), title, body, None, &[("/.trousseau/login?rd=/", lang.pick("Try again", "Réessayer"), true)])
}

/// The session does not fit in cookies.
pub fn session_too_large(lang: Lang) -> String {
    let body = lead(lang.pick(
        "Your account carries more information than fits in browser cookies. The administrator can fix this by setting session.store to memory.",
        "Votre compte contient plus d'informations que les cookies du navigateur ne peuvent en porter. L'administrateur peut corriger cela avec session.store: memory.",
    ));
    message(lang, (Icon::Alert, "warn"), lang.pick("Your session is too large", "Votre session est trop volumineuse"), body, None, &[])
}

/// Unknown path under `/.trousseau/`.
pub fn not_found(lang: Lang) -> String {
    let body = lead(lang.pick(
        "This address is reserved by the sign-in proxy and has no page.",
        "Cette adresse est réservée au proxy de connexion et ne correspond à aucune page.",
    ));
    let go = lang.pick("Go to the application", "Aller à l'application");
    message(lang, (Icon::Search, ""), lang.pick("Page not found", "Page introuvable"), body, None, &[("/", go, true)])
}

/// A page for a passing problem (the session store, a limit): a heading, a paragraph, a button
/// back to the start.
pub fn try_again(lang: Lang, title: &str, text: &str) -> String {
    let main = html! {
        h1 { (title) }
        p { (text) }
        div.actions { a.button href="/" { (lang.pick("Try again", "Réessayer")) } }
    };
    layout(lang, title, main)
}

/// The organization selector: one button per acceptable organization, no JavaScript.
pub fn organization_selector(
    lang: Lang,
    session: &crate::session::Session,
    choices: &[&crate::identity::Organization],
    return_to: &str,
) -> String {
    let title = lang.pick("Choose an organization", "Choisissez une organisation");
    let who = session.identity.name.as_deref().or(session.identity.email.as_deref()).unwrap_or(&session.identity.sub);
    let main = html! {
        (Icon::Building.badge(""))
        h1 #title { (title) }
        p.lead {
            (lang.pick("Signed in as ", "Connecté en tant que ")) strong { (who) }
            (lang.pick(
                ". Which organization are you working for now? You can switch at any time.",
                ". Pour quelle organisation travaillez-vous maintenant ? Vous pourrez en changer à tout moment.",
            ))
        }
        form method="post" action="/.trousseau/organizations" {
            input type="hidden" name="rd" value=(return_to);
            ul.choices aria-labelledby="title" {
                @for org in choices {
                    @let current = session.org.as_deref() == Some(org.id.as_str());
                    li {
                        button type="submit" name="org" value=(org.id) aria-current=[current.then_some("true")] {
                            (avatar(&org.name, false))
                            span.choice-main { strong { (org.name) } span."muted small" { (org.slug) } }
                            span.choice-side {
                                @if current { span."badge accent" { (lang.pick("Current", "Actuelle")) } }
                                span.badge { (role_label(lang, &org.role)) }
                            }
                        }
                    }
                }
            }
        }
        hr;
        p."muted small" {
            (lang.pick("Not ", "Vous n'êtes pas ")) (who) (lang.pick("? ", " ? "))
            a href="/.trousseau/logout" { (lang.pick("Sign out", "Se déconnecter")) }
        }
    };
    // The choice is a same-origin POST whose Origin the proxy checks.
    page(lang, title, main, Frame { same_origin_referrer: true, ..Frame::default() })
}

/// A Trousseau role in words.
pub fn role_label(lang: Lang, role: &str) -> String {
    match (lang, role) {
        (Lang::En, "admin") => "Administrator".into(),
        (Lang::Fr, "admin") => "Administrateur".into(),
        (Lang::En, "hr") => "HR".into(),
        (Lang::Fr, "hr") => "RH".into(),
        (Lang::En, "accounting") => "Accounting".into(),
        (Lang::Fr, "accounting") => "Comptabilité".into(),
        (Lang::En, "member") => "Member".into(),
        (Lang::Fr, "member") => "Membre".into(),
        (_, other) => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_id_token_refused_for_its_times_points_at_the_clocks() {
        use crate::oidc::OidcError;
        let skewed = sign_in_failed(Lang::En, &OidcError::InvalidIdToken("the ID token was issued in the future".into()));
        assert!(skewed.contains("clocks") && skewed.contains("check-config --probe"), "{skewed}");
        let expired = sign_in_failed(Lang::En, &OidcError::InvalidIdToken("Expired: ID token expired at 2026-12-04".into()));
        assert!(expired.contains("clocks"));
        let other = sign_in_failed(Lang::En, &OidcError::InvalidIdToken("signature verification failed".into()));
        assert!(!other.contains("clocks") && other.contains("log"));
    }

    #[test]
    fn a_lost_sign_in_cookie_names_the_causes_that_apply() {
        let plain = CookieLost { public_url: "https://app.example.com", callback_host: None, over_http: false };
        let page = cookie_lost(Lang::En, &plain);
        assert!(page.contains("https://app.example.com/") && page.contains("blocks cookies"));
        assert!(!page.contains("plain http") && !page.contains("This page was reached as"));
        let both = CookieLost { public_url: "https://app.example.com", callback_host: Some("10.0.0.7:4180"), over_http: true };
        let page = cookie_lost(Lang::Fr, &both);
        assert!(page.contains("en http") && page.contains("10.0.0.7:4180"), "{page}");
    }

    #[test]
    fn a_sign_in_loop_page_names_the_cause_the_facts_point_to() {
        use crate::session::sign_ins::{LoopFacts, SessionTrouble, SignInTrail};
        let facts = |trouble, other_secret, other_replica, server_side, shared_store, cookie_bytes| LoopFacts {
            trail: SignInTrail { key: 1, replica: 2, cookie_bytes, times: vec![10, 20] },
            recent: 2,
            trouble,
            other_secret,
            other_replica,
            server_side,
            shared_store,
        };
        let cases = [
            (facts(SessionTrouble::Unreadable, true, true, false, false, 900), "different session.secrets"),
            (facts(SessionTrouble::Unreadable, false, false, false, false, 900), "cannot open"),
            (facts(SessionTrouble::UnknownHandle, false, true, true, false, 150), "another instance than the one answering"),
            (facts(SessionTrouble::UnknownHandle, false, false, true, false, 150), "max_sessions_per_user"),
            (facts(SessionTrouble::UnknownHandle, false, true, true, true, 150), "maxmemory-policy"),
            (facts(SessionTrouble::NoCookie, false, false, false, false, 900), "strips Cookie"),
            (facts(SessionTrouble::Ended, false, false, false, false, 900), "check-config --probe"),
        ];
        for (facts, cause) in &cases {
            let page = sign_in_loop(Lang::En, facts, "/.trousseau/login?rd=%2Fx");
            assert!(page.contains(cause) && page.contains("2 times") && page.contains("sign_in_loop"), "{cause}: {page}");
            assert!(page.contains("/.trousseau/login?rd=%2Fx"), "a way to try again");
        }
        let small = sign_in_loop(Lang::En, &cases[5].0, "/");
        assert!(!small.contains("drops or refuses large cookies"));
        let large = sign_in_loop(Lang::Fr, &facts(SessionTrouble::NoCookie, false, false, false, false, 7_600), "/");
        assert!(large.contains("7600 octets") && large.contains("gros cookies"), "{large}");
    }

    use super::*;

    #[test]
    fn any_locale_text_picks_a_language_without_panicking() {
        for (locale, lang) in [
            ("fr", Lang::Fr),
            ("FR-ca", Lang::Fr),
            ("fr_BE", Lang::Fr),
            ("en-GB", Lang::En),
            ("中文", Lang::En),
            ("中", Lang::En),
            ("f中", Lang::En),
            ("é", Lang::En),
            ("f", Lang::En),
            ("", Lang::En),
        ] {
            assert_eq!(Lang::from_locale(Some(locale)), lang, "{locale:?}");
        }
        assert_eq!(Lang::from_accept_language(Some("中文, fr;q=0.8")), Lang::Fr);
        assert_eq!(Lang::from_accept_language(Some("f, 中, en")), Lang::En);
        assert_eq!(Lang::from_accept_language(Some("en;q=0.5, fr;q=0.9")), Lang::Fr, "quality decides");
        assert_eq!(Lang::from_accept_language(Some("fr;q=0, en;q=0.1")), Lang::En, "q=0 refuses");
        assert_eq!(Lang::from_accept_language(Some("fr;q=0")), Lang::En);
        assert_eq!(Lang::from_accept_language(Some("fr-CA;q=0.8, en;q=0.8")), Lang::Fr, "the earlier on a tie");
        assert_eq!(Lang::from_accept_language(Some("en;q=2, fr;q=0.3")), Lang::Fr, "an invalid quality counts as 0");
    }
}
