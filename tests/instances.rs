//! Several nmr instances on one bucket (`db.type = "s3"`), each with its
//! own `db.path`, against moto's S3 server (run through
//! `scripts/moto_server.py`, which makes its conditional writes atomic,
//! docs/s3-conditional-writes.md): what one instance publishes the others serve, no
//! concurrent publish is lost, one version has one winner, a crash leaves
//! nothing dangling, and a store that ignores `If-None-Match` is refused.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::{Npm, S3Server, Server, escape, publish_http};
use serde_json::{Value, json};
use sha1::{Digest, Sha1};

/// An instance on `s3`'s bucket with `db.type = "s3"` (revalidating after
/// 300 ms) and `extra` settings.
fn instance(s3: &S3Server, extra: &[(&str, &str)]) -> Server {
    let mut env = s3.env(false);
    env.extend(S3Server::shared_db_env());
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Server::start(&env)
}

/// Longer than `db.s3.max_staleness` in [`instance`].
fn past_staleness() {
    std::thread::sleep(Duration::from_millis(400));
}

/// The live versions of `name` as `server` serves them.
fn versions(server: &Server, name: &str) -> Vec<String> {
    let reply = server.http().get(&escape(name), &[]);
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let doc = reply.json();
    doc["versions"]
        .as_object()
        .map(|v| v.keys().cloned().collect())
        .unwrap_or_default()
}

/// Checks that every version `server` serves of `name` downloads a
/// tarball whose SHA-1 is the manifest's `dist.shasum`.
fn every_tarball_matches(server: &Server, name: &str) -> usize {
    let doc = server.http().get(&escape(name), &[]).json();
    let versions = doc["versions"].as_object().cloned().unwrap_or_default();
    for (v, manifest) in &versions {
        let url = manifest["dist"]["tarball"].as_str().unwrap();
        let path = url.strip_prefix(server.url.trim_end_matches('/')).unwrap();
        let got = server.http().get(path, &[]);
        assert_eq!(got.status, 200, "tarball of {name}@{v}");
        assert_eq!(
            hex::encode(Sha1::digest(&got.body)),
            manifest["dist"]["shasum"].as_str().unwrap(),
            "the bytes of {name}@{v} are the ones its manifest names"
        );
    }
    versions.len()
}

#[test]
fn npm_publishes_through_one_instance_install_through_the_others() {
    let s3 = S3Server::start_moto();
    let (a, b, c) = (instance(&s3, &[]), instance(&s3, &[]), instance(&s3, &[]));
    // B and C have seen the package absent before the publish.
    assert_eq!(b.http().get(&escape("@acme/widget"), &[]).status, 404);
    let publisher = Npm::new(&a.url, Some("token"));
    let dir = publisher.package("@acme/widget", "1.0.0", "widget-1.0.0", json!({}));
    publisher.ok(&dir, &["publish"]);
    // The instance that made the write serves it at once.
    assert_eq!(versions(&a, "@acme/widget"), ["1.0.0"]);
    past_staleness();
    for other in [&b, &c] {
        let npm = Npm::new(&other.url, Some("token"));
        let app = npm.project("app");
        npm.ok(&app, &["install", "@acme/widget"]);
        let index =
            std::fs::read_to_string(app.join("node_modules/@acme/widget/index.js")).unwrap();
        assert!(index.contains("widget-1.0.0"));
    }
    // A dist-tag set through C is seen by A.
    let npm = Npm::new(&c.url, Some("token"));
    let app = npm.project("tags");
    npm.ok(&app, &["dist-tag", "add", "@acme/widget@1.0.0", "stable"]);
    past_staleness();
    let doc = a.http().get(&escape("@acme/widget"), &[]).json();
    assert_eq!(doc["dist-tags"]["stable"], "1.0.0");
}

#[test]
fn concurrent_publishes_of_different_versions_lose_none() {
    let s3 = S3Server::start_moto();
    let servers = Arc::new([instance(&s3, &[]), instance(&s3, &[]), instance(&s3, &[])]);
    let start = Arc::new(Barrier::new(30));
    let threads: Vec<_> = (0..30)
        .map(|i| {
            let (servers, start) = (servers.clone(), start.clone());
            std::thread::spawn(move || {
                let server = &servers[i % 3];
                start.wait();
                let reply = publish_http(&server.http(), "@acme/many", &format!("1.0.{i}"));
                (
                    i,
                    reply.status,
                    String::from_utf8_lossy(&reply.body).into_owned(),
                )
            })
        })
        .collect();
    for t in threads {
        let (i, status, body) = t.join().unwrap();
        assert_eq!(status, 201, "1.0.{i}: {body}");
    }
    past_staleness();
    for server in servers.iter() {
        let mut got = versions(server, "@acme/many");
        got.sort_by_key(|v| v.rsplit('.').next().unwrap().parse::<u32>().unwrap());
        let want: Vec<String> = (0..30).map(|i| format!("1.0.{i}")).collect();
        assert_eq!(got, want);
        assert_eq!(every_tarball_matches(server, "@acme/many"), 30);
    }
}

#[test]
fn one_version_published_through_two_instances_at_once_has_one_winner() {
    let s3 = S3Server::start_moto();
    let (a, b) = (instance(&s3, &[]), instance(&s3, &[]));
    for round in 0..4 {
        let name = "@acme/race";
        let version = format!("1.0.{round}");
        // Different bytes through each instance, released together.
        let bodies: Vec<Value> = ["through-a", "through-b"]
            .iter()
            .map(|marker| {
                let tgz = nmr::verify::testing::tarball_with(
                    name,
                    &version,
                    &[("package/index.js", marker.as_bytes())],
                );
                nmr::verify::testing::publish_body(name, &version, "latest", &tgz)
            })
            .collect();
        let start = Arc::new(Barrier::new(2));
        let threads: Vec<_> = [a.http(), b.http()]
            .into_iter()
            .zip(bodies)
            .map(|(http, body)| {
                let start = start.clone();
                std::thread::spawn(move || {
                    start.wait();
                    http.put_json(&escape(name), &body).status
                })
            })
            .collect();
        let mut statuses: Vec<u16> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        statuses.sort();
        assert_eq!(statuses, [201, 409], "round {round}");
        past_staleness();
        for server in [&a, &b] {
            assert!(versions(server, name).contains(&version));
            every_tarball_matches(server, name);
        }
    }
    // The same bytes through both at once: one publish, and the other is
    // told it is already there (200), as with one instance.
    let version = "2.0.0";
    let start = Arc::new(Barrier::new(2));
    let threads: Vec<_> = [a.http(), b.http()]
        .into_iter()
        .map(|http| {
            let start = start.clone();
            std::thread::spawn(move || {
                start.wait();
                publish_http(&http, "@acme/race", version).status
            })
        })
        .collect();
    let mut statuses: Vec<u16> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    statuses.sort();
    assert_eq!(statuses, [200, 201]);
    past_staleness();
    assert_eq!(every_tarball_matches(&b, "@acme/race"), 5);
}

#[test]
fn an_instance_whose_cache_was_deleted_serves_everything() {
    let s3 = S3Server::start_moto();
    let a = instance(&s3, &[]);
    let mut b = instance(&s3, &[]);
    // More versions than a record carries inline (shared::MAX_INLINE):
    // the older manifests must come from their own objects.
    let published: Vec<String> = (0..12).map(|i| format!("1.{i}.0")).collect();
    for v in &published {
        assert_eq!(publish_http(&a.http(), "@acme/kept", v).status, 201);
    }
    past_staleness();
    assert_eq!(versions(&b, "@acme/kept").len(), 12);
    b.stop();
    std::fs::remove_dir_all(b.db_path()).unwrap();
    b.start_again();
    assert_eq!(versions(&b, "@acme/kept"), published);
    assert_eq!(every_tarball_matches(&b, "@acme/kept"), 12);
}

#[test]
fn kill_9_in_the_middle_of_publishes_leaves_nothing_dangling() {
    let s3 = S3Server::start_moto();
    let mut a = instance(&s3, &[]);
    let b = instance(&s3, &[]);
    let http = a.http();
    let writer = std::thread::spawn(move || {
        let mut done = 0;
        for i in 0..200 {
            // The connection breaks when the instance dies.
            let published = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                publish_http(&http, "@acme/crash", &format!("2.0.{i}")).status == 201
            }));
            if !matches!(published, Ok(true)) {
                break;
            }
            done += 1;
        }
        done
    });
    std::thread::sleep(Duration::from_millis(1500));
    a.kill();
    let done = writer.join().unwrap();
    assert!(
        done > 0 && done < 200,
        "killed in the middle ({done} published)"
    );
    past_staleness();
    let served = every_tarball_matches(&b, "@acme/crash");
    assert!(served >= done, "{served} served, {done} acknowledged");
    // The crashed instance comes back on its old cache and agrees.
    a.start_again();
    assert_eq!(every_tarball_matches(&a, "@acme/crash"), served);
    // And the version it was writing can still be published.
    assert_eq!(
        publish_http(&b.http(), "@acme/crash", &format!("2.0.{served}")).status,
        201
    );
}

#[test]
fn an_unreachable_bucket_answers_503_and_keeps_fresh_reads() {
    let mut s3 = S3Server::start_moto();
    let a = instance(&s3, &[("NMR_DB__S3__MAX_STALENESS", "60000")]);
    assert_eq!(publish_http(&a.http(), "@acme/fresh", "1.0.0").status, 201);
    s3.stop();
    // Validated within max_staleness: still served.
    assert_eq!(versions(&a, "@acme/fresh"), ["1.0.0"]);
    // Not known: S3 must be asked, and cannot be.
    let unknown = a.http().get(&escape("@acme/unknown"), &[]);
    assert_eq!(unknown.status, 503);
    assert!(
        unknown.error().contains("metadata storage"),
        "{}",
        unknown.error()
    );
    let write = publish_http(&a.http(), "@acme/fresh", "1.1.0");
    assert_eq!(
        write.status,
        503,
        "{}",
        String::from_utf8_lossy(&write.body)
    );
    assert_eq!(versions(&a, "@acme/fresh"), ["1.0.0"]);
}

#[test]
fn a_package_whose_record_left_the_bucket_is_no_longer_served() {
    let s3 = S3Server::start_moto();
    let a = instance(&s3, &[]);
    assert_eq!(publish_http(&a.http(), "@acme/gone", "1.0.0").status, 201);
    let tarball = "/@acme/gone/-/gone-1.0.0.tgz";
    assert_eq!(a.http().get(tarball, &[]).status, 200);
    // The bucket is the truth: its record deleted by hand, A's cached copy
    // goes too once it revalidates.
    s3.delete_object("@acme/gone/packument.json");
    past_staleness();
    assert_eq!(a.http().get(&escape("@acme/gone"), &[]).status, 404);
    assert_eq!(a.http().get(tarball, &[]).status, 404);
    let b = instance(&s3, &[]);
    assert_eq!(b.http().get(&escape("@acme/gone"), &[]).status, 404);
}

/// A proxy in front of `upstream` (host:port) that drops every
/// `If-None-Match` request header, as some S3-compatible stores ignore it.
fn header_stripping_proxy(upstream: String) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for client in listener.incoming().map_while(Result::ok) {
            let upstream = upstream.clone();
            std::thread::spawn(move || {
                let server = TcpStream::connect(&upstream).unwrap();
                let mut back = server.try_clone().unwrap();
                let mut to_client = client.try_clone().unwrap();
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut back, &mut to_client);
                });
                let mut reader = BufReader::new(client);
                let mut server = server;
                loop {
                    let mut head = Vec::new();
                    let mut length = 0usize;
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let lower = line.to_ascii_lowercase();
                        if let Some(v) = lower.strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap_or(0);
                        }
                        if !lower.starts_with("if-none-match:") {
                            head.extend_from_slice(line.as_bytes());
                        }
                        if line == "\r\n" {
                            break;
                        }
                    }
                    let mut body = vec![0; length];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    head.extend_from_slice(&body);
                    if server.write_all(&head).is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

#[test]
fn a_store_that_ignores_if_none_match_is_refused_at_startup() {
    let s3 = S3Server::start_moto();
    let upstream = s3
        .endpoint
        .trim_start_matches("http://")
        .replace("localhost", "127.0.0.1");
    let port = header_stripping_proxy(upstream);
    let mut env = s3.env(false);
    env.extend(S3Server::shared_db_env());
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_nmr"))
        .env_remove("RUST_LOG")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env(
            "NMR_STORAGE__S3__ENDPOINT",
            format!("http://localhost:{port}"),
        )
        .env("NMR_SERVER__HOST", "127.0.0.1")
        .env("NMR_SERVER__PORT", "0")
        .env("NMR_DB__PATH", dir.path().join("db"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("ignores If-None-Match"), "{stderr}");
    // Straight to the store, the probe passes.
    let ok = instance(&s3, &[]);
    assert_eq!(ok.http().get("/-/ping", &[]).status, 200);
}

#[test]
fn db_type_s3_needs_storage_type_s3() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_nmr"))
        .env_remove("RUST_LOG")
        .env("NMR_DB__TYPE", "s3")
        .env("NMR_DB__PATH", dir.path().join("db"))
        .env("NMR_SERVER__PORT", "0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("db.type") && stderr.contains("storage.type"),
        "{stderr}"
    );
}

/// Three instances with GitHub App authorization (the App installed on
/// `acme`) against a fake GitHub, on one moto bucket.
fn app_instances() -> (S3Server, common::github::FakeGithub, [Server; 3]) {
    let s3 = S3Server::start_moto();
    let gh = common::github::with_cast();
    gh.app().install("acme");
    let auth = common::github::app_env(&gh);
    let auth: Vec<(&str, &str)> = auth.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let servers = [(); 3].map(|()| instance(&s3, &auth));
    (s3, gh, servers)
}

#[test]
fn a_token_one_instance_issues_works_on_the_others_until_one_revokes_it() {
    use common::github::cast::ALICE;
    // The fake GitHub must live as long as the instances.
    let (_s3, _gh, [a, b, c]) = app_instances();
    let login = a.http().put_json(
        "/-/user/org.couchdb.user:alice",
        &json!({"_id": "org.couchdb.user:alice", "name": "alice", "password": ALICE, "type": "user", "roles": []}),
    );
    assert_eq!(login.status, 201, "{}", login.error());
    let token = login.json()["token"].as_str().unwrap().to_string();
    assert!(token.starts_with("nmr_"), "a registry token");
    for server in [&b, &c] {
        let whoami = server.http_as(&token).get("/-/whoami", &[]);
        assert_eq!(whoami.status, 200, "{}", whoami.error());
        assert_eq!(whoami.json()["username"], "alice");
    }
    // npm logout through B revokes it; C stops honouring it within
    // max_staleness.
    let logout = b.http_as(&token).delete(&format!("/-/user/token/{token}"));
    assert_eq!(logout.status, 200, "{}", logout.error());
    let after = b.http_as(&token).get("/-/whoami", &[]);
    assert_eq!(
        after.status,
        401,
        "{}\n{}",
        String::from_utf8_lossy(&after.body),
        b.log()
    );
    past_staleness();
    assert_eq!(c.http_as(&token).get("/-/whoami", &[]).status, 401);
    assert_eq!(a.http_as(&token).get("/-/whoami", &[]).status, 401);
}

#[test]
fn an_id_token_exchanged_on_one_instance_gives_a_token_the_others_honour_once() {
    use common::github::cast::ALICE;
    use common::oidc;
    let s3 = S3Server::start_moto();
    let gh = common::github::with_cast();
    let (jwks, _stop) = oidc::issuer();
    let auth = [
        ("NMR_AUTH__TYPE", "github"),
        ("NMR_AUTH__GITHUB__API_URL", gh.url.as_str()),
        ("NMR_AUTH__GITHUB__OIDC__JWKS_URL", jwks.as_str()),
    ];
    let [a, b, c] = [(); 3].map(|()| instance(&s3, &auth));
    let name = "@acme/widget";
    let bound =
        common::publish_with_repository(&a.http_as(ALICE), name, "1.0.0", Some("acme/widget"));
    assert_eq!(bound.status, 201, "{}", bound.error());
    let jwt = oidc::sign(&oidc::claims("acme/widget", gh.repo_id("acme/widget")));
    let exchanged = oidc::exchange(&a, name, &jwt);
    assert_eq!(exchanged.status, 201, "{}", exchanged.error());
    let token = exchanged.json()["token"].as_str().unwrap().to_string();
    // B honours the token A issued: a publish of its package.
    let published =
        common::publish_with_repository(&b.http_as(&token), name, "1.1.0", Some("acme/widget"));
    assert_eq!(published.status, 201, "{}", published.error());
    // The same ID token through C: its jti was spent on A.
    let replayed = oidc::exchange(&c, name, &jwt);
    assert_eq!(replayed.status, 401, "{}", replayed.error());
    assert!(
        replayed.error().contains("already exchanged"),
        "{}",
        replayed.error()
    );
    past_staleness();
    let doc = c.http_as(ALICE).get(&escape(name), &[]).json();
    let mut got: Vec<&String> = doc["versions"].as_object().unwrap().keys().collect();
    got.sort();
    assert_eq!(got, ["1.0.0", "1.1.0"]);
}

#[test]
fn migrate_copies_a_local_registry_into_the_bucket_then_instances_serve_it() {
    let s3 = S3Server::start_moto();
    let env = s3.env(false);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    // db.type = "local" with its tarballs already in the bucket.
    let mut local = Server::start(&env);
    for v in ["1.0.0", "1.1.0"] {
        assert_eq!(publish_http(&local.http(), "@acme/moved", v).status, 201);
    }
    let tag = local
        .http()
        .put_json("/-/package/@acme%2fmoved/dist-tags/stable", &json!("1.0.0"));
    assert_eq!(tag.status, 200, "{}", tag.error());
    local.stop();
    // Not migrated yet: db.type = "s3" refuses this db.path, whose
    // packages the bucket lacks, rather than serve them from it.
    let refused = exits_within(local.command().envs(S3Server::shared_db_env()));
    assert_eq!(refused.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("nmr migrate --to s3"), "{stderr}");
    for run in [
        "1 packages copied, 0 already there",
        "0 packages copied, 1 already there",
    ] {
        let out = local
            .command()
            .args(["migrate", "--to", "s3"])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains(run), "{stdout}");
        assert!(
            stdout.contains("2 versions") && stdout.contains("verified"),
            "{stdout}"
        );
    }
    // README's upgrade path: the same configuration and db.path, with
    // db.type = "s3"; the migrated db.path is now a cache of the bucket.
    for (key, value) in S3Server::shared_db_env() {
        local.set_env(&key, &value);
    }
    local.start_again();
    assert_eq!(versions(&local, "@acme/moved"), ["1.0.0", "1.1.0"]);
    assert_eq!(every_tarball_matches(&local, "@acme/moved"), 2);
    // And a new instance reads it through.
    let shared = instance(&s3, &[]);
    assert_eq!(versions(&shared, "@acme/moved"), ["1.0.0", "1.1.0"]);
    assert_eq!(every_tarball_matches(&shared, "@acme/moved"), 2);
    let doc = shared.http().get(&escape("@acme/moved"), &[]).json();
    assert_eq!(doc["dist-tags"]["stable"], "1.0.0");
    assert_eq!(
        publish_http(&shared.http(), "@acme/moved", "1.2.0").status,
        201
    );
}

/// Runs `command` to its exit (within 30 s, else kills it and fails).
fn exits_within(command: &mut Command) -> std::process::Output {
    let mut child = command
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("nmr kept running: it should have refused to start");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn a_web_login_may_take_each_step_on_another_instance() {
    use common::github;
    let (_s3, gh, [a, b, c]) = app_instances();
    // npm asks A; the browser's steps reach B; npm's polls reach C.
    let start = a.http().post_json("/-/v1/login", &json!({}));
    assert_eq!(start.status, 200, "{}", start.error());
    let urls = start.json();
    let on = |server: &Server, url: &str| url.replacen(&a.url, &server.url, 1);
    let done = on(&c, urls["doneUrl"].as_str().unwrap());
    let done_path = done.trim_start_matches(&c.url).to_string();
    assert_eq!(c.http().get(&done_path, &[]).status, 202, "pending");
    gh.callback(&format!("{}-/v1/login/callback", b.url));
    gh.sign_in(Some("alice")).declines(false);
    let page = github::browse(&on(&b, urls["loginUrl"].as_str().unwrap()));
    assert_eq!(page.status, 200, "{page:?}");
    let polled = c.http().get(&done_path, &[]);
    assert_eq!(polled.status, 200, "{}", polled.error());
    let token = polled.json()["token"].as_str().unwrap().to_string();
    assert_eq!(
        a.http_as(&token).get("/-/whoami", &[]).json()["username"],
        "alice"
    );
    // Collected once, wherever the next poll goes.
    assert_ne!(a.http().get(&done_path, &[]).status, 200);
    // The loginUrl works once, on any instance.
    let again = github::browse(&on(&c, urls["loginUrl"].as_str().unwrap()));
    assert_ne!(again.status, 200);
}

#[test]
fn a_flood_of_unknown_names_from_one_address_is_budgeted() {
    let s3 = S3Server::start_moto();
    let a = instance(
        &s3,
        &[
            ("NMR_DB__S3__MAX_STALENESS", "60000"),
            ("NMR_DB__S3__LOOKUPS_PER_MINUTE", "60"),
        ],
    );
    assert_eq!(publish_http(&a.http(), "@acme/known", "1.0.0").status, 201);
    // Each unknown name would be one S3 request: 60 a minute from this
    // address here (one already went to the publish), then 429. The
    // budget refills at one a second, so the first refusal comes after at
    // least 59 answers and well before 200.
    let mut answered = 0;
    let reply = loop {
        let reply = a.http().get(&format!("/@acme%2fnope-{answered}"), &[]);
        if reply.status == 429 {
            break reply;
        }
        assert_eq!(reply.status, 404);
        answered += 1;
        assert!(answered < 200, "never refused");
    };
    assert!(answered >= 59, "refused after {answered}");
    assert!(reply.header("retry-after").is_some());
    assert!(
        reply.error().contains("unknown packages"),
        "{}",
        reply.error()
    );
    // What the instance knows is still served to that address.
    assert_eq!(versions(&a, "@acme/known"), ["1.0.0"]);
}
