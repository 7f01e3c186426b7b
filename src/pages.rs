//! What people see: small, accessible, responsive HTML pages with inline CSS, no external assets and
//! no JavaScript, in French or English.

/// The language of a page, chosen from the user's `locale` (or the browser's `Accept-Language`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    /// English (the default).
    En,
    /// French.
    Fr,
}

impl Lang {
    /// Picks French for any `fr*` locale tag, English otherwise.
    pub fn from_locale(locale: Option<&str>) -> Lang {
        match locale {
            Some(l) if l.len() >= 2 && l[..2].eq_ignore_ascii_case("fr") => Lang::Fr,
            _ => Lang::En,
        }
    }

    /// Picks the first of French or English named in an `Accept-Language` header.
    pub fn from_accept_language(header: Option<&str>) -> Lang {
        let Some(header) = header else { return Lang::En };
        for part in header.split(',') {
            let tag = part.split(';').next().unwrap_or("").trim();
            if tag.len() >= 2 && tag[..2].eq_ignore_ascii_case("fr") {
                return Lang::Fr;
            }
            if tag.len() >= 2 && tag[..2].eq_ignore_ascii_case("en") {
                return Lang::En;
            }
        }
        Lang::En
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

/// Escapes text for HTML element content and double-quoted attribute values.
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

/// The shared frame of every page: `title` (plain text, escaped here) and `main_html` (already
/// escaped HTML for the inside of `<main>`).
pub fn layout(lang: Lang, title: &str, main_html: &str) -> String {
    format!(
        r#"<!doctype html>
<html lang="{lang}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<title>{title} · Trousseau</title>
<style>{CSS}</style>
</head>
<body>
<header class="brand"><span class="mark" aria-hidden="true">◆</span> Keysuite · Trousseau</header>
<main>
{main_html}
</main>
</body>
</html>
"#,
        lang = lang.tag(),
        title = escape(title),
    )
}

/// One stylesheet for every page: calm, readable, high contrast, responsive.
pub const CSS: &str = r#"
:root{--bg:#f6f7f9;--card:#fff;--ink:#1b1f24;--muted:#57606a;--accent:#1f4fd1;--accent-ink:#fff;--line:#d5dae0;--warn:#9a3412;--ok:#166534;font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
@media (prefers-color-scheme:dark){:root{--bg:#111418;--card:#1b2027;--ink:#e8ecf1;--muted:#a4adb8;--accent:#8fb0ff;--accent-ink:#0b1020;--line:#2f3742;--warn:#fdba74;--ok:#86efac}}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);line-height:1.5;font-size:1rem}
.brand{padding:1rem 1.5rem;font-weight:600;color:var(--muted);letter-spacing:.02em}
.mark{color:var(--accent)}
main{max-width:40rem;margin:1rem auto 3rem;padding:2rem;background:var(--card);border:1px solid var(--line);border-radius:12px}
@media (max-width:42rem){main{margin:0;border-radius:0;border-left:0;border-right:0;padding:1.25rem}}
h1{font-size:1.5rem;margin:0 0 .75rem;line-height:1.25}
h2{font-size:1.1rem;margin:1.5rem 0 .5rem}
p{margin:.5rem 0}
.muted{color:var(--muted)}
.code{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:.9rem}
.status{display:inline-block;font-weight:600;color:var(--warn)}
.ok{font-weight:600;color:var(--ok)}
a{color:var(--accent)}
a:focus-visible,button:focus-visible,input:focus-visible,select:focus-visible{outline:3px solid var(--accent);outline-offset:2px}
.button,button{display:inline-block;font:inherit;font-weight:600;padding:.6rem 1.1rem;border-radius:8px;border:1px solid var(--accent);background:var(--accent);color:var(--accent-ink);text-decoration:none;cursor:pointer}
.button.secondary,button.secondary{background:transparent;color:var(--accent)}
.actions{display:flex;gap:.75rem;flex-wrap:wrap;margin-top:1.5rem}
ul.choices{list-style:none;padding:0;margin:1rem 0;display:grid;gap:.5rem}
ul.choices button{width:100%;text-align:left;display:flex;justify-content:space-between;align-items:center;gap:1rem;background:var(--card);color:var(--ink);border:1px solid var(--line)}
ul.choices button:hover{border-color:var(--accent)}
.badge{font-size:.8rem;font-weight:600;padding:.1rem .5rem;border-radius:999px;border:1px solid var(--line);color:var(--muted);white-space:nowrap}
table{border-collapse:collapse;width:100%;margin:.5rem 0}
th,td{text-align:left;vertical-align:top;padding:.35rem .5rem;border-bottom:1px solid var(--line);word-break:break-all}
th{width:35%;color:var(--muted);font-weight:600;word-break:normal}
label{display:block;font-weight:600;margin:.75rem 0 .25rem}
input,select,textarea{font:inherit;width:100%;padding:.5rem;border:1px solid var(--line);border-radius:6px;background:var(--card);color:var(--ink)}
pre{white-space:pre-wrap;word-break:break-all;background:var(--bg);padding:.75rem;border-radius:8px;border:1px solid var(--line);font-size:.85rem}
"#;

/// A message page: a heading, paragraphs (already escaped HTML) and action links.
fn message(lang: Lang, title: &str, paragraphs: &[String], actions: &[(&str, &str, bool)]) -> String {
    let mut html = format!("<h1>{}</h1>\n", escape(title));
    for p in paragraphs {
        html.push_str("<p>");
        html.push_str(p);
        html.push_str("</p>\n");
    }
    if !actions.is_empty() {
        html.push_str("<div class=\"actions\">");
        for (href, label, primary) in actions {
            html.push_str(&format!(
                "<a class=\"button{}\" href=\"{}\">{}</a>",
                if *primary { "" } else { " secondary" },
                escape(href),
                escape(label)
            ));
        }
        html.push_str("</div>\n");
    }
    layout(lang, title, &html)
}

/// 503: Trousseau cannot be reached.
pub fn unavailable(lang: Lang) -> String {
    message(
        lang,
        lang.pick("Sign-in is temporarily unavailable", "La connexion est momentanément indisponible"),
        &[escape(lang.pick(
            "Trousseau, the Keysuite sign-in service, cannot be reached right now. Nothing is lost: try again in a few seconds.",
            "Trousseau, le service de connexion Keysuite, ne répond pas pour le moment. Rien n'est perdu : réessayez dans quelques secondes.",
        ))],
        &[("/", lang.pick("Try again", "Réessayer"), true)],
    )
}

/// 502/504: the app behind the proxy did not answer.
pub fn upstream_failed(lang: Lang, status: http::StatusCode) -> String {
    let timeout = status == http::StatusCode::GATEWAY_TIMEOUT;
    message(
        lang,
        lang.pick("The application is not answering", "L'application ne répond pas"),
        &[
            escape(if timeout {
                lang.pick("You are signed in, but the application took too long to answer.", "Vous êtes connecté, mais l'application a mis trop de temps à répondre.")
            } else {
                lang.pick("You are signed in, but the application behind this address cannot be reached.", "Vous êtes connecté, mais l'application derrière cette adresse est injoignable.")
            }),
            escape(lang.pick(
                "Try again in a moment. If it lasts, tell the application's administrator.",
                "Réessayez dans un instant. Si cela persiste, prévenez l'administrateur de l'application.",
            )),
        ],
        &[("/", lang.pick("Try again", "Réessayer"), true)],
    )
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
        Denial::RoleNotAllowed { role, allowed } => match lang {
            Lang::En => format!(
                "This page needs the role {} in your organization; you have the role {}.",
                allowed.join(" or "),
                if role.is_empty() { "none" } else { role }
            ),
            Lang::Fr => format!(
                "Cette page demande le rôle {} dans votre organisation ; vous avez le rôle {}.",
                allowed.join(" ou "),
                if role.is_empty() { "aucun" } else { role }
            ),
        },
        Denial::EmailNotAllowed => lang
            .pick("Your account's email address is not on the list allowed for this page.", "L'adresse e-mail de votre compte n'est pas autorisée pour cette page.")
            .to_string(),
    }
}

/// 403: the policy denied the request.
pub fn forbidden(lang: Lang, denial: &crate::policy::Denial, session: &crate::session::Session) -> String {
    let who = session.identity.email.as_deref().or(session.identity.name.as_deref()).unwrap_or(&session.identity.sub);
    let signed_in = match lang {
        Lang::En => format!("You are signed in as <strong>{}</strong>.", escape(who)),
        Lang::Fr => format!("Vous êtes connecté en tant que <strong>{}</strong>.", escape(who)),
    };
    let mut actions = vec![("/", lang.pick("Back to the start", "Retour à l'accueil"), true)];
    if session.identity.organizations.as_ref().is_some_and(|o| o.len() > 1) {
        actions.push(("/.trousseau/organizations", lang.pick("Switch organization", "Changer d'organisation"), false));
    }
    actions.push(("/.trousseau/logout", lang.pick("Sign out", "Se déconnecter"), false));
    message(
        lang,
        lang.pick("You don't have access to this page", "Vous n'avez pas accès à cette page"),
        &[
            escape(&denial_text(lang, denial)),
            signed_in,
            escape(lang.pick(
                "If you think you should have access, ask your organization's administrator.",
                "Si vous pensez devoir y accéder, demandez à l'administrateur de votre organisation.",
            )),
        ],
        &actions,
    )
}

/// Trousseau answered the callback with an error.
pub fn idp_error(lang: Lang, error: &str, description: Option<&str>) -> String {
    let (title, explanation) = if error == "access_denied" {
        (
            lang.pick("Access denied by Trousseau", "Accès refusé par Trousseau"),
            lang.pick(
                "Trousseau did not let this account into this application. Usually the account is not in the application's access group.",
                "Trousseau n'a pas autorisé ce compte pour cette application. En général, le compte ne fait pas partie du groupe d'accès de l'application.",
            ),
        )
    } else {
        (
            lang.pick("Sign-in did not complete", "La connexion n'a pas abouti"),
            lang.pick(
                "Trousseau refused the sign-in request. The application's administrator may need to check its Trousseau settings.",
                "Trousseau a refusé la demande de connexion. L'administrateur de l'application doit peut-être vérifier sa configuration Trousseau.",
            ),
        )
    };
    let mut paragraphs = vec![escape(explanation)];
    if let Some(d) = description.filter(|d| !d.is_empty()) {
        paragraphs.push(format!("{} <q>{}</q>", escape(lang.pick("Trousseau says:", "Trousseau indique :")), escape(d)));
    }
    paragraphs.push(format!("<span class=\"muted code\">{}</span>", escape(error)));
    message(
        lang,
        title,
        &paragraphs,
        &[("/.trousseau/logout", lang.pick("Sign in with another account", "Se connecter avec un autre compte"), true)],
    )
}

/// The callback matched no sign-in attempt of this browser.
pub fn login_expired(lang: Lang) -> String {
    message(
        lang,
        lang.pick("This sign-in link has expired", "Ce lien de connexion a expiré"),
        &[escape(lang.pick(
            "The sign-in was started too long ago, in another browser, or was already used. Start again: it only takes a moment.",
            "La connexion a été commencée il y a trop longtemps, dans un autre navigateur, ou a déjà été utilisée. Recommencez : cela ne prend qu'un instant.",
        ))],
        &[("/.trousseau/login?rd=/", lang.pick("Sign in again", "Se reconnecter"), true)],
    )
}

/// The code exchange or ID-token validation failed.
pub fn sign_in_failed(lang: Lang, error: &crate::oidc::OidcError) -> String {
    let _ = error;
    message(
        lang,
        lang.pick("Sign-in could not be completed", "La connexion n'a pas pu être finalisée"),
        &[escape(lang.pick(
            "Trousseau's answer could not be verified, so you were not signed in. Try again; if it keeps happening, the administrator will find the details in the proxy's log.",
            "La réponse de Trousseau n'a pas pu être vérifiée, vous n'avez donc pas été connecté. Réessayez ; si cela se reproduit, l'administrateur trouvera les détails dans le journal du proxy.",
        ))],
        &[("/.trousseau/login?rd=/", lang.pick("Try again", "Réessayer"), true)],
    )
}

/// The session does not fit in cookies.
pub fn session_too_large(lang: Lang) -> String {
    message(
        lang,
        lang.pick("Your session is too large", "Votre session est trop volumineuse"),
        &[escape(lang.pick(
            "Your account carries more information than fits in browser cookies. The administrator can fix this by setting session.store to memory.",
            "Votre compte contient plus d'informations que les cookies du navigateur ne peuvent en porter. L'administrateur peut corriger cela avec session.store: memory.",
        ))],
        &[],
    )
}

/// Unknown path under `/.trousseau/`.
pub fn not_found(lang: Lang) -> String {
    message(
        lang,
        lang.pick("Page not found", "Page introuvable"),
        &[escape(lang.pick("This address is reserved by the sign-in proxy and has no page.", "Cette adresse est réservée au proxy de connexion et ne correspond à aucune page."))],
        &[("/", lang.pick("Go to the application", "Aller à l'application"), true)],
    )
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
    let mut items = String::new();
    for org in choices {
        let current = session.org.as_deref() == Some(org.id.as_str());
        items.push_str(&format!(
            "<li><button type=\"submit\" name=\"org\" value=\"{id}\"{pressed}><span><strong>{name}</strong>{current}</span><span class=\"badge\">{role}</span></button></li>\n",
            id = escape(&org.id),
            pressed = if current { " aria-current=\"true\"" } else { "" },
            name = escape(&org.name),
            current = if current { format!(" <span class=\"muted\">· {}</span>", escape(lang.pick("current", "actuelle"))) } else { String::new() },
            role = escape(&role_label(lang, &org.role)),
        ));
    }
    let intro = match lang {
        Lang::En => format!("Signed in as <strong>{}</strong>. Which organization are you working for now? You can switch at any time.", escape(who)),
        Lang::Fr => format!("Connecté en tant que <strong>{}</strong>. Pour quelle organisation travaillez-vous maintenant ? Vous pourrez en changer à tout moment.", escape(who)),
    };
    let html = format!(
        "<h1>{title}</h1>\n<p>{intro}</p>\n<form method=\"post\" action=\"/.trousseau/organizations\">\n<input type=\"hidden\" name=\"rd\" value=\"{rd}\">\n<ul class=\"choices\" aria-label=\"{label}\">\n{items}</ul>\n</form>\n<p class=\"muted\"><a href=\"/.trousseau/logout\">{signout}</a></p>",
        title = escape(title),
        rd = escape(return_to),
        label = escape(lang.pick("Your organizations", "Vos organisations")),
        signout = escape(lang.pick("Sign out", "Se déconnecter")),
    );
    layout(lang, title, &html)
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
