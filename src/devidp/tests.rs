//! The dev IdP, driven over a real socket the way a relying party and a browser drive Trousseau.

use std::convert::Infallible;
use std::time::Duration;

use aws_lc_rs::signature::{RsaPublicKeyComponents, RSA_PKCS1_2048_8192_SHA256};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use bytes::Bytes;
use http::header::{self, HeaderMap};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};

use super::*;

const REDIRECT_URI: &str = "http://app.test/.trousseau/callback";
const POST_LOGOUT_URI: &str = "http://app.test/";
const CLIENT_ID: &str = "app-oidc";
const CLIENT_SECRET: &str = "s3cret-for-tests";
const JEAN: &str = "a1b2c3d4-e5f6-7890-abcd-ef1234567890";
const HELENE: &str = "3f6c2d1e-8a47-4b9e-9c21-5d7e8f90a1b2";
const SAM: &str = "7b1e9c4d-2f38-4a6b-8e5d-c0a9f1e2d3b4";
const OLIVER: &str = "c9d8e7f6-a5b4-4c3d-8e2f-1a0b9c8d7e6f";
const ALL: &str = "openid email profile trousseau:context trousseau:organization";

fn config() -> DevIdpConfig {
    DevIdpConfig {
        client_id: CLIENT_ID.to_owned(),
        client_secret: CLIENT_SECRET.to_owned(),
        redirect_uris: vec![REDIRECT_URI.to_owned()],
        post_logout_redirect_uris: vec![POST_LOGOUT_URI.to_owned()],
        ..DevIdpConfig::default()
    }
}

/// One HTTP answer, read whole.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    fn location(&self) -> url::Url {
        let location = self.headers[header::LOCATION].to_str().unwrap();
        url::Url::parse(location).unwrap()
    }

    fn query(&self, name: &str) -> Option<String> {
        self.location()
            .query_pairs()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.into_owned())
    }

    /// The `name=value` of the first `Set-Cookie`, for sending back.
    fn cookie(&self) -> Option<String> {
        let set = self.headers.get(header::SET_COOKIE)?.to_str().ok()?;
        Some(set.split(';').next()?.to_owned())
    }
}

/// A relying party and a browser in one: an IdP on a loopback port and a plain HTTP client.
struct Rp {
    local: LocalDevIdp,
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
}

/// What a finished sign-in hands back to the relying party.
struct SignedIn {
    code: String,
    verifier: String,
    state: String,
    sso_cookie: Option<String>,
}

impl Rp {
    async fn start(config: DevIdpConfig) -> Rp {
        let local = LocalDevIdp::start(config).await.expect("dev IdP starts");
        let base = local.idp().base.clone();
        let client = Client::builder(TokioExecutor::new()).build_http();
        Rp {
            local,
            client,
            base,
        }
    }

    fn idp(&self) -> &DevIdp {
        self.local.idp()
    }

    async fn send(&self, req: Request<Full<Bytes>>) -> Answer {
        let res = self
            .client
            .request(req)
            .await
            .expect("request reaches the IdP");
        let status = res.status();
        let headers = res.headers().clone();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        Answer {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    async fn get(&self, url: &str, headers: &[(&str, &str)]) -> Answer {
        let mut req = Request::get(url);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        self.send(req.body(Full::new(Bytes::new())).unwrap()).await
    }

    async fn post_form(
        &self,
        url: &str,
        pairs: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> Answer {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        let mut req =
            Request::post(url).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        self.send(req.body(Full::new(Bytes::from(body))).unwrap())
            .await
    }

    fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn authorize_url(&self, pairs: &[(&str, &str)]) -> String {
        let mut url = url::Url::parse(&self.endpoint("/application/o/authorize/")).unwrap();
        url.query_pairs_mut().extend_pairs(pairs);
        url.to_string()
    }

    /// The standard request of a relying party, plus `extra`.
    fn code_request(&self, scope: &str, challenge: &str, extra: &[(&str, &str)]) -> String {
        let mut pairs = vec![
            ("client_id", CLIENT_ID),
            ("response_type", "code"),
            ("scope", scope),
            ("redirect_uri", REDIRECT_URI),
            ("state", "st4te"),
            ("code_challenge", challenge),
            ("code_challenge_method", "S256"),
        ];
        pairs.extend_from_slice(extra);
        self.authorize_url(&pairs)
    }

    /// Opens the sign-in page, clicks `sub`'s button, and returns what comes back.
    async fn click_user(&self, sub: &str, scope: &str, extra: &[(&str, &str)]) -> (Answer, String) {
        let (verifier, challenge) = pkce();
        let page = self
            .get(&self.code_request(scope, &challenge, extra), &[])
            .await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        let request = form_value(&page.body, "request");
        let action = form_action(&page.body);
        assert!(page.body.contains(&format!(r#"name="user" value="{sub}""#)));
        let answer = self
            .post_form(
                &format!("http://{}{action}", self.local.addr()),
                &[("request", &request), ("user", sub)],
                &[],
            )
            .await;
        (answer, verifier)
    }

    async fn sign_in(&self, sub: &str, scope: &str, extra: &[(&str, &str)]) -> SignedIn {
        let (answer, verifier) = self.click_user(sub, scope, extra).await;
        assert_eq!(answer.status, StatusCode::FOUND, "{}", answer.body);
        assert!(answer.location().as_str().starts_with(REDIRECT_URI));
        assert_eq!(answer.query("error"), None, "{}", answer.location());
        if let Some(set_cookie) = answer.headers.get(header::SET_COOKIE) {
            // Scoped to the IdP's endpoints: never sent to a proxy or app on the same host.
            let expected = format!("Path={}/application/o/;", self.idp().path_prefix());
            let set_cookie = set_cookie.to_str().unwrap();
            assert!(
                set_cookie.contains(&expected) && set_cookie.contains("HttpOnly"),
                "{set_cookie}"
            );
        }
        SignedIn {
            code: answer.query("code").expect("a code"),
            verifier,
            state: answer.query("state").expect("the state"),
            sso_cookie: answer.cookie(),
        }
    }

    async fn token(&self, pairs: &[(&str, &str)]) -> Answer {
        self.post_form(&self.endpoint("/application/o/token/"), pairs, &[])
            .await
    }

    async fn exchange(&self, code: &str, verifier: &str) -> Answer {
        self.token(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT_URI),
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
            ("code_verifier", verifier),
        ])
        .await
    }

    async fn refresh(&self, refresh_token: &str) -> Answer {
        self.token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
        ])
        .await
    }

    /// The whole code flow for `sub`: the token response JSON.
    async fn tokens(&self, sub: &str, scope: &str) -> Value {
        let signed_in = self.sign_in(sub, scope, &[("nonce", "n0nce")]).await;
        let answer = self.exchange(&signed_in.code, &signed_in.verifier).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        answer.json()
    }

    async fn userinfo(&self, access_token: &str) -> Answer {
        let bearer = format!("Bearer {access_token}");
        self.get(
            &self.endpoint("/application/o/userinfo/"),
            &[("authorization", &bearer)],
        )
        .await
    }

    async fn introspect(&self, pairs: &[(&str, &str)], headers: &[(&str, &str)]) -> Answer {
        self.post_form(&self.endpoint("/application/o/introspect/"), pairs, headers)
            .await
    }

    /// Introspects `token` as the configured client: the answer JSON (200 expected).
    async fn introspection(&self, token: &str) -> Value {
        let answer = self
            .introspect(
                &[
                    ("token", token),
                    ("token_type_hint", "access_token"),
                    ("client_id", CLIENT_ID),
                    ("client_secret", CLIENT_SECRET),
                ],
                &[],
            )
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        assert_eq!(answer.headers[header::CACHE_CONTROL], "no-store");
        answer.json()
    }

    async fn jwks(&self) -> Value {
        self.get(
            &self.endpoint(&format!("/application/o/{}/jwks/", self.idp().config.slug)),
            &[],
        )
        .await
        .json()
    }
}

fn pkce() -> (String, String) {
    let verifier = super::web::random_token(48);
    let challenge = super::web::sha256_b64(verifier.as_bytes());
    (verifier, challenge)
}

/// The `value` of the first input or button named `name` in `html` (values are escaped HTML).
fn form_value(html: &str, name: &str) -> String {
    let marker = format!(r#"name="{name}" value=""#);
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} field"))
        + marker.len();
    let end = html[start..].find('"').unwrap() + start;
    html[start..end].to_owned()
}

fn form_action(html: &str) -> String {
    let marker = r#"<form method="post" action=""#;
    let start = html.find(marker).expect("a POST form") + marker.len();
    let end = html[start..].find('"').unwrap() + start;
    html[start..end].to_owned()
}

fn decode(jwt: &str) -> (Value, Value) {
    let mut parts = jwt.split('.');
    let header = serde_json::from_slice(&B64.decode(parts.next().unwrap()).unwrap()).unwrap();
    let claims = serde_json::from_slice(&B64.decode(parts.next().unwrap()).unwrap()).unwrap();
    (header, claims)
}

/// Verifies an RS256 JWS against a JWKS the way a relying party does: by `kid`, from `n` and `e`.
fn verifies_with(jwt: &str, jwks: &Value) -> bool {
    let (header, _) = decode(jwt);
    let Some(key) = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == header["kid"])
    else {
        return false;
    };
    assert_eq!(key["kty"], "RSA");
    assert_eq!(key["alg"], "RS256");
    assert_eq!(key["use"], "sig");
    let n = B64.decode(key["n"].as_str().unwrap()).unwrap();
    let e = B64.decode(key["e"].as_str().unwrap()).unwrap();
    let (signing_input, sig) = jwt.rsplit_once('.').unwrap();
    let sig = B64.decode(sig).unwrap();
    RsaPublicKeyComponents { n: &n, e: &e }
        .verify(&RSA_PKCS1_2048_8192_SHA256, signing_input.as_bytes(), &sig)
        .is_ok()
}

#[tokio::test]
async fn discovery_names_a_trailing_slash_issuer_and_trousseau_endpoints() {
    let rp = Rp::start(config()).await;
    let answer = rp
        .get(
            &rp.endpoint("/application/o/dev/.well-known/openid-configuration"),
            &[],
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.headers[header::CONTENT_TYPE], "application/json");
    let doc = answer.json();
    let base = &rp.base;
    assert_eq!(doc["issuer"], format!("{base}/application/o/dev/"));
    assert_eq!(rp.idp().issuer(), format!("{base}/application/o/dev/"));
    assert_eq!(
        doc["authorization_endpoint"],
        format!("{base}/application/o/authorize/")
    );
    assert_eq!(
        doc["token_endpoint"],
        format!("{base}/application/o/token/")
    );
    assert_eq!(
        doc["userinfo_endpoint"],
        format!("{base}/application/o/userinfo/")
    );
    assert_eq!(doc["jwks_uri"], format!("{base}/application/o/dev/jwks/"));
    assert_eq!(
        doc["introspection_endpoint"],
        format!("{base}/application/o/introspect/")
    );
    assert_eq!(
        doc["end_session_endpoint"],
        format!("{base}/application/o/dev/end-session/")
    );
    assert_eq!(doc["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(
        doc["token_endpoint_auth_methods_supported"],
        json!(["client_secret_post"])
    );
    assert_eq!(
        doc["id_token_signing_alg_values_supported"],
        json!(["RS256"])
    );
    assert_eq!(doc["response_types_supported"], json!(["code"]));
    assert_eq!(doc["subject_types_supported"], json!(["public"]));
    assert_eq!(doc["backchannel_logout_supported"], true);
    assert_eq!(doc["backchannel_logout_session_supported"], true);
    assert!(doc["scopes_supported"]
        .as_array()
        .unwrap()
        .contains(&json!("trousseau:organization")));
    assert!(doc["claims_supported"]
        .as_array()
        .unwrap()
        .contains(&json!("organizations")));

    let other_slug = rp
        .get(
            &rp.endpoint("/application/o/other/.well-known/openid-configuration"),
            &[],
        )
        .await;
    assert_eq!(other_slug.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_idp_can_live_under_a_path_prefix() {
    let rp = Rp::start(DevIdpConfig {
        base_url: url::Url::parse("http://127.0.0.1:0/.trousseau/dev-idp").unwrap(),
        ..config()
    })
    .await;
    assert_eq!(rp.idp().path_prefix(), "/.trousseau/dev-idp");
    assert!(rp
        .idp()
        .issuer()
        .ends_with("/.trousseau/dev-idp/application/o/dev/"));
    let doc = rp.get(&rp.idp().discovery_url(), &[]).await.json();
    assert_eq!(doc["issuer"], rp.idp().issuer());
    let outside = rp
        .get(
            &format!(
                "http://{}/application/o/dev/.well-known/openid-configuration",
                rp.local.addr()
            ),
            &[],
        )
        .await;
    assert_eq!(outside.status, StatusCode::NOT_FOUND);
    // The sign-in page posts back under the prefix, and the whole flow works there.
    let tokens = rp.tokens(JEAN, ALL).await;
    assert!(tokens["id_token"].is_string());
}

#[tokio::test]
async fn authorization_without_pkce_is_sent_back_with_invalid_request() {
    let rp = Rp::start(config()).await;
    let without = rp
        .get(
            &rp.authorize_url(&[
                ("client_id", CLIENT_ID),
                ("response_type", "code"),
                ("scope", "openid"),
                ("redirect_uri", REDIRECT_URI),
                ("state", "abc"),
            ]),
            &[],
        )
        .await;
    assert_eq!(without.status, StatusCode::FOUND);
    assert_eq!(without.query("error").as_deref(), Some("invalid_request"));
    assert!(without
        .query("error_description")
        .unwrap()
        .contains("PKCE is mandatory"));
    assert_eq!(without.query("state").as_deref(), Some("abc"));

    let (_, challenge) = pkce();
    let plain = rp
        .get(
            &rp.code_request("openid", &challenge, &[])
                .replace("S256", "plain"),
            &[],
        )
        .await;
    assert_eq!(plain.query("error").as_deref(), Some("invalid_request"));
    assert!(plain
        .query("error_description")
        .unwrap()
        .contains("PKCE is mandatory"));
}

#[tokio::test]
async fn untrusted_client_or_redirect_uri_gets_a_page_never_a_redirect() {
    let rp = Rp::start(config()).await;
    let (_, challenge) = pkce();
    let unknown_client = rp
        .get(
            &rp.code_request("openid", &challenge, &[])
                .replace(CLIENT_ID, "intruder"),
            &[],
        )
        .await;
    assert_eq!(unknown_client.status, StatusCode::BAD_REQUEST);
    assert!(unknown_client.headers.get(header::LOCATION).is_none());
    assert!(unknown_client.body.contains("not registered"));

    let evil = rp.authorize_url(&[
        ("client_id", CLIENT_ID),
        ("response_type", "code"),
        ("scope", "openid"),
        ("redirect_uri", "http://evil.test/callback"),
        ("code_challenge", &challenge),
        ("code_challenge_method", "S256"),
    ]);
    let answer = rp
        .get(&evil, &[("accept-language", "fr-FR,fr;q=0.9")])
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(answer.headers.get(header::LOCATION).is_none());
    assert!(answer.body.contains(r#"lang="fr""#));
    assert!(answer.body.contains("redirect_uri"));

    // A registered URI with something appended is not the registered URI.
    let longer = format!("{REDIRECT_URI}/extra");
    let answer = rp
        .get(
            &rp.authorize_url(&[
                ("client_id", CLIENT_ID),
                ("response_type", "code"),
                ("scope", "openid"),
                ("redirect_uri", &longer),
                ("code_challenge", &challenge),
                ("code_challenge_method", "S256"),
            ]),
            &[],
        )
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(answer.headers.get(header::LOCATION).is_none());
}

#[tokio::test]
async fn scopes_must_include_openid_and_stay_within_the_allowed_ones() {
    let rp = Rp::start(DevIdpConfig {
        allowed_scopes: vec!["openid".into(), "email".into(), "profile".into()],
        ..config()
    })
    .await;
    let (_, challenge) = pkce();
    let tier3 = rp.get(&rp.code_request(ALL, &challenge, &[]), &[]).await;
    assert_eq!(tier3.status, StatusCode::FOUND);
    assert_eq!(tier3.query("error").as_deref(), Some("invalid_scope"));
    assert_eq!(tier3.query("state").as_deref(), Some("st4te"));
    let no_openid = rp
        .get(&rp.code_request("email profile", &challenge, &[]), &[])
        .await;
    assert_eq!(no_openid.query("error").as_deref(), Some("invalid_scope"));
}

#[tokio::test]
async fn repeated_authorization_parameters_are_refused() {
    let rp = Rp::start(config()).await;
    let (_, challenge) = pkce();
    let url = format!(
        "{}&scope=openid",
        rp.code_request("openid email", &challenge, &[])
    );
    let answer = rp.get(&url, &[]).await;
    assert_eq!(answer.query("error").as_deref(), Some("invalid_request"));
    let url = format!(
        "{}&client_id={CLIENT_ID}",
        rp.code_request("openid", &challenge, &[])
    );
    assert_eq!(rp.get(&url, &[]).await.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn code_flow_returns_an_id_token_that_verifies_against_the_jwks() {
    let rp = Rp::start(config()).await;
    let signed_in = rp.sign_in(JEAN, ALL, &[("nonce", "n0nce")]).await;
    assert_eq!(signed_in.state, "st4te");
    let answer = rp.exchange(&signed_in.code, &signed_in.verifier).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.headers[header::CACHE_CONTROL], "no-store");
    assert_eq!(answer.headers[header::CONTENT_TYPE], "application/json");
    let tokens = answer.json();
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["expires_in"], 300);
    assert_eq!(tokens["scope"], ALL);
    assert!(tokens["refresh_token"].is_string());
    let access = tokens["access_token"].as_str().unwrap();
    assert!(!access.contains('.'), "access tokens are opaque, not JWTs");

    let id_token = tokens["id_token"].as_str().unwrap();
    let jwks = rp.jwks().await;
    assert!(verifies_with(id_token, &jwks));
    let (header, claims) = decode(id_token);
    assert_eq!(header["alg"], "RS256");
    assert_eq!(header["kid"], jwks["keys"][0]["kid"]);
    assert_eq!(claims["iss"], rp.idp().issuer());
    assert_eq!(claims["aud"], CLIENT_ID);
    assert_eq!(claims["azp"], CLIENT_ID);
    assert_eq!(claims["sub"], JEAN);
    assert_eq!(claims["nonce"], "n0nce");
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        300
    );
    assert!(claims["auth_time"].as_i64().unwrap() <= claims["iat"].as_i64().unwrap());
    assert_eq!(claims["sid"].as_str().unwrap().len(), 64);
    assert_eq!(claims["email"], "jean.dupont@hotel.com");
    assert_eq!(claims["email_verified"], true);
    assert_eq!(claims["name"], "Jean Dupont");
    assert_eq!(claims["given_name"], "Jean");
    assert_eq!(claims["family_name"], "Dupont");
    assert_eq!(claims["locale"], "fr-FR");
    assert!(claims["trousseau_user_id"].is_string());
    assert_eq!(
        claims["organizations"],
        json!([
            {"id": "018cc251-f400-78cc-8e0c-000fe440ee40", "name": "Hotel Le Grand Paris", "slug": "hotel-le-grand-paris", "role": "admin"},
            {"id": "018dd362-a511-89dd-9f1d-111ff551ff51", "name": "Hotel Riviera Nice", "slug": "hotel-riviera-nice", "role": "member"}
        ])
    );
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, access.as_bytes());
    assert_eq!(claims["at_hash"], B64.encode(&digest.as_ref()[..16]));

    // A token signed with another key does not verify against this JWKS.
    let other = Rp::start(config()).await;
    assert!(!verifies_with(&other.idp().sign_jwt(&claims, "JWT"), &jwks));
    assert_eq!(rp.idp().stats().code_grants, 1);
}

#[tokio::test]
async fn a_code_works_once_and_its_replay_revokes_what_it_gave() {
    let rp = Rp::start(config()).await;
    let signed_in = rp.sign_in(JEAN, "openid email", &[]).await;
    let first = rp.exchange(&signed_in.code, &signed_in.verifier).await;
    assert_eq!(first.status, StatusCode::OK);
    let second = rp.exchange(&signed_in.code, &signed_in.verifier).await;
    assert_eq!(second.status, StatusCode::BAD_REQUEST);
    assert_eq!(second.json()["error"], "invalid_grant");
    let tokens = first.json();
    let refresh = rp.refresh(tokens["refresh_token"].as_str().unwrap()).await;
    assert_eq!(refresh.json()["error"], "invalid_grant");
    assert_eq!(
        rp.userinfo(tokens["access_token"].as_str().unwrap())
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_wrong_or_missing_code_verifier_is_invalid_grant() {
    let rp = Rp::start(config()).await;
    let signed_in = rp.sign_in(JEAN, "openid", &[]).await;
    let (other_verifier, _) = pkce();
    let wrong = rp.exchange(&signed_in.code, &other_verifier).await;
    assert_eq!(wrong.status, StatusCode::BAD_REQUEST);
    assert_eq!(wrong.json()["error"], "invalid_grant");
    // The failed attempt burned the code.
    let right = rp.exchange(&signed_in.code, &signed_in.verifier).await;
    assert_eq!(right.json()["error"], "invalid_grant");

    let signed_in = rp.sign_in(JEAN, "openid", &[]).await;
    let missing = rp
        .token(&[
            ("grant_type", "authorization_code"),
            ("code", &signed_in.code),
            ("redirect_uri", REDIRECT_URI),
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
        ])
        .await;
    assert_eq!(missing.json()["error"], "invalid_grant");
}

#[tokio::test]
async fn an_expired_code_is_invalid_grant() {
    let rp = Rp::start(DevIdpConfig {
        code_ttl: Duration::ZERO,
        ..config()
    })
    .await;
    let signed_in = rp.sign_in(JEAN, "openid", &[]).await;
    let answer = rp.exchange(&signed_in.code, &signed_in.verifier).await;
    assert_eq!(answer.json()["error"], "invalid_grant");
}

#[tokio::test]
async fn the_client_authenticates_only_with_its_secret_in_the_body() {
    let rp = Rp::start(config()).await;
    let signed_in = rp.sign_in(JEAN, "openid", &[]).await;
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"))
    );
    let answer = rp
        .post_form(
            &rp.endpoint("/application/o/token/"),
            &[
                ("grant_type", "authorization_code"),
                ("code", &signed_in.code),
                ("redirect_uri", REDIRECT_URI),
                ("code_verifier", &signed_in.verifier),
            ],
            &[("authorization", &basic)],
        )
        .await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.json()["error"], "invalid_client");

    let wrong_secret = rp
        .token(&[
            ("grant_type", "authorization_code"),
            ("code", &signed_in.code),
            ("redirect_uri", REDIRECT_URI),
            ("client_id", CLIENT_ID),
            ("client_secret", "guess"),
            ("code_verifier", &signed_in.verifier),
        ])
        .await;
    assert_eq!(wrong_secret.status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong_secret.json()["error"], "invalid_client");

    let repeated = rp
        .token(&[
            ("grant_type", "authorization_code"),
            ("code", &signed_in.code),
            ("code", "other"),
            ("redirect_uri", REDIRECT_URI),
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
            ("code_verifier", &signed_in.verifier),
        ])
        .await;
    assert_eq!(repeated.status, StatusCode::BAD_REQUEST);
    assert_eq!(repeated.json()["error"], "invalid_request");

    // None of that consumed the code.
    let ok = rp.exchange(&signed_in.code, &signed_in.verifier).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
}

#[tokio::test]
async fn refresh_rotates_and_a_replayed_refresh_token_revokes_the_grant() {
    let rp = Rp::start(config()).await;
    let first = rp.tokens(JEAN, ALL).await;
    let (_, first_claims) = decode(first["id_token"].as_str().unwrap());
    let r1 = first["refresh_token"].as_str().unwrap();

    let second = rp.refresh(r1).await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.body);
    let second = second.json();
    let r2 = second["refresh_token"].as_str().unwrap();
    assert_ne!(r1, r2, "refresh tokens rotate");
    let (_, claims) = decode(second["id_token"].as_str().unwrap());
    assert!(verifies_with(
        second["id_token"].as_str().unwrap(),
        &rp.jwks().await
    ));
    assert_eq!(claims["sub"], first_claims["sub"]);
    assert_eq!(claims["sid"], first_claims["sid"]);
    assert_eq!(claims["auth_time"], first_claims["auth_time"]);
    assert!(
        claims.get("nonce").is_none(),
        "refreshed ID tokens carry no nonce"
    );
    assert_eq!(second["scope"], ALL);

    // The old one again: theft. Refused, and the new one dies with it.
    let replay = rp.refresh(r1).await;
    assert_eq!(replay.status, StatusCode::BAD_REQUEST);
    assert_eq!(replay.json()["error"], "invalid_grant");
    assert_eq!(rp.refresh(r2).await.json()["error"], "invalid_grant");
    assert_eq!(
        rp.userinfo(second["access_token"].as_str().unwrap())
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    let stats = rp.idp().stats();
    assert_eq!(stats.refresh_grants_ok, 1);
    assert_eq!(stats.refresh_reuse_detected, 1);
    assert_eq!(stats.refresh_grants_failed, 2);
}

#[tokio::test]
async fn concurrent_refreshes_with_one_token_succeed_only_once() {
    let rp = Rp::start(config()).await;
    let tokens = rp.tokens(JEAN, "openid").await;
    let r1 = tokens["refresh_token"].as_str().unwrap();
    rp.idp()
        .set_token_endpoint_delay(Duration::from_millis(100));
    let (a, b) = tokio::join!(rp.refresh(r1), rp.refresh(r1));
    let mut statuses = [a.status, b.status];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::BAD_REQUEST]);
    assert_eq!(rp.idp().stats().refresh_reuse_detected, 1);
}

#[tokio::test]
async fn without_rotation_a_refresh_token_keeps_working() {
    let rp = Rp::start(DevIdpConfig {
        rotate_refresh_tokens: false,
        ..config()
    })
    .await;
    let tokens = rp.tokens(JEAN, "openid").await;
    let r1 = tokens["refresh_token"].as_str().unwrap();
    for _ in 0..3 {
        let answer = rp.refresh(r1).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.json()["refresh_token"], r1);
    }
}

#[tokio::test]
async fn an_expired_refresh_token_is_invalid_grant() {
    let rp = Rp::start(DevIdpConfig {
        refresh_token_ttl: Duration::ZERO,
        ..config()
    })
    .await;
    let tokens = rp.tokens(JEAN, "openid").await;
    let answer = rp.refresh(tokens["refresh_token"].as_str().unwrap()).await;
    assert_eq!(answer.json()["error"], "invalid_grant");
    assert_eq!(rp.idp().stats().refresh_reuse_detected, 0);
}

#[tokio::test]
async fn a_disabled_user_can_neither_refresh_nor_read_userinfo_nor_sign_in() {
    let rp = Rp::start(config()).await;
    let tokens = rp.tokens(HELENE, ALL).await;
    rp.idp().set_user_disabled(HELENE, true);
    let refresh = rp.refresh(tokens["refresh_token"].as_str().unwrap()).await;
    assert_eq!(refresh.status, StatusCode::BAD_REQUEST);
    assert_eq!(refresh.json()["error"], "invalid_grant");
    let userinfo = rp.userinfo(tokens["access_token"].as_str().unwrap()).await;
    assert_eq!(userinfo.status, StatusCode::UNAUTHORIZED);
    let (answer, _) = rp.click_user(HELENE, "openid", &[]).await;
    assert_eq!(answer.query("error").as_deref(), Some("access_denied"));

    // Back in service: the untouched grant works again.
    rp.idp().set_user_disabled(HELENE, false);
    let refresh = rp.refresh(tokens["refresh_token"].as_str().unwrap()).await;
    assert_eq!(refresh.status, StatusCode::OK);
}

#[tokio::test]
async fn a_denied_user_is_sent_back_with_access_denied() {
    let rp = Rp::start(config()).await;
    let (answer, _) = rp.click_user(OLIVER, "openid", &[]).await;
    assert_eq!(answer.status, StatusCode::FOUND);
    assert!(answer.location().as_str().starts_with(REDIRECT_URI));
    assert_eq!(answer.query("error").as_deref(), Some("access_denied"));
    assert!(answer.query("error_description").is_some());
    assert_eq!(answer.query("state").as_deref(), Some("st4te"));
    assert_eq!(answer.query("code"), None);
}

#[tokio::test]
async fn userinfo_answers_the_granted_claims_for_a_live_access_token() {
    let rp = Rp::start(config()).await;
    let tokens = rp.tokens(JEAN, ALL).await;
    let answer = rp.userinfo(tokens["access_token"].as_str().unwrap()).await;
    assert_eq!(answer.status, StatusCode::OK);
    let info = answer.json();
    let (_, claims) = decode(tokens["id_token"].as_str().unwrap());
    for claim in [
        "sub",
        "email",
        "email_verified",
        "name",
        "given_name",
        "family_name",
        "picture",
        "trousseau_user_id",
        "locale",
        "organizations",
    ] {
        assert_eq!(info[claim], claims[claim], "{claim}");
    }

    let bogus = rp.userinfo("not-a-token").await;
    assert_eq!(bogus.status, StatusCode::UNAUTHORIZED);
    let challenge = bogus.headers[header::WWW_AUTHENTICATE].to_str().unwrap();
    assert!(challenge.starts_with("Bearer"));
    assert!(challenge.contains(r#"error="invalid_token""#));
    assert_eq!(rp.idp().stats().userinfo_calls, 2);
}

#[tokio::test]
async fn introspection_says_whose_a_live_token_is_and_nothing_else() {
    let rp = Rp::start(config()).await;
    let tokens = rp.tokens(JEAN, ALL).await;
    let access = tokens["access_token"].as_str().unwrap();
    let info = rp.introspection(access).await;
    assert_eq!(info["active"], true);
    assert_eq!(info["client_id"], CLIENT_ID);
    assert_eq!(info["aud"], CLIENT_ID);
    assert_eq!(info["sub"], JEAN);
    assert_eq!(info["iss"], rp.idp().issuer());
    assert_eq!(info["scope"], ALL);
    assert_eq!(info["token_type"], "Bearer");
    let exp = info["exp"].as_i64().unwrap();
    assert!((now_unix() + 290..=now_unix() + 300).contains(&exp), "{exp}");

    // A refresh token is live too (no token_type: it is not a bearer access token).
    let refresh = rp
        .introspection(tokens["refresh_token"].as_str().unwrap())
        .await;
    assert_eq!(refresh["active"], true);
    assert_eq!(refresh["client_id"], CLIENT_ID);
    assert!(refresh.get("token_type").is_none());

    // Unknown, and a disabled user's: just inactive, nothing more.
    assert_eq!(rp.introspection("not-a-token").await, json!({ "active": false }));
    rp.idp().set_user_disabled(JEAN, true);
    assert_eq!(rp.introspection(access).await, json!({ "active": false }));
    rp.idp().set_user_disabled(JEAN, false);
    assert_eq!(rp.introspection(access).await["active"], true);

    // Rotated away and revoked by reuse: inactive.
    let r1 = tokens["refresh_token"].as_str().unwrap();
    assert_eq!(rp.refresh(r1).await.status, StatusCode::OK);
    assert_eq!(rp.introspection(r1).await, json!({ "active": false }));
    let _ = rp.refresh(r1).await;
    assert_eq!(rp.introspection(access).await, json!({ "active": false }));
    assert_eq!(rp.idp().stats().introspection_calls, 7);
}

#[tokio::test]
async fn an_expired_access_token_is_inactive_at_introspection() {
    let rp = Rp::start(DevIdpConfig {
        access_token_ttl: Duration::ZERO,
        ..config()
    })
    .await;
    let tokens = rp.tokens(JEAN, ALL).await;
    let info = rp
        .introspection(tokens["access_token"].as_str().unwrap())
        .await;
    assert_eq!(info, json!({ "active": false }));
}

#[tokio::test]
async fn a_foreign_token_passes_userinfo_but_introspects_as_another_clients() {
    let rp = Rp::start(config()).await;
    let foreign = rp.idp().issue_foreign_access_token(JEAN);
    let userinfo = rp.userinfo(&foreign).await;
    assert_eq!(userinfo.status, StatusCode::OK, "{}", userinfo.body);
    assert_eq!(userinfo.json()["sub"], JEAN);
    let info = rp.introspection(&foreign).await;
    assert_eq!(info["active"], true);
    assert_eq!(info["client_id"], FOREIGN_CLIENT_ID);
    assert_eq!(info["aud"], FOREIGN_CLIENT_ID);
    assert_ne!(info["client_id"], CLIENT_ID);
    assert_eq!(info["sub"], JEAN);
}

#[tokio::test]
async fn introspection_authenticates_the_client_like_the_token_endpoint() {
    let rp = Rp::start(config()).await;
    let tokens = rp.tokens(JEAN, "openid").await;
    let access = tokens["access_token"].as_str().unwrap();
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"))
    );
    let refusals = [
        rp.introspect(&[("token", access)], &[("authorization", &basic)])
            .await,
        rp.introspect(
            &[("token", access), ("client_id", CLIENT_ID), ("client_secret", "guess")],
            &[],
        )
        .await,
        rp.introspect(
            &[("token", access), ("client_id", FOREIGN_CLIENT_ID), ("client_secret", CLIENT_SECRET)],
            &[],
        )
        .await,
        rp.introspect(&[("token", access)], &[]).await,
    ];
    for refusal in refusals {
        assert_eq!(refusal.status, StatusCode::UNAUTHORIZED, "{}", refusal.body);
        assert_eq!(refusal.json()["error"], "invalid_client");
        assert!(!refusal.body.contains(access));
    }
    let no_token = rp
        .introspect(&[("client_id", CLIENT_ID), ("client_secret", CLIENT_SECRET)], &[])
        .await;
    assert_eq!(no_token.status, StatusCode::BAD_REQUEST);
    assert_eq!(no_token.json()["error"], "invalid_request");
    let repeated = rp
        .introspect(
            &[("token", access), ("token", "x"), ("client_id", CLIENT_ID), ("client_secret", CLIENT_SECRET)],
            &[],
        )
        .await;
    assert_eq!(repeated.status, StatusCode::BAD_REQUEST);
    let get = rp.get(&rp.endpoint("/application/o/introspect/"), &[]).await;
    assert_eq!(get.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(get.headers[header::ALLOW], "POST");
    assert_eq!(rp.idp().stats().introspection_calls, 6);
    // Still live after all that.
    assert_eq!(rp.introspection(access).await["active"], true);
}

#[tokio::test]
async fn an_expired_access_token_is_refused_by_userinfo() {
    let rp = Rp::start(DevIdpConfig {
        access_token_ttl: Duration::ZERO,
        ..config()
    })
    .await;
    let tokens = rp.tokens(JEAN, ALL).await;
    assert_eq!(
        rp.userinfo(tokens["access_token"].as_str().unwrap())
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn claims_of_an_ungranted_tier_are_absent() {
    let rp = Rp::start(config()).await;
    let tokens = rp.tokens(JEAN, "openid email profile").await;
    let (_, claims) = decode(tokens["id_token"].as_str().unwrap());
    assert_eq!(claims["email"], "jean.dupont@hotel.com");
    assert_eq!(claims["name"], "Jean Dupont");
    for absent in ["trousseau_user_id", "locale", "organizations"] {
        assert!(claims.get(absent).is_none(), "{absent} must be absent");
    }
    let info = rp
        .userinfo(tokens["access_token"].as_str().unwrap())
        .await
        .json();
    assert!(info.get("organizations").is_none());

    let tokens = rp.tokens(SAM, "openid").await;
    let (_, claims) = decode(tokens["id_token"].as_str().unwrap());
    for absent in [
        "email",
        "email_verified",
        "name",
        "picture",
        "locale",
        "organizations",
    ] {
        assert!(claims.get(absent).is_none(), "{absent} must be absent");
    }
    // A user without a picture gets Trousseau's empty string when profile is granted.
    let tokens = rp
        .tokens(SAM, "openid profile trousseau:organization")
        .await;
    let (_, claims) = decode(tokens["id_token"].as_str().unwrap());
    assert_eq!(claims["picture"], "");
    assert_eq!(claims["organizations"], json!([]));
}

#[tokio::test]
async fn organization_changes_reach_the_next_refreshed_id_token() {
    let rp = Rp::start(config()).await;
    let tokens = rp.tokens(SAM, ALL).await;
    let new_org = Organization {
        id: "0192aaaa-bbbb-7ccc-8ddd-eeeeffff0000".into(),
        name: "Hôtel Côte d'Azur".into(),
        slug: "hotel-cote-d-azur".into(),
        role: "admin".into(),
    };
    rp.idp().set_user_organizations(SAM, vec![new_org.clone()]);
    let refreshed = rp
        .refresh(tokens["refresh_token"].as_str().unwrap())
        .await
        .json();
    let (_, claims) = decode(refreshed["id_token"].as_str().unwrap());
    assert_eq!(claims["organizations"], json!([new_org]));
}

#[tokio::test]
async fn the_sign_in_page_speaks_french_and_warns_it_is_for_development() {
    let rp = Rp::start(config()).await;
    let (_, challenge) = pkce();
    let page = rp
        .get(
            &rp.code_request(ALL, &challenge, &[]),
            &[("accept-language", "fr-CA,fr;q=0.8,en;q=0.5")],
        )
        .await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(page.body.contains(r#"<html lang="fr">"#));
    assert!(page.body.contains("ne pas utiliser en production"));
    assert!(page.body.contains("Hélène Lefèvre"));
    assert!(page.body.contains("Accès refusé"));
    assert!(page.body.contains(r#"<label for="email">"#));
    let english = rp.get(&rp.code_request(ALL, &challenge, &[]), &[]).await;
    assert!(english.body.contains("not for production"));
}

#[tokio::test]
async fn anyone_can_sign_in_by_email_and_gets_no_organization() {
    let rp = Rp::start(config()).await;
    let (verifier, challenge) = pkce();
    let page = rp.get(&rp.code_request(ALL, &challenge, &[]), &[]).await;
    let request = form_value(&page.body, "request");
    let answer = rp
        .post_form(
            &rp.endpoint("/application/o/authorize/"),
            &[("request", &request), ("email", "marie.curie@example.fr")],
            &[],
        )
        .await;
    let code = answer.query("code").expect("a code");
    let tokens = rp.exchange(&code, &verifier).await.json();
    let (_, claims) = decode(tokens["id_token"].as_str().unwrap());
    assert_eq!(claims["email"], "marie.curie@example.fr");
    assert_eq!(claims["name"], "Marie Curie");
    assert_eq!(claims["organizations"], json!([]));
    assert_eq!(claims["sub"].as_str().unwrap().len(), 36);
}

#[tokio::test]
async fn a_sign_in_request_is_used_once() {
    let rp = Rp::start(config()).await;
    let (_, challenge) = pkce();
    let page = rp
        .get(&rp.code_request("openid", &challenge, &[]), &[])
        .await;
    let request = form_value(&page.body, "request");
    let url = rp.endpoint("/application/o/authorize/");
    let first = rp
        .post_form(&url, &[("request", &request), ("user", JEAN)], &[])
        .await;
    assert_eq!(first.status, StatusCode::FOUND);
    let again = rp
        .post_form(&url, &[("request", &request), ("user", JEAN)], &[])
        .await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST);
    let forged = rp
        .post_form(&url, &[("request", "made-up"), ("user", JEAN)], &[])
        .await;
    assert_eq!(forged.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn prompt_none_needs_an_idp_session_and_reuses_it() {
    let rp = Rp::start(config()).await;
    let (_, challenge) = pkce();
    let silent = rp
        .get(
            &rp.code_request("openid", &challenge, &[("prompt", "none")]),
            &[],
        )
        .await;
    assert_eq!(silent.query("error").as_deref(), Some("login_required"));

    let signed_in = rp.sign_in(JEAN, "openid", &[]).await;
    let first = rp
        .exchange(&signed_in.code, &signed_in.verifier)
        .await
        .json();
    let cookie = signed_in.sso_cookie.expect("an SSO cookie");
    assert!(cookie.starts_with("trousseau_dev_idp_sso="));

    let (verifier, challenge) = pkce();
    let silent = rp
        .get(
            &rp.code_request("openid", &challenge, &[("prompt", "none")]),
            &[("cookie", &cookie)],
        )
        .await;
    let code = silent.query("code").expect("a code without any page");
    let second = rp.exchange(&code, &verifier).await.json();
    let (_, a) = decode(first["id_token"].as_str().unwrap());
    let (_, b) = decode(second["id_token"].as_str().unwrap());
    assert_eq!(a["sid"], b["sid"], "same IdP session");
    assert_eq!(a["auth_time"], b["auth_time"]);

    // With a session, the page offers to continue as that user.
    let (_, challenge) = pkce();
    let page = rp
        .get(
            &rp.code_request("openid", &challenge, &[]),
            &[("cookie", &cookie)],
        )
        .await;
    assert!(page.body.contains("Continue as"));
}

#[tokio::test]
async fn end_session_redirects_to_a_registered_uri_and_logs_the_client_out_by_back_channel() {
    let (receiver, mut tokens_rx) = logout_receiver().await;
    let rp = Rp::start(DevIdpConfig {
        backchannel_logout_uri: Some(format!("http://{receiver}/.trousseau/backchannel-logout")),
        ..config()
    })
    .await;
    let signed_in = rp.sign_in(JEAN, ALL, &[]).await;
    let tokens = rp
        .exchange(&signed_in.code, &signed_in.verifier)
        .await
        .json();
    let id_token = tokens["id_token"].as_str().unwrap();
    let (_, id_claims) = decode(id_token);

    let mut url = url::Url::parse(&rp.endpoint("/application/o/dev/end-session/")).unwrap();
    url.query_pairs_mut()
        .append_pair("id_token_hint", id_token)
        .append_pair("post_logout_redirect_uri", POST_LOGOUT_URI)
        .append_pair("state", "bye");
    let answer = rp
        .get(
            url.as_str(),
            &[("cookie", signed_in.sso_cookie.as_deref().unwrap())],
        )
        .await;
    assert_eq!(answer.status, StatusCode::FOUND);
    assert!(answer.location().as_str().starts_with(POST_LOGOUT_URI));
    assert_eq!(answer.query("state").as_deref(), Some("bye"));
    assert!(answer.headers[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));

    // The logout token was delivered before the redirect.
    let logout_token = tokens_rx.try_recv().expect("a logout token was POSTed");
    assert!(verifies_with(&logout_token, &rp.jwks().await));
    let (header, claims) = decode(&logout_token);
    assert_eq!(header["typ"], "logout+jwt");
    assert_eq!(claims["iss"], rp.idp().issuer());
    assert_eq!(claims["aud"], CLIENT_ID);
    assert_eq!(claims["sub"], JEAN);
    assert_eq!(claims["sid"], id_claims["sid"]);
    assert!(claims["jti"].as_str().is_some_and(|j| !j.is_empty()));
    assert!(claims["exp"].as_i64().unwrap() > claims["iat"].as_i64().unwrap());
    assert_eq!(
        claims["events"],
        json!({"http://schemas.openid.net/event/backchannel-logout": {}})
    );
    assert!(claims.get("nonce").is_none());
    let stats = rp.idp().stats();
    assert_eq!((stats.end_sessions, stats.backchannel_sent), (1, 1));

    // The session's grants are gone.
    assert_eq!(
        rp.refresh(tokens["refresh_token"].as_str().unwrap())
            .await
            .json()["error"],
        "invalid_grant"
    );
    // And the browser has no IdP session left.
    let (_, challenge) = pkce();
    let silent = rp
        .get(
            &rp.code_request("openid", &challenge, &[("prompt", "none")]),
            &[("cookie", signed_in.sso_cookie.as_deref().unwrap())],
        )
        .await;
    assert_eq!(silent.query("error").as_deref(), Some("login_required"));
}

#[tokio::test]
async fn end_session_never_redirects_to_an_unregistered_uri() {
    let rp = Rp::start(config()).await;
    let mut url = url::Url::parse(&rp.endpoint("/application/o/dev/end-session/")).unwrap();
    url.query_pairs_mut()
        .append_pair("client_id", CLIENT_ID)
        .append_pair("post_logout_redirect_uri", "http://evil.test/");
    let answer = rp.get(url.as_str(), &[]).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(answer.headers.get(header::LOCATION).is_none());
    assert!(answer.body.contains("signed out"));

    // A forged hint does not identify the client either.
    let forger = Rp::start(config()).await;
    let forged = forger.idp().sign_jwt(
        &json!({"iss": rp.idp().issuer(), "aud": CLIENT_ID, "sub": JEAN}),
        "JWT",
    );
    let mut url = url::Url::parse(&rp.endpoint("/application/o/dev/end-session/")).unwrap();
    url.query_pairs_mut()
        .append_pair("id_token_hint", &forged)
        .append_pair("post_logout_redirect_uri", POST_LOGOUT_URI);
    let answer = rp.get(url.as_str(), &[]).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(answer.headers.get(header::LOCATION).is_none());

    // client_id alone identifies the client: registered URI, redirect.
    let mut url = url::Url::parse(&rp.endpoint("/application/o/dev/end-session/")).unwrap();
    url.query_pairs_mut()
        .append_pair("client_id", CLIENT_ID)
        .append_pair("post_logout_redirect_uri", POST_LOGOUT_URI);
    assert_eq!(rp.get(url.as_str(), &[]).await.status, StatusCode::FOUND);
}

#[tokio::test]
async fn logout_tokens_from_the_helper_verify_and_name_the_session() {
    let rp = Rp::start(config()).await;
    let token = rp.idp().logout_token(Some(JEAN), Some("abc"));
    assert!(verifies_with(&token, &rp.jwks().await));
    let (header, claims) = decode(&token);
    assert_eq!(header["typ"], "logout+jwt");
    assert_eq!(claims["sid"], "abc");
    assert_eq!(claims["sub"], JEAN);
    let only_sid = rp.idp().logout_token(None, Some("abc"));
    assert!(decode(&only_sid).1.get("sub").is_none());
}

#[tokio::test]
async fn an_outage_answers_503_everywhere_until_it_ends() {
    let rp = Rp::start(config()).await;
    rp.idp().set_unavailable(true);
    let discovery = rp.get(&rp.idp().discovery_url(), &[]).await;
    assert_eq!(discovery.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(discovery.headers.contains_key(header::RETRY_AFTER));
    let token = rp.refresh("anything").await;
    assert_eq!(token.status, StatusCode::SERVICE_UNAVAILABLE);
    let (_, challenge) = pkce();
    let page = rp
        .get(&rp.code_request("openid", &challenge, &[]), &[])
        .await;
    assert_eq!(page.status, StatusCode::SERVICE_UNAVAILABLE);
    rp.idp().set_unavailable(false);
    assert_eq!(
        rp.get(&rp.idp().discovery_url(), &[]).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn the_token_endpoint_can_be_slowed_down() {
    let rp = Rp::start(config()).await;
    rp.idp()
        .set_token_endpoint_delay(Duration::from_millis(200));
    let started = std::time::Instant::now();
    let _ = rp.refresh("anything").await;
    assert!(started.elapsed() >= Duration::from_millis(200));
}

#[tokio::test]
async fn wrong_methods_and_unknown_paths_get_clear_answers() {
    let rp = Rp::start(config()).await;
    let get_token = rp.get(&rp.endpoint("/application/o/token/"), &[]).await;
    assert_eq!(get_token.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(get_token.headers[header::ALLOW], "POST");
    assert_eq!(
        rp.get(&rp.endpoint("/nope"), &[]).await.status,
        StatusCode::NOT_FOUND
    );
    let index = rp.get(&rp.endpoint("/"), &[]).await;
    assert_eq!(index.status, StatusCode::OK);
    assert!(index.body.contains(&rp.idp().issuer()));
    let not_form = rp
        .send(
            Request::post(rp.endpoint("/application/o/token/"))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from_static(b"{}")))
                .unwrap(),
        )
        .await;
    assert_eq!(not_form.status, StatusCode::BAD_REQUEST);
    assert_eq!(not_form.json()["error"], "invalid_request");
}

#[test]
fn default_users_follow_trousseau_documentation() {
    let users = default_users();
    let jean = users.iter().find(|u| u.sub == JEAN).unwrap();
    assert_eq!(jean.email, "jean.dupont@hotel.com");
    assert_eq!(jean.locale, "fr-FR");
    assert_eq!(jean.organizations.len(), 2);
    assert!(users.iter().any(|u| u.organizations.len() == 1));
    assert!(users.iter().any(|u| u.organizations.is_empty()));
    assert!(users.iter().any(|u| u.denied));
    // Users load from YAML with only sub and email required.
    let yaml = "- sub: 11111111-2222-4333-8444-555555555555\n  email: a@b.test\n";
    let loaded: Vec<DevUser> = serde_yaml::from_str(yaml).unwrap();
    assert_eq!(loaded[0].locale, "en-GB");
    assert!(loaded[0].organizations.is_empty());
}

#[test]
fn bad_configurations_are_refused_with_a_precise_error() {
    let no_openid = DevIdpConfig {
        allowed_scopes: vec!["email".into()],
        ..config()
    };
    assert!(matches!(
        DevIdp::new(no_openid),
        Err(DevIdpError::OpenidScopeNotAllowed)
    ));
    let bad_slug = DevIdpConfig {
        slug: "a/b".into(),
        ..config()
    };
    assert!(matches!(
        DevIdp::new(bad_slug),
        Err(DevIdpError::InvalidSlug(_))
    ));
    let mut users = default_users();
    users.push(users[0].clone());
    assert!(matches!(
        DevIdp::new(DevIdpConfig { users, ..config() }),
        Err(DevIdpError::DuplicateUser(_))
    ));
    let bad_uri = DevIdpConfig {
        redirect_uris: vec!["/relative".into()],
        ..config()
    };
    assert!(matches!(
        DevIdp::new(bad_uri),
        Err(DevIdpError::InvalidUri(_))
    ));
}

/// A relying party's back-channel logout endpoint: forwards each `logout_token` it receives.
async fn logout_receiver() -> (
    std::net::SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let tx = tx.clone();
                        async move {
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            if let Some((_, token)) = url::form_urlencoded::parse(&body)
                                .find(|(name, _)| name == "logout_token")
                            {
                                let _ = tx.send(token.into_owned());
                            }
                            Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::new())))
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, rx)
}
