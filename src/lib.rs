//! trousseau-proxy: an authenticating reverse proxy that makes an unmodified web app a Trousseau
//! single-sign-on app.
//!
//! Start with `ARCHITECTURE.md` at the repository root. The life of a request is in [`pipeline`]
//! (its phases in order, one file each, and the `/.trousseau/` endpoints), fed by [`server`] (the
//! listener and its workers) with the [`app::App`] built at start. Each concept has its module:
//! [`config`] (typed, validated once), [`oidc`] (Trousseau discovery, sign-in, tokens),
//! [`session`] (the sealed cookie, the stores, refresh, revocations), [`bearer`] (API clients'
//! access tokens), [`claims`] (who the user is), [`identity`] (that, signed for the app), [`policy`] (who may go
//! where), [`forward_auth`] (the request a gateway asks about), [`proxy`] (forwarding to the
//! app), [`limits`] (connection and request caps), [`live`] and [`tether`] (open websockets and streams,
//! ended with their session), [`answer`] and [`pages`] (what the proxy says
//! itself), [`request`] (what a request says about itself), [`metrics`], [`logging`], [`probe`] (`check-config --probe`), and
//! [`util`] (clock, ids, hashing). `dev` and `devidp` (the embedded Trousseau twin used by the
//! `dev` command and by the tests) exist only with the `dev` feature, on by default. Beside the
//! request path, [`inject`] is the Kubernetes webhook that adds the proxy to pods, and `fuzz`
//! holds the fuzz targets of every decoder of network and IdP input (see `fuzz/README.md`).

#![warn(missing_docs)]

pub mod answer;
pub mod app;
pub mod audit;
pub mod bearer;
pub mod body;
pub mod claims;
pub mod config;
#[cfg(feature = "dev")]
pub mod dev;
#[cfg(feature = "dev")]
pub mod devidp;
pub mod forward_auth;
pub mod grpc_authz;
pub mod https_redirect;
#[doc(hidden)]
pub mod fuzz;
pub mod identity;
pub mod inject;
pub mod limits;
pub mod live;
pub mod logging;
pub mod metrics;
pub mod oidc;
pub mod pages;
pub mod pipeline;
pub mod policy;
pub mod probe;
pub mod proxy;
pub mod reload;
pub mod request;
pub mod server;
pub mod session;
pub mod tether;
pub mod tls;
pub mod trace;
pub mod util;
