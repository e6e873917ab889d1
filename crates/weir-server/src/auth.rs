//! Bearer tokens scoped to queue-name prefixes with read, write or admin rights.
//!
//! A request's token is compared with every configured token in constant time (`subtle`),
//! and the loop never stops early, so neither timing nor position reveals a near miss. With
//! no token configured the API is open; [`crate::config::ServerConfig::validate`] then
//! refuses any non-loopback listen address.

use crate::config::{Rights, TokenConfig};
use crate::error::{ApiError, ApiResult};
use crate::AppState;
use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use std::sync::Arc;
use subtle::ConstantTimeEq;
use weir_api::ProblemType;

/// Who is calling, and what they may do.
#[derive(Debug, Clone)]
pub struct Principal(Option<Arc<TokenConfig>>);

impl Principal {
    /// The open principal of a server without tokens: everything is allowed.
    pub fn open() -> Self {
        Principal(None)
    }

    /// Whether the caller has `need` on `queue`.
    pub fn can(&self, queue: &str, need: Rights) -> bool {
        match &self.0 {
            None => true,
            Some(t) => t.rights >= need && t.queues.iter().any(|p| queue.starts_with(p.as_str())),
        }
    }

    /// Refuses unless the caller has `need` on `queue`.
    pub fn require(&self, queue: &str, need: Rights) -> ApiResult<()> {
        if self.can(queue, need) {
            return Ok(());
        }
        Err(ApiError::new(
            ProblemType::Forbidden,
            format!(
                "token {:?} lacks {need:?} on queue {queue:?}",
                self.name().unwrap_or_default()
            ),
        ))
    }

    /// Refuses unless the caller has `need` on every queue (a scope with the empty prefix),
    /// for operations that are not about one queue.
    pub fn require_all(&self, need: Rights) -> ApiResult<()> {
        match &self.0 {
            Some(t) if !(t.rights >= need && t.queues.iter().any(String::is_empty)) => {
                Err(ApiError::new(
                    ProblemType::Forbidden,
                    format!(
                        "token {:?} lacks {need:?} on every queue (name a queue, or use a \
                         token scoped to all queues)",
                        t.name
                    ),
                ))
            }
            _ => Ok(()),
        }
    }

    /// True when auth is on (tokens are configured).
    pub fn is_scoped(&self) -> bool {
        self.0.is_some()
    }

    /// The token's name, for logs.
    pub fn name(&self) -> Option<&str> {
        self.0.as_ref().map(|t| t.name.as_str())
    }
}

/// Finds the token matching `presented`, comparing against every one in constant time.
pub(crate) fn authenticate(
    tokens: &[Arc<TokenConfig>],
    presented: &str,
) -> Option<Arc<TokenConfig>> {
    let mut found = None;
    for t in tokens {
        if bool::from(t.token.as_bytes().ct_eq(presented.as_bytes())) {
            found = Some(t.clone());
        }
    }
    found
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let tokens = state.tokens();
        if tokens.is_empty() {
            return Ok(Principal::open());
        }
        let presented = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .ok_or_else(|| {
                ApiError::new(
                    ProblemType::Unauthorized,
                    "send Authorization: Bearer <token>",
                )
            })?;
        authenticate(tokens, presented)
            .map(|t| Principal(Some(t)))
            .ok_or_else(|| ApiError::new(ProblemType::Unauthorized, "unknown token"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tok(name: &str, token: &str, rights: Rights, queues: &[&str]) -> Arc<TokenConfig> {
        Arc::new(TokenConfig {
            name: name.into(),
            token: token.into(),
            rights,
            queues: queues.iter().map(|s| s.to_string()).collect(),
        })
    }

    #[test]
    fn scopes_are_prefixes_and_rights_are_ordered() {
        let tokens = vec![
            tok("reader", "rrrrrrrrrrrrrrrr", Rights::Read, &[""]),
            tok("ci", "cccccccccccccccc", Rights::Write, &["ci.", "build."]),
            tok("admin", "aaaaaaaaaaaaaaaa", Rights::Admin, &[""]),
        ];
        assert!(authenticate(&tokens, "nope").is_none());
        assert!(authenticate(&tokens, "cccccccccccccccx").is_none());
        let ci = Principal(authenticate(&tokens, "cccccccccccccccc"));
        assert!(ci.can("ci.tests", Rights::Write));
        assert!(ci.can("build.x", Rights::Read));
        assert!(!ci.can("prod.x", Rights::Read));
        assert!(!ci.can("ci.tests", Rights::Admin));
        assert!(ci.require_all(Rights::Read).is_err());
        let reader = Principal(authenticate(&tokens, "rrrrrrrrrrrrrrrr"));
        assert!(reader.can("anything", Rights::Read));
        assert!(!reader.can("anything", Rights::Write));
        assert!(reader.require_all(Rights::Read).is_ok());
        let admin = Principal(authenticate(&tokens, "aaaaaaaaaaaaaaaa"));
        assert!(admin.require("x", Rights::Admin).is_ok());
        assert!(Principal::open().require("x", Rights::Admin).is_ok());
    }
}
