//! Requests to routes: which npm endpoint a method and path name, and what
//! each endpoint needs before its body is read: the [`Action`] it is
//! authorized for and how large its body may be.
//!
//! warp does not percent-decode path segments (docs/dependencies.md,
//! "warp"), and npm writes scoped names three ways, so this module does it
//! once, as a plain function over the method and the raw path (with the
//! public URL's path prefix already removed). The shapes
//! (docs/npm-protocol.md, "Endpoints"):
//!
//! | method and path | route |
//! |---|---|
//! | `GET -/ping`, `GET -/whoami` | [`Route::Ping`], [`Route::Whoami`] |
//! | `DELETE -/user/token/TOKEN` | [`Route::Logout`] |
//! | `PUT -/user/org.couchdb.user:NAME` | [`Route::Login`] |
//! | `POST -/v1/login` | [`Route::WebLogin`] |
//! | `GET -/v1/login/session/ID`, `GET -/v1/login/callback`, `GET -/v1/login/done/ID` | [`Route::LoginSession`], [`Route::LoginCallback`], [`Route::LoginDone`] |
//! | `GET`, `POST -/npm/v1/tokens` | [`Route::ListTokens`], [`Route::CreateToken`] |
//! | `DELETE -/npm/v1/tokens/token/KEY-OR-TOKEN` | [`Route::RevokeToken`] |
//! | `GET`, `POST -/npm/v1/user` | [`Route::Profile`], [`Route::ProfileWrite`] |
//! | `POST -/npm/v1/security/advisories/bulk` | [`Route::Audit`] |
//! | `POST -/npm/v1/oidc/token/exchange/package/ESC` | [`Route::OidcExchange`] |
//! | `GET -/package/ESC/visibility` | [`Op::Visibility`] |
//! | `GET -/package/ESC/dist-tags` | [`Op::DistTags`] |
//! | `PUT`, `DELETE -/package/ESC/dist-tags/TAG` | [`Op::AddDistTag`], [`Op::RemoveDistTag`] |
//! | `GET ESC` | [`Op::Packument`] |
//! | `PUT ESC` | [`Op::Put`] (publish or deprecate) |
//! | `GET ESC/VERSION-OR-TAG-OR-RANGE` | [`Op::Version`] |
//! | `PUT`, `DELETE ESC/-rev/REV` | [`Op::UnpublishVersions`], [`Op::UnpublishPackage`] |
//! | `GET @scope/name/-/FILE.tgz` | [`Op::Tarball`] |
//! | `DELETE @scope/name/-/FILE.tgz/-rev/REV` | [`Op::DeleteTarball`] |
//!
//! `ESC` is `@scope%2fname` (any case of `%2f`), `%40scope%2fname`, or
//! `@scope/name` as two segments; `HEAD` is routed as `GET`. Scoped names
//! are validated here; unscoped ones become [`Route::Upstream`], since nmr
//! only redirects them.

use std::borrow::Cow;

use http::Method;
use percent_encoding::percent_decode_str;

use crate::auth::Action;
use crate::name::PackageName;

/// The body limit of routes whose bodies are small by nature (login,
/// dist-tag add, and every route that takes no body at all).
pub const SMALL_BODY: u64 = 64 * 1024;

/// An npm endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Ping,
    Whoami,
    /// `npm logout`; the token in the path is never logged.
    Logout,
    /// `npm login --auth-type=legacy`: `PUT -/user/org.couchdb.user:NAME`.
    Login(String),
    /// npm's web login: `POST -/v1/login` starts a session.
    WebLogin,
    /// The loginUrl npm shows: redirects the browser to GitHub.
    LoginSession(String),
    /// Where GitHub sends the browser back (`?code=&state=`).
    LoginCallback,
    /// The doneUrl npm polls.
    LoginDone(String),
    /// `npm token list`.
    ListTokens,
    /// `npm token create`.
    CreateToken,
    /// `npm token revoke`: the key or token in the path is never logged.
    RevokeToken(String),
    /// `npm profile get`.
    Profile,
    /// `npm profile set` (refused: the profile is GitHub's).
    ProfileWrite,
    /// `npm audit`'s bulk advisory request: answered with no advisories.
    Audit,
    /// Trusted publishing: a GitHub Actions ID token exchanged for a
    /// registry token for this package (authorized by the token itself).
    OidcExchange(PackageName),
    /// `POST -/nmr/v1/oidc/token/exchange/read`: a read-only token for CI
    /// installs.
    OidcReadExchange,
    /// An endpoint on a scoped package this registry hosts.
    Package {
        name: PackageName,
        op: Op,
    },
    /// A read of an unscoped package: answered by the upstream registry.
    Upstream,
    /// npm's tarball DELETE of an unpublish with a doubled path prefix
    /// (docs/npm-protocol.md, "unpublish"): the tarball already went with its
    /// version, so this only answers success.
    UpstreamTarballDelete,
    /// A write to an unscoped package (403).
    UpstreamWrite,
    /// A path naming a scoped package whose name is invalid (400).
    InvalidName(String),
    /// A known path with a method it does not take (405).
    MethodNotAllowed,
    /// Nothing here (404).
    NotFound,
}

/// What a package route does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Packument,
    Version(String),
    Tarball(String),
    /// `PUT ESC`: a publish (with `_attachments`) or a deprecation.
    Put,
    UnpublishVersions {
        rev: String,
    },
    UnpublishPackage {
        rev: String,
    },
    DeleteTarball {
        file: String,
        rev: String,
    },
    DistTags,
    AddDistTag(String),
    RemoveDistTag(String),
    /// `GET -/package/ESC/visibility`: whether the package is public.
    Visibility,
    /// `GET -/package/ESC/trust`: `npm trust list`.
    ListTrust,
    /// `POST -/package/ESC/trust`: `npm trust github`.
    CreateTrust,
    /// `DELETE -/package/ESC/trust/ID`: `npm trust revoke`.
    RevokeTrust(String),
}

impl Op {
    /// The action the route is authorized for.
    /// Whether this is one of the hot reads (packument, version manifest,
    /// tarball): the routes `http::handle` serves in place and whose
    /// granted reads `auth::ReadGrants` may reuse. Each is an
    /// [`Action::Read`].
    pub fn is_hot_read(&self) -> bool {
        matches!(self, Op::Packument | Op::Version(_) | Op::Tarball(_))
    }

    pub fn action(&self) -> Action {
        match self {
            Op::Packument | Op::Version(_) | Op::Tarball(_) | Op::DistTags | Op::Visibility => {
                Action::Read
            }
            Op::Put => Action::Publish,
            Op::AddDistTag(_) | Op::RemoveDistTag(_) => Action::DistTag,
            Op::UnpublishVersions { .. }
            | Op::UnpublishPackage { .. }
            | Op::DeleteTarball { .. } => Action::Unpublish,
            Op::ListTrust => Action::InspectTrust,
            Op::CreateTrust | Op::RevokeTrust(_) => Action::ConfigureTrust,
        }
    }
}

impl Route {
    /// The package and action a route is authorized for; `None` for routes
    /// that are not about one package.
    pub fn package(&self) -> Option<(&PackageName, Action)> {
        match self {
            Route::Package { name, op } => Some((name, op.action())),
            _ => None,
        }
    }

    /// The largest body the route reads, in bytes: `max_body_size` for the
    /// routes that carry a packument (publish, deprecate, unpublish), and
    /// [`SMALL_BODY`] for every other.
    pub fn body_limit(&self, max_body_size: u64) -> u64 {
        match self {
            Route::Package {
                op: Op::Put | Op::UnpublishVersions { .. },
                ..
            }
            | Route::Audit => max_body_size,
            _ => SMALL_BODY,
        }
    }

    /// Whether the route acts for a signed-in user who must be identified
    /// before its body is read (`npm whoami`, `npm token`, `npm profile
    /// get`).
    pub fn needs_user(&self) -> bool {
        matches!(
            self,
            Route::Whoami
                | Route::ListTokens
                | Route::CreateToken
                | Route::RevokeToken(_)
                | Route::Profile
        )
    }

    /// Whether the route only needs its body to be consumed, not kept
    /// (npm audit's request, answered with no advisories).
    pub fn discards_body(&self) -> bool {
        matches!(self, Route::Audit)
    }
}

fn decode(segment: &str) -> Option<Cow<'_, str>> {
    // Borrowed when there is nothing to decode: most paths, on the hot path.
    percent_decode_str(segment).decode_utf8().ok()
}

/// Parses a request: `method` and the raw `path` relative to the registry
/// root (no leading `/` needed, query excluded).
pub fn parse(method: &Method, path: &str) -> Route {
    let method = if method == Method::HEAD {
        &Method::GET
    } else {
        method
    };
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let only = |m: Method, route: Route| {
        if *method == m {
            route
        } else {
            Route::MethodNotAllowed
        }
    };
    match segments.as_slice() {
        [""] => Route::NotFound,
        ["-", "ping"] => only(Method::GET, Route::Ping),
        ["-", "whoami"] => only(Method::GET, Route::Whoami),
        ["-", "user", "token", _] => only(Method::DELETE, Route::Logout),
        ["-", "user", user] => match decode(user)
            .as_deref()
            .and_then(|u| u.strip_prefix("org.couchdb.user:"))
        {
            Some(name) => only(Method::PUT, Route::Login(name.to_string())),
            None => Route::NotFound,
        },
        ["-", "v1", "login"] => only(Method::POST, Route::WebLogin),
        ["-", "v1", "login", "session", id] => {
            only(Method::GET, Route::LoginSession(id.to_string()))
        }
        ["-", "v1", "login", "callback"] => only(Method::GET, Route::LoginCallback),
        ["-", "v1", "login", "done", id] => only(Method::GET, Route::LoginDone(id.to_string())),
        ["-", "npm", "v1", "tokens"] => match *method {
            Method::GET => Route::ListTokens,
            Method::POST => Route::CreateToken,
            _ => Route::MethodNotAllowed,
        },
        ["-", "npm", "v1", "tokens", "token", which] => match decode(which) {
            Some(which) => only(Method::DELETE, Route::RevokeToken(which.into_owned())),
            None => Route::NotFound,
        },
        ["-", "npm", "v1", "user"] => match *method {
            Method::GET => Route::Profile,
            Method::POST | Method::PUT => Route::ProfileWrite,
            _ => Route::MethodNotAllowed,
        },
        ["-", "npm", "v1", "security", "advisories", "bulk"] => only(Method::POST, Route::Audit),
        ["-", "nmr", "v1", "oidc", "token", "exchange", "read"] => {
            only(Method::POST, Route::OidcReadExchange)
        }
        [
            "-",
            "npm",
            "v1",
            "oidc",
            "token",
            "exchange",
            "package",
            rest @ ..,
        ] => match split_name(rest) {
            Ok(Some((name, []))) => only(Method::POST, Route::OidcExchange(name)),
            Ok(_) => Route::NotFound,
            Err(e) => e,
        },
        ["-", "package", rest @ ..] => parse_dist_tags(method, rest),
        ["-", ..] => Route::NotFound,
        _ => parse_package(method, &segments),
    }
}

fn parse_dist_tags(method: &Method, rest: &[&str]) -> Route {
    let (name, rest) = match split_name(rest) {
        Ok(Some(split)) => split,
        Ok(None) => return upstream(method, rest),
        Err(e) => return e,
    };
    let op = match (rest, method.clone()) {
        (["visibility"], Method::GET) => Op::Visibility,
        (["trust"], Method::GET) => Op::ListTrust,
        (["trust"], Method::POST) => Op::CreateTrust,
        (["trust", id], Method::DELETE) => match decode(id) {
            Some(id) => Op::RevokeTrust(id.into_owned()),
            None => return Route::NotFound,
        },
        (["trust"] | ["trust", _], _) => return Route::MethodNotAllowed,
        (["dist-tags"], Method::GET) => Op::DistTags,
        (["dist-tags", tag], m) if m == Method::PUT || m == Method::DELETE => {
            let Some(tag) = decode(tag).map(Cow::into_owned) else {
                return Route::NotFound;
            };
            if m == Method::PUT {
                Op::AddDistTag(tag)
            } else {
                Op::RemoveDistTag(tag)
            }
        }
        (["dist-tags"] | ["dist-tags", _], _) => return Route::MethodNotAllowed,
        _ => return Route::NotFound,
    };
    Route::Package { name, op }
}

fn parse_package(method: &Method, segments: &[&str]) -> Route {
    let (name, rest) = match split_name(segments) {
        Ok(Some(split)) => split,
        Ok(None) => return upstream(method, segments),
        Err(e) => return e,
    };
    let op = match (rest, method.clone()) {
        ([] | [""], Method::GET) => Op::Packument,
        ([] | [""], Method::PUT) => Op::Put,
        (["-rev", rev], Method::PUT) => Op::UnpublishVersions {
            rev: rev.to_string(),
        },
        (["-rev", rev], Method::DELETE) => Op::UnpublishPackage {
            rev: rev.to_string(),
        },
        (["-", file], Method::GET) => Op::Tarball(file.to_string()),
        (["-", file, "-rev", rev], Method::DELETE) => Op::DeleteTarball {
            file: file.to_string(),
            rev: rev.to_string(),
        },
        ([spec], Method::GET) if *spec != "-" && *spec != "-rev" => match decode(spec) {
            Some(spec) => Op::Version(spec.into_owned()),
            None => return Route::NotFound,
        },
        ([] | [""] | ["-rev", _] | ["-", _] | ["-", _, "-rev", _], _) => {
            return Route::MethodNotAllowed;
        }
        ([spec], _) if *spec != "-" && *spec != "-rev" => return Route::MethodNotAllowed,
        _ => return Route::NotFound,
    };
    Route::Package { name, op }
}

/// The route of an unscoped name: reads go upstream; the tarball DELETE of
/// an unpublish (a doubled prefix) is acknowledged; other writes are refused.
fn upstream(method: &Method, segments: &[&str]) -> Route {
    if *method == Method::GET {
        Route::Upstream
    } else if *method == Method::DELETE && is_tarball_delete(segments) {
        Route::UpstreamTarballDelete
    } else {
        Route::UpstreamWrite
    }
}

fn is_tarball_delete(segments: &[&str]) -> bool {
    matches!(segments, [.., file, "-rev", _] if file.ends_with(".tgz"))
}

/// `@scope%2fname` (either case of `%2f`, no other `%`) as
/// `@scope/name`; `None` for any other segment, which [`decode`] takes.
fn scoped_segment(segment: &str) -> Option<String> {
    if !segment.starts_with('@') {
        return None;
    }
    let at = segment.find('%')?;
    let rest = &segment[at + 1..];
    if !(rest.starts_with("2f") || rest.starts_with("2F")) || rest.contains('%') {
        return None;
    }
    let mut name = String::with_capacity(segment.len() - 2);
    name.push_str(&segment[..at]);
    name.push('/');
    name.push_str(&rest[2..]);
    Some(name)
}

/// Splits the package name off the front of `segments`. `Ok(None)` for an
/// unscoped name; `Err` with the route to answer when the scoped name is
/// invalid or undecodable.
fn split_name<'a>(segments: &'a [&'a str]) -> Result<Option<(PackageName, &'a [&'a str])>, Route> {
    let Some(first) = segments.first() else {
        return Err(Route::NotFound);
    };
    // npm writes a scoped name as one segment, `@scope%2fname`
    // (docs/npm-protocol.md): taken apart directly into the name's one
    // `String`, which PackageName keeps.
    if let Some(decoded) = scoped_segment(first) {
        return match PackageName::parse_owned(decoded) {
            Ok(name) => Ok(Some((name, &segments[1..]))),
            Err(e) => Err(Route::InvalidName(e)),
        };
    }
    let Some(first) = decode(first) else {
        return Err(Route::NotFound);
    };
    if !first.starts_with('@') {
        return Ok(None);
    }
    let (raw, rest) = if first.contains('/') {
        (first, &segments[1..])
    } else {
        let Some(second) = segments.get(1).and_then(|s| decode(s)) else {
            return Err(Route::InvalidName(format!(
                "package name {first:?} must be @scope/name"
            )));
        };
        (Cow::Owned(format!("{first}/{second}")), &segments[2..])
    };
    match PackageName::parse(&raw) {
        Ok(name) => Ok(Some((name, rest))),
        Err(e) => Err(Route::InvalidName(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hot_reads_are_reads() {
        for op in [
            Op::Packument,
            Op::Version("1.0.0".into()),
            Op::Tarball("x-1.0.0.tgz".into()),
        ] {
            assert!(op.is_hot_read());
            assert_eq!(op.action(), Action::Read, "{op:?}");
        }
        assert!(!Op::DistTags.is_hot_read());
    }

    fn pkg(name: &str, op: Op) -> Route {
        Route::Package {
            name: PackageName::parse(name).unwrap(),
            op,
        }
    }

    fn get(path: &str) -> Route {
        parse(&Method::GET, path)
    }

    #[test]
    fn every_spelling_of_a_scoped_name() {
        for path in [
            "/@acme%2fwidget",
            "/@acme%2Fwidget",
            "/%40acme%2fwidget",
            "/@acme/widget",
        ] {
            assert_eq!(get(path), pkg("@acme/widget", Op::Packument), "{path}");
        }
        assert_eq!(
            parse(&Method::HEAD, "/@acme/widget"),
            pkg("@acme/widget", Op::Packument)
        );
    }

    #[test]
    fn package_routes_and_their_actions() {
        let cases = [
            (
                Method::GET,
                "/@acme%2fwidget/1.0.0",
                Op::Version("1.0.0".into()),
                Action::Read,
            ),
            (
                Method::GET,
                "/@acme/widget/latest",
                Op::Version("latest".into()),
                Action::Read,
            ),
            (
                Method::GET,
                "/@acme%2fwidget/%5E1.0.0",
                Op::Version("^1.0.0".into()),
                Action::Read,
            ),
            (Method::PUT, "/@acme%2fwidget", Op::Put, Action::Publish),
            (
                Method::PUT,
                "/@acme%2fwidget/-rev/3-abc",
                Op::UnpublishVersions {
                    rev: "3-abc".into(),
                },
                Action::Unpublish,
            ),
            (
                Method::DELETE,
                "/@acme%2fwidget/-rev/3-abc",
                Op::UnpublishPackage {
                    rev: "3-abc".into(),
                },
                Action::Unpublish,
            ),
            (
                Method::GET,
                "/@acme/widget/-/widget-1.0.0.tgz",
                Op::Tarball("widget-1.0.0.tgz".into()),
                Action::Read,
            ),
            (
                Method::DELETE,
                "/@acme/widget/-/widget-1.0.0.tgz/-rev/4-x",
                Op::DeleteTarball {
                    file: "widget-1.0.0.tgz".into(),
                    rev: "4-x".into(),
                },
                Action::Unpublish,
            ),
            (
                Method::GET,
                "/-/package/@acme%2fwidget/dist-tags",
                Op::DistTags,
                Action::Read,
            ),
            (
                Method::PUT,
                "/-/package/@acme/widget/dist-tags/beta",
                Op::AddDistTag("beta".into()),
                Action::DistTag,
            ),
            (
                Method::DELETE,
                "/-/package/@acme/widget/dist-tags/beta",
                Op::RemoveDistTag("beta".into()),
                Action::DistTag,
            ),
        ];
        for (method, path, op, action) in cases {
            let route = parse(&method, path);
            assert_eq!(route, pkg("@acme/widget", op), "{method} {path}");
            assert_eq!(route.package().unwrap().1, action, "{method} {path}");
        }
    }

    #[test]
    fn methods_a_path_does_not_take() {
        for (method, path) in [
            (Method::DELETE, "/@acme/widget"),
            (Method::POST, "/@acme/widget"),
            (Method::PUT, "/@acme/widget/-/widget-1.0.0.tgz"),
            (Method::PUT, "/@acme/widget/1.0.0"),
            (Method::DELETE, "/-/package/@acme/widget/dist-tags"),
            (Method::GET, "/-/package/@acme/widget/dist-tags/beta"),
            (Method::POST, "/-/ping"),
        ] {
            assert_eq!(
                parse(&method, path),
                Route::MethodNotAllowed,
                "{method} {path}"
            );
        }
    }

    #[test]
    fn body_limits() {
        let max = 100 << 20;
        assert_eq!(parse(&Method::PUT, "/@acme/widget").body_limit(max), max);
        assert_eq!(
            parse(&Method::PUT, "/@acme/widget/-rev/1-a").body_limit(max),
            max
        );
        assert_eq!(
            parse(&Method::PUT, "/-/package/@acme/widget/dist-tags/x").body_limit(max),
            SMALL_BODY
        );
        assert_eq!(
            parse(&Method::PUT, "/-/user/org.couchdb.user:alice").body_limit(max),
            SMALL_BODY
        );
        assert_eq!(get("/@acme/widget").body_limit(max), SMALL_BODY);
    }

    #[test]
    fn fixed_routes() {
        assert_eq!(get("/-/ping"), Route::Ping);
        assert_eq!(get("/-/whoami"), Route::Whoami);
        assert_eq!(parse(&Method::DELETE, "/-/user/token/abc"), Route::Logout);
        let login = |path| parse(&Method::PUT, path);
        assert_eq!(
            login("/-/user/org.couchdb.user:alice"),
            Route::Login("alice".into())
        );
        assert_eq!(
            login("/-/user/org.couchdb.user%3Aalice"),
            Route::Login("alice".into())
        );
        assert_eq!(parse(&Method::POST, "/-/v1/login"), Route::WebLogin);
        let widget = PackageName::parse("@acme/widget").unwrap();
        for path in [
            "/-/npm/v1/oidc/token/exchange/package/@acme%2fwidget",
            "/-/npm/v1/oidc/token/exchange/package/%40acme%2Fwidget",
        ] {
            assert_eq!(
                parse(&Method::POST, path),
                Route::OidcExchange(widget.clone())
            );
        }
        assert_eq!(
            get("/-/package/@acme%2fwidget/visibility"),
            pkg("@acme/widget", Op::Visibility)
        );
        assert_eq!(
            parse(&Method::POST, "/-/npm/v1/security/advisories/bulk"),
            Route::Audit
        );
        assert_eq!(get("/-/nope"), Route::NotFound);
        assert_eq!(get("/"), Route::NotFound);
    }

    #[test]
    fn unscoped_names_go_upstream() {
        assert_eq!(get("/lodash"), Route::Upstream);
        assert_eq!(get("/lodash/-/lodash-4.17.21.tgz"), Route::Upstream);
        assert_eq!(get("/JSONStream/1.0.0"), Route::Upstream);
        assert_eq!(get("/-/package/lodash/dist-tags"), Route::Upstream);
        assert_eq!(parse(&Method::PUT, "/lodash"), Route::UpstreamWrite);
        assert_eq!(
            parse(
                &Method::DELETE,
                "/scoped/@acme/widget/-/widget-1.0.0.tgz/-rev/3-a"
            ),
            Route::UpstreamTarballDelete
        );
        assert_eq!(
            parse(&Method::DELETE, "/lodash/-rev/3-a"),
            Route::UpstreamWrite
        );
    }

    #[test]
    fn traversal_never_becomes_a_name() {
        for path in [
            "/@a/..%2f..",
            "/@a%2f..%2f..%2fetc",
            "/@a/..",
            "/@a/.%2e",
            "/@acme/Widget",
            "/@acme",
            "/@acme%2f",
            "/-/package/@a%2f..%2f../dist-tags",
        ] {
            assert!(
                matches!(get(path), Route::InvalidName(_)),
                "{path}: {:?}",
                get(path)
            );
        }
    }
}
