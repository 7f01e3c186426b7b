//! Signing in through Trousseau and reaching the app with a verified identity.

mod support;

use http::StatusCode;
use support::*;

#[tokio::test]
async fn signed_in_user_reaches_the_app_with_verified_identity() {
    let env = Env::start().await;
    let mut browser = env.browser();
    let answer = browser.sign_in("/reports?month=11", JEAN).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let echo = answer.json();
    assert_eq!(echo["path"], "/reports");
    assert_eq!(echo["query"], "month=11");
    let h = &echo["headers"];
    assert_eq!(h["x-trousseau-sub"][0], JEAN);
    assert_eq!(h["x-trousseau-email"][0], "jean.dupont@hotel.com");
    assert_eq!(h["x-trousseau-name"][0], "Jean Dupont");
    assert_eq!(h["x-trousseau-locale"][0], "fr-FR");
    assert!(h["cookie"].is_null() || !h["cookie"][0].as_str().unwrap().contains("trousseau_session"));

    let jws = h["x-trousseau-jwt-assertion"][0].as_str().expect("assertion header");
    let verifier = trousseau_proxy::dev::JwksVerifier::new(format!("{}/.trousseau/jwks.json", env.origin));
    let (header, claims) = verifier.verify(jws).await.expect("assertion verifies against our JWKS");
    assert_eq!(header["alg"], "ES256");
    assert_eq!(claims["iss"], env.origin.as_str());
    assert_eq!(claims["aud"], CLIENT_ID);
    assert_eq!(claims["sub"], JEAN);
    assert_eq!(claims["email_verified"], true);
    assert_eq!(claims["organizations"].as_array().map(Vec::len), Some(2));
    assert!(claims["exp"].as_u64().unwrap() > claims["iat"].as_u64().unwrap());
    // Jean has two hotels and nothing requires choosing: no organization is selected yet.
    assert!(claims.get("org").is_none());
}
