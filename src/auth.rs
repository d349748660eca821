//! Who is asking, and whether they may do what they ask.
//!
//! Every request on a package makes exactly one authorization decision,
//! [`Auth::authorize`], from three facts: the caller's [`Credentials`], the
//! package, and the [`Action`]. The handlers never decide access themselves.
//!
//! Credentials arrive as npm sends them (PROTOCOL.md §1.4):
//! `Authorization: Bearer TOKEN` (`_authToken`) or `Authorization: Basic
//! base64(user:TOKEN)` (`_auth`, or `username` + `_password`). A token is
//! never logged, echoed or stored in clear.

use base64::Engine;
use http::HeaderMap;

use crate::config::AuthType;
use crate::error::ApiError;
use crate::name::PackageName;

/// What a request wants to do to a package; each maps to the permission it
/// needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Packument, version manifest, tarball, dist-tag ls.
    Read,
    /// Publish a new version.
    Publish,
    /// dist-tag add / rm.
    DistTag,
    /// deprecate / undeprecate.
    Deprecate,
    /// Unpublish one version or the whole package.
    Unpublish,
}

/// The secret a client presented. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    token: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials(<redacted>)")
    }
}

impl Credentials {
    /// Reads the `Authorization` header: `Bearer TOKEN`, or `Basic` whose
    /// password is the token. `None` when absent or unreadable.
    pub fn from_headers(headers: &HeaderMap) -> Option<Credentials> {
        let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
        let (scheme, rest) = value.trim().split_once(' ')?;
        let token = if scheme.eq_ignore_ascii_case("bearer") {
            rest.trim().to_string()
        } else if scheme.eq_ignore_ascii_case("basic") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(rest.trim())
                .ok()?;
            let text = String::from_utf8(decoded).ok()?;
            text.split_once(':')?.1.to_string()
        } else {
            return None;
        };
        (!token.is_empty()).then_some(Credentials { token })
    }

    /// The token itself, for passing to the identity provider only.
    pub fn token(&self) -> &str {
        &self.token
    }
}

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user's login; `anonymous` under `auth.type = "none"`.
    pub username: String,
}

/// The configured authorization model.
pub enum Auth {
    /// `auth.type = "none"`: everyone may do everything.
    None,
}

impl Auth {
    /// Builds the model `auth.type` names.
    pub fn from_config(kind: AuthType) -> Result<Auth, String> {
        match kind {
            AuthType::None => Ok(Auth::None),
            AuthType::Github => {
                Err("auth.type: \"github\" is not available in this build yet; use \"none\"".into())
            }
        }
    }

    /// Who the credentials belong to (`npm whoami`).
    pub async fn identify(&self, _credentials: Option<&Credentials>) -> Result<Identity, ApiError> {
        match self {
            Auth::None => Ok(anonymous()),
        }
    }

    /// The one authorization decision of a request: may the holder of
    /// `credentials` do `action` on `package`? Returns who they are, or the
    /// error to answer (401 no/bad credentials, 404 cannot read, 403 cannot
    /// write).
    pub async fn authorize(
        &self,
        _credentials: Option<&Credentials>,
        _package: &PackageName,
        _action: Action,
    ) -> Result<Identity, ApiError> {
        match self {
            Auth::None => Ok(anonymous()),
        }
    }
}

fn anonymous() -> Identity {
    Identity {
        username: "anonymous".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, value.parse().unwrap());
        h
    }

    #[test]
    fn reads_bearer_and_basic_tokens() {
        let c = Credentials::from_headers(&headers("Bearer ghp_abc")).unwrap();
        assert_eq!(c.token(), "ghp_abc");
        let basic = base64::engine::general_purpose::STANDARD.encode("alice:ghp_xyz");
        let c = Credentials::from_headers(&headers(&format!("Basic {basic}"))).unwrap();
        assert_eq!(c.token(), "ghp_xyz");
        assert!(Credentials::from_headers(&headers("Bearer ")).is_none());
        assert!(Credentials::from_headers(&headers("Digest x")).is_none());
        assert!(Credentials::from_headers(&HeaderMap::new()).is_none());
    }

    #[test]
    fn debug_never_shows_the_token() {
        let c = Credentials::from_headers(&headers("Bearer ghp_secret")).unwrap();
        assert!(!format!("{c:?}").contains("ghp_secret"));
    }
}
