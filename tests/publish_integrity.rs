//! What npm installs is what nmr checked: tarballs whose extraction would
//! differ from what was checked are refused, inflation is bounded, the
//! registry computes what it serves about the tarball, versions are unique
//! by SemVer precedence, metadata is bounded, and an unbound package cannot
//! be claimed. Real `npm publish` of real package shapes keeps working.

mod common;

use common::github::cast::*;
use common::github::{seeded, server as github_server, with_cast as github};
use common::{Npm, Server, escape, snapshot};
use nmr::verify::testing::{publish_body, raw_tar, tarball};
use serde_json::{Value, json};
use tar::EntryType::Regular;

const NAME: &str = "@acme/widget";

fn pkg_json(name: &str, version: &str) -> Vec<u8> {
    json!({"name": name, "version": version})
        .to_string()
        .into_bytes()
}

/// `publish` is refused with `status` and `needle`, and nothing is written.
fn refused(server: &Server, status: u16, needle: &str, body: &Value) {
    let db = snapshot(&server.db_path());
    let storage = snapshot(&server.storage_path());
    let reply = server.http().put_json(&escape(NAME), body);
    assert_eq!(reply.status, status, "{}", reply.error());
    assert!(
        reply.error().contains(needle),
        "{needle:?} not in {:?}",
        reply.error()
    );
    assert!(snapshot(&server.db_path()) == db, "database changed");
    assert!(
        snapshot(&server.storage_path()) == storage,
        "storage changed"
    );
}

#[test]
fn tarballs_that_npm_would_extract_differently_are_refused() {
    let server = Server::start(&[("NMR_SETTINGS__MAX_UNPACKED_SIZE", "1000000")]);
    assert_eq!(
        server
            .http()
            .put_json(
                &escape(NAME),
                &publish_body(NAME, "1.0.0", "latest", &tarball(NAME, "1.0.0"))
            )
            .status,
        201
    );
    let good = pkg_json(NAME, "1.1.0");
    let evil = json!({"name": "@evil/other", "version": "6.6.6", "scripts": {"postinstall": "node pwn.js"}})
        .to_string()
        .into_bytes();
    let body = |tgz: Vec<u8>| publish_body(NAME, "1.1.0", "latest", &tgz);
    refused(
        &server,
        400,
        "more than one package/package.json",
        &body(raw_tar(&[
            ("package/package.json", Regular, &good, ""),
            ("package/package.json", Regular, &evil, ""),
        ])),
    );
    refused(
        &server,
        400,
        "more than one top-level directory",
        &body(raw_tar(&[
            ("x/package.json", Regular, &good, ""),
            ("package/package.json", Regular, &evil, ""),
        ])),
    );
    refused(
        &server,
        400,
        "points outside the package",
        &body(raw_tar(&[
            ("package/package.json", Regular, &good, ""),
            (
                "package/index.js",
                tar::EntryType::Symlink,
                b"",
                "../../../../etc/passwd",
            ),
        ])),
    );
    // A gzip bomb: a few KiB of gzip that would inflate past the bound.
    let zeros = vec![0u8; 2_000_000];
    let bomb = raw_tar(&[
        ("package/package.json", Regular, &good, ""),
        ("package/zeros", Regular, &zeros, ""),
    ]);
    assert!(bomb.len() < 10_000);
    refused(&server, 413, "settings.max_unpacked_size", &body(bomb));
}

#[test]
fn the_manifest_must_be_the_tarballs_package_json() {
    let server = Server::start(&[]);
    // The tarball has a postinstall script, a dependency and a bin; each
    // manifest below hides one of them.
    let inner = json!({
        "name": NAME, "version": "1.0.0",
        "scripts": {"postinstall": "node pwn.js"},
        "dependencies": {"@evil/payload": "^6.6.6"},
        "bin": "./pwn.js",
    })
    .to_string()
    .into_bytes();
    let tgz = raw_tar(&[
        ("package/package.json", Regular, &inner, ""),
        ("package/pwn.js", Regular, b"1", ""),
    ]);
    let honest = json!({
        "scripts": {"postinstall": "node pwn.js"},
        "dependencies": {"@evil/payload": "^6.6.6"},
        "bin": {"widget": "pwn.js"},
    });
    for (hidden, field) in [
        ("scripts", "scripts.postinstall"),
        ("dependencies", "dependencies"),
        ("bin", "bin"),
    ] {
        let mut body = publish_body(NAME, "1.0.0", "latest", &tgz);
        let manifest = body["versions"]["1.0.0"].as_object_mut().unwrap();
        for (k, v) in honest.as_object().unwrap() {
            if k != hidden {
                manifest.insert(k.clone(), v.clone());
            }
        }
        refused(&server, 400, &format!("the manifest's {field} is"), &body);
    }
    let mut body = publish_body(NAME, "1.0.0", "latest", &tgz);
    body["versions"]["1.0.0"]
        .as_object_mut()
        .unwrap()
        .extend(honest.as_object().unwrap().clone());
    let reply = server.http().put_json(&escape(NAME), &body);
    assert_eq!(reply.status, 201, "{}", reply.error());
}

#[test]
fn the_registry_says_what_the_tarball_holds() {
    let server = Server::start(&[]);
    let http = server.http();
    // The manifest claims nothing; the tarball has a postinstall script, an
    // npm-shrinkwrap.json, and the client claims where the tarball is.
    let inner = json!({"name": NAME, "version": "1.0.0", "scripts": {"postinstall": "node x.js"}})
        .to_string()
        .into_bytes();
    let tgz = raw_tar(&[
        ("package/package.json", Regular, &inner, ""),
        ("package/npm-shrinkwrap.json", Regular, b"{}", ""),
        ("package/x.js", Regular, b"1", ""),
    ]);
    let mut body = publish_body(NAME, "1.0.0", "latest", &tgz);
    let manifest = &mut body["versions"]["1.0.0"];
    manifest["scripts"] = json!({"postinstall": "node x.js"});
    manifest["_resolved"] = "https://evil.example/x.tgz".into();
    manifest["_integrity"] = "sha512-evil".into();
    manifest["_from"] = "evil".into();
    manifest["_shasum"] = "0".repeat(40).into();
    manifest["hasInstallScript"] = false.into();
    manifest["readme"] = "é".repeat(400_000).into();
    assert_eq!(http.put_json(&escape(NAME), &body).status, 201);

    let abbreviated = http
        .get(
            &escape(NAME),
            &[("accept", "application/vnd.npm.install-v1+json")],
        )
        .json();
    let v = &abbreviated["versions"]["1.0.0"];
    assert_eq!(v["hasInstallScript"], true);
    assert_eq!(v["_hasShrinkwrap"], true);
    assert_eq!(v["dist"]["fileCount"], 3);
    let full = http.get(&escape(NAME), &[]).json();
    let v = &full["versions"]["1.0.0"];
    for claim in ["_resolved", "_integrity", "_from", "_shasum", "readme"] {
        assert!(v.get(claim).is_none(), "{claim} served: {v}");
    }
    let readme = full["readme"].as_str().unwrap();
    assert!(
        readme.len() <= 256 * 1024 && readme.len() > 255 * 1024,
        "{}",
        readme.len()
    );
    assert!(readme.chars().all(|c| c == 'é'), "cut inside a character");
}

#[test]
fn versions_are_unique_by_semver_precedence() {
    let server = Server::start(&[]);
    let http = server.http();
    let publish = |v: &str| {
        http.put_json(
            &escape(NAME),
            &publish_body(NAME, v, "latest", &tarball(NAME, v)),
        )
    };
    assert_eq!(publish("3.0.0").status, 201);
    let twin = publish("3.0.0+evil");
    assert_eq!(twin.status, 409, "{}", twin.error());
    assert!(twin.error().contains("build metadata"), "{}", twin.error());
    let range = http.get(&format!("{}/%5E3.0.0", escape(NAME)), &[]).json();
    assert_eq!(range["version"], "3.0.0");
}

#[test]
fn large_readmes_do_not_grow_the_packument() {
    let server = Server::start(&[]);
    let http = server.http();
    for (i, v) in ["1.0.0", "1.0.1", "1.0.2"].iter().enumerate() {
        let mut body = publish_body(NAME, v, "latest", &tarball(NAME, v));
        // One 50 MiB readme, as in the report; then two of 1 MiB.
        let size = if i == 0 { 50 << 20 } else { 1 << 20 };
        body["versions"][*v]["readme"] = format!("{i}{}", "r".repeat(size)).into();
        assert_eq!(http.put_json(&escape(NAME), &body).status, 201);
    }
    let full = http.get(&escape(NAME), &[]);
    assert!(full.body.len() < 300 * 1024, "{} bytes", full.body.len());
    assert!(full.json()["readme"].as_str().unwrap().starts_with('2'));
    // A version manifest beyond settings.max_manifest_size is refused.
    let mut body = publish_body(NAME, "1.0.3", "latest", &tarball(NAME, "1.0.3"));
    body["versions"]["1.0.3"]["keywords"] = json!(vec!["k".repeat(100); 20_000]);
    refused(&server, 413, "settings.max_manifest_size", &body);
}

#[test]
fn an_unbound_package_is_adopted_only_by_an_admin_of_its_repo() {
    let gh = github();
    // Published without GitHub authorization, naming acme/widget.
    let mut server = Server::start(&[]);
    let mut body = publish_body(NAME, "1.0.0", "latest", &tarball(NAME, "1.0.0"));
    body["versions"]["1.0.0"]["repository"] = "github:acme/widget".into();
    assert_eq!(server.http().put_json(&escape(NAME), &body).status, 201);
    server.stop();
    let db = server.db_path();
    let storage = server.storage_path();
    let (db, storage) = (db.to_str().unwrap(), storage.to_str().unwrap());
    let server = github_server(
        &gh,
        &[("NMR_DB__PATH", db), ("NMR_STORAGE__LOCAL__PATH", storage)],
    );
    let publish = |token: &str, v: &str, repo: &str| {
        let mut body = publish_body(NAME, v, "latest", &tarball(NAME, v));
        body["versions"][v]["repository"] = repo.into();
        server.http_as(token).put_json(&escape(NAME), &body)
    };
    // Nobody sees it while it is unbound.
    assert_eq!(server.http_as(ALICE).get(&escape(NAME), &[]).status, 404);
    // bob can push to acme/widget, and admins acme/gadget: neither adopts.
    let bob = publish(BOB, "1.1.0", "github:acme/widget");
    assert_eq!(bob.status, 403, "{}", bob.error());
    assert!(
        bob.error()
            .contains("to adopt it, an admin of the GitHub repository acme/widget"),
        "{}",
        bob.error()
    );
    let elsewhere = publish(ALICE, "1.1.0", "github:acme/gadget");
    assert_eq!(elsewhere.status, 403, "{}", elsewhere.error());
    // alice, admin of the repo its latest version names, adopts it.
    assert_eq!(publish(ALICE, "1.1.0", "github:acme/widget").status, 201);
    let versions = server.http_as(CAROL).get(&escape(NAME), &[]).json()["versions"].clone();
    assert_eq!(versions.as_object().unwrap().len(), 2);
    assert_eq!(publish(BOB, "1.2.0", "github:acme/widget").status, 201);
}

/// Real npm publishes of the shapes real packages have: a `bin` string,
/// `directories.bin`, a `binding.gyp`, bundled dependencies, scoped and
/// npm-alias dependencies. Each installs exactly the checked package.json.
#[test]
fn real_npm_publishes_of_real_package_shapes() {
    let gh = github();
    let server = seeded(&gh, &[]);
    let npm = Npm::new(&server.url, Some(ALICE));
    let repo = json!({"repository": "github:acme/widget"});
    let with = |extra: Value| {
        let mut all = repo.clone();
        all.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        all
    };
    let base = npm.package("@acme/base", "1.0.0", "base", repo.clone());
    npm.ok(&base, &["publish"]);

    let cli = npm.package(
        "@acme/cli",
        "1.0.0",
        "cli",
        with(json!({"bin": "./cli.js"})),
    );
    std::fs::write(
        cli.join("cli.js"),
        "#!/usr/bin/env node\nconsole.log('cli')\n",
    )
    .unwrap();
    let tools = npm.package(
        "@acme/tools",
        "1.0.0",
        "tools",
        with(json!({"directories": {"bin": "./bin"}})),
    );
    std::fs::create_dir(tools.join("bin")).unwrap();
    std::fs::write(tools.join("bin/tool-a"), "#!/usr/bin/env node\n").unwrap();
    let native = npm.package("@acme/native", "1.0.0", "native", repo.clone());
    std::fs::write(native.join("binding.gyp"), "{\"targets\": []}\n").unwrap();
    let bundle = npm.package(
        "@acme/bundle",
        "1.0.0",
        "bundle",
        with(json!({
            "dependencies": {"inner": "1.0.0", "@acme/base": "^1.0.0", "alias": "npm:@acme/base@^1.0.0"},
            "bundleDependencies": ["inner"],
        })),
    );
    std::fs::create_dir_all(bundle.join("node_modules/inner")).unwrap();
    std::fs::write(
        bundle.join("node_modules/inner/package.json"),
        r#"{"name":"inner","version":"1.0.0"}"#,
    )
    .unwrap();
    for dir in [&cli, &tools, &native, &bundle] {
        npm.ok(dir, &["publish"]);
    }

    let app = npm.project("shapes");
    npm.ok(
        &app,
        &[
            "install",
            "--ignore-scripts",
            "@acme/cli",
            "@acme/tools",
            "@acme/native",
            "@acme/bundle",
        ],
    );
    for (name, dir) in [
        ("cli", &cli),
        ("tools", &tools),
        ("native", &native),
        ("bundle", &bundle),
    ] {
        let installed =
            std::fs::read_to_string(app.join(format!("node_modules/@acme/{name}/package.json")))
                .unwrap();
        let source = std::fs::read_to_string(dir.join("package.json")).unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(&installed).unwrap(),
            serde_json::from_str::<Value>(&source).unwrap(),
            "{name}"
        );
    }
    assert!(app.join("node_modules/.bin/cli").exists());
    assert!(app.join("node_modules/.bin/tool-a").exists());
    assert!(
        app.join("node_modules/@acme/bundle/node_modules/inner/package.json")
            .exists()
    );
    assert!(app.join("node_modules/alias/package.json").exists());
    let abbreviated = |name: &str| {
        server
            .http_as(ALICE)
            .get(
                &escape(name),
                &[("accept", "application/vnd.npm.install-v1+json")],
            )
            .json()["versions"]["1.0.0"]
            .clone()
    };
    assert_eq!(abbreviated("@acme/native")["hasInstallScript"], true);
    assert!(abbreviated("@acme/cli").get("hasInstallScript").is_none());
    assert_eq!(abbreviated("@acme/cli")["bin"], json!({"cli": "cli.js"}));
}

/// A server whose answers are cached for one second, so a change on GitHub
/// is seen after [`wait_for_ttl`].
fn short_ttl(gh: &common::github::FakeGithub) -> Server {
    seeded(
        gh,
        &[
            ("NMR_AUTH__GITHUB__CACHE_TTL", "1"),
            ("NMR_AUTH__GITHUB__DENIED_CACHE_TTL", "1"),
        ],
    )
}

fn wait_for_ttl() {
    std::thread::sleep(std::time::Duration::from_millis(1300));
}

#[test]
fn a_renamed_repo_keeps_its_packages_and_the_binding_follows() {
    let gh = github();
    let server = short_ttl(&gh);
    let id = gh.repo_id("acme/widget");
    gh.move_repo("acme/widget", "acme", "widget-core");
    wait_for_ttl();
    let carol = Npm::new(&server.url, Some(CAROL));
    let app = carol.project("after-rename");
    carol.ok(&app, &["install", "@acme/widget"]);
    assert_eq!(
        gh.calls(&format!("/repositories/{id}")),
        1,
        "followed by id"
    );
    // bob publishes naming the new name, and again naming the old one.
    let bob = Npm::new(&server.url, Some(BOB));
    bob.ok(
        &bob.package(
            NAME,
            "1.1.0",
            "v1.1",
            json!({"repository": "github:acme/widget-core"}),
        ),
        &["publish"],
    );
    bob.ok(
        &bob.package(
            NAME,
            "1.2.0",
            "v1.2",
            json!({"repository": "github:acme/widget"}),
        ),
        &["publish"],
    );
    // The binding now names the repo as it is called: asked by its new name.
    wait_for_ttl();
    let before = gh.calls("/repos/acme/widget-core");
    assert_eq!(server.http_as(CAROL).get(&escape(NAME), &[]).status, 200);
    assert_eq!(gh.calls("/repos/acme/widget-core"), before + 1);
}

#[test]
fn a_repo_transferred_to_another_owner_refuses_every_request_saying_why() {
    let gh = github();
    let server = short_ttl(&gh);
    gh.move_repo("acme/widget", "other", "widget");
    wait_for_ttl();
    for token in [ALICE, CAROL] {
        let reply = server.http_as(token).get(&escape(NAME), &[]);
        assert_eq!(reply.status, 403, "{}", reply.error());
        assert!(
            reply
                .error()
                .contains("moved from acme/widget to other/widget"),
            "{}",
            reply.error()
        );
    }
    let mut body = publish_body(NAME, "2.0.0", "latest", &tarball(NAME, "2.0.0"));
    body["versions"]["2.0.0"]["repository"] = "github:acme/widget".into();
    let reply = server.http_as(ALICE).put_json(&escape(NAME), &body);
    assert_eq!(reply.status, 403, "{}", reply.error());
}

#[test]
fn a_deleted_and_recreated_repo_gets_no_say_over_the_package() {
    let gh = github();
    let mallory = "ghp_mallory_token_0005";
    gh.user("mallory", mallory);
    let server = short_ttl(&gh);
    let old = gh.repo_id("acme/widget");
    gh.recreate("acme/widget");
    gh.collaborator("acme/widget", "mallory", common::github::Perm::Admin);
    assert_ne!(gh.repo_id("acme/widget"), old);
    wait_for_ttl();
    let db = snapshot(&server.db_path());
    let mut body = publish_body(NAME, "6.6.6", "latest", &tarball(NAME, "6.6.6"));
    body["versions"]["6.6.6"]["repository"] = "github:acme/widget".into();
    let publish = server.http_as(mallory).put_json(&escape(NAME), &body);
    assert_eq!(publish.status, 403, "{}", publish.error());
    assert!(
        publish.error().contains("deleted and created again"),
        "{}",
        publish.error()
    );
    let rev = "1-0";
    let unpublish = server
        .http_as(mallory)
        .delete(&format!("{}/-rev/{rev}", escape(NAME)));
    assert_eq!(unpublish.status, 403, "{}", unpublish.error());
    assert_eq!(server.http_as(mallory).get(&escape(NAME), &[]).status, 404);
    // carol could read the old repo; the new one grants her nothing.
    assert_eq!(server.http_as(CAROL).get(&escape(NAME), &[]).status, 404);
    assert!(snapshot(&server.db_path()) == db, "database changed");
}
