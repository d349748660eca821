//! A test issuer of GitHub Actions ID tokens for trusted publishing: it
//! signs tokens with the claims GitHub documents, with the RSA key in
//! `tests/fixtures/`, serves its JWKS from a local server, and sends the
//! exchange as npm does (`POST .../oidc/token/exchange/package/{name}`
//! with `Authorization: Bearer`).

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

pub const KEY: &[u8] = include_bytes!("../fixtures/oidc-test-key.pem");
pub const JWKS: &str = include_str!("../fixtures/oidc-jwks.json");
pub const ISSUER: &str = "https://token.actions.githubusercontent.com";

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Serves the JWKS at `/.well-known/jwks`; returns its URL.
pub fn issuer() -> (String, tokio::sync::oneshot::Sender<()>) {
    use warp::Filter;
    let routes = warp::path!(".well-known" / "jwks").map(|| {
        http::Response::builder()
            .header("content-type", "application/json")
            .body(JWKS.to_string())
            .unwrap()
    });
    let (port, stop) = super::serve_in_background(routes, 0);
    (format!("http://127.0.0.1:{port}/.well-known/jwks"), stop)
}

/// The claims GitHub puts in an ID token for a push to main of `repo`.
pub fn claims(repo: &str, repo_id: u64) -> Value {
    let owner = repo.split('/').next().unwrap();
    let t = now();
    json!({
        "jti": format!("jti-{}-{}", t, rand_suffix()),
        "sub": format!("repo:{repo}:ref:refs/heads/main"),
        "aud": "npm:127.0.0.1",
        "ref": "refs/heads/main", "sha": "0123456789abcdef0123456789abcdef01234567",
        "repository": repo, "repository_owner": owner,
        "repository_owner_id": "90001", "repository_id": repo_id.to_string(),
        "repository_visibility": "private", "run_id": "1234567890", "run_number": "7", "run_attempt": "1",
        "actor": "alice", "actor_id": "1000", "event_name": "push", "ref_type": "branch",
        "workflow": "Release",
        "workflow_ref": format!("{repo}/.github/workflows/release.yml@refs/heads/main"),
        "job_workflow_ref": format!("{repo}/.github/workflows/release.yml@refs/heads/main"),
        "runner_environment": "github-hosted",
        "iss": ISSUER, "nbf": t - 5, "iat": t - 5, "exp": t + 300,
    })
}

pub fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::SeqCst)
}

pub fn sign(claims: &Value) -> String {
    sign_with(claims, KEY, "oidc-test-key")
}

pub fn sign_with(claims: &Value, key: &[u8], kid: &str) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_rsa_pem(key).unwrap()).unwrap()
}

pub fn exchange(server: &super::Server, package: &str, jwt: &str) -> super::Reply {
    let path = format!(
        "-/npm/v1/oidc/token/exchange/package/{}",
        super::escape(package)
    );
    post_bearer(server, &path, jwt)
}

/// `POST path` with no body and `Authorization: Bearer jwt`, as npm sends
/// the exchange.
pub fn post_bearer(server: &super::Server, path: &str, jwt: &str) -> super::Reply {
    let response = ureq::post(&server.http().url(path))
        .header("authorization", &format!("Bearer {jwt}"))
        .config()
        .http_status_as_error(false)
        .build()
        .send_empty()
        .unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().read_to_vec().unwrap();
    super::Reply {
        status,
        headers,
        body,
    }
}
