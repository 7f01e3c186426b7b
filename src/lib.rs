//! trousseau-proxy: an authenticating reverse proxy that makes an unmodified web app a Trousseau
//! single-sign-on app.
//!
//! The life of a request is in [`server`]; each step has its own module named after the domain:
//! [`config`] (typed, validated once), [`oidc`] (Trousseau discovery, sign-in, tokens),
//! [`session`] (the encrypted cookie), [`identity`] (who the user is, signed for the app),
//! [`policy`] (who may go where), [`forward_auth`] (the request a gateway asks about), [`proxy`] (forwarding to the app), [`pages`] (what people see),
//! [`metrics`] (what is counted, served to Prometheus), [`logging`] (lines on standard error),
//! [`devidp`] (the embedded Trousseau twin used by `dev` and by the tests).
//! Beside the request path, [`inject`] is the Kubernetes webhook that adds the proxy to pods, and
//! `fuzz` holds the fuzz targets of every decoder of network and IdP input (see `fuzz/README.md`).

pub mod bearer;
pub mod body;
pub mod config;
pub mod dev;
pub mod devidp;
pub mod forward_auth;
#[doc(hidden)]
pub mod fuzz;
pub mod identity;
pub mod inject;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod oidc;
pub mod pages;
pub mod policy;
pub mod proxy;
pub mod server;
pub mod session;
pub mod tls;
pub mod util;
