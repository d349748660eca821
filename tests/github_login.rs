//! `npm login` through GitHub, registry tokens (`npm token`) and the GitHub
//! App mode, end to end: the real npm 11 against a running nmr in App mode
//! and the fake GitHub of `common/github.rs` (OAuth web flow with PKCE, the
//! App's JWT, installations, installation tokens, collaborator permission).

mod common;

use std::time::Duration;

use common::github::{self, Perm, cast::*};
use common::{Npm, Server, escape};
use serde_json::{Value, json};

/// Every GitHub secret the fake handed out (user and installation tokens)
/// plus `extra`, none of which may appear anywhere under the server's data
/// directory or in its log.
fn assert_no_github_secret_kept(server: &Server, gh: &github::FakeGithub, extra: &[&str]) {
    let mut secrets = gh.user_tokens();
    secrets.extend(gh.issued_installation_tokens());
    secrets.extend(extra.iter().map(|s| s.to_string()));
    assert!(!secrets.is_empty());
    let log = server.log();
    for (path, bytes) in common::snapshot(server.dir.path()) {
        let text = String::from_utf8_lossy(&bytes);
        for secret in &secrets {
            assert!(!text.contains(secret.as_str()), "{secret} in {path:?}");
        }
    }
    for secret in &secrets {
        assert!(!log.contains(secret.as_str()), "{secret} in the log");
    }
}

fn token_of(npm: &Npm) -> Option<String> {
    std::fs::read_to_string(&npm.userconfig)
        .unwrap()
        .lines()
        .find_map(|l| l.split_once(":_authToken=").map(|(_, t)| t.to_string()))
}

#[test]
fn npm_login_through_github_then_publish_install_tokens_and_logout() {
    let gh = github::with_cast();
    let server = github::app_server(&gh, &[]);
    gh.sign_in(Some("alice"));
    let npm = Npm::new(&server.url, None);
    let mut page = None;
    let out = npm.login_in_terminal(&server.url, |url| {
        assert!(!url.contains('%'), "npm runs encodeURI on {url}");
        page = Some(github::browse(url));
    });
    let page = page.unwrap();
    assert!(out.success, "npm login failed:\n{}", out.all());
    assert!(out.stdout.contains("Login at:"), "{}", out.stdout);
    assert_eq!(page.status, 200, "{page:?}");
    assert!(
        page.body
            .contains("Logged in to nmr as alice. You can close this tab"),
        "{}",
        page.body
    );
    let authorize = &page.visited[1];
    assert!(authorize.starts_with(&format!("{}/login/oauth/authorize?", gh.url)));
    for part in [
        &format!("client_id={}", github::CLIENT_ID),
        "code_challenge_method=S256",
        "code_challenge=",
        "state=",
    ] {
        assert!(authorize.contains(part), "{part} not in {authorize}");
    }
    let token = token_of(&npm).expect("npm stored a token");
    assert!(token.starts_with("nmr_") && token.len() == 44, "{token}");

    let here = npm.dir.path();
    assert_eq!(npm.ok(here, &["whoami"]).stdout.trim(), "alice");
    let widget = npm.package(
        "@acme/widget",
        "1.0.0",
        "w1",
        json!({"repository": "github:acme/widget"}),
    );
    npm.ok(&widget, &["publish"]);
    let gadget = npm.package(
        "@acme/gadget",
        "1.0.0",
        "g1",
        json!({"repository": "github:acme/gadget"}),
    );
    npm.ok(&gadget, &["publish"]);
    let project = npm.project("app");
    npm.ok(&project, &["install", "@acme/widget"]);
    assert!(project.join("node_modules/@acme/widget/index.js").exists());
    // Every write a user may do works with the login token.
    npm.ok(here, &["dist-tag", "add", "@acme/widget@1.0.0", "stable"]);
    npm.ok(here, &["deprecate", "@acme/gadget@1.0.0", "use widget"]);
    let view = npm.ok(here, &["view", "@acme/gadget", "deprecated"]);
    assert_eq!(view.stdout.trim(), "use widget");

    let create = |args: &[&str]| -> Value {
        let mut all = vec!["token", "create", "--password", "unused", "--json"];
        all.extend_from_slice(args);
        let out = npm.ok(here, &all);
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stdout))
    };
    let read_only = create(&[
        "--name",
        "ci-read",
        "--packages-and-scopes-permission",
        "read-only",
    ]);
    let widget_only = create(&["--name", "widget-only", "--packages", "@acme/widget"]);
    let office = create(&["--name", "office", "--cidr", "10.0.0.0/8"]);
    for created in [&read_only, &widget_only, &office] {
        assert!(created["token"].as_str().unwrap().starts_with("nmr_"));
    }
    assert_eq!(office["cidr_whitelist"], json!(["10.0.0.0/8"]));

    // A read-only token installs but cannot publish.
    let ro = Npm::new(&server.url, read_only["token"].as_str());
    let ro_project = ro.project("ro");
    ro.ok(&ro_project, &["install", "@acme/widget"]);
    let next = ro.package(
        "@acme/widget",
        "1.0.1",
        "w2",
        json!({"repository": "github:acme/widget"}),
    );
    ro.fails(&next, &["publish"], "read-only");
    // A token limited to one package cannot read another.
    let limited = server.http_as(widget_only["token"].as_str().unwrap());
    assert_eq!(limited.get(&escape("@acme/widget"), &[]).status, 200);
    let other = limited.get(&escape("@acme/gadget"), &[]);
    assert_eq!(other.status, 403);
    assert!(
        other.error().contains("limited to @acme/widget"),
        "{}",
        other.error()
    );
    // A token limited to 10.0.0.0/8 is refused from 127.0.0.1.
    let elsewhere = server
        .http_as(office["token"].as_str().unwrap())
        .get(&escape("@acme/widget"), &[]);
    assert_eq!(elsewhere.status, 403);
    assert!(
        elsewhere
            .error()
            .contains("only from 10.0.0.0/8, not from 127.0.0.1"),
        "{}",
        elsewhere.error()
    );

    let list = npm.ok(here, &["token", "list", "--json"]);
    let listed: Vec<Value> = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(listed.len(), 4, "{listed:?}");
    let mut names: Vec<&str> = listed.iter().filter_map(|t| t["name"].as_str()).collect();
    names.sort();
    assert_eq!(names, ["ci-read", "office", "widget-only"]);
    for t in &listed {
        let shown = t["token"].as_str().unwrap();
        assert!(
            shown.starts_with("nmr_") && shown.len() == 10,
            "masked: {shown}"
        );
    }
    let ci = listed.iter().find(|t| t["name"] == "ci-read").unwrap();
    assert_eq!(ci["readonly"], true);
    let plain = npm.ok(here, &["token", "list"]);
    assert!(
        plain.stdout.contains("name widget-only"),
        "{}",
        plain.stdout
    );
    assert!(
        plain.stdout.contains("with IP whitelist: 10.0.0.0/8"),
        "{}",
        plain.stdout
    );

    let key = read_only["key"].as_str().unwrap_or_else(|| {
        listed.iter().find(|t| t["name"] == "ci-read").unwrap()["key"]
            .as_str()
            .unwrap()
    });
    let revoked = npm.ok(here, &["token", "revoke", key]);
    assert!(
        revoked.stdout.contains("Removed 1 token"),
        "{}",
        revoked.stdout
    );
    let dead = server
        .http_as(read_only["token"].as_str().unwrap())
        .get(&escape("@acme/widget"), &[]);
    assert_eq!(dead.status, 401, "revoked at once");

    npm.ok(here, &["logout"]);
    assert_eq!(token_of(&npm), None, "npm removed the token");
    let after = server.http_as(&token).get(&escape("@acme/widget"), &[]);
    assert_eq!(after.status, 401, "logged out at once");
    assert!(after.error().contains("npm login"), "{}", after.error());

    assert_no_github_secret_kept(&server, &gh, &[]);
}

#[test]
fn denied_reused_forged_and_unknown_logins_create_nothing() {
    let gh = github::with_cast();
    let server = github::app_server(&gh, &[]);
    let http = server.http();
    let start = || http.post_json("/-/v1/login", &json!({})).json();
    let done = |urls: &Value| {
        http.get(
            urls["doneUrl"]
                .as_str()
                .unwrap()
                .trim_start_matches(&server.url),
            &[],
        )
    };

    // The user declines on GitHub.
    let urls = start();
    let pending = done(&urls);
    assert_eq!(pending.status, 202);
    assert_eq!(pending.header("retry-after"), Some("1"));
    assert_eq!(pending.json(), json!({}));
    gh.sign_in(Some("alice")).declines(true);
    let page = github::browse(urls["loginUrl"].as_str().unwrap());
    assert_eq!(page.status, 403);
    assert!(
        page.body.contains("did not approve nmr on GitHub"),
        "{}",
        page.body
    );
    let refused = done(&urls);
    assert_eq!(refused.status, 403, "npm falls back to its legacy prompt");
    assert_eq!(done(&urls).status, 404, "told once");

    // GitHub's code expired before nmr exchanged it.
    gh.declines(false).code_ttl(Duration::ZERO);
    let urls = start();
    let page = github::browse(urls["loginUrl"].as_str().unwrap());
    assert_eq!(page.status, 502);
    assert!(
        page.body
            .contains("The code passed is incorrect or expired"),
        "{}",
        page.body
    );
    assert_eq!(done(&urls).status, 403);
    gh.code_ttl(Duration::from_secs(600));

    // The login link opened twice.
    gh.declines(false);
    let urls = start();
    assert_eq!(
        github::browse(urls["loginUrl"].as_str().unwrap()).status,
        200
    );
    let again = github::browse(urls["loginUrl"].as_str().unwrap());
    assert_eq!(again.status, 409);
    assert!(again.body.contains("already used"), "{}", again.body);
    let first = done(&urls);
    assert_eq!(first.status, 200, "the first use still counts");
    let token = first.json()["token"].as_str().unwrap().to_string();
    assert_eq!(done(&urls).status, 404);

    // A callback whose state is no session's, and a forged session id.
    let urls = start();
    let forged = github::browse(&format!(
        "{}-/v1/login/callback?code=abc&state={}",
        server.url,
        "0123456789abcdef".repeat(2)
    ));
    assert_eq!(forged.status, 404);
    assert!(
        forged
            .body
            .contains("does not belong to a login in progress")
    );
    assert_eq!(done(&urls).status, 202, "the real session is untouched");
    let bogus = github::browse(&format!("{}-/v1/login/session/..%2F..%2Fetc", server.url));
    assert_eq!(bogus.status, 404);
    assert_eq!(http.get("/-/v1/login/done/not-a-session", &[]).status, 404);

    // Only the one approved login made a token.
    let list = server.http_as(&token).get("/-/npm/v1/tokens", &[]);
    assert_eq!(list.status, 200, "{}", list.error());
    assert_eq!(list.json()["total"], 1);
    assert_eq!(list.json()["urls"], json!({}));
}

#[test]
fn the_app_asks_github_once_per_user_and_repo_and_sees_permissions_go() {
    let (gh, server) = widget_with_short_ttls();
    let carol = web_token(&server, &gh, "carol");
    let carol_http = server.http_as(&carol);
    let permission = "/repos/acme/widget/collaborators/carol/permission";
    for _ in 0..20 {
        assert_eq!(carol_http.get(&escape("@acme/widget"), &[]).status, 200);
    }
    assert_eq!(gh.calls(permission), 1, "one call for carol's burst");
    // carol cannot publish with read access, whatever her token says.
    let write =
        common::publish_with_repository(&carol_http, "@acme/widget", "1.0.1", Some("acme/widget"));
    assert_eq!(write.status, 403, "{}", write.error());
    assert!(
        write.error().contains("needs push permission"),
        "{}",
        write.error()
    );

    // Her access is removed on GitHub: refused once the answer expires.
    gh.revoke("acme/widget", "carol");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(carol_http.get(&escape("@acme/widget"), &[]).status, 404);

    assert_no_github_secret_kept(&server, &gh, &[]);
}

#[test]
fn expiring_installation_tokens_are_renewed() {
    let gh = github::with_cast();
    gh.installation_ttl(Duration::from_secs(3));
    let server = github::app_server(&gh, &[("NMR_AUTH__GITHUB__CACHE_TTL", "1")]);
    let alice = web_token(&server, &gh, "alice");
    let http = server.http_as(&alice);
    let reply =
        common::publish_with_repository(&http, "@acme/widget", "1.0.0", Some("acme/widget"));
    assert_eq!(reply.status, 201, "{}", reply.error());
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(1200));
        let read = http.get(&escape("@acme/widget"), &[]);
        assert_eq!(read.status, 200, "{}", read.error());
    }
    let tokens = gh.calls_starting("POST /app/installations/");
    assert!(tokens >= 2, "renewed: {tokens} installation tokens");
}

#[test]
fn an_owner_without_the_app_is_told_to_install_it() {
    let gh = github::with_cast();
    let server = github::app_server(&gh, &[]);
    let alice = web_token(&server, &gh, "alice");
    let reply = common::publish_with_repository(
        &server.http_as(&alice),
        "@other/thing",
        "1.0.0",
        Some("other/thing"),
    );
    assert_eq!(reply.status, 403, "{}", reply.error());
    let message = reply.error();
    assert!(
        message.contains("an admin of other must install it at https://github.com/apps/nmr-test/installations/new"),
        "{message}"
    );
}

#[test]
fn legacy_login_gives_a_registry_token_and_pats_can_be_refused() {
    let gh = github::with_cast();
    let server = github::app_server(&gh, &[]);
    let http = server.http();
    let login = http.put_json(
        "/-/user/org.couchdb.user:alice",
        &json!({"_id": "org.couchdb.user:alice", "name": "alice", "password": ALICE, "type": "user", "roles": []}),
    );
    assert_eq!(login.status, 201, "{}", login.error());
    let token = login.json()["token"].as_str().unwrap().to_string();
    assert!(token.starts_with("nmr_"), "a registry token, not the PAT");
    let whoami = server.http_as(&token).get("/-/whoami", &[]);
    assert_eq!(whoami.json()["username"], "alice");
    // The same through the real npm's prompts.
    let npm = Npm::new(&server.url, None);
    let dir = npm.project("legacy");
    let out = npm.legacy_login(&dir, &server.url, "alice", ALICE);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let stored = token_of(&npm).expect("npm stored a token");
    assert!(stored.starts_with("nmr_"), "{stored}");
    assert_eq!(npm.ok(&dir, &["whoami"]).stdout.trim(), "alice");
    let profile = server.http_as(&token).get("/-/npm/v1/user", &[]);
    assert_eq!(profile.json()["name"], "alice");
    assert_eq!(profile.json()["github"], "alice");
    assert_eq!(profile.json()["tfa"], false);
    let set = server
        .http_as(&token)
        .post_json("/-/npm/v1/user", &json!({"fullname": "A"}));
    assert_eq!(set.status, 403);
    assert!(set.error().contains("managed on GitHub"));
    // A PAT still works as a bearer in App mode, its permissions from the App.
    let pat = common::publish_with_repository(
        &server.http_as(ALICE),
        "@acme/widget",
        "1.0.0",
        Some("acme/widget"),
    );
    assert_eq!(pat.status, 201, "{}", pat.error());
    assert!(gh.calls("/repos/acme/widget/collaborators/alice/permission") >= 1);
    assert_no_github_secret_kept(&server, &gh, &[ALICE]);

    let strict_gh = github::with_cast();
    let strict = github::app_server(
        &strict_gh,
        &[("NMR_AUTH__GITHUB__APP__ACCEPT_GITHUB_TOKENS", "false")],
    );
    let refused = strict.http_as(BOB).get(&escape("@acme/widget"), &[]);
    assert_eq!(refused.status, 401);
    assert!(
        refused.error().contains("run npm login"),
        "{}",
        refused.error()
    );
    assert_eq!(
        strict_gh.calls("/user"),
        0,
        "the PAT was not even looked up"
    );
}

#[test]
fn a_deleted_github_account_loses_its_tokens() {
    let (gh, server) = widget_with_short_ttls();
    let bob = web_token(&server, &gh, "bob");
    let bob_http = server.http_as(&bob);
    assert_eq!(bob_http.get(&escape("@acme/widget"), &[]).status, 200);
    gh.delete_user("bob");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(bob_http.get(&escape("@acme/widget"), &[]).status, 404);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let status = bob_http.get(&escape("@acme/widget"), &[]).status;
        if status == 401 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "still {status}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(gh.calls(&format!("/user/{}", 1001)) >= 1, "looked up by id");
}

#[test]
fn token_lists_page_and_nobody_revokes_anothers_token() {
    let gh = github::with_cast();
    let server = github::app_server(&gh, &[]);
    let alice = web_token(&server, &gh, "alice");
    let http = server.http_as(&alice);
    for name in ["a", "b", "c"] {
        let made = http.post_json(
            "/-/npm/v1/tokens",
            &json!({"name": name, "password": "x", "expires": 7}),
        );
        assert_eq!(made.status, 201, "{}", made.error());
    }
    let first = http.get("/-/npm/v1/tokens?perPage=3", &[]).json();
    assert_eq!(first["total"], 4);
    assert_eq!(first["objects"].as_array().unwrap().len(), 3);
    let next = first["urls"]["next"].as_str().expect("a next page");
    let second = http.get(next.trim_start_matches(&server.url), &[]).json();
    assert_eq!(second["objects"].as_array().unwrap().len(), 1);
    assert_eq!(second["urls"], json!({}));
    let all: Vec<&Value> = first["objects"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second["objects"].as_array().unwrap())
        .collect();
    let b = all
        .iter()
        .find(|t| t["name"] == "b")
        .expect("token b listed");
    let key = b["key"].as_str().unwrap().to_string();

    let carol = web_token(&server, &gh, "carol");
    let theirs = server
        .http_as(&carol)
        .delete(&format!("/-/npm/v1/tokens/token/{key}"));
    assert_eq!(theirs.status, 404, "another user's key is not found");
    let mine = http.delete(&format!("/-/npm/v1/tokens/token/{key}"));
    assert_eq!(mine.status, 204);
    assert_eq!(http.get("/-/npm/v1/tokens", &[]).json()["total"], 3);

    // A restricted token makes no tokens, and no token is wider than asked.
    let ro = http
        .post_json(
            "/-/npm/v1/tokens",
            &json!({"packages_and_scopes_permission": "read-only"}),
        )
        .json();
    let from_ro = server
        .http_as(ro["token"].as_str().unwrap())
        .post_json("/-/npm/v1/tokens", &json!({"name": "wider"}));
    assert_eq!(from_ro.status, 403, "{}", from_ro.error());
    let bad = http.post_json("/-/npm/v1/tokens", &json!({"cidr_whitelist": ["nowhere"]}));
    assert_eq!(bad.status, 400);
    // The web login itself is off without the App's OAuth client.
    let plain = github::server(&gh, &[]);
    assert_eq!(
        plain.http().post_json("/-/v1/login", &json!({})).status,
        404
    );
}

/// An nmr in App mode whose GitHub answers live one second, where alice
/// (logged in through the web flow) published `@acme/widget@1.0.0`.
fn widget_with_short_ttls() -> (github::FakeGithub, Server) {
    let gh = github::with_cast();
    let server = github::app_server(
        &gh,
        &[
            ("NMR_AUTH__GITHUB__CACHE_TTL", "1"),
            ("NMR_AUTH__GITHUB__DENIED_CACHE_TTL", "1"),
        ],
    );
    let alice = web_token(&server, &gh, "alice");
    let reply = common::publish_with_repository(
        &server.http_as(&alice),
        "@acme/widget",
        "1.0.0",
        Some("acme/widget"),
    );
    assert_eq!(reply.status, 201, "{}", reply.error());
    (gh, server)
}

/// A registry token for `login` through the web flow.
fn web_token(server: &Server, gh: &github::FakeGithub, login: &str) -> String {
    github::web_login(server, gh, login)
}

#[test]
fn the_fake_keeps_team_grants_for_the_app() {
    // The App's permission answer includes team grants, as GitHub's does:
    // bob pushes to acme/widget through a team only.
    let gh = github::with_cast();
    gh.team("acme/gadget", &["carol"], Perm::Maintain);
    let server = github::app_server(&gh, &[]);
    let alice = web_token(&server, &gh, "alice");
    let reply = common::publish_with_repository(
        &server.http_as(&alice),
        "@acme/gadget",
        "1.0.0",
        Some("acme/gadget"),
    );
    assert_eq!(reply.status, 201, "{}", reply.error());
    let carol = web_token(&server, &gh, "carol");
    let tag = server
        .http_as(&carol)
        .put_json("/-/package/@acme%2fgadget/dist-tags/beta", &json!("1.0.0"));
    assert_eq!(
        tag.status,
        200,
        "maintain through a team pushes: {}",
        tag.error()
    );
}
