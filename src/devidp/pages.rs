//! What people see at the dev IdP: the sign-in page (demo users as buttons), its error pages, the
//! signed-out page and an index. All clearly marked as a development tool, in French or English.

use std::fmt::Write as _;

use super::users::DevUser;
use super::DevIdp;
use maud::PreEscaped;

use crate::pages::{avatar, escape, page, role_label, Frame, Icon, Lang};

/// Why the IdP shows an error page instead of going back to the application.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum PageError {
    MissingClientId,
    UnknownClient,
    MissingRedirectUri,
    UnregisteredRedirectUri,
    RepeatedClientParameter,
    RequestExpired,
    NoUserChosen,
    UnknownUser,
    InvalidEmail,
    BadForm,
}

impl PageError {
    fn text(self, lang: Lang) -> &'static str {
        match self {
            PageError::MissingClientId => lang.pick(
                "The application did not say who it is (client_id is missing).",
                "L'application ne s'est pas identifiée (client_id manquant).",
            ),
            PageError::UnknownClient => lang.pick(
                "This application (client_id) is not registered at this identity provider.",
                "Cette application (client_id) n'est pas enregistrée auprès de ce fournisseur d'identité.",
            ),
            PageError::MissingRedirectUri => lang.pick(
                "The application did not say where to send you back (redirect_uri is missing).",
                "L'application n'a pas indiqué où vous renvoyer (redirect_uri manquant).",
            ),
            PageError::UnregisteredRedirectUri => lang.pick(
                "The address the application wants you sent back to (redirect_uri) is not registered for it.",
                "L'adresse de retour demandée par l'application (redirect_uri) n'est pas enregistrée pour elle.",
            ),
            PageError::RepeatedClientParameter => lang.pick(
                "The request names its application or return address more than once.",
                "La demande indique plusieurs fois son application ou son adresse de retour.",
            ),
            PageError::RequestExpired => lang.pick(
                "This sign-in request has expired or was already used. Go back to the application and start again.",
                "Cette demande de connexion a expiré ou a déjà servi. Revenez à l'application et recommencez.",
            ),
            PageError::NoUserChosen => lang.pick(
                "Choose a user, or type an email address, to sign in.",
                "Choisissez un utilisateur, ou saisissez une adresse e-mail, pour vous connecter.",
            ),
            PageError::UnknownUser => lang.pick(
                "That user does not exist at this identity provider.",
                "Cet utilisateur n'existe pas chez ce fournisseur d'identité.",
            ),
            PageError::InvalidEmail => lang.pick(
                "That does not look like an email address.",
                "Cela ne ressemble pas à une adresse e-mail.",
            ),
            PageError::BadForm => lang.pick(
                "The form could not be read.",
                "Le formulaire n'a pas pu être lu.",
            ),
        }
    }
}

/// Why the signed-out page did not send the person back to the application.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SignedOutNote {
    UnregisteredRedirect,
    ClientUnknown,
    InvalidHint,
}

impl SignedOutNote {
    fn text(self, lang: Lang) -> &'static str {
        match self {
            SignedOutNote::UnregisteredRedirect => lang.pick(
                "The application asked to send you back to an address that is not registered for it, so you stay here.",
                "L'application a demandé à vous renvoyer vers une adresse qui n'est pas enregistrée pour elle : vous restez ici.",
            ),
            SignedOutNote::ClientUnknown => lang.pick(
                "The application did not identify itself, so you cannot be sent back to it.",
                "L'application ne s'est pas identifiée : vous ne pouvez pas y être renvoyé.",
            ),
            SignedOutNote::InvalidHint => lang.pick(
                "The sign-out link carried a token this identity provider did not issue, so you cannot be sent back.",
                "Le lien de déconnexion contenait un jeton que ce fournisseur d'identité n'a pas émis : vous ne pouvez pas être renvoyé.",
            ),
        }
    }
}

/// Everything the sign-in page shows.
pub(super) struct SignInView<'a> {
    pub(super) request_id: &'a str,
    pub(super) client_id: &'a str,
    pub(super) scopes: &'a [String],
    /// The user of the browser's IdP session, offered first.
    pub(super) continue_as: Option<&'a DevUser>,
    /// Every user, with their disabled flag.
    pub(super) users: Vec<(DevUser, bool)>,
}

/// Every page of the dev IdP: the shared look, tagged as a development tool.
fn dev_page(lang: Lang, title: &str, main: &str, wide: bool) -> String {
    // The dev IdP's pages are still written with `format!` and `escape` (dev-only; the proxy's own
    // pages use maud templates): their HTML is taken as it is.
    page(
        lang,
        title,
        PreEscaped(main.to_string()),
        Frame {
            wide,
            tag: Some(lang.pick("Development IdP", "IdP de développement")),
            ..Frame::default()
        },
    )
}

fn banner(lang: Lang) -> String {
    format!(
        r#"<p class="callout" role="note">{} {}</p>"#,
        Icon::Alert.svg().into_string(),
        escape(lang.pick(
            "Development identity provider — not for production",
            "Fournisseur d'identité de développement — ne pas utiliser en production",
        ))
    )
}

fn hidden_request(id: &str) -> String {
    format!(r#"<input type="hidden" name="request" value="{}">"#, escape(id))
}

fn user_button(user: &DevUser, disabled: bool, lang: Lang) -> String {
    let mut badges = String::new();
    if user.denied {
        let _ = write!(badges, r#"<span class="badge warn">{}</span>"#, escape(lang.pick("Access denied", "Accès refusé")));
    }
    if disabled {
        let _ = write!(badges, r#"<span class="badge warn">{}</span>"#, escape(lang.pick("Disabled", "Désactivé")));
    }
    if user.organizations.is_empty() {
        let _ = write!(badges, r#"<span class="badge">{}</span>"#, escape(lang.pick("No organization", "Aucune organisation")));
    }
    for org in &user.organizations {
        let _ = write!(badges, r#"<span class="badge">{} · {}</span>"#, escape(&org.name), escape(&role_label(lang, &org.role)));
    }
    let description = if user.description.is_empty() {
        String::new()
    } else {
        format!(r#"<span class="muted small">{}</span>"#, escape(&user.description))
    };
    format!(
        r#"<li><button type="submit" name="user" value="{sub}">{avatar}<span class="choice-main"><strong>{name}</strong><span class="muted">{email}</span>{description}<span class="badges">{badges}</span></span></button></li>
"#,
        sub = escape(&user.sub),
        avatar = avatar(user.display_name(), false).into_string(),
        name = escape(user.display_name()),
        email = escape(&user.email),
    )
}

/// The sign-in page: one POST form per action, all naming the pending request in `request`.
pub(super) fn sign_in(idp: &DevIdp, view: &SignInView<'_>, lang: Lang) -> String {
    let action = escape(&format!("{}/application/o/authorize/", idp.prefix));
    let hidden = hidden_request(view.request_id);
    let scopes: String = view.scopes.iter().map(|s| format!("<li>{}</li>", escape(s))).collect();
    let mut main = banner(lang);
    let _ = write!(
        main,
        r#"<h1>{title}</h1>
<p class="lead">{intro}</p>
<p class="muted small">{app} <code>{client}</code> {asks}</p>
<ul class="chips" aria-label="{scopes_label}">{scopes}</ul>
"#,
        title = escape(lang.pick("Sign in", "Connexion")),
        intro = escape(lang.pick(
            "Choose who you want to be. There is no password: this twin of Trousseau exists only for development and tests.",
            "Choisissez qui vous voulez être. Pas de mot de passe : ce jumeau de Trousseau n'existe que pour le développement et les tests.",
        )),
        app = escape(lang.pick("The application", "L'application")),
        client = escape(view.client_id),
        asks = escape(lang.pick("asks for these scopes:", "demande ces scopes :")),
        scopes_label = escape(lang.pick("Requested scopes", "Scopes demandés")),
    );
    if let Some(user) = view.continue_as {
        let _ = write!(
            main,
            r#"<section aria-labelledby="continue-title">
<h2 id="continue-title">{heading}</h2>
<form method="post" action="{action}">{hidden}
<p class="hello">{avatar}<span>{signed_in_as} <strong>{name}</strong><br><span class="muted small">{email}</span></span></p>
<div class="actions"><button type="submit" name="user" value="{sub}">{continue_as} {name}</button></div>
</form>
</section>
"#,
            heading = escape(lang.pick("Already signed in", "Déjà connecté")),
            avatar = avatar(user.display_name(), false).into_string(),
            signed_in_as = escape(lang.pick("You are signed in as", "Vous êtes connecté en tant que")),
            continue_as = escape(lang.pick("Continue as", "Continuer en tant que")),
            name = escape(user.display_name()),
            email = escape(&user.email),
            sub = escape(&user.sub),
        );
    }
    let buttons: String = view.users.iter().map(|(user, disabled)| user_button(user, *disabled, lang)).collect();
    let _ = write!(
        main,
        r#"<section aria-labelledby="users-title">
<h2 id="users-title">{heading}</h2>
<form method="post" action="{action}">{hidden}
<ul class="choices" aria-labelledby="users-title">
{buttons}</ul>
</form>
</section>
<section aria-labelledby="email-title">
<h2 id="email-title">{email_heading}</h2>
<form method="post" action="{action}">{hidden}
<label for="email">{email_label}</label>
<div class="field-row"><input id="email" name="email" type="email" required autocomplete="email" placeholder="{placeholder}" aria-describedby="email-hint"><button type="submit">{email_button}</button></div>
<p id="email-hint" class="muted small">{email_hint}</p>
</form>
</section>
<hr>
<form method="post" action="{action}">{hidden}
<button type="submit" class="secondary" name="cancel" value="1">{cancel}</button>
</form>
"#,
        heading = escape(lang.pick("Demo users", "Utilisateurs de démonstration")),
        email_heading = escape(lang.pick("Or any email address", "Ou n'importe quelle adresse e-mail")),
        email_label = escape(lang.pick("Email address", "Adresse e-mail")),
        placeholder = escape(lang.pick("name@example.com", "nom@exemple.fr")),
        email_hint = escape(lang.pick(
            "Signs you in as a user with this email and no organization.",
            "Vous connecte comme un utilisateur avec cette adresse et sans organisation.",
        )),
        email_button = escape(lang.pick("Sign in with this email", "Se connecter avec cette adresse")),
        cancel = escape(lang.pick("Cancel and go back to the application", "Annuler et revenir à l'application")),
    );
    dev_page(lang, lang.pick("Sign in (development)", "Connexion (développement)"), &main, false)
}

/// An error page for a request the IdP will not send back to the application.
pub(super) fn error(error: PageError, lang: Lang) -> String {
    let main = format!(
        r#"{banner}{icon}
<h1>{title}</h1>
<p class="lead">{text}</p>
<p class="muted">{hint}</p>
"#,
        banner = banner(lang),
        icon = Icon::Alert.badge("danger").into_string(),
        title = escape(lang.pick("This sign-in request cannot be completed", "Cette demande de connexion ne peut pas aboutir")),
        text = escape(error.text(lang)),
        hint = escape(lang.pick(
            "You were not sent back to the application because the request could not be trusted or completed.",
            "Vous n'avez pas été renvoyé vers l'application car la demande n'était pas fiable ou ne pouvait pas aboutir.",
        )),
    );
    dev_page(lang, lang.pick("Sign-in error", "Erreur de connexion"), &main, false)
}

/// "You are signed out", with the reason for staying here if there is one.
pub(super) fn signed_out(note: Option<SignedOutNote>, lang: Lang) -> String {
    let note = note.map(|n| format!(r#"<p class="muted">{}</p>"#, escape(n.text(lang)))).unwrap_or_default();
    let main = format!(
        r#"{banner}{icon}
<h1>{title}</h1>
<p class="lead">{text}</p>
{note}"#,
        banner = banner(lang),
        icon = Icon::Door.badge("ok").into_string(),
        title = escape(lang.pick("You are signed out", "Vous êtes déconnecté")),
        text = escape(lang.pick(
            "Your session at the development identity provider has ended. You can close this tab.",
            "Votre session auprès du fournisseur d'identité de développement est terminée. Vous pouvez fermer cet onglet.",
        )),
    );
    dev_page(lang, lang.pick("Signed out", "Déconnexion"), &main, false)
}

/// The simulated outage page.
pub(super) fn unavailable(lang: Lang) -> String {
    let main = format!(
        "{banner}{icon}\n<h1>{title}</h1>\n<p class=\"lead\">{text}</p>\n",
        banner = banner(lang),
        icon = Icon::Pulse.badge("warn").into_string(),
        title = escape(lang.pick("The identity provider is unavailable", "Le fournisseur d'identité est indisponible")),
        text = escape(lang.pick("This is a simulated outage. Try again in a moment.", "Ceci est une panne simulée. Réessayez dans un instant.")),
    );
    dev_page(lang, lang.pick("Unavailable", "Indisponible"), &main, false)
}

/// The IdP's home: where things are, and who can sign in.
pub(super) fn index(idp: &DevIdp, lang: Lang) -> String {
    let config = &idp.config;
    let row = |label: &str, value: &str| format!(r#"<tr><th scope="row">{}</th><td class="code">{}</td></tr>"#, escape(label), escape(value));
    let none = lang.pick("(none)", "(aucun)");
    let list = |items: &[String]| if items.is_empty() { none.to_owned() } else { items.join(" ") };
    let mut rows = String::new();
    rows.push_str(&row(lang.pick("Issuer", "Émetteur"), &idp.issuer));
    rows.push_str(&row("Discovery", &idp.discovery_url()));
    rows.push_str(&row("client_id", &config.client_id));
    rows.push_str(&row("redirect_uris", &list(&config.redirect_uris)));
    rows.push_str(&row("post_logout_redirect_uris", &list(&config.post_logout_redirect_uris)));
    rows.push_str(&row("backchannel_logout_uri", config.backchannel_logout_uri.as_deref().unwrap_or(none)));
    rows.push_str(&row("scopes", &config.allowed_scopes.join(" ")));
    let mut users = String::new();
    for (user, disabled) in idp.directory.list() {
        let mut badges = String::new();
        if user.denied {
            let _ = write!(badges, r#"<span class="badge warn">{}</span> "#, escape(lang.pick("Access denied", "Accès refusé")));
        }
        if disabled {
            let _ = write!(badges, r#"<span class="badge warn">{}</span> "#, escape(lang.pick("Disabled", "Désactivé")));
        }
        if user.organizations.is_empty() {
            let _ = write!(badges, r#"<span class="badge">{}</span>"#, escape(lang.pick("No organization", "Aucune organisation")));
        }
        for org in &user.organizations {
            let _ = write!(badges, r#"<span class="badge">{} · {}</span> "#, escape(&org.name), escape(&role_label(lang, &org.role)));
        }
        let _ = write!(
            users,
            r#"<tr><th scope="row">{name}</th><td>{email}<br><span class="code muted small">{sub}</span><br>{badges}</td></tr>"#,
            name = escape(user.display_name()),
            email = escape(&user.email),
            sub = escape(&user.sub),
        );
    }
    let main = format!(
        r#"{banner}<h1>{title}</h1>
<p class="lead">{intro}</p>
<h2>{config_title}</h2>
<table>{rows}</table>
<h2>{users_title}</h2>
<table>{users}</table>
"#,
        banner = banner(lang),
        title = escape(lang.pick("Trousseau development identity provider", "Fournisseur d'identité Trousseau de développement")),
        intro = escape(lang.pick(
            "An OpenID Provider that behaves like Trousseau, with demo users instead of passwords.",
            "Un fournisseur OpenID qui se comporte comme Trousseau, avec des utilisateurs de démonstration au lieu de mots de passe.",
        )),
        config_title = escape(lang.pick("Configuration", "Configuration")),
        users_title = escape(lang.pick("Users", "Utilisateurs")),
    );
    dev_page(lang, lang.pick("Development IdP", "IdP de développement"), &main, true)
}
