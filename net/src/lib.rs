//! kaudit's HTTP listeners: one [`serve`] for the agent (`agent_listen`) and the verifier
//! (`verifier.listen`), configured by one `[http]` section ([`HttpConfig`]).
//!
//! * **Authentication** ([`auth`]): bearer tokens by role (`write` for ingest, `read` for the
//!   query API, `admin` for both), several per role for rotation, kept as digests and compared in
//!   constant time; 401 with `WWW-Authenticate: Bearer` without a valid token, 403 for the wrong
//!   role. Probes stay open unless `protect_probes`.
//! * **TLS** ([`tls`]): rustls; the certificate follows its files (checked at most once a second)
//!   and SIGHUP.
//! * **Bounds** ([`conn`]): at most `max_connections` sockets (the longest idle one is replaced by
//!   a newcomer; when all are busy, newcomers wait in the kernel backlog), headers within
//!   `header_timeout`, bodies within `body_timeout` (408), idle connections closed after
//!   `idle_timeout`. So a client that opens connections and sends nothing, or half a request,
//!   cannot keep `/healthz` or a valid POST from being answered.
//!
//! HTTP/1.1 only: every client (Prometheus, curl, the SDKs) speaks it, and HTTP/2 would multiplex
//! requests past the connection limit and need limits of its own.

pub mod auth;
pub mod config;
pub mod conn;
pub mod metrics;
mod server;
pub mod tls;

pub use auth::Role;
pub use config::{HttpBuildError, HttpConfig, HttpOptions, Limits, TokenConfig};
pub use metrics::HttpMetrics;
pub use server::serve;
