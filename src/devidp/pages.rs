//! What people see at the dev IdP: the sign-in page (demo users as buttons), its error pages, the
//! signed-out page and an index. All clearly marked as a development tool, in French or English;
//! maud templates, as every page of the proxy.

use super::users::DevUser;
use super::DevIdp;
use maud::{html, Markup};

use crate::pages::{avatar, page, role_label, Frame, Icon, Lang};

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
fn dev_page(lang: Lang, title: &str, main: Markup, wide: bool) -> String {
    page(lang, title, main, Frame { wide, tag: Some(lang.pick("Development IdP", "IdP de développement")), ..Frame::default() })
}

fn banner(lang: Lang) -> Markup {
    html! {
        p.callout role="note" {
            (Icon::Alert.svg()) " "
            (lang.pick("Development identity provider — not for production", "Fournisseur d'identité de développement — ne pas utiliser en production"))
        }
    }
}

fn hidden_request(id: &str) -> Markup {
    html! { input type="hidden" name="request" value=(id); }
}

/// A user's badges: refused, disabled, their organizations and roles.
fn badges(user: &DevUser, disabled: bool, lang: Lang) -> Markup {
    html! {
        @if user.denied { span class="badge warn" { (lang.pick("Access denied", "Accès refusé")) } " " }
        @if disabled { span class="badge warn" { (lang.pick("Disabled", "Désactivé")) } " " }
        @if user.organizations.is_empty() { span.badge { (lang.pick("No organization", "Aucune organisation")) } }
        @for org in &user.organizations { span.badge { (org.name) " · " (role_label(lang, &org.role)) } " " }
    }
}

fn user_button(user: &DevUser, disabled: bool, lang: Lang) -> Markup {
    html! {
        li {
            button type="submit" name="user" value=(user.sub) {
                (avatar(user.display_name(), false))
                span.choice-main {
                    strong { (user.display_name()) }
                    span.muted { (user.email) }
                    @if !user.description.is_empty() { span class="muted small" { (user.description) } }
                    span.badges { (badges(user, disabled, lang)) }
                }
            }
        }
    }
}

/// The sign-in page: one POST form per action, all naming the pending request in `request`.
pub(super) fn sign_in(idp: &DevIdp, view: &SignInView<'_>, lang: Lang) -> String {
    let action = format!("{}/application/o/authorize/", idp.prefix);
    let hidden = hidden_request(view.request_id);
    let main = html! {
        (banner(lang))
        h1 { (lang.pick("Sign in", "Connexion")) }
        p.lead { (lang.pick(
            "Choose who you want to be. There is no password: this twin of Trousseau exists only for development and tests.",
            "Choisissez qui vous voulez être. Pas de mot de passe : ce jumeau de Trousseau n'existe que pour le développement et les tests.",
        )) }
        p class="muted small" {
            (lang.pick("The application", "L'application")) " " code { (view.client_id) } " " (lang.pick("asks for these scopes:", "demande ces scopes :"))
        }
        ul.chips aria-label=(lang.pick("Requested scopes", "Scopes demandés")) { @for scope in view.scopes { li { (scope) } } }
        @if let Some(user) = view.continue_as {
            section aria-labelledby="continue-title" {
                h2 #continue-title { (lang.pick("Already signed in", "Déjà connecté")) }
                form method="post" action=(action) {
                    (hidden)
                    p.hello {
                        (avatar(user.display_name(), false))
                        span {
                            (lang.pick("You are signed in as", "Vous êtes connecté en tant que")) " " strong { (user.display_name()) }
                            br; span class="muted small" { (user.email) }
                        }
                    }
                    div.actions { button type="submit" name="user" value=(user.sub) { (lang.pick("Continue as", "Continuer en tant que")) " " (user.display_name()) } }
                }
            }
        }
        section aria-labelledby="users-title" {
            h2 #users-title { (lang.pick("Demo users", "Utilisateurs de démonstration")) }
            form method="post" action=(action) {
                (hidden)
                ul.choices aria-labelledby="users-title" { @for (user, disabled) in &view.users { (user_button(user, *disabled, lang)) } }
            }
        }
        section aria-labelledby="email-title" {
            h2 #email-title { (lang.pick("Or any email address", "Ou n'importe quelle adresse e-mail")) }
            form method="post" action=(action) {
                (hidden)
                label for="email" { (lang.pick("Email address", "Adresse e-mail")) }
                div.field-row {
                    input #email name="email" type="email" required autocomplete="email" placeholder=(lang.pick("name@example.com", "nom@exemple.fr")) aria-describedby="email-hint";
                    button type="submit" { (lang.pick("Sign in with this email", "Se connecter avec cette adresse")) }
                }
                p #email-hint class="muted small" { (lang.pick(
                    "Signs you in as a user with this email and no organization.",
                    "Vous connecte comme un utilisateur avec cette adresse et sans organisation.",
                )) }
            }
        }
        hr;
        form method="post" action=(action) {
            (hidden)
            button type="submit" class="secondary" name="cancel" value="1" { (lang.pick("Cancel and go back to the application", "Annuler et revenir à l'application")) }
        }
    };
    dev_page(lang, lang.pick("Sign in (development)", "Connexion (développement)"), main, false)
}

/// A page with the banner, an icon, a title and its text.
fn notice(lang: Lang, icon: Markup, title: &str, text: &str, note: Option<&str>) -> Markup {
    html! {
        (banner(lang)) (icon)
        h1 { (title) }
        p.lead { (text) }
        @if let Some(note) = note { p.muted { (note) } }
    }
}

/// An error page for a request the IdP will not send back to the application.
pub(super) fn error(error: PageError, lang: Lang) -> String {
    let hint = lang.pick(
        "You were not sent back to the application because the request could not be trusted or completed.",
        "Vous n'avez pas été renvoyé vers l'application car la demande n'était pas fiable ou ne pouvait pas aboutir.",
    );
    let title = lang.pick("This sign-in request cannot be completed", "Cette demande de connexion ne peut pas aboutir");
    let main = notice(lang, Icon::Alert.badge("danger"), title, error.text(lang), Some(hint));
    dev_page(lang, lang.pick("Sign-in error", "Erreur de connexion"), main, false)
}

/// "You are signed out", with the reason for staying here if there is one.
pub(super) fn signed_out(note: Option<SignedOutNote>, lang: Lang) -> String {
    let text = lang.pick(
        "Your session at the development identity provider has ended. You can close this tab.",
        "Votre session auprès du fournisseur d'identité de développement est terminée. Vous pouvez fermer cet onglet.",
    );
    let title = lang.pick("You are signed out", "Vous êtes déconnecté");
    let main = notice(lang, Icon::Door.badge("ok"), title, text, note.map(|n| n.text(lang)));
    dev_page(lang, lang.pick("Signed out", "Déconnexion"), main, false)
}

/// The simulated outage page.
pub(super) fn unavailable(lang: Lang) -> String {
    let title = lang.pick("The identity provider is unavailable", "Le fournisseur d'identité est indisponible");
    let text = lang.pick("This is a simulated outage. Try again in a moment.", "Ceci est une panne simulée. Réessayez dans un instant.");
    dev_page(lang, lang.pick("Unavailable", "Indisponible"), notice(lang, Icon::Pulse.badge("warn"), title, text, None), false)
}

/// The IdP's home: where things are, and who can sign in.
pub(super) fn index(idp: &DevIdp, lang: Lang) -> String {
    let config = &idp.config;
    let none = lang.pick("(none)", "(aucun)");
    let list = |items: &[String]| if items.is_empty() { none.to_owned() } else { items.join(" ") };
    let rows = [
        (lang.pick("Issuer", "Émetteur"), idp.issuer.clone()),
        ("Discovery", idp.discovery_url()),
        ("client_id", config.client_id.clone()),
        ("redirect_uris", list(&config.redirect_uris)),
        ("post_logout_redirect_uris", list(&config.post_logout_redirect_uris)),
        ("backchannel_logout_uri", config.backchannel_logout_uri.clone().unwrap_or_else(|| none.to_owned())),
        ("scopes", config.allowed_scopes.join(" ")),
    ];
    let main = html! {
        (banner(lang))
        h1 { (lang.pick("Trousseau development identity provider", "Fournisseur d'identité Trousseau de développement")) }
        p.lead { (lang.pick(
            "An OpenID Provider that behaves like Trousseau, with demo users instead of passwords.",
            "Un fournisseur OpenID qui se comporte comme Trousseau, avec des utilisateurs de démonstration au lieu de mots de passe.",
        )) }
        h2 { (lang.pick("Configuration", "Configuration")) }
        table { @for (label, value) in &rows { tr { th scope="row" { (label) } td.code { (value) } } } }
        h2 { (lang.pick("Users", "Utilisateurs")) }
        table {
            @for (user, disabled) in idp.directory.list() {
                tr {
                    th scope="row" { (user.display_name()) }
                    td { (user.email) br; span class="code muted small" { (user.sub) } br; (badges(&user, disabled, lang)) }
                }
            }
        }
    };
    dev_page(lang, lang.pick("Development IdP", "IdP de développement"), main, true)
}
