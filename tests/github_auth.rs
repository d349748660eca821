//! `auth.type = "github"` against a fake GitHub API: permissions follow the
//! package's repository, with the real npm client for several users, the
//! cache, and failing closed when GitHub cannot be asked.
//!
//! The cast is `common::github::cast`.

mod common;

use common::github::cast::*;
use common::github::{Mode, seeded, server, with_cast as github};
use common::{Npm, Server, escape, publish_with_repository, snapshot};
use serde_json::json;

#[test]
fn permissions_follow_the_repository_for_every_npm_command() {
    let gh = github();
    let server = server(&gh, &[]);
    let alice = Npm::new(&server.url, Some(ALICE));
    let bob = Npm::new(&server.url, Some(BOB));
    let carol = Npm::new(&server.url, Some(CAROL));
    let dave = Npm::new(&server.url, Some(DAVE));
    let anonymous = Npm::new(&server.url, None);
    let repo =
        json!({"repository": {"type": "git", "url": "git+https://github.com/acme/widget.git"}});

    let out = alice.ok(
        &alice.package("@acme/widget", "1.0.0", "v1", repo.clone()),
        &["publish"],
    );
    assert!(out.stdout.contains("+ @acme/widget@1.0.0"));
    // A team member with push publishes the next version and moves a tag.
    bob.ok(
        &bob.package(
            "@acme/widget",
            "1.1.0",
            "v1.1",
            json!({"repository": "github:acme/widget"}),
        ),
        &["publish"],
    );
    let app = bob.project("bob-app");
    bob.ok(&app, &["dist-tag", "add", "@acme/widget@1.0.0", "stable"]);
    let view = alice.ok(&app, &["view", "@acme/widget", "_npmUser.name", "--json"]);
    assert!(view.stdout.contains("bob"), "{}", view.all());

    // Read-only: installs, but cannot publish or tag.
    let carol_app = carol.project("carol-app");
    carol.ok(&carol_app, &["install", "@acme/widget"]);
    assert!(
        carol_app
            .join("node_modules/@acme/widget/index.js")
            .is_file()
    );
    carol.fails(
        &carol.package("@acme/widget", "1.2.0", "x", repo.clone()),
        &["publish"],
        "needs push permission on the GitHub repository acme/widget",
    );
    carol.fails(
        &carol_app,
        &["dist-tag", "add", "@acme/widget@1.1.0", "beta"],
        "needs push permission",
    );

    // Outsider: the package does not exist for them.
    dave.fails(
        &dave.project("dave-app"),
        &["install", "@acme/widget"],
        "E404",
    );
    // No token at all: 401.
    anonymous.fails(
        &anonymous.project("anon-app"),
        &["install", "@acme/widget"],
        "E401",
    );

    // Only an admin unpublishes.
    bob.fails(
        &app,
        &["unpublish", "@acme/widget@1.0.0"],
        "needs admin permission",
    );
    alice.ok(&app, &["unpublish", "@acme/widget@1.0.0"]);
    let versions = alice.ok(&app, &["view", "@acme/widget", "versions", "--json"]);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&versions.stdout).unwrap(),
        json!(["1.1.0"])
    );

    // whoami names the GitHub login.
    assert_eq!(bob.ok(&app, &["whoami"]).stdout.trim(), "bob");
}

#[test]
fn publishes_must_name_a_repository_of_the_scope_owner() {
    let gh = github();
    let server = server(&gh, &[]);
    let alice = Npm::new(&server.url, Some(ALICE));
    let out = alice.fails(
        &alice.package("@acme/norepo", "1.0.0", "x", json!({})),
        &["publish"],
        "package.json has no repository",
    );
    assert!(out.all().contains("github:acme/REPO"), "{}", out.all());

    let mismatch = json!({"repository": "github:other/thing"});
    alice.fails(
        &alice.package("@acme/mismatch", "1.0.0", "x", mismatch),
        &["publish"],
        "must equal the repository owner",
    );

    let gitlab = json!({"repository": "https://gitlab.com/acme/widget"});
    alice.fails(
        &alice.package("@acme/gitlab", "1.0.0", "x", gitlab),
        &["publish"],
        "is not a repository on github.com",
    );
    assert!(
        snapshot(&server.storage_path()).is_empty(),
        "nothing stored"
    );
}

#[test]
fn the_binding_moves_only_for_an_admin_who_can_push_to_the_new_repo() {
    let gh = github();
    let server = server(&gh, &[]);
    let (alice, bob) = (server.http_as(ALICE), server.http_as(BOB));
    let name = "@acme/widget";
    assert_eq!(
        publish_with_repository(&alice, name, "1.0.0", Some("acme/widget")).status,
        201
    );
    // bob can push to both repos but is not admin of the bound one.
    let reply = publish_with_repository(&bob, name, "1.1.0", Some("acme/gadget"));
    assert_eq!(reply.status, 403);
    assert!(
        reply
            .error()
            .contains("bound to the GitHub repository acme/widget"),
        "{}",
        reply.error()
    );
    // widget's read-only carol reads it, and a read of hers is then reused
    // for a second (auth::ReadGrants)...
    assert_eq!(server.http_as(CAROL).get(&escape(name), &[]).status, 200);
    // alice is admin of acme/widget and can push to acme/gadget: the binding moves.
    assert_eq!(
        publish_with_repository(&alice, name, "1.1.0", Some("github:acme/gadget")).status,
        201
    );
    // ...but not past the commit that moved the binding: at once, carol
    // cannot read it.
    assert_eq!(server.http_as(CAROL).get(&escape(name), &[]).status, 404);
    // Now gadget's pushers publish, and widget's read-only carol no longer reads it.
    assert_eq!(
        publish_with_repository(&bob, name, "1.2.0", Some("acme/gadget")).status,
        201
    );
    assert_eq!(server.http_as(CAROL).get(&escape(name), &[]).status, 404);
}

#[test]
fn status_codes_and_messages() {
    let gh = github();
    let server = seeded(&gh, &[]);
    let path = escape("@acme/widget");

    let anonymous = server.http().get(&path, &[]);
    assert_eq!(anonymous.status, 401);
    assert_eq!(
        anonymous.header("www-authenticate"),
        Some("Bearer realm=\"nmr\"")
    );
    let bad = server.http_as("ghp_not_a_real_token").get(&path, &[]);
    assert_eq!(bad.status, 401);
    assert!(bad.error().contains("GitHub rejected the token"));
    assert_eq!(server.http_as(DAVE).get(&path, &[]).status, 404);
    assert_eq!(
        server
            .http_as(DAVE)
            .get("@acme/widget/-/widget-1.0.0.tgz", &[])
            .status,
        404
    );
    // Not revealing existence: an absent package looks the same.
    assert_eq!(
        server
            .http_as(DAVE)
            .get(&escape("@acme/absent"), &[])
            .error(),
        "package @acme/absent not found, or your GitHub account cannot see its repository"
    );
    assert_eq!(
        server.http_as(DAVE).get(&path, &[]).error(),
        "package @acme/widget not found, or your GitHub account cannot see its repository"
    );
    assert_eq!(
        server
            .http_as(CAROL)
            .get("@acme/widget/-/widget-1.0.0.tgz", &[])
            .status,
        200
    );
    let tags = format!("-/package/{path}/dist-tags/beta");
    let denied = server.http_as(CAROL).put(&tags, b"\"1.0.0\"");
    assert_eq!(denied.status, 403);
    assert!(
        denied.error().contains("needs push permission")
            && denied.error().contains("carol has pull")
    );
    let whoami = server.http_as(CAROL).get("-/whoami", &[]);
    assert_eq!(whoami.json(), json!({"username": "carol"}));
    assert_eq!(server.http().get("-/whoami", &[]).status, 401);
}

#[test]
fn a_burst_costs_one_github_call_per_question_until_the_ttl() {
    let gh = github();
    let server = seeded(&gh, &[("NMR_AUTH__GITHUB__CACHE_TTL", "2")]);
    let before = (gh.calls("/user"), gh.calls("/repos/acme/widget"));
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                let http = server.http_as(CAROL);
                for _ in 0..25 {
                    assert_eq!(http.get(&escape("@acme/widget"), &[]).status, 200);
                }
            });
        }
    });
    // 200 installs by carol: one GET /user and one GET /repos for her token.
    assert_eq!(gh.calls("/user") - before.0, 1);
    assert_eq!(gh.calls("/repos/acme/widget") - before.1, 1);
    std::thread::sleep(std::time::Duration::from_millis(2300));
    assert_eq!(
        server
            .http_as(CAROL)
            .get(&escape("@acme/widget"), &[])
            .status,
        200
    );
    assert_eq!(gh.calls("/user") - before.0, 2, "asked again after the TTL");
    assert_eq!(gh.calls("/repos/acme/widget") - before.1, 2);
}

#[test]
fn github_down_or_rate_limited_fails_closed_and_writes_nothing() {
    let gh = github();
    let server = seeded(&gh, &[]);
    let alice = server.http_as(ALICE);
    let db = snapshot(&server.db_path());
    let storage = snapshot(&server.storage_path());
    for mode in [Mode::Down, Mode::RateLimited] {
        gh.set_mode(mode);
        // bob's token was never seen: nothing cached, GitHub must be asked.
        let bob = server.http_as(BOB);
        let reply = publish_with_repository(&bob, "@acme/widget", "1.1.0", Some("acme/widget"));
        assert_eq!(reply.status, 503, "{mode:?}");
        assert!(
            reply.error().contains("GitHub could not be asked"),
            "{}",
            reply.error()
        );
        assert_eq!(bob.get(&escape("@acme/widget"), &[]).status, 503);
    }
    // alice's answers are cached and still valid: she keeps reading.
    assert_eq!(alice.get(&escape("@acme/widget"), &[]).status, 200);
    assert!(snapshot(&server.db_path()) == db, "database changed");
    assert!(
        snapshot(&server.storage_path()) == storage,
        "storage changed"
    );
}

#[test]
fn npm_login_legacy_checks_the_github_token() {
    let gh = github();
    // GitHub keeps the login's case; npm only sends lowercase names.
    gh.user("Frank", "ghp_frank_token_0005");
    let server = server(&gh, &[]);
    let npm = Npm::new(&server.url, None);
    let dir = npm.project("login");
    let login = |user: &str, password: &str| npm.legacy_login(&dir, &server.url, user, password);
    let wrong = login("frank", BOB);
    assert!(!wrong.status.success());
    assert!(
        String::from_utf8_lossy(&wrong.stdout)
            .contains("use your GitHub username and a GitHub token")
    );
    let ok = login("frank", "ghp_frank_token_0005");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    let config = std::fs::read_to_string(&npm.userconfig).unwrap();
    assert!(
        config.contains(":_authToken=ghp_frank_token_0005"),
        "npm saved the token"
    );
    assert_eq!(npm.ok(&dir, &["whoami"]).stdout.trim(), "Frank");
    // Web login is declined so npm falls back to the prompts.
    let web = server.http().post("-/v1/login", b"{}");
    assert!((400..500).contains(&web.status));
    // logout succeeds and npm forgets the token.
    npm.ok(&dir, &["logout"]);
    assert!(
        !std::fs::read_to_string(&npm.userconfig)
            .unwrap()
            .contains("ghp_frank_token_0005")
    );
}

#[test]
fn github_unreachable_fails_closed() {
    let closed = common::free_port();
    let api = format!("http://127.0.0.1:{closed}");
    let server = Server::start(&[
        ("NMR_AUTH__TYPE", "github"),
        ("NMR_AUTH__GITHUB__API_URL", &api),
        ("NMR_AUTH__GITHUB__TIMEOUT", "2"),
    ]);
    let reply = server.http_as(ALICE).get(&escape("@acme/widget"), &[]);
    assert_eq!(reply.status, 503);
    assert!(
        reply.error().contains("GitHub could not be asked"),
        "{}",
        reply.error()
    );
    let reply = publish_with_repository(
        &server.http_as(ALICE),
        "@acme/widget",
        "1.0.0",
        Some("acme/widget"),
    );
    assert_eq!(reply.status, 503);
    assert!(snapshot(&server.storage_path()).is_empty());
}
