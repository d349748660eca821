//! The metadata store's record layout end to end: a database written by the
//! previous layout converts on start with everything kept, and a package of
//! thousands of versions publishes, installs with the real npm and survives
//! a restart.

mod common;

use common::github::{self, cast::*};
use common::{Npm, Server, escape, publish_http};
use serde_json::{Value, json};

/// Replaces the server's database with a copy of `tests/fixtures/v1-db`
/// and starts it again.
fn with_v1_database(server: &mut Server) {
    server.stop();
    let db = server.db_path();
    std::fs::remove_dir_all(&db).unwrap();
    std::fs::create_dir_all(&db).unwrap();
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/v1-db");
    for entry in std::fs::read_dir(fixture).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), db.join(entry.file_name())).unwrap();
    }
    server.start_again();
}

#[test]
fn a_database_of_the_previous_layout_converts_keeping_everything() {
    let gh = github::with_cast();
    let mut server = github::server(&gh, &[]);
    with_v1_database(&mut server);
    assert!(
        server
            .log()
            .contains("converted 3 packages to the record layout"),
        "{}",
        server.log()
    );
    let served: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/v1-served.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let check = |server: &Server| {
        let alice = server.http_as(ALICE);
        for (name, before) in served.as_object().unwrap() {
            let reply = alice.get(&escape(name), &[]);
            assert_eq!(reply.status as u64, before["status"], "{name}");
            if reply.status != 200 {
                continue;
            }
            // The same document, tarball URLs aside (the port changed).
            let old_url = before["url"].as_str().unwrap();
            let expected: Value =
                serde_json::from_str(&before["body"].to_string().replace(old_url, &server.url))
                    .unwrap();
            assert_eq!(reply.json(), expected, "{name}");
        }
        // Tombstones: neither the unpublished version nor the unpublished
        // package's versions can be published again.
        let again =
            common::publish_with_repository(&alice, "@acme/widget", "1.0.1", Some("acme/widget"));
        assert_eq!(again.status, 409, "{}", again.error());
        let thing =
            common::publish_with_repository(&alice, "@other/thing", "1.0.0", Some("other/thing"));
        assert_eq!(thing.status, 409, "{}", thing.error());
        // Bindings: carol reads through acme/widget, dave cannot see it.
        assert_eq!(
            server
                .http_as(CAROL)
                .get(&escape("@acme/widget"), &[])
                .status,
            200
        );
        assert_eq!(
            server
                .http_as(DAVE)
                .get(&escape("@acme/widget"), &[])
                .status,
            404
        );
        let widget = alice.get(&escape("@acme/widget"), &[]).json();
        assert_eq!(widget["versions"]["1.0.0"]["deprecated"], "use 1.1.0");
        assert_eq!(widget["dist-tags"]["beta"], "2.0.0-beta.1");
        assert!(widget["time"]["1.0.1"].is_string(), "the tombstone's time");
    };
    check(&server);
    // Converting again finds nothing to do and changes nothing.
    server.restart();
    assert_eq!(
        server
            .log()
            .matches("converting the metadata store")
            .count(),
        1,
        "nothing left to convert"
    );
    check(&server);
}

#[test]
fn a_package_of_two_thousand_versions_publishes_installs_and_restarts() {
    let mut server = Server::start(&[]);
    let http = server.http();
    for i in 0..2000 {
        let reply = publish_http(&http, "@acme/widget", &format!("1.0.{i}"));
        assert_eq!(reply.status, 201, "1.0.{i}: {}", reply.error());
    }
    let npm = Npm::new(&server.url, None);
    let project = npm.project("big");
    npm.ok(&project, &["install", "@acme/widget@1.0.1999"]);
    npm.ok(&project, &["install", "@acme/widget@1.0.7"]);
    let installed: Value = serde_json::from_str(
        &std::fs::read_to_string(project.join("node_modules/@acme/widget/package.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(installed["version"], "1.0.7");
    let abbreviated = http
        .get(
            &escape("@acme/widget"),
            &[("accept", "application/vnd.npm.install-v1+json")],
        )
        .json();
    assert_eq!(abbreviated["versions"].as_object().unwrap().len(), 2000);
    server.restart();
    let http = server.http();
    let full = http.get(&escape("@acme/widget"), &[]).json();
    assert_eq!(full["versions"].as_object().unwrap().len(), 2000);
    assert_eq!(full["dist-tags"]["latest"], "1.0.1999");
    let npm = Npm::new(&server.url, None);
    let project = npm.project("after-restart");
    npm.ok(&project, &["install", "@acme/widget@1.0.1000"]);
    // A version manifest is one record away, whatever the package's size.
    let one = http.get(&format!("{}/1.0.42", escape("@acme/widget")), &[]);
    assert_eq!(one.json()["version"], "1.0.42");
    assert_eq!(
        one.json()["dist"]["tarball"],
        json!(format!("{}@acme/widget/-/widget-1.0.42.tgz", server.url))
    );
}

#[test]
fn tarballs_carry_their_shasum_as_etag_and_revalidate_with_304() {
    let server = Server::start(&[]);
    let http = server.http();
    assert_eq!(publish_http(&http, "@acme/widget", "1.0.0").status, 201);
    let doc = http.get(&escape("@acme/widget"), &[]).json();
    let shasum = doc["versions"]["1.0.0"]["dist"]["shasum"]
        .as_str()
        .unwrap()
        .to_string();
    let path = "@acme/widget/-/widget-1.0.0.tgz";
    for _ in 0..2 {
        // Cold (from storage), then hot (from memory).
        let first = http.get(path, &[]);
        assert_eq!(first.status, 200);
        assert_eq!(first.header("etag"), Some(format!("\"{shasum}\"").as_str()));
        let expected = nmr::verify::testing::tarball("@acme/widget", "1.0.0");
        assert_eq!(first.body, expected);
    }
    let etag = format!("\"{shasum}\"");
    let revalidated = http.get(path, &[("if-none-match", &etag)]);
    assert_eq!(revalidated.status, 304);
    assert!(revalidated.body.is_empty());
    assert_eq!(
        http.get(path, &[("if-none-match", "\"other\"")]).status,
        200
    );
    // Unpublished: gone from memory too.
    let doc = http.get(&escape("@acme/widget"), &[]).json();
    let rev = doc["_rev"].as_str().unwrap();
    assert_eq!(
        http.delete(&format!("{}/-rev/{rev}", escape("@acme/widget")))
            .status,
        200
    );
    assert_eq!(http.get(path, &[]).status, 404);
    assert_eq!(http.get(path, &[("if-none-match", &etag)]).status, 404);
}

/// A database of the previous layout with `copies` more packages: each a
/// copy of the fixture's `@acme/widget` document under `@acme/copy-N`.
fn write_v1_database_with_copies(db: &std::path::Path, copies: usize) {
    std::fs::create_dir_all(db).unwrap();
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/v1-db");
    for entry in std::fs::read_dir(fixture).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), db.join(entry.file_name())).unwrap();
    }
    let mut store = rusty_leveldb::DB::open(db, rusty_leveldb::Options::default()).unwrap();
    let template = String::from_utf8(store.get(b"d/@acme/widget").unwrap().to_vec()).unwrap();
    for i in 0..copies {
        let name = format!("@acme/copy-{i:04}");
        let doc = template.replace("@acme/widget", &name);
        store
            .put(format!("d/{name}").as_bytes(), doc.as_bytes())
            .unwrap();
    }
    store.flush().unwrap();
    store.close().unwrap();
}

#[test]
fn a_conversion_killed_mid_way_converts_the_rest_on_the_next_start() {
    const COPIES: usize = 1000;
    let mut server = Server::start(&[]);
    let widget = server.http().get(&escape("@acme/widget"), &[]);
    assert_eq!(widget.status, 404);
    server.stop();
    let db = server.db_path();
    std::fs::remove_dir_all(&db).unwrap();
    write_v1_database_with_copies(&db, COPIES);

    // Start on it and kill -9 once the conversion is under way.
    let mut child = server.command().spawn().unwrap();
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut first_log = String::new();
    for line in std::io::BufRead::lines(stderr).map_while(Result::ok) {
        first_log.push_str(&line);
        first_log.push('\n');
        if line.contains("converted 100 packages") {
            child.kill().unwrap(); // SIGKILL
            break;
        }
    }
    child.wait().unwrap();
    assert!(
        first_log.contains("converted 100 packages")
            && !first_log.contains("packages to the record layout"),
        "the kill came mid-way: {first_log}"
    );

    server.start_again();
    let log = server.log();
    let rest: usize = log
        .lines()
        .find_map(|l| {
            l.split("converted ")
                .nth(1)?
                .strip_suffix(" packages to the record layout")
        })
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the second start converted the rest: {log}"));
    assert!(
        rest > 0 && rest <= COPIES + 3 - 100,
        "{rest} converted on the second start"
    );
    let http = server.http();
    let template = http.get(&escape("@acme/widget"), &[]).json();
    let versions = |doc: &Value| {
        doc["versions"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect::<Vec<_>>()
    };
    assert!(!versions(&template).is_empty());
    for i in 0..COPIES {
        let name = format!("@acme/copy-{i:04}");
        let doc = http.get(&escape(&name), &[]).json();
        assert_eq!(versions(&doc), versions(&template), "{name}");
        assert_eq!(doc["dist-tags"], template["dist-tags"], "{name}");
        assert_eq!(
            doc["time"]["1.0.1"], template["time"]["1.0.1"],
            "{name}: the tombstone"
        );
    }
}
