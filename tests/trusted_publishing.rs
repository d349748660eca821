//! Trusted publishing: the real npm 11 client in a (simulated) GitHub
//! Actions job exchanges an ID token for a registry token and publishes
//! with no token of its own; every way an ID token can be wrong is refused
//! with its reason and writes nothing; the exchanged token is good for its
//! one package's reads and publishes only, until it expires.
//!
//! The test issuer of ID tokens is `tests/common/oidc.rs`.

mod common;

use common::github::cast::*;
use common::github::{seeded, with_cast as github};
use common::oidc::*;
use common::{Npm, Server, escape, snapshot};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

const OTHER_KEY: &[u8] = include_bytes!("fixtures/oidc-other-key.pem");

fn trusted_server(gh: &common::github::FakeGithub, jwks: &str, extra: &[(&str, &str)]) -> Server {
    let mut env = vec![("NMR_AUTH__GITHUB__OIDC__JWKS_URL", jwks)];
    env.extend_from_slice(extra);
    seeded(gh, &env)
}

#[test]
fn npm_publishes_from_actions_with_no_token_of_its_own() {
    let gh = github();
    let (jwks, _stop) = issuer();
    let server = trusted_server(&gh, &jwks, &[]);
    let id = gh.repo_id("acme/widget");
    for (placeholder, version) in [(None, "1.0.0"), (Some("XXXXX-XXXXX-XXXXX-XXXXX"), "1.1.0")] {
        let npm = Npm::new(&server.url, placeholder);
        let dir = npm.package(
            "@acme/ci-built",
            version,
            version,
            json!({"repository": "github:acme/widget"}),
        );
        let jwt = sign(&claims("acme/widget", id));
        npm.run_with_env(
            &dir,
            &["publish", "--loglevel", "verbose"],
            &[
                ("GITHUB_ACTIONS", "true"),
                ("NPM_ID_TOKEN", &jwt),
                ("CI", "true"),
            ],
        );
        let out = npm.run(
            &dir,
            &[
                "view",
                "@acme/ci-built",
                "versions",
                "--json",
                "--userconfig",
                "/dev/null",
            ],
        );
        drop(out);
        let versions = server
            .http_as(ALICE)
            .get(&escape("@acme/ci-built"), &[])
            .json()["versions"]
            .clone();
        assert!(
            versions.get(version).is_some(),
            "{version} not published: {versions}"
        );
    }
    let alice = Npm::new(&server.url, Some(ALICE));
    let project = alice.project("view");
    let view = |field: &str| {
        let out = alice.ok(&project, &["view", "@acme/ci-built@1.1.0", field, "--json"]);
        serde_json::from_str::<Value>(&out.stdout).unwrap()
    };
    assert_eq!(view("_npmUser"), "GitHub Actions");
    let publisher = view("_npmUser.trustedPublisher");
    assert_eq!(publisher["id"], "github");
    assert_eq!(publisher["repository"], "acme/widget");
    assert_eq!(
        publisher["workflow_ref"],
        "acme/widget/.github/workflows/release.yml@refs/heads/main"
    );
    assert_eq!(publisher["actor"], "alice");
    assert_eq!(publisher["run_id"], "1234567890");
    // The package is bound to the workflow's repository.
    assert_eq!(
        server
            .http_as(CAROL)
            .get(&escape("@acme/ci-built"), &[])
            .status,
        200
    );
    assert_eq!(
        server
            .http_as(DAVE)
            .get(&escape("@acme/ci-built"), &[])
            .status,
        404
    );
}

#[test]
fn bad_id_tokens_are_refused_with_their_reason_and_nothing_is_written() {
    let gh = github();
    let (jwks, _stop) = issuer();
    let server = trusted_server(&gh, &jwks, &[]);
    gh.repo("acme", "gadget-lib", true);
    let id = gh.repo_id("acme/widget");
    let good = || claims("acme/widget", id);
    let with = |edit: &dyn Fn(&mut Value)| {
        let mut c = good();
        edit(&mut c);
        c
    };
    let t = now();
    let replayed = sign(&good());
    assert_eq!(exchange(&server, NAME_W, &replayed).status, 201);
    let tampered = {
        let jwt = sign(&good());
        let mut parts: Vec<String> = jwt.split('.').map(String::from).collect();
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut payload: Value = serde_json::from_slice(&b64.decode(&parts[1]).unwrap()).unwrap();
        payload["repository"] = "acme/gadget-lib".into();
        parts[1] = b64.encode(payload.to_string());
        parts.join(".")
    };
    let unsigned = {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!(
            "{}.{}.",
            b64.encode(r#"{"alg":"none","typ":"JWT","kid":"oidc-test-key"}"#),
            b64.encode(good().to_string())
        )
    };
    let hs256 = {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("oidc-test-key".into());
        jsonwebtoken::encode(
            &header,
            &good(),
            &EncodingKey::from_secret(b"secret").unwrap(),
        )
        .unwrap()
    };
    let db = snapshot(&server.db_path());
    let storage = snapshot(&server.storage_path());
    let cases: Vec<(String, &str, u16, &str)> = vec![
        (
            sign(&with(&|c| c["aud"] = "npm:elsewhere.example".into())),
            NAME_W,
            401,
            "aud is not npm:127.0.0.1",
        ),
        (
            sign(&with(&|c| c["iss"] = "https://evil.example".into())),
            NAME_W,
            401,
            "iss is not",
        ),
        (
            sign(&with(&|c| c["exp"] = (t - 120).into())),
            NAME_W,
            401,
            "expired",
        ),
        (
            sign(&with(&|c| c["nbf"] = (t + 600).into())),
            NAME_W,
            401,
            "not valid yet",
        ),
        (replayed.clone(), NAME_W, 401, "already exchanged"),
        (
            sign_with(&good(), OTHER_KEY, "oidc-other-key"),
            NAME_W,
            401,
            "not among the issuer's keys",
        ),
        (unsigned, NAME_W, 401, "not a JWT"),
        (hs256, NAME_W, 401, "only RS256"),
        (tampered, NAME_W, 401, "signature is invalid"),
        (
            sign(&claims("evil/widget", 1)),
            "@acme/new-one",
            403,
            "scope is @acme",
        ),
        (
            sign(&claims("acme/gadget-lib", 2)),
            NAME_W,
            403,
            "bound to the GitHub repository acme/widget, but the workflow runs in acme/gadget-lib",
        ),
        (
            sign(&claims("acme/widget", id + 1000)),
            NAME_W,
            403,
            "deleted and created again",
        ),
        (
            sign(&with(&|c| c["event_name"] = "pull_request_target".into())),
            NAME_W,
            403,
            "pull_request_target",
        ),
    ];
    for (jwt, package, status, needle) in cases {
        let reply = exchange(&server, package, &jwt);
        assert_eq!(
            reply.status,
            status,
            "{needle}: {}",
            String::from_utf8_lossy(&reply.body)
        );
        let body = reply.json();
        assert!(
            body["message"].as_str().unwrap().contains(needle),
            "{needle:?} not in {body}"
        );
        assert_eq!(body["message"], body["error"]);
    }
    assert!(
        snapshot(&server.db_path()) == db,
        "a refused exchange wrote"
    );
    assert!(snapshot(&server.storage_path()) == storage);
}

const NAME_W: &str = "@acme/widget";

#[test]
fn the_exchanged_token_is_good_for_its_package_only_and_not_for_long() {
    let gh = github();
    let (jwks, _stop) = issuer();
    let server = trusted_server(&gh, &jwks, &[("NMR_AUTH__GITHUB__OIDC__TOKEN_TTL", "3")]);
    // A second package of the same repo.
    let alice = server.http_as(ALICE);
    let reply =
        common::publish_with_repository(&alice, "@acme/other", "1.0.0", Some("acme/widget"));
    assert_eq!(reply.status, 201);
    let id = gh.repo_id("acme/widget");
    let reply = exchange(&server, NAME_W, &sign(&claims("acme/widget", id)));
    assert_eq!(
        reply.status,
        201,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let body = reply.json();
    assert_eq!(body["token_type"], "oidc");
    let token = body["token"].as_str().unwrap().to_string();
    assert!(token.starts_with("nmr_"));
    assert!(body["expires"].as_str().unwrap() > body["created"].as_str().unwrap());
    let ci = server.http_as(&token);
    assert_eq!(ci.get(&escape(NAME_W), &[]).status, 200);
    assert_eq!(
        ci.get(&format!("-/package/{}/visibility", escape(NAME_W)), &[])
            .json(),
        json!({"public": false})
    );
    let other = ci.get(&escape("@acme/other"), &[]);
    assert_eq!(other.status, 403, "{}", other.error());
    let rev = ci.get(&escape(NAME_W), &[]).json()["_rev"]
        .as_str()
        .unwrap()
        .to_string();
    let unpublish = ci.delete(&format!("{}/-rev/{rev}", escape(NAME_W)));
    assert_eq!(unpublish.status, 403, "{}", unpublish.error());
    let tag = ci.delete(&format!("-/package/{}/dist-tags/latest", escape(NAME_W)));
    assert_eq!(tag.status, 403);
    // A publish naming another repository is refused (no binding moves).
    let reply = common::publish_with_repository(&ci, NAME_W, "1.1.0", Some("acme/gadget"));
    assert_eq!(reply.status, 403, "{}", reply.error());
    let reply = common::publish_with_repository(&ci, NAME_W, "1.1.0", Some("acme/widget"));
    assert_eq!(reply.status, 201, "{}", reply.error());
    // The token never reaches GitHub.
    assert_eq!(gh.calls_with(&token), 0);
    std::thread::sleep(std::time::Duration::from_millis(3200));
    let late = ci.get(&escape(NAME_W), &[]);
    assert_eq!(late.status, 401, "{}", late.error());
    assert!(late.error().contains("expired"), "{}", late.error());
    assert!(!server.log().contains(&token), "the token reached the log");
}

/// `npm trust ARGS --registry=URL` as `npm` with the userconfig and cache of
/// `npm`: npm 11.19's trust sub-commands read the command line by position,
/// so those two go in the environment (docs/trusted-publishing.md).
fn npm_trust(npm: &Npm, url: &str, args: &[&str]) -> common::NpmOutput {
    let output = std::process::Command::new("npm")
        .arg("trust")
        .args(args)
        .arg(format!("--registry={url}"))
        .current_dir(npm.dir.path())
        .env("npm_config_userconfig", &npm.userconfig)
        .env("npm_config_cache", npm.dir.path().join("cache"))
        .env_remove("NPM_CONFIG_REGISTRY")
        .env_remove("GITHUB_ACTIONS")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    common::NpmOutput {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

#[test]
fn npm_trust_narrows_publishing_to_one_workflow() {
    let gh = github();
    let (jwks, _stop) = issuer();
    let server = trusted_server(&gh, &jwks, &[]);
    let id = gh.repo_id("acme/widget");
    let alice = Npm::new(&server.url, Some(ALICE));
    let bob = Npm::new(&server.url, Some(BOB));
    let create = [
        "github",
        NAME_W,
        "--file",
        "release.yml",
        "--repo",
        "acme/widget",
        "--allow-publish",
        "--yes",
    ];
    // bob can push, not administer: he may list but not create.
    let refused = npm_trust(&bob, &server.url, &create);
    assert!(!refused.success, "{}", refused.all());
    assert!(
        refused.all().contains("needs admin permission"),
        "{}",
        refused.all()
    );
    let created = npm_trust(&alice, &server.url, &create);
    assert!(created.success, "{}", created.all());
    let again = npm_trust(&alice, &server.url, &create);
    assert!(
        !again.success && again.all().contains("already has a trusted publisher"),
        "{}",
        again.all()
    );
    let listed = npm_trust(&bob, &server.url, &["list", NAME_W, "--json"]);
    assert!(listed.success, "{}", listed.all());
    assert!(listed.stdout.contains("release.yml"), "{}", listed.all());
    let configs = server
        .http_as(BOB)
        .get(&format!("-/package/{}/trust", escape(NAME_W)), &[])
        .json();
    let config_id = configs[0]["id"].as_str().unwrap().to_string();
    assert_eq!(configs[0]["claims"]["repository"], "acme/widget");

    // Only that workflow may exchange now.
    let mut other = claims("acme/widget", id);
    other["workflow_ref"] = "acme/widget/.github/workflows/ci.yml@refs/heads/main".into();
    let reply = exchange(&server, NAME_W, &sign(&other));
    assert_eq!(reply.status, 403);
    assert!(
        reply.json()["message"]
            .as_str()
            .unwrap()
            .contains("only by the workflow release.yml, not ci.yml")
    );
    assert_eq!(
        exchange(&server, NAME_W, &sign(&claims("acme/widget", id))).status,
        201
    );

    // What npm trust cannot send, the registry refuses too.
    let reply = common::publish_with_repository(
        &server.http_as(ALICE),
        "@other/pkg",
        "1.0.0",
        Some("other/thing"),
    );
    assert_eq!(reply.status, 201, "{}", reply.error());
    let post = |token: &str, body: Value| {
        server
            .http_as(token)
            .post_json(&format!("-/package/{}/trust", escape("@other/pkg")), &body)
    };
    let config = |repo: &str, file: &str| json!([{"type": "github", "claims": {"repository": repo, "workflow_ref": {"file": file}}, "permissions": ["createPackage"]}]);
    let bad_type = post(
        ALICE,
        json!([{"type": "gitlab", "claims": {"project_path": "other/thing", "ci_config_ref_uri": {"file": ".gitlab-ci.yml"}}, "permissions": []}]),
    );
    assert_eq!(bad_type.status, 400, "{}", bad_type.error());
    assert!(
        bad_type.error().contains("GitHub Actions only"),
        "{}",
        bad_type.error()
    );
    let elsewhere = post(ALICE, config("acme/widget", "x.yml"));
    assert_eq!(elsewhere.status, 400, "{}", elsewhere.error());
    assert!(
        elsewhere
            .error()
            .contains("bound to the GitHub repository other/thing"),
        "{}",
        elsewhere.error()
    );
    let path = post(ALICE, config("other/thing", "../x.yml"));
    assert_eq!(path.status, 400, "{}", path.error());
    assert_eq!(post(ALICE, config("other/thing", "ok.yml")).status, 200);

    let revoked = npm_trust(&alice, &server.url, &["revoke", NAME_W, "--id", &config_id]);
    assert!(revoked.success, "{}", revoked.all());
    assert_eq!(
        server
            .http_as(BOB)
            .get(&format!("-/package/{}/trust", escape(NAME_W)), &[])
            .json(),
        json!([])
    );
    // (A jti is spent by any verified exchange, granted or not.)
    other["jti"] = "another-jti".into();
    assert_eq!(exchange(&server, NAME_W, &sign(&other)).status, 201);
}

fn exchange_read(server: &Server, jwt: &str) -> common::Reply {
    post_bearer(server, "-/nmr/v1/oidc/token/exchange/read", jwt)
}

#[test]
fn npm_ci_installs_private_packages_with_a_read_token() {
    let gh = github();
    let (jwks, _stop) = issuer();
    let server = trusted_server(&gh, &jwks, &[]);
    let alice = Npm::new(&server.url, Some(ALICE));
    let repo = json!({"repository": "github:acme/widget"});
    for name in ["@acme/lib-a", "@acme/lib-b"] {
        alice.ok(
            &alice.package(name, "1.0.0", name, repo.clone()),
            &["publish"],
        );
    }
    alice.ok(
        &alice.package(
            "@acme/gadget-only",
            "1.0.0",
            "g",
            json!({"repository": "github:acme/gadget"}),
        ),
        &["publish"],
    );
    let app = alice.project("ci-app");
    alice.ok(&app, &["install", "@acme/lib-a", "@acme/lib-b"]);
    std::fs::remove_dir_all(app.join("node_modules")).unwrap();
    // The lockfile names the old port; npm ci must fetch from the new one.
    std::fs::remove_file(app.join("package-lock.json")).unwrap();

    // The workflow of acme/widget fetches a read token and runs npm ci.
    let id = gh.repo_id("acme/widget");
    let reply = exchange_read(&server, &sign(&claims("acme/widget", id)));
    assert_eq!(
        reply.status,
        201,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(reply.json()["token_type"], "oidc-read");
    let token = reply.json()["token"].as_str().unwrap().to_string();
    // Registry tokens survive a restart.
    let mut server = server;
    server.restart();
    let ci = Npm::new(&server.url, Some(&token));
    ci.ok(&app, &["install"]);
    std::fs::remove_dir_all(app.join("node_modules")).unwrap();
    ci.ok(&app, &["ci"]);
    assert!(app.join("node_modules/@acme/lib-a/index.js").is_file());
    assert!(app.join("node_modules/@acme/lib-b/index.js").is_file());
    // Read only, and only what is bound to the workflow's repository.
    let http = server.http_as(&token);
    assert_eq!(http.get(&escape("@acme/gadget-only"), &[]).status, 404);
    let publish =
        common::publish_with_repository(&http, "@acme/lib-a", "1.1.0", Some("acme/widget"));
    assert_eq!(publish.status, 403, "{}", publish.error());
}

#[test]
fn the_read_policy_decides_what_a_read_token_reads() {
    let gh = github();
    let (jwks, _stop) = issuer();
    let owner = trusted_server(&gh, &jwks, &[("NMR_AUTH__GITHUB__OIDC__READ", "owner")]);
    let alice = owner.http_as(ALICE);
    assert_eq!(
        common::publish_with_repository(&alice, "@acme/g", "1.0.0", Some("acme/gadget")).status,
        201
    );
    let id = gh.repo_id("acme/widget");
    let token = exchange_read(&owner, &sign(&claims("acme/widget", id))).json()["token"]
        .as_str()
        .unwrap()
        .to_string();
    // "owner": every package of the scope, from a private repository's workflow.
    assert_eq!(
        owner.http_as(&token).get(&escape("@acme/g"), &[]).status,
        200
    );
    let mut public = claims("acme/widget", id);
    public["repository_visibility"] = "public".into();
    let reply = exchange_read(&owner, &sign(&public));
    assert_eq!(reply.status, 403);
    assert!(
        reply.json()["message"]
            .as_str()
            .unwrap()
            .contains("only workflows of private or internal repositories")
    );

    let off = trusted_server(&gh, &jwks, &[("NMR_AUTH__GITHUB__OIDC__READ", "none")]);
    assert_eq!(
        exchange_read(&off, &sign(&claims("acme/widget", id))).status,
        404
    );
}

#[test]
fn the_exchange_answers_at_the_host_root_and_under_the_prefix() {
    let gh = github();
    let (jwks, _stop) = issuer();
    let port = common::free_port();
    let public = format!("http://127.0.0.1:{port}/npm/");
    let _server = trusted_server(
        &gh,
        &jwks,
        &[
            ("NMR_SERVER__PORT", &port.to_string()),
            ("NMR_SERVER__PUBLIC_URL", &public),
        ],
    );
    let id = gh.repo_id("acme/widget");
    for path in [
        "/-/npm/v1/oidc/token/exchange/package/@acme%2fwidget",
        "/npm/-/npm/v1/oidc/token/exchange/package/%40acme%2Fwidget",
    ] {
        let response = ureq::post(&format!("http://127.0.0.1:{port}{path}"))
            .header(
                "authorization",
                &format!("Bearer {}", sign(&claims("acme/widget", id))),
            )
            .config()
            .http_status_as_error(false)
            .build()
            .send_empty()
            .unwrap();
        assert_eq!(response.status(), 201, "{path}");
    }
}
