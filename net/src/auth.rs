//! Bearer tokens. Only SHA-256 digests of the tokens are kept; a presented token is hashed and
//! compared with every digest in constant time, so neither the comparison's timing nor a memory
//! dump or `Debug` output gives a token away.
//!
//! What a request needs is decided by its path alone, the same in every process:
//! `/v1/*` (ingest) needs `write`, `/api/*` (the verifier's query API) needs `read`, the probes
//! (`/metrics`, `/healthz`, `/readyz`) need nothing unless `protect_probes`, and anything else a
//! valid token of any role. `admin` passes everywhere. With no token configured nothing is checked.

use std::fmt;

use axum::Json;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// `POST /v1/records`.
    Write,
    /// The verifier's `/api/v1/*`.
    Read,
    /// Both.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Write => "write",
            Role::Read => "read",
            Role::Admin => "admin",
        }
    }

    fn grants(self, need: Role) -> bool {
        self == Role::Admin || self == need
    }
}

/// The configured tokens, as digests.
#[derive(Clone, Default)]
pub struct Tokens {
    digests: Vec<(Role, [u8; 32])>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.digests.iter().map(|(role, _)| format!("{}: ***", role.as_str()))).finish()
    }
}

impl Tokens {
    pub fn add(&mut self, role: Role, token: &str) {
        self.digests.push((role, digest(token)));
    }

    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// The role of `token`, comparing against every digest.
    pub fn role_of(&self, token: &str) -> Option<Role> {
        let presented = digest(token);
        let mut found = None;
        for (role, known) in &self.digests {
            let equal: bool = known.ct_eq(&presented).into();
            if equal && found.is_none() {
                found = Some(*role);
            }
        }
        found
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Tokens and whether the probes need one.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    pub tokens: Tokens,
    pub protect_probes: bool,
}

/// What a path needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    Nothing,
    AnyToken,
    Role(Role),
}

/// What a request for `path` needs (see the module docs).
pub fn need(path: &str, protect_probes: bool) -> Need {
    match path {
        "/metrics" | "/healthz" | "/readyz" if !protect_probes => Need::Nothing,
        p if p.starts_with("/v1/") => Need::Role(Role::Write),
        p if p.starts_with("/api/") => Need::Role(Role::Read),
        _ => Need::AnyToken,
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No `Authorization: Bearer` header: 401.
    Missing,
    /// A token that is not configured: 401.
    Invalid,
    /// A valid token whose role does not grant the path: 403.
    WrongRole { has: Role, needs: Role },
}

impl Refusal {
    /// Every [`Refusal::reason`].
    pub const REASONS: [&'static str; 3] = ["missing_token", "invalid_token", "wrong_role"];

    pub fn reason(self) -> &'static str {
        match self {
            Refusal::Missing => "missing_token",
            Refusal::Invalid => "invalid_token",
            Refusal::WrongRole { .. } => "wrong_role",
        }
    }
}

impl Auth {
    /// Whether nothing is checked.
    pub fn is_open(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Check a request for `path` with `headers`.
    pub fn check(&self, path: &str, headers: &HeaderMap) -> Result<(), Refusal> {
        if self.is_open() {
            return Ok(());
        }
        let need = need(path, self.protect_probes);
        if need == Need::Nothing {
            return Ok(());
        }
        let token = bearer(headers).ok_or(Refusal::Missing)?;
        let has = self.tokens.role_of(token).ok_or(Refusal::Invalid)?;
        match need {
            Need::Role(needs) if !has.grants(needs) => Err(Refusal::WrongRole { has, needs }),
            _ => Ok(()),
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let challenge = match self {
            Refusal::Missing => "Bearer realm=\"kaudit\"",
            _ => "Bearer realm=\"kaudit\", error=\"invalid_token\"",
        };
        let (status, message) = match self {
            Refusal::Missing => {
                (StatusCode::UNAUTHORIZED, "missing bearer token (Authorization: Bearer <token>)".into())
            }
            Refusal::Invalid => (StatusCode::UNAUTHORIZED, "invalid bearer token".into()),
            Refusal::WrongRole { has, needs } => (
                StatusCode::FORBIDDEN,
                format!("a {} token may not do this; it needs a {} or admin token", has.as_str(), needs.as_str()),
            ),
        };
        let mut response = (status, Json(serde_json::json!({ "error": message }))).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_reason_is_listed() {
        let wrong = Refusal::WrongRole { has: Role::Read, needs: Role::Write };
        let reasons: Vec<&str> = [Refusal::Missing, Refusal::Invalid, wrong].map(Refusal::reason).to_vec();
        assert_eq!(reasons, Refusal::REASONS);
    }

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        h
    }

    fn auth() -> Auth {
        let mut tokens = Tokens::default();
        tokens.add(Role::Write, "write-token-0000000001");
        tokens.add(Role::Write, "write-token-0000000002");
        tokens.add(Role::Read, "read-token-00000000001");
        tokens.add(Role::Admin, "admin-token-0000000001");
        Auth { tokens, protect_probes: false }
    }

    #[test]
    fn roles_grant_their_paths_and_admin_everything() {
        let a = auth();
        assert_eq!(a.check("/v1/records", &headers("Bearer write-token-0000000001")), Ok(()));
        assert_eq!(a.check("/v1/records", &headers("bearer write-token-0000000002")), Ok(()));
        assert_eq!(a.check("/api/v1/alerts", &headers("Bearer read-token-00000000001")), Ok(()));
        assert_eq!(a.check("/api/v1/alerts", &headers("Bearer admin-token-0000000001")), Ok(()));
        assert_eq!(a.check("/v1/records", &headers("Bearer admin-token-0000000001")), Ok(()));
        assert_eq!(
            a.check("/v1/records", &headers("Bearer read-token-00000000001")),
            Err(Refusal::WrongRole { has: Role::Read, needs: Role::Write })
        );
        assert_eq!(a.check("/v1/records", &HeaderMap::new()), Err(Refusal::Missing));
        assert_eq!(a.check("/v1/records", &headers("Basic write-token-0000000001")), Err(Refusal::Missing));
        assert_eq!(a.check("/v1/records", &headers("Bearer write-token-000000000")), Err(Refusal::Invalid));
        assert_eq!(a.check("/healthz", &HeaderMap::new()), Ok(()));
        assert_eq!(a.check("/other", &HeaderMap::new()), Err(Refusal::Missing));
        let protected = Auth { protect_probes: true, ..auth() };
        assert_eq!(protected.check("/metrics", &HeaderMap::new()), Err(Refusal::Missing));
        assert_eq!(protected.check("/metrics", &headers("Bearer read-token-00000000001")), Ok(()));
    }

    #[test]
    fn no_tokens_checks_nothing_and_debug_hides_tokens() {
        assert_eq!(Auth::default().check("/v1/records", &HeaderMap::new()), Ok(()));
        let shown = format!("{:?}", auth());
        assert!(!shown.contains("token-0"), "{shown}");
        assert!(shown.contains("write: ***"), "{shown}");
    }
}
