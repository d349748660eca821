//! Registry tokens: secrets nmr issues itself (today: by exchanging a GitHub
//! Actions ID token, `src/oidc.rs`), as opposed to the GitHub tokens it only
//! checks with GitHub.
//!
//! A registry token is `nmr_` followed by 40 hex digits (160 random bits),
//! so secret scanners and logs can tell it from a GitHub token. nmr keeps
//! only its SHA-256, as the key of a [`TokenRecord`] in the metadata store
//! (`k/{hex}`), which says who the token stands for, what it may do, until
//! when, and whether it was revoked. The record is designed for the login
//! and `npm token` features that follow: owner, scope of use, expiry, last
//! use, revocation.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::auth::{Action, TokenHash};
use crate::name::PackageName;

/// The prefix of every registry token.
pub const PREFIX: &str = "nmr_";

/// What kind of grant a token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TokenKind {
    /// Exchanged for a GitHub Actions ID token: read and publish new
    /// versions of its packages.
    Oidc,
    /// Exchanged for a GitHub Actions ID token to install: read only.
    OidcRead,
}

/// A registry token as stored (by the SHA-256 of its secret).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Public id of the token (shown in lists, used to revoke it).
    pub key: String,
    pub kind: TokenKind,
    /// Who the token stands for, as `_npmUser.name` shows it.
    pub owner: String,
    /// The only packages it may be used on (empty: any).
    pub packages: Vec<String>,
    /// The only scopes (without `@`) it may be used on (empty: any).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// The GitHub repository (`owner/repo`) and its id a package the token
    /// creates must be bound to.
    pub repository: Option<String>,
    pub repository_id: Option<u64>,
    /// What a publish with it records in `_npmUser.trustedPublisher`.
    #[serde(default)]
    pub publisher: Option<Value>,
    /// Unix seconds.
    pub created: u64,
    pub expires: u64,
    #[serde(default)]
    pub last_used: Option<u64>,
    #[serde(default)]
    pub revoked: bool,
}

impl TokenRecord {
    /// Whether the token may do `action` on `package` at `now` (Unix
    /// seconds): not revoked, not expired, limited to the package, and (for
    /// an OIDC token) reading or publishing only. The error says why not.
    pub fn allows(&self, package: &PackageName, action: Action, now: u64) -> Result<(), String> {
        if self.revoked {
            return Err("the registry token was revoked".into());
        }
        if now >= self.expires {
            return Err("the registry token has expired".into());
        }
        if !self.packages.is_empty() && !self.packages.iter().any(|p| p == package.as_str()) {
            return Err(format!(
                "the registry token is limited to {} and cannot be used on {package}",
                self.packages.join(", ")
            ));
        }
        let scope = package.scope().unwrap_or_default();
        if !self.scopes.is_empty() && !self.scopes.iter().any(|s| s.eq_ignore_ascii_case(scope)) {
            return Err(format!(
                "the registry token is limited to @{} and cannot be used on {package}",
                self.scopes.join(", @")
            ));
        }
        match (self.kind, action) {
            (TokenKind::Oidc, Action::Read | Action::Publish) => Ok(()),
            (TokenKind::OidcRead, Action::Read) => Ok(()),
            (TokenKind::OidcRead, _) => Err(format!(
                "a read token exchanged in GitHub Actions can only read {package}"
            )),
            (TokenKind::Oidc, _) => Err(format!(
                "a token exchanged in GitHub Actions may read and publish {package}, nothing else: {} needs a user's token",
                match action {
                    Action::DistTag => "changing dist-tags",
                    Action::InspectTrust | Action::ConfigureTrust => "npm trust",
                    _ => "unpublishing",
                }
            )),
        }
    }
}

/// Whether `token` has the registry token form.
pub fn is_registry_token(token: &str) -> bool {
    token.starts_with(PREFIX)
}

/// A new registry token: its secret (shown once) and its SHA-256.
pub fn generate() -> Result<(String, TokenHash), String> {
    let mut bytes = [0u8; 20];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness for a token: {e}"))?;
    let secret = format!("{PREFIX}{}", hex::encode(bytes));
    let hash = Sha256::digest(secret.as_bytes()).into();
    Ok((secret, hash))
}

/// A new public token id (16 hex digits).
pub fn new_key() -> Result<String, String> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness for a token id: {e}"))?;
    Ok(hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: TokenKind) -> TokenRecord {
        TokenRecord {
            key: "k".into(),
            kind,
            owner: "GitHub Actions".into(),
            packages: vec!["@acme/widget".into()],
            scopes: Vec::new(),
            repository: Some("acme/widget".into()),
            repository_id: Some(7),
            publisher: None,
            created: 100,
            expires: 200,
            last_used: None,
            revoked: false,
        }
    }

    #[test]
    fn tokens_look_like_registry_tokens_and_differ() {
        let (a, ha) = generate().unwrap();
        let (b, _) = generate().unwrap();
        assert!(is_registry_token(&a) && a.len() == 44 && a != b);
        assert_eq!(ha, <[u8; 32]>::from(Sha256::digest(a.as_bytes())));
        assert!(!is_registry_token("ghp_abc"));
    }

    #[test]
    fn an_oidc_token_reads_and_publishes_its_package_only() {
        let widget = PackageName::parse("@acme/widget").unwrap();
        let other = PackageName::parse("@acme/other").unwrap();
        let r = record(TokenKind::Oidc);
        assert!(r.allows(&widget, Action::Read, 150).is_ok());
        assert!(r.allows(&widget, Action::Publish, 150).is_ok());
        assert!(r.allows(&widget, Action::Unpublish, 150).is_err());
        assert!(r.allows(&widget, Action::DistTag, 150).is_err());
        assert!(
            r.allows(&other, Action::Read, 150)
                .unwrap_err()
                .contains("limited to @acme/widget")
        );
        assert!(
            r.allows(&widget, Action::Read, 200)
                .unwrap_err()
                .contains("expired")
        );
        let revoked = TokenRecord { revoked: true, ..r };
        assert!(revoked.allows(&widget, Action::Read, 150).is_err());
    }
}
