//! Web login sessions: the state of one `npm login` between npm's `POST
//! /-/v1/login` and its last poll of the doneUrl (docs/github-app.md, "Web
//! login").
//!
//! A session is created by the POST and lives [`SESSION_TTL`] seconds. Its
//! id (128 random bits, hex) is in both URLs npm gets, and is the only
//! secret of the doneUrl, which carries no credentials. The life of one
//! session, each step allowed once:
//!
//! 1. [`Sessions::begin`]: the browser opens the loginUrl; nmr redirects to
//!    GitHub with the session's `state` (another 128 random bits, so the
//!    id never travels through GitHub) and its PKCE challenge.
//! 2. [`Sessions::callback`]: GitHub sends the browser back with `state`;
//!    the session hands out its PKCE verifier once, for the code exchange.
//! 3. [`Sessions::finish`]: the exchange's outcome, the GitHub user or why
//!    not (no GitHub token is kept: only the login and id).
//! 4. [`Sessions::poll`]: npm polls; pending until finished, then the
//!    outcome once, and the session is gone.
//!
//! Sessions are kept in memory ([`Sessions`]), at most [`MAX_SESSIONS`] at
//! once and [`STARTS_PER_MINUTE`] new ones per client address, so the
//! unauthenticated POST cannot fill memory or disk. A restart loses logins
//! in progress (npm then falls back to its legacy prompt, and the user runs
//! it again). Under `db.type = "s3"` each [`Session`] is an object in the
//! bucket instead, so any instance can take any step (`src/cmd/login.rs`);
//! the per-address budget stays per instance. The rules take the clock as
//! an argument.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

use base64::Engine;
use sha2::{Digest, Sha256};

use crate::github::GithubUser;
use crate::limits::Budgets;

/// Seconds a login session lives.
pub const SESSION_TTL: u64 = 600;

/// Logins in progress at once.
pub const MAX_SESSIONS: usize = 10_000;

/// New logins one client address may start per minute.
pub const STARTS_PER_MINUTE: u32 = 20;

/// Where a session is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Outcome {
    /// Waiting for the user in the browser.
    Pending,
    /// The code is being exchanged.
    Exchanging,
    /// The user signed in on GitHub.
    Approved(GithubUser),
    /// The login failed; the sentence says why.
    Failed(String),
}

/// One login in progress: kept in [`Sessions`], or under `db.type = "s3"`
/// in the bucket (`src/cmd/login.rs`), each step a plain function of it
/// and the clock.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Session {
    /// What GitHub sends back (32 hex digits).
    pub state: String,
    verifier: String,
    created: u64,
    /// Whether the loginUrl was opened (it works once).
    opened: bool,
    outcome: Outcome,
}

impl Session {
    /// A new session at `now`, with its id.
    pub fn new(now: u64) -> Result<(String, Session), Refused> {
        match (random_hex(16), random_hex(16), random_hex(32)) {
            (Ok(id), Ok(state), Ok(verifier)) => Ok((
                id,
                Session {
                    state,
                    verifier,
                    created: now,
                    opened: false,
                    outcome: Outcome::Pending,
                },
            )),
            _ => Err(Refused::Full),
        }
    }

    /// Whether it has expired at `now`.
    pub fn expired(&self, now: u64) -> bool {
        expired(self, now)
    }

    /// Step 1 (see the module doc): its `state` and PKCE challenge, once.
    pub fn begin(&mut self, now: u64) -> Result<(String, String), LoginError> {
        if expired(self, now) {
            return Err(LoginError::Expired);
        }
        if self.opened {
            return Err(LoginError::Used);
        }
        self.opened = true;
        Ok((self.state.clone(), challenge(&self.verifier)))
    }

    /// Step 2: the PKCE verifier, once.
    pub fn callback(&mut self, now: u64) -> Result<String, LoginError> {
        if expired(self, now) {
            return Err(LoginError::Expired);
        }
        if !self.opened || self.outcome != Outcome::Pending {
            return Err(LoginError::Used);
        }
        self.outcome = Outcome::Exchanging;
        Ok(self.verifier.clone())
    }

    /// Step 3: the login's outcome.
    pub fn finish(&mut self, outcome: Result<GithubUser, String>) {
        self.outcome = match outcome {
            Ok(user) => Outcome::Approved(user),
            Err(why) => Outcome::Failed(why),
        };
    }

    /// Step 4: what a poll at `now` answers, and whether the session is
    /// then gone (finished or expired).
    pub fn poll(&self, now: u64) -> (Poll, bool) {
        if expired(self, now) {
            return (Poll::Unknown, true);
        }
        match &self.outcome {
            Outcome::Pending | Outcome::Exchanging => (Poll::Pending, false),
            Outcome::Approved(user) => (Poll::Approved(user.clone()), true),
            Outcome::Failed(why) => (Poll::Failed(why.clone()), true),
        }
    }
}

/// Why a step of a session cannot be taken; `Display` is the sentence the
/// user's browser page shows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    #[error(
        "this login link does not belong to a login in progress: run npm login again in your terminal"
    )]
    Unknown,
    #[error(
        "this login has expired (a login lasts 10 minutes): run npm login again in your terminal"
    )]
    Expired,
    #[error(
        "this login link was already used: run npm login again in your terminal to get a new one"
    )]
    Used,
}

/// What a poll of the doneUrl finds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Poll {
    /// Still waiting: 202.
    Pending,
    /// Signed in (the session is gone now).
    Approved(GithubUser),
    /// Failed (the session is gone now).
    Failed(String),
    /// No such session (never, expired, or already collected).
    Unknown,
}

/// Why a session cannot be started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// The address started too many; seconds to wait.
    Throttled(u64),
    /// Too many logins are in progress.
    Full,
}

/// The logins in progress.
pub struct Sessions {
    inner: Mutex<Inner>,
    budgets: Budgets,
}

#[derive(Default)]
struct Inner {
    /// id → session.
    sessions: HashMap<String, Session>,
    /// state → id.
    states: HashMap<String, String>,
}

impl Inner {
    fn remove(&mut self, id: &str) -> Option<Session> {
        let session = self.sessions.remove(id)?;
        self.states.remove(&session.state);
        Some(session)
    }

    fn sweep(&mut self, now: u64) {
        let expired: Vec<String> = self
            .sessions
            .iter()
            .filter(|(_, s)| expired(s, now))
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            self.remove(&id);
        }
    }
}

fn expired(session: &Session, now: u64) -> bool {
    now >= session.created + SESSION_TTL
}

/// `n` random bytes as hex.
fn random_hex(n: usize) -> Result<String, String> {
    let mut bytes = vec![0u8; n];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness for a login: {e}"))?;
    Ok(hex::encode(bytes))
}

/// The PKCE S256 challenge of `verifier`: base64url (no padding) of its
/// SHA-256 (RFC 7636 §4.2).
pub fn challenge(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// Whether `id` has the form of a session id or state (32 lowercase hex
/// digits), so nothing else is ever looked up.
pub fn is_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl Default for Sessions {
    fn default() -> Sessions {
        Sessions {
            inner: Mutex::default(),
            budgets: Budgets::new(STARTS_PER_MINUTE, 10_000),
        }
    }
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes one start from `client`'s budget ([`STARTS_PER_MINUTE`]).
    pub fn take_budget(&self, client: IpAddr, instant: Instant) -> Result<(), Refused> {
        self.budgets
            .take(client, instant)
            .map_err(|wait| Refused::Throttled(wait.as_secs().max(1)))
    }

    /// Starts a session for `client` at `now` (Unix seconds; `instant` for
    /// the address budget): its id.
    pub fn start(&self, client: IpAddr, now: u64, instant: Instant) -> Result<String, Refused> {
        self.take_budget(client, instant)?;
        let mut inner = self.lock();
        if inner.sessions.len() >= MAX_SESSIONS {
            inner.sweep(now);
            if inner.sessions.len() >= MAX_SESSIONS {
                return Err(Refused::Full);
            }
        }
        let (id, session) = Session::new(now)?;
        inner.states.insert(session.state.clone(), id.clone());
        inner.sessions.insert(id.clone(), session);
        Ok(id)
    }

    /// Step 1: the loginUrl of session `id` is opened at `now`: its `state`
    /// and PKCE challenge, once.
    pub fn begin(&self, id: &str, now: u64) -> Result<(String, String), LoginError> {
        let mut inner = self.lock();
        let session = inner.sessions.get_mut(id).ok_or(LoginError::Unknown)?;
        let begun = session.begin(now);
        if begun == Err(LoginError::Expired) {
            inner.remove(id);
        }
        begun
    }

    /// Step 2: GitHub sent the browser back with `state` at `now`: the
    /// session's id and PKCE verifier, once.
    pub fn callback(&self, state: &str, now: u64) -> Result<(String, String), LoginError> {
        let mut inner = self.lock();
        let id = inner
            .states
            .get(state)
            .cloned()
            .ok_or(LoginError::Unknown)?;
        let session = inner.sessions.get_mut(&id).ok_or(LoginError::Unknown)?;
        match session.callback(now) {
            Ok(verifier) => Ok((id, verifier)),
            Err(e) => {
                if e == LoginError::Expired {
                    inner.remove(&id);
                }
                Err(e)
            }
        }
    }

    /// Step 3: the outcome of session `id`'s login.
    pub fn finish(&self, id: &str, outcome: Result<GithubUser, String>) {
        if let Some(session) = self.lock().sessions.get_mut(id) {
            session.finish(outcome);
        }
    }

    /// Step 4: npm polls session `id` at `now`. A finished session is
    /// answered once and removed.
    pub fn poll(&self, id: &str, now: u64) -> Poll {
        let mut inner = self.lock();
        let Some(session) = inner.sessions.get(id) else {
            return Poll::Unknown;
        };
        let (poll, gone) = session.poll(now);
        if gone {
            inner.remove(id);
        }
        poll
    }

    /// How many sessions are held (expired ones included until swept).
    pub fn len(&self) -> usize {
        self.lock().sessions.len()
    }

    /// Whether no session is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOME: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    fn alice() -> GithubUser {
        GithubUser {
            login: "alice".into(),
            id: 1000,
        }
    }

    #[test]
    fn a_session_goes_through_each_step_once() {
        let sessions = Sessions::default();
        let id = sessions.start(HOME, 100, Instant::now()).unwrap();
        assert!(is_id(&id));
        assert_eq!(sessions.poll(&id, 101), Poll::Pending);
        let (state, challenge_sent) = sessions.begin(&id, 101).unwrap();
        assert!(is_id(&state) && state != id);
        assert_eq!(sessions.begin(&id, 102), Err(LoginError::Used));
        let (same, verifier) = sessions.callback(&state, 103).unwrap();
        assert_eq!(same, id);
        assert_eq!(challenge(&verifier), challenge_sent);
        assert_eq!(sessions.callback(&state, 103), Err(LoginError::Used));
        assert_eq!(sessions.poll(&id, 104), Poll::Pending);
        sessions.finish(&id, Ok(alice()));
        assert_eq!(sessions.poll(&id, 105), Poll::Approved(alice()));
        assert_eq!(sessions.poll(&id, 106), Poll::Unknown, "collected once");
        assert!(sessions.is_empty());
    }

    #[test]
    fn sessions_expire_and_unknown_states_are_refused() {
        let sessions = Sessions::default();
        let id = sessions.start(HOME, 100, Instant::now()).unwrap();
        assert_eq!(
            sessions.callback(&"0".repeat(32), 101),
            Err(LoginError::Unknown)
        );
        let (state, _) = sessions.begin(&id, 101).unwrap();
        assert_eq!(
            sessions.callback(&state, 100 + SESSION_TTL),
            Err(LoginError::Expired)
        );
        assert_eq!(sessions.poll(&id, 100 + SESSION_TTL), Poll::Unknown);
        let late = sessions.start(HOME, 200, Instant::now()).unwrap();
        assert_eq!(
            sessions.begin(&late, 200 + SESSION_TTL),
            Err(LoginError::Expired)
        );
    }

    #[test]
    fn a_callback_needs_the_link_opened_first_and_failures_are_told_once() {
        let sessions = Sessions::default();
        let id = sessions.start(HOME, 100, Instant::now()).unwrap();
        let state = sessions.lock().sessions[&id].state.clone();
        assert_eq!(sessions.callback(&state, 101), Err(LoginError::Used));
        sessions.begin(&id, 101).unwrap();
        sessions.callback(&state, 102).unwrap();
        sessions.finish(&id, Err("denied".into()));
        assert_eq!(sessions.poll(&id, 103), Poll::Failed("denied".into()));
        assert_eq!(sessions.poll(&id, 103), Poll::Unknown);
    }

    #[test]
    fn one_address_cannot_start_without_bound() {
        let sessions = Sessions::default();
        let now = Instant::now();
        for _ in 0..STARTS_PER_MINUTE {
            sessions.start(HOME, 100, now).unwrap();
        }
        assert!(matches!(
            sessions.start(HOME, 100, now),
            Err(Refused::Throttled(_))
        ));
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(sessions.start(other, 100, now).is_ok());
    }

    #[test]
    fn the_challenge_is_rfc_7636s() {
        // RFC 7636, appendix B.
        assert_eq!(
            challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }
}
