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
pub async fn start(registry: &Registry, request: &Request) -> Result<Response, ApiError> {
    if signer(registry).is_none() {
        return Err(ApiError::not_found(
            "web login is not available on this registry (it needs auth.github.app.*): log in with your GitHub username and a GitHub token as the password",
        ));
    }
    let started = match &registry.shared {
        Some(shared) => match registry
            .sessions
            .take_budget(request.client, Instant::now())
        {
            Ok(()) => shared_sessions::start(shared, unix_now()).await?,
            Err(refused) => Err(refused),
        },
        None => registry
            .sessions
            .start(request.client, unix_now(), Instant::now()),
    };
    let id = started.map_err(|refused| match refused {
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
pub async fn session(registry: &Registry, id: &str) -> Response {
    let Some(github) = signer(registry) else {
        return unavailable();
    };
    if !crate::login::is_id(id) {
        return failed(&LoginError::Unknown);
    }
    let begun = match &registry.shared {
        Some(shared) => match shared_sessions::begin(shared, id, unix_now()).await {
            Ok(begun) => begun,
            Err(e) => return page(e.status, &e.message),
        },
        None => registry.sessions.begin(id, unix_now()),
    };
    let (state, challenge) = match begun {
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
    let called = match &registry.shared {
        Some(shared) => match shared_sessions::callback(shared, state, unix_now()).await {
            Ok(called) => called,
            Err(e) => return page(e.status, &e.message),
        },
        None => registry.sessions.callback(state, unix_now()),
    };
    let (id, verifier) = match called {
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
            if let Err(e) = finish(registry, &id, Ok(user)).await {
                return page(e.status, &e.message);
            }
            page(StatusCode::OK, &message)
        }
        Err((status, why)) => {
            if let Err(e) = finish(registry, &id, Err(why.clone())).await {
                return page(e.status, &e.message);
            }
            page(status, &why)
        }
    }
}

/// `GET /-/v1/login/done/{id}`: npm's poll.
pub async fn done(registry: &Registry, id: &str) -> Result<Response, ApiError> {
    let poll = match &registry.shared {
        _ if !crate::login::is_id(id) => Poll::Unknown,
        Some(shared) => shared_sessions::poll(shared, id, unix_now()).await?,
        None => registry.sessions.poll(id, unix_now()),
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

/// Step 3 wherever the session is kept.
async fn finish(
    registry: &Registry,
    id: &str,
    outcome: Result<crate::github::GithubUser, String>,
) -> Result<(), ApiError> {
    match &registry.shared {
        Some(shared) => shared_sessions::finish(shared, id, outcome).await,
        None => {
            registry.sessions.finish(id, outcome);
            Ok(())
        }
    }
}

/// Under `db.type = "s3"`: sessions as bucket objects, so that the steps
/// of one login may reach different instances. `-/sessions/{id}.json` holds
/// the [`Session`]; `-/login-states/{state}` the id its `state` names (both
/// ids validated by [`crate::login::is_id`] before any lookup). Each step
/// reads the session and replaces it by `If-Match`, so a step that two
/// requests race for is taken once. Abandoned sessions stay as small
/// objects; a bucket lifecycle rule on `-/sessions/` and `-/login-states/`
/// (a day) removes them (README, "Running several instances").
mod shared_sessions {
    use object_store::{PutMode, UpdateVersion};

    use crate::cmd::sync::to_api;
    use crate::error::ApiError;
    use crate::github::GithubUser;
    use crate::login::{LoginError, Poll, Refused, Session};
    use crate::shared::{Created, Shared, SharedError};

    fn key(id: &str) -> String {
        format!("sessions/{id}.json")
    }

    fn state_key(state: &str) -> String {
        format!("login-states/{state}")
    }

    async fn load(shared: &Shared, id: &str) -> Result<Option<(Session, String)>, ApiError> {
        match shared.get_meta(&key(id)).await.map_err(to_api)? {
            Some((bytes, etag)) => serde_json::from_slice(&bytes)
                .map(|s| Some((s, etag)))
                .map_err(|e| ApiError::internal(format!("a stored login session is corrupt: {e}"))),
            None => Ok(None),
        }
    }

    /// Replaces session `id` if it is still the version `etag`: `false`
    /// when another request took a step first.
    async fn save(
        shared: &Shared,
        id: &str,
        session: &Session,
        etag: String,
    ) -> Result<bool, ApiError> {
        let json = serde_json::to_vec(session).map_err(|e| ApiError::internal(e.to_string()))?;
        let mode = PutMode::Update(UpdateVersion {
            e_tag: Some(etag),
            version: None,
        });
        match shared.put_meta(&key(id), json, mode).await {
            Ok(_) => Ok(true),
            Err(SharedError::Conflict) => Ok(false),
            Err(e) => Err(to_api(e)),
        }
    }

    async fn forget(shared: &Shared, id: &str, session: &Session) -> Result<(), ApiError> {
        shared.delete_meta(&key(id)).await.map_err(to_api)?;
        shared
            .delete_meta(&state_key(&session.state))
            .await
            .map_err(to_api)
    }

    pub async fn start(shared: &Shared, now: u64) -> Result<Result<String, Refused>, ApiError> {
        let (id, session) = match Session::new(now) {
            Ok(made) => made,
            Err(refused) => return Ok(Err(refused)),
        };
        let json = serde_json::to_vec(&session).map_err(|e| ApiError::internal(e.to_string()))?;
        let state = shared
            .put_meta(
                &state_key(&session.state),
                id.as_bytes().to_vec(),
                PutMode::Create,
            )
            .await
            .map_err(to_api)?;
        let made = shared
            .put_meta(&key(&id), json, PutMode::Create)
            .await
            .map_err(to_api)?;
        if state == Created::Exists || made == Created::Exists {
            // 128 random bits collided: refuse rather than share.
            return Ok(Err(Refused::Full));
        }
        Ok(Ok(id))
    }

    pub async fn begin(
        shared: &Shared,
        id: &str,
        now: u64,
    ) -> Result<Result<(String, String), LoginError>, ApiError> {
        let Some((mut session, etag)) = load(shared, id).await? else {
            return Ok(Err(LoginError::Unknown));
        };
        match session.begin(now) {
            Err(LoginError::Expired) => {
                forget(shared, id, &session).await?;
                Ok(Err(LoginError::Expired))
            }
            Err(e) => Ok(Err(e)),
            Ok(begun) if save(shared, id, &session, etag).await? => Ok(Ok(begun)),
            Ok(_) => Ok(Err(LoginError::Used)),
        }
    }

    pub async fn callback(
        shared: &Shared,
        state: &str,
        now: u64,
    ) -> Result<Result<(String, String), LoginError>, ApiError> {
        let Some((id, _)) = shared.get_meta(&state_key(state)).await.map_err(to_api)? else {
            return Ok(Err(LoginError::Unknown));
        };
        let id = String::from_utf8_lossy(&id).into_owned();
        if !crate::login::is_id(&id) {
            return Ok(Err(LoginError::Unknown));
        }
        let Some((mut session, etag)) = load(shared, &id).await? else {
            return Ok(Err(LoginError::Unknown));
        };
        match session.callback(now) {
            Err(LoginError::Expired) => {
                forget(shared, &id, &session).await?;
                Ok(Err(LoginError::Expired))
            }
            Err(e) => Ok(Err(e)),
            Ok(verifier) if save(shared, &id, &session, etag).await? => Ok(Ok((id, verifier))),
            Ok(_) => Ok(Err(LoginError::Used)),
        }
    }

    pub async fn finish(
        shared: &Shared,
        id: &str,
        outcome: Result<GithubUser, String>,
    ) -> Result<(), ApiError> {
        if let Some((mut session, etag)) = load(shared, id).await? {
            session.finish(outcome);
            save(shared, id, &session, etag).await?;
        }
        Ok(())
    }

    pub async fn poll(shared: &Shared, id: &str, now: u64) -> Result<Poll, ApiError> {
        let Some((session, etag)) = load(shared, id).await? else {
            return Ok(Poll::Unknown);
        };
        let (poll, gone) = session.poll(now);
        if !gone {
            return Ok(poll);
        }
        if matches!(poll, Poll::Approved(_) | Poll::Failed(_)) {
            // Answered once: of two racing polls only the one that marks
            // the session collected (by `If-Match`) gets the outcome.
            let mut collected = session.clone();
            collected.finish(Err("this login was already collected".into()));
            if !save(shared, id, &collected, etag).await? {
                return Ok(Poll::Unknown);
            }
        }
        forget(shared, id, &session).await?;
        Ok(poll)
    }
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
