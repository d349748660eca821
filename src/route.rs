//! Request paths to routes: which npm endpoint a path names.
//!
//! warp does not percent-decode path segments (DEPENDENCIES.md §3), and npm
//! writes scoped names three ways, so this module does it once, as a plain
//! function over the raw path (with the public URL's path prefix already
//! removed). The shapes, from PROTOCOL.md §2:
//!
//! | path | route |
//! |---|---|
//! | `-/ping`, `-/whoami` | [`Route::Ping`], [`Route::Whoami`] |
//! | `-/user/token/TOKEN` | [`Route::Logout`] |
//! | `-/user/org.couchdb.user:NAME` | [`Route::User`] |
//! | `-/v1/login` | [`Route::WebLogin`] |
//! | `-/npm/v1/security/advisories/bulk` | [`Route::Audit`] |
//! | `-/package/ESC/dist-tags[/TAG]` | [`Route::DistTags`] |
//! | `ESC` | [`Target::Document`] |
//! | `ESC/VERSION-OR-TAG-OR-RANGE` | [`Target::Version`] |
//! | `ESC/-rev/REV` | [`Target::Rev`] |
//! | `@scope/name/-/FILE.tgz` | [`Target::Tarball`] |
//! | `@scope/name/-/FILE.tgz/-rev/REV` | [`Target::TarballRev`] |
//!
//! `ESC` is `@scope%2fname` (any case of `%2f`), `%40scope%2fname`, or
//! `@scope/name` as two segments. Scoped names are validated here; unscoped
//! ones become [`Route::Upstream`], since nmr only redirects them.

use percent_encoding::percent_decode_str;

use crate::name::PackageName;

/// An npm endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Ping,
    Whoami,
    /// `npm logout`; the token in the path is never logged.
    Logout,
    /// `npm login --auth-type=legacy`: `-/user/org.couchdb.user:NAME`.
    User(String),
    /// npm's web login, `-/v1/login`: not offered, so npm falls back to legacy.
    WebLogin,
    Audit,
    /// `-/package/ESC/dist-tags` (tag `None`) or `.../dist-tags/TAG`.
    DistTags {
        name: PackageName,
        tag: Option<String>,
    },
    /// A route on a scoped package this registry hosts.
    Package {
        name: PackageName,
        target: Target,
    },
    /// A route on an unscoped package: answered by the upstream registry.
    Upstream,
    /// A path naming a scoped package whose name is invalid (400).
    InvalidName(String),
    /// Nothing here (404).
    NotFound,
}

/// What a package route addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Document,
    Version(String),
    Rev(String),
    Tarball(String),
    TarballRev(String),
}

fn decode(segment: &str) -> Option<String> {
    percent_decode_str(segment)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

/// Parses a raw request path relative to the registry root (no leading `/`
/// needed, query excluded).
pub fn parse(path: &str) -> Route {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        [""] => Route::NotFound,
        ["-", "ping"] => Route::Ping,
        ["-", "whoami"] => Route::Whoami,
        ["-", "user", "token", _] => Route::Logout,
        ["-", "user", user] => match decode(user)
            .as_deref()
            .and_then(|u| u.strip_prefix("org.couchdb.user:"))
        {
            Some(name) => Route::User(name.to_string()),
            None => Route::NotFound,
        },
        ["-", "v1", "login"] => Route::WebLogin,
        ["-", "npm", "v1", "security", "advisories", "bulk"] => Route::Audit,
        ["-", "package", rest @ ..] => parse_dist_tags(rest),
        ["-", ..] => Route::NotFound,
        _ => parse_package(&segments),
    }
}

fn parse_dist_tags(rest: &[&str]) -> Route {
    let (name, rest) = match split_name(rest) {
        Ok(Some(split)) => split,
        Ok(None) => return Route::Upstream,
        Err(e) => return e,
    };
    match rest {
        ["dist-tags"] => Route::DistTags { name, tag: None },
        ["dist-tags", tag] => match decode(tag) {
            Some(tag) => Route::DistTags {
                name,
                tag: Some(tag),
            },
            None => Route::NotFound,
        },
        _ => Route::NotFound,
    }
}

fn parse_package(segments: &[&str]) -> Route {
    let (name, rest) = match split_name(segments) {
        Ok(Some(split)) => split,
        Ok(None) => return Route::Upstream,
        Err(e) => return e,
    };
    let target = match rest {
        [] | [""] => Target::Document,
        ["-rev", rev] => Target::Rev(rev.to_string()),
        ["-", file] => Target::Tarball(file.to_string()),
        ["-", file, "-rev", _] => Target::TarballRev(file.to_string()),
        [spec] if *spec != "-" => match decode(spec) {
            Some(spec) => Target::Version(spec),
            None => return Route::NotFound,
        },
        _ => return Route::NotFound,
    };
    Route::Package { name, target }
}

/// Splits the package name off the front of `segments`. `Ok(None)` for an
/// unscoped name; `Err` with the route to answer when the scoped name is
/// invalid or undecodable.
fn split_name<'a>(segments: &'a [&'a str]) -> Result<Option<(PackageName, &'a [&'a str])>, Route> {
    let Some(first) = segments.first() else {
        return Err(Route::NotFound);
    };
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
        (format!("{first}/{second}"), &segments[2..])
    };
    match PackageName::parse(&raw) {
        Ok(name) => Ok(Some((name, rest))),
        Err(e) => Err(Route::InvalidName(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkg(name: &str, target: Target) -> Route {
        Route::Package {
            name: PackageName::parse(name).unwrap(),
            target,
        }
    }

    #[test]
    fn every_spelling_of_a_scoped_name() {
        for path in [
            "/@acme%2fwidget",
            "/@acme%2Fwidget",
            "/%40acme%2fwidget",
            "/@acme/widget",
        ] {
            assert_eq!(parse(path), pkg("@acme/widget", Target::Document), "{path}");
        }
    }

    #[test]
    fn package_targets() {
        assert_eq!(
            parse("/@acme%2fwidget/1.0.0"),
            pkg("@acme/widget", Target::Version("1.0.0".into()))
        );
        assert_eq!(
            parse("/@acme/widget/latest"),
            pkg("@acme/widget", Target::Version("latest".into()))
        );
        assert_eq!(
            parse("/@acme%2fwidget/%5E1.0.0"),
            pkg("@acme/widget", Target::Version("^1.0.0".into()))
        );
        assert_eq!(
            parse("/@acme%2fwidget/-rev/3-abc"),
            pkg("@acme/widget", Target::Rev("3-abc".into()))
        );
        assert_eq!(
            parse("/@acme/widget/-/widget-1.0.0.tgz"),
            pkg("@acme/widget", Target::Tarball("widget-1.0.0.tgz".into()))
        );
        assert_eq!(
            parse("/@acme/widget/-/widget-1.0.0.tgz/-rev/4-x"),
            pkg(
                "@acme/widget",
                Target::TarballRev("widget-1.0.0.tgz".into())
            )
        );
    }

    #[test]
    fn dist_tag_routes() {
        let name = PackageName::parse("@acme/widget").unwrap();
        assert_eq!(
            parse("/-/package/@acme%2fwidget/dist-tags"),
            Route::DistTags {
                name: name.clone(),
                tag: None
            }
        );
        assert_eq!(
            parse("/-/package/@acme/widget/dist-tags/beta"),
            Route::DistTags {
                name,
                tag: Some("beta".into())
            }
        );
        assert_eq!(parse("/-/package/lodash/dist-tags"), Route::Upstream);
    }

    #[test]
    fn fixed_routes() {
        assert_eq!(parse("/-/ping"), Route::Ping);
        assert_eq!(parse("/-/whoami"), Route::Whoami);
        assert_eq!(parse("/-/user/token/abc"), Route::Logout);
        assert_eq!(
            parse("/-/user/org.couchdb.user:alice"),
            Route::User("alice".into())
        );
        assert_eq!(
            parse("/-/user/org.couchdb.user%3Aalice"),
            Route::User("alice".into())
        );
        assert_eq!(parse("/-/v1/login"), Route::WebLogin);
        assert_eq!(parse("/-/npm/v1/security/advisories/bulk"), Route::Audit);
        assert_eq!(parse("/-/nope"), Route::NotFound);
        assert_eq!(parse("/"), Route::NotFound);
    }

    #[test]
    fn unscoped_names_go_upstream() {
        assert_eq!(parse("/lodash"), Route::Upstream);
        assert_eq!(parse("/lodash/-/lodash-4.17.21.tgz"), Route::Upstream);
        assert_eq!(parse("/JSONStream/1.0.0"), Route::Upstream);
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
                matches!(parse(path), Route::InvalidName(_)),
                "{path}: {:?}",
                parse(path)
            );
        }
    }
}
