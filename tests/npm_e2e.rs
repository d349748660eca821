//! End to end with the real npm client against the real nmr binary:
//! publish, install, view, dist-tag, deprecate, unpublish, restart, and the
//! redirect of unscoped packages to the upstream registry.
//!
//! The scenarios that touch tarballs run on every storage backend: local
//! disk, S3 streamed by nmr, S3 through presigned redirects, and S3 as the
//! metadata's truth (`db.type = "s3"`).

mod common;

use common::{Backend, Npm, Server, Upstream};

/// Runs each named scenario `fn(Backend)` as four tests: `local`, `s3`,
/// `s3_redirect` and `shared_db` (`db.type = "s3"`: the metadata in the
/// bucket too).
macro_rules! on_every_backend {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            use super::*;
            #[test]
            fn local() {
                super::$scenario(Backend::Local)
            }
            #[test]
            fn s3() {
                super::$scenario(Backend::S3)
            }
            #[test]
            fn s3_redirect() {
                super::$scenario(Backend::S3Redirect)
            }
            #[test]
            fn shared_db() {
                super::$scenario(Backend::Shared)
            }
        }
    )*};
}

on_every_backend!(
    publish_install_view_and_dist_tags,
    deprecate_and_unpublish,
    restart_keeps_everything
);

/// The status a tarball download answers on `backend`.
fn tarball_status(backend: Backend) -> u16 {
    if backend == Backend::S3Redirect {
        302
    } else {
        200
    }
}
use serde_json::{Value, json};

fn read(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Publishes `@acme/base@1.0.0`, then `@acme/widget` 1.0.0 and 1.1.0, which
/// depend on it.
fn publish_fixture(npm: &Npm) {
    let base = npm.package("@acme/base", "1.0.0", "base-1.0.0", json!({}));
    npm.ok(&base, &["publish"]);
    for v in ["1.0.0", "1.1.0"] {
        let dir = npm.package(
            "@acme/widget",
            v,
            &format!("widget-{v}"),
            json!({"dependencies": {"@acme/base": "^1.0.0"}}),
        );
        let out = npm.ok(&dir, &["publish"]);
        assert!(
            out.stdout.contains(&format!("+ @acme/widget@{v}")),
            "{}",
            out.all()
        );
    }
}

fn publish_install_view_and_dist_tags(backend: Backend) {
    let server = Server::start_on(backend, &[]);
    let publisher = Npm::new(&server.url, Some("publisher-token"));
    publish_fixture(&publisher);

    // A different machine: empty cache, so every tarball is downloaded.
    let client = Npm::new(&server.url, Some("client-token"));
    let app = client.project("app");
    client.ok(&app, &["install", "@acme/widget"]);
    let widget = app.join("node_modules/@acme/widget");
    assert!(read(&widget.join("index.js")).contains("widget-1.1.0"));
    let installed: Value = serde_json::from_str(&read(&widget.join("package.json"))).unwrap();
    assert_eq!(installed["version"], "1.1.0");
    assert!(read(&app.join("node_modules/@acme/base/index.js")).contains("base-1.0.0"));
    let lock: Value = serde_json::from_str(&read(&app.join("package-lock.json"))).unwrap();
    assert_eq!(
        lock["packages"]["node_modules/@acme/widget"]["resolved"],
        format!("{}@acme/widget/-/widget-1.1.0.tgz", server.url)
    );
    let downloaded = format!(
        "GET /@acme/widget/-/widget-1.1.0.tgz {}",
        tarball_status(backend)
    );
    let log = server.log();
    assert!(log.contains(&downloaded), "tarball was downloaded:\n{log}");

    let view = client.ok(&app, &["view", "@acme/widget", "--json"]);
    let view: Value = serde_json::from_str(&view.stdout).unwrap();
    assert_eq!(view["name"], "@acme/widget");
    assert_eq!(view["version"], "1.1.0");
    assert_eq!(view["versions"], json!(["1.0.0", "1.1.0"]));
    assert_eq!(view["dist-tags"]["latest"], "1.1.0");
    assert_eq!(view["dependencies"], json!({"@acme/base": "^1.0.0"}));
    assert_eq!(view["description"], "@acme/widget for tests");
    assert_eq!(
        view["dist"]["tarball"],
        format!("{}@acme/widget/-/widget-1.1.0.tgz", server.url)
    );
    assert!(
        view["dist"]["integrity"]
            .as_str()
            .unwrap()
            .starts_with("sha512-")
    );
    assert!(view["time"]["1.0.0"].is_string());
    let old = client.ok(&app, &["view", "@acme/widget@1.0.0", "version"]);
    assert_eq!(old.stdout.trim(), "1.0.0");

    let add = client.ok(&app, &["dist-tag", "add", "@acme/widget@1.0.0", "stable"]);
    assert!(
        add.stdout.contains("+stable: @acme/widget@1.0.0"),
        "{}",
        add.all()
    );
    let ls = client.ok(&app, &["dist-tag", "ls", "@acme/widget"]);
    assert!(
        ls.stdout.contains("latest: 1.1.0") && ls.stdout.contains("stable: 1.0.0"),
        "{}",
        ls.all()
    );
    let rm = client.ok(&app, &["dist-tag", "rm", "@acme/widget", "stable"]);
    assert!(
        rm.stdout.contains("-stable: @acme/widget@1.0.0"),
        "{}",
        rm.all()
    );
    let ls = client.ok(&app, &["dist-tag", "ls", "@acme/widget"]);
    assert!(!ls.stdout.contains("stable"), "{}", ls.all());

    // Installing by tag uses the moved tag at once (no stale cache).
    client.ok(&app, &["dist-tag", "add", "@acme/widget@1.0.0", "latest"]);
    let app2 = client.project("app2");
    client.ok(&app2, &["install", "@acme/widget"]);
    assert!(read(&app2.join("node_modules/@acme/widget/index.js")).contains("widget-1.0.0"));

    // A duplicate publish is refused with the registry's message.
    publisher.fails(
        &publisher.package("@acme/widget", "1.1.0", "evil", json!({})),
        &["publish", "--force"],
        "cannot publish over the previously published version 1.1.0",
    );
}

fn deprecate_and_unpublish(backend: Backend) {
    let server = Server::start_on(backend, &[]);
    let npm = Npm::new(&server.url, Some("token"));
    publish_fixture(&npm);
    let app = npm.project("app");

    npm.ok(
        &app,
        &["deprecate", "@acme/widget@1.0.0", "use 1.1.0 instead"],
    );
    let fresh = Npm::new(&server.url, Some("token"));
    let app1 = fresh.project("pinned");
    let install = fresh.ok(&app1, &["install", "@acme/widget@1.0.0"]);
    assert!(
        install
            .all()
            .contains("deprecated @acme/widget@1.0.0: use 1.1.0 instead"),
        "{}",
        install.all()
    );
    let view = npm.ok(&app, &["view", "@acme/widget@1.0.0", "deprecated"]);
    assert_eq!(view.stdout.trim(), "use 1.1.0 instead");
    npm.ok(&app, &["deprecate", "@acme/widget@1.0.0", ""]);
    let view = npm.ok(&app, &["view", "@acme/widget@1.0.0", "deprecated"]);
    assert_eq!(view.stdout.trim(), "");

    let tarball = "@acme/widget/-/widget-1.0.0.tgz";
    assert!(server.has_tarball(tarball));
    let out = npm.ok(&app, &["unpublish", "@acme/widget@1.0.0"]);
    assert!(out.stdout.contains("- @acme/widget@1.0.0"), "{}", out.all());
    let view = npm.ok(&app, &["view", "@acme/widget", "versions", "--json"]);
    assert_eq!(
        serde_json::from_str::<Value>(&view.stdout).unwrap(),
        json!(["1.1.0"])
    );
    assert!(
        !server.has_tarball(tarball),
        "the unpublished version's tarball is deleted"
    );
    let get = server.http().get("/@acme/widget/-/widget-1.0.0.tgz", &[]);
    assert_eq!(get.status, 404);

    // The number of an unpublished version is never reused.
    npm.fails(
        &npm.package("@acme/widget", "1.0.0", "again", json!({})),
        &["publish", "--tag", "old"],
        "was unpublished",
    );

    let out = npm.ok(&app, &["unpublish", "@acme/widget", "--force"]);
    assert!(out.stdout.contains("- @acme/widget"), "{}", out.all());
    npm.fails(&app, &["view", "@acme/widget"], "E404");
    assert!(!server.has_tarball("@acme/widget/-/widget-1.1.0.tgz"));
    // The other package is untouched.
    npm.ok(&app, &["view", "@acme/base", "version"]);
}

fn restart_keeps_everything(backend: Backend) {
    let mut server = Server::start_on(backend, &[]);
    let npm = Npm::new(&server.url, Some("token"));
    publish_fixture(&npm);
    let old_url = server.url.clone();
    server.restart();
    assert_ne!(server.url, old_url, "restarted on a new port");

    // Tarball URLs follow the new public URL.
    let client = Npm::new(&server.url, Some("token"));
    let app = client.project("after-restart");
    client.ok(&app, &["install", "@acme/widget@1.1.0"]);
    assert!(read(&app.join("node_modules/@acme/widget/index.js")).contains("widget-1.1.0"));
    assert!(
        read(&app.join("package-lock.json"))
            .contains(&format!("{}@acme/widget/-/widget-1.1.0.tgz", server.url))
    );
}

#[test]
fn unscoped_packages_redirect_upstream_without_credentials() {
    let upstream = Upstream::start();
    let server = Server::start(&[("NMR_UPSTREAM__URL", &upstream.url)]);
    let npm = Npm::new(&server.url, Some("secret-user-token"));
    let app = npm.project("unscoped");
    npm.ok(&app, &["install", "left-pad-lite"]);
    assert!(read(&app.join("node_modules/left-pad-lite/index.js")).contains("from upstream"));

    let requests = upstream.requests();
    assert!(
        requests.iter().any(|(p, _)| p == "/left-pad-lite"),
        "{requests:?}"
    );
    assert!(
        requests.iter().any(|(p, _)| p.ends_with(".tgz")),
        "{requests:?}"
    );
    assert!(
        requests.iter().all(|(_, auth)| !auth),
        "a token reached upstream: {requests:?}"
    );

    let http = server.http();
    let reply = http.get(
        "/left-pad-lite",
        &[("authorization", "Bearer secret-user-token")],
    );
    assert_eq!(reply.status, 302);
    assert_eq!(
        reply.header("location"),
        Some(format!("{}left-pad-lite", upstream.url).as_str())
    );
    assert!(!format!("{:?}", reply.headers).contains("secret-user-token"));
    let reply = http.get("/left-pad-lite/-/left-pad-lite-1.0.0.tgz", &[]);
    assert_eq!(
        reply.header("location"),
        Some(format!("{}left-pad-lite/-/left-pad-lite-1.0.0.tgz", upstream.url).as_str())
    );

    // Writes to unscoped names are refused, with npm showing why.
    let dir = npm.package("left-pad-lite", "2.0.0", "mine", json!({}));
    npm.fails(&dir, &["publish"], "only scoped packages");
}

#[test]
fn unscoped_without_upstream_says_how_to_configure_it() {
    let server = Server::start(&[]);
    let reply = server.http().get("/left-pad", &[]);
    assert_eq!(reply.status, 404);
    assert!(reply.error().contains("upstream.url"), "{}", reply.error());
}

#[test]
fn a_public_url_with_a_path_prefix_is_served_with_and_without_it() {
    let port = common::free_port();
    let public = format!("http://127.0.0.1:{port}/npm/");
    let server = Server::start(&[
        ("NMR_SERVER__PORT", &port.to_string()),
        ("NMR_SERVER__PUBLIC_URL", &public),
    ]);
    assert_eq!(server.url, public);
    let npm = Npm::new(&server.url, Some("token"));
    publish_fixture(&npm);
    let app = npm.project("prefixed");
    let fresh = Npm::new(&server.url, Some("token"));
    fresh.ok(&app, &["install", "@acme/widget"]);
    assert!(read(&app.join("node_modules/@acme/widget/index.js")).contains("widget-1.1.0"));
    assert!(
        read(&app.join("package-lock.json"))
            .contains(&format!("{public}@acme/widget/-/widget-1.1.0.tgz"))
    );
    fresh.ok(&app, &["unpublish", "@acme/widget@1.0.0"]);
    // A proxy that strips the prefix before forwarding reaches the same
    // routes: a path without the prefix is served as is.
    let status = |path: &str| {
        ureq::get(&format!("http://127.0.0.1:{port}{path}"))
            .config()
            .http_status_as_error(false)
            .build()
            .call()
            .unwrap()
            .status()
    };
    for path in [
        "/-/ping",
        "/npm/-/ping",
        "/@acme%2fwidget",
        "/npm/@acme%2fwidget",
    ] {
        assert_eq!(status(path), 200, "{path}");
    }
    assert_eq!(status("/npm/@acme%2fnothing"), 404);
}
