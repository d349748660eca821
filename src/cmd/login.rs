//! Web login, npm 11's default `npm login`, through GitHub's web flow
//! (docs/github-app.md, "Web login"; the session rules are in
//! `src/login.rs`):
//!
//! 1. `POST /-/v1/login` → `{"loginUrl", "doneUrl"}`, both nmr URLs made of
//!    unreserved characters only (npm runs `encodeURI` on loginUrl before
//!    opening it, so a `%` escape would be doubled).
//! 2. `GET /-/v1/login/session/{id}` (the browser) → 302 to GitHub's
//!    authorize page with the App's `client_id`, `redirect_uri`, `state`
//!    and a PKCE S256 `code_challenge`.
//! 3. `GET /-/v1/login/callback?code=&state=` (GitHub sends the browser
//!    back) → the code is exchanged with the PKCE verifier, `GET /user`
//!    names the user, the GitHub token is dropped, and a small HTML page
//!    tells the user to return to the terminal.
//! 4. `GET /-/v1/login/done/{id}` (npm polls) → `202 {}` with
//!    `Retry-After: 1` while pending; `200 {"token"}` once, a new login
//!    token; then 404. A failed login answers 403, after which npm falls
//!    back to its legacy prompt, as it does on any 4xx.
//!
//! The login token is made when npm collects it, so no secret waits in
//! memory between the callback and the poll.

use std::time::Instant;

use http::StatusCode;
use http::header::{self, HeaderValue};
use warp::reply::Response;

use crate::error::ApiError;
use crate::github::unix_now;
use crate::login::{LoginError, Poll, Refused};
use crate::registry::Registry;
use crate::request::{Request, json};

/// Where GitHub sends the browser back.
fn callback_url(registry: &Registry) -> String {
    format!("{}-/v1/login/callback", registry.public_url)
}

/// The GitHub client that signs users in, when web login is configured
/// (App mode with its OAuth client).
fn signer(registry: &Registry) -> Option<&crate::github::GitHub> {
    registry.auth.github().filter(|g| g.can_sign_in())
}

/// The page of a login step when web login is not configured.
fn unavailable() -> Response {
    page(
        StatusCode::NOT_FOUND,
        "web login is not available on this registry",
    )
}

/// `POST /-/v1/login`: a new session and its two URLs. 404 when web login
/// is not configured (npm then asks for a username and password, where a
/// GitHub token still works); 429 when the address started too many.
pub fn start(registry: &Registry, request: &Request) -> Result<Response, ApiError> {
    if signer(registry).is_none() {
        return Err(ApiError::not_found(
            "web login is not available on this registry (it needs auth.github.app.*): log in with your GitHub username and a GitHub token as the password",
        ));
    }
    let id = registry
        .sessions
        .start(request.client, unix_now(), Instant::now())
        .map_err(|refused| match refused {
            Refused::Throttled(wait) => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!("too many logins started from your address: try again in {wait} s"),
            )
            .retry_after(wait),
            Refused::Full => {
                ApiError::unavailable("too many logins are in progress: try again in a minute")
                    .retry_after(60)
            }
        })?;
    let base = &registry.public_url;
    Ok(json(
        StatusCode::OK,
        serde_json::json!({
            "loginUrl": format!("{base}-/v1/login/session/{id}"),
            "doneUrl": format!("{base}-/v1/login/done/{id}"),
        })
        .to_string(),
    ))
}

/// `GET /-/v1/login/session/{id}`: 302 to GitHub's authorize page, once
/// per session; a page saying what is wrong otherwise.
pub fn session(registry: &Registry, id: &str) -> Response {
    let Some(github) = signer(registry) else {
        return unavailable();
    };
    if !crate::login::is_id(id) {
        return failed(&LoginError::Unknown);
    }
    let (state, challenge) = match registry.sessions.begin(id, unix_now()) {
        Ok(begun) => begun,
        Err(e) => return failed(&e),
    };
    let Some(url) = github.authorize_url(&callback_url(registry), &state, &challenge) else {
        return unavailable();
    };
    let mut response = Response::new(Vec::new().into());
    *response.status_mut() = StatusCode::FOUND;
    if let Ok(location) = HeaderValue::from_str(&url) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    no_store(&mut response);
    response
}

/// `GET /-/v1/login/callback?code=&state=` (or `?error=access_denied&state=`
/// when the user declined): finishes the session `state` names.
pub async fn callback(registry: &Registry, request: &Request) -> Response {
    let query = parse_query(&request.query);
    let get = |key: &str| {
        query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    let Some(github) = signer(registry) else {
        return unavailable();
    };
    let Some(state) = get("state").filter(|s| crate::login::is_id(s)) else {
        return failed(&LoginError::Unknown);
    };
    let (id, verifier) = match registry.sessions.callback(state, unix_now()) {
        Ok(found) => found,
        Err(e) => return failed(&e),
    };
    let outcome = match (get("code"), get("error")) {
        (_, Some("access_denied")) => Err((
            StatusCode::FORBIDDEN,
            "You did not approve nmr on GitHub, so you are not logged in. Run npm login again in your terminal to retry.".to_string(),
        )),
        (_, Some(error)) => Err((
            StatusCode::BAD_GATEWAY,
            format!(
                "GitHub did not sign you in ({}). Run npm login again in your terminal.",
                get("error_description").unwrap_or(error)
            ),
        )),
        (Some(code), None) if !code.is_empty() && code.len() <= 256 => github
            .sign_in(code, &verifier, &callback_url(registry))
            .await
            .map_err(|why| (StatusCode::BAD_GATEWAY, why)),
        _ => Err((
            StatusCode::BAD_REQUEST,
            "GitHub sent no code back. Run npm login again in your terminal.".to_string(),
        )),
    };
    match outcome {
        Ok(user) => {
            let message = format!(
                "Logged in to nmr as {}. You can close this tab and return to your terminal.",
                user.login
            );
            registry.sessions.finish(&id, Ok(user));
            page(StatusCode::OK, &message)
        }
        Err((status, why)) => {
            registry.sessions.finish(&id, Err(why.clone()));
            page(status, &why)
        }
    }
}

/// `GET /-/v1/login/done/{id}`: npm's poll.
pub async fn done(registry: &Registry, id: &str) -> Result<Response, ApiError> {
    let poll = if crate::login::is_id(id) {
        registry.sessions.poll(id, unix_now())
    } else {
        Poll::Unknown
    };
    match poll {
        Poll::Pending => {
            let mut response = json(StatusCode::ACCEPTED, "{}");
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            Ok(response)
        }
        Poll::Approved(user) => {
            let token = crate::cmd::issue_login_token(registry, &user).await?;
            Ok(json(
                StatusCode::OK,
                serde_json::json!({ "token": token }).to_string(),
            ))
        }
        Poll::Failed(why) => Err(ApiError::forbidden(why)),
        Poll::Unknown => Err(ApiError::not_found(
            "no login in progress with this id (it finished or expired): run npm login again",
        )),
    }
}

/// `key=value&…` pairs of a query string, percent- and `+`-decoded.
fn parse_query(query: &str) -> Vec<(String, String)> {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .take(32)
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn failed(e: &LoginError) -> Response {
    let status = match e {
        LoginError::Unknown => StatusCode::NOT_FOUND,
        LoginError::Expired => StatusCode::GONE,
        LoginError::Used => StatusCode::CONFLICT,
    };
    let mut message = e.to_string();
    if let Some(first) = message.get_mut(0..1) {
        first.make_ascii_uppercase();
    }
    page(status, &format!("{message}."))
}

fn no_store(response: &mut Response) {
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
}

/// The HTML of a page showing `message`, escaped.
fn html(message: &str) -> String {
    let escaped = message
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;");
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>nmr login</title></head>\n<body style=\"font-family: sans-serif; margin: 4em auto; max-width: 40em\"><h1>nmr</h1><p>{escaped}</p></body></html>\n"
    )
}

/// A small HTML page showing `message`, with no scripts, styles from
/// elsewhere or referrer.
fn page(status: StatusCode, message: &str) -> Response {
    let body = html(message);
    let len = body.len();
    let mut response = Response::new(body.into());
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'"),
    );
    no_store(&mut response);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_decoded() {
        let q =
            parse_query("error=access_denied&error_description=The+user+has+denied%21&state=ab");
        assert_eq!(q[0], ("error".into(), "access_denied".into()));
        assert_eq!(q[1].1, "The user has denied!");
        assert_eq!(q[2], ("state".into(), "ab".into()));
    }

    #[test]
    fn pages_escape_what_they_show() {
        let body = html("<script>x</script> & \"so\"");
        assert!(body.contains("<p>&lt;script&gt;x&lt;/script&gt; &amp; &quot;so&quot;</p>"));
    }
}
