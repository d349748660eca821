//! HTTP-level tests of the npm endpoints: every rejection answers the right
//! status and `{"error"}` and leaves stored data byte-for-byte unchanged;
//! packuments carry working validators, gzip and the abbreviated form;
//! concurrent publishes keep every version.

mod common;

use common::{Reply, Server, escape, publish_http, snapshot};
use nmr::verify::testing::{publish_body, tarball, tarball_with};
use serde_json::{Value, json};

const NAME: &str = "@acme/widget";

/// A server holding `@acme/widget@1.0.0`.
fn seeded(env: &[(&str, &str)]) -> Server {
    let server = Server::start(env);
    let reply = publish_http(&server.http(), NAME, "1.0.0");
    assert_eq!(
        reply.status,
        201,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    server
}

/// Sends `request`, then checks it was rejected with `status` and an error
/// containing `needle`, and that the database and storage did not change.
fn rejected(server: &Server, status: u16, needle: &str, request: impl FnOnce() -> Reply) {
    let db = snapshot(&server.db_path());
    let storage = snapshot(&server.storage_path());
    let packument = server.http().get(&escape(NAME), &[]).body;
    let reply = request();
    assert_eq!(
        reply.status,
        status,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert!(
        reply.error().contains(needle),
        "{needle:?} not in {:?}",
        reply.error()
    );
    assert_eq!(
        server.http().get(&escape(NAME), &[]).body,
        packument,
        "packument changed"
    );
    assert!(
        snapshot(&server.storage_path()) == storage,
        "storage changed"
    );
    assert!(snapshot(&server.db_path()) == db, "database files changed");
}

fn body(version: &str) -> Value {
    publish_body(NAME, version, "latest", &tarball(NAME, version))
}

#[test]
fn publish_bodies_bound_to_another_package_are_refused() {
    let server = seeded(&[]);
    let http = server.http();
    let path = escape(NAME);
    let mut b = body("1.1.0");
    b["_id"] = "@acme/other".into();
    rejected(&server, 400, "_id", || http.put_json(&path, &b));
    let mut b = body("1.1.0");
    b["name"] = "@evil/widget".into();
    rejected(&server, 400, "name", || http.put_json(&path, &b));
    let mut b = body("1.1.0");
    b["versions"]["1.1.0"]["name"] = "@acme/other".into();
    rejected(&server, 400, ".name must be", || http.put_json(&path, &b));
    // The same body sent to another package's URL.
    rejected(&server, 400, "does not match", || {
        http.put_json(&escape("@acme/other"), &body("1.1.0"))
    });
}

#[test]
fn malformed_publish_bodies_are_refused() {
    let server = seeded(&[]);
    let http = server.http();
    let path = escape(NAME);
    rejected(&server, 400, "not valid JSON", || {
        http.put(&path, b"{not json")
    });
    rejected(&server, 400, "neither _attachments", || {
        http.put_json(&path, &json!({"name": NAME}))
    });
    let mut b = body("1.1.0");
    b.as_object_mut().unwrap().remove("versions");
    rejected(&server, 400, "no versions", || http.put_json(&path, &b));
    let mut b = body("1.1.0");
    let attachment = b["_attachments"]["@acme/widget-1.1.0.tgz"].take();
    b["_attachments"] = json!({"@acme/widget-1.2.0.tgz": attachment});
    rejected(&server, 400, "unexpected attachment", || {
        http.put_json(&path, &b)
    });
    let mut b = body("1.1.0");
    b["_attachments"]["@acme/widget-1.1.0.tgz"]["data"] = "%%%".into();
    rejected(&server, 400, "base64", || http.put_json(&path, &b));
    let mut b = body("1.1.0");
    b["_attachments"]["@acme/widget-1.1.0.tgz"]["length"] = 1.into();
    rejected(&server, 400, "length", || http.put_json(&path, &b));
    let b = publish_body(NAME, "1.1", "latest", &tarball(NAME, "1.1"));
    rejected(&server, 400, "not valid semver", || {
        http.put_json(&path, &b)
    });
}

#[test]
fn tarballs_that_disagree_with_their_manifest_are_refused() {
    let server = seeded(&[]);
    let http = server.http();
    let path = escape(NAME);
    let mut b = body("1.1.0");
    b["versions"]["1.1.0"]["dist"]["shasum"] = "0".repeat(40).into();
    rejected(&server, 400, "dist.shasum", || http.put_json(&path, &b));
    let mut b = body("1.1.0");
    b["versions"]["1.1.0"]["dist"]["integrity"] = "sha512-AAAA".into();
    rejected(&server, 400, "dist.integrity", || http.put_json(&path, &b));
    // Manifest confusion: the tarball's own package.json names another package or version.
    let b = publish_body(NAME, "1.1.0", "latest", &tarball("@acme/other", "1.1.0"));
    rejected(&server, 400, "package.json is @acme/other@1.1.0", || {
        http.put_json(&path, &b)
    });
    let b = publish_body(NAME, "1.1.0", "latest", &tarball(NAME, "9.9.9"));
    rejected(&server, 400, "9.9.9", || http.put_json(&path, &b));
}

#[test]
fn invalid_names_are_refused_and_never_reach_the_disk() {
    let server = seeded(&[]);
    let http = server.http();
    for path in [
        "@acme/..%2f..%2fescape",
        "@acme%2f..%2f..%2fescape",
        "@Acme%2fwidget",
        "@acme%2f.hidden",
    ] {
        let b = publish_body("@acme/x", "1.0.0", "latest", &tarball("@acme/x", "1.0.0"));
        rejected(&server, 400, "package name", || http.put_json(path, &b));
        rejected(&server, 400, "package name", || http.get(path, &[]));
    }
    assert!(!server.dir.path().join("escape").exists());
    assert!(
        !server
            .storage_path()
            .parent()
            .unwrap()
            .join("escape")
            .exists()
    );
}

#[test]
fn versions_are_never_overwritten() {
    let server = seeded(&[]);
    let http = server.http();
    let path = escape(NAME);
    // Same version, different bytes: 409.
    let other = tarball_with(NAME, "1.0.0", &[("evil.js", b"pwned".as_slice())]);
    let b = publish_body(NAME, "1.0.0", "latest", &other);
    rejected(&server, 409, "previously published version 1.0.0", || {
        http.put_json(&path, &b)
    });
    // The identical body again (npm's retry after a 5xx): success, nothing changes.
    let db = snapshot(&server.storage_path());
    let reply = publish_http(&http, NAME, "1.0.0");
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert!(snapshot(&server.storage_path()) == db);
}

#[test]
fn unpublished_versions_stay_unpublished_unless_configured() {
    for (allow, expected) in [("false", 409), ("true", 201)] {
        let server = seeded(&[("NMR_SETTINGS__ALLOW_PREVIOUS_VERSION", allow)]);
        let http = server.http();
        assert_eq!(publish_http(&http, NAME, "1.1.0").status, 201);
        let doc = http.get(&escape(NAME), &[]).json();
        let mut keep = doc.clone();
        keep["versions"].as_object_mut().unwrap().remove("1.1.0");
        let rev = doc["_rev"].as_str().unwrap();
        let reply = http.put_json(&format!("{}/-rev/{rev}", escape(NAME)), &keep);
        assert_eq!(reply.status, 200, "{}", reply.error());
        let reply = publish_http(&http, NAME, "1.1.0");
        assert_eq!(
            reply.status,
            expected,
            "allow_previous_version={allow}: {}",
            String::from_utf8_lossy(&reply.body)
        );
        if expected == 409 {
            assert!(reply.error().contains("was unpublished"));
        }
    }
}

#[test]
fn stale_revisions_conflict() {
    let server = seeded(&[]);
    let http = server.http();
    let doc = http.get(&escape(NAME), &[]).json();
    let stale = "1-00000000000000000000000000000000";
    assert_ne!(doc["_rev"], stale);
    rejected(&server, 409, "out of date", || {
        http.put_json(
            &format!("{}/-rev/{stale}", escape(NAME)),
            &json!({"_id": NAME, "name": NAME, "versions": {}}),
        )
    });
    rejected(&server, 409, "out of date", || {
        http.delete(&format!("{}/-rev/{stale}", escape(NAME)))
    });
    let mut deprecate = doc.clone();
    deprecate["_rev"] = stale.into();
    deprecate["versions"]["1.0.0"]["deprecated"] = "x".into();
    rejected(&server, 409, "out of date", || {
        http.put_json(&escape(NAME), &deprecate)
    });
}

#[test]
fn unpublish_and_deprecate_cannot_add_versions() {
    let server = seeded(&[]);
    let http = server.http();
    let doc = http.get(&escape(NAME), &[]).json();
    let rev = doc["_rev"].as_str().unwrap();
    let mut added = doc.clone();
    added["versions"]["6.6.6"] = doc["versions"]["1.0.0"].clone();
    rejected(&server, 400, "6.6.6", || {
        http.put_json(&format!("{}/-rev/{rev}", escape(NAME)), &added)
    });
    added["versions"]["6.6.6"]["deprecated"] = "x".into();
    rejected(&server, 400, "6.6.6", || {
        http.put_json(&escape(NAME), &added)
    });
}

/// Sends a PUT whose headers declare `length` bytes and whose body is `body`
/// (possibly shorter), over raw TCP, and returns the response head and body.
fn raw_put(server: &Server, path: &str, length: usize, body: &[u8]) -> String {
    use std::io::{Read, Write};
    let addr = server
        .url
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "PUT /{path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let _ = stream.write_all(body);
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
}

#[test]
fn oversized_bodies_get_413() {
    let server = seeded(&[("NMR_SERVER__MAX_BODY_SIZE", "65536")]);
    let db = snapshot(&server.db_path());
    let storage = snapshot(&server.storage_path());
    // Declared too large: refused before the body is read.
    let response = raw_put(&server, &escape(NAME), 200_000, b"{");
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(response.contains("65536"), "{response}");
    assert!(response.contains("application/json"), "{response}");
    assert!(snapshot(&server.db_path()) == db && snapshot(&server.storage_path()) == storage);
    // Within the limit, a publish goes through.
    let b = publish_body(NAME, "2.0.0", "latest", &tarball(NAME, "2.0.0"));
    let text = b.to_string();
    let response = raw_put(&server, &escape(NAME), text.len(), text.as_bytes());
    assert!(response.starts_with("HTTP/1.1 201"), "{response}");
}

#[test]
fn dist_tag_rejections() {
    let server = seeded(&[]);
    let http = server.http();
    let tags = format!("-/package/{}/dist-tags", escape(NAME));
    rejected(&server, 404, "does not exist", || {
        http.put(&format!("{tags}/beta"), b"\"9.9.9\"")
    });
    rejected(&server, 400, "semver range", || {
        http.put(&format!("{tags}/1.x"), b"\"1.0.0\"")
    });
    rejected(&server, 400, "JSON string", || {
        http.put(&format!("{tags}/beta"), b"1.0.0")
    });
    rejected(&server, 400, "latest", || {
        http.delete(&format!("{tags}/latest"))
    });
    rejected(&server, 404, "not a dist-tag", || {
        http.delete(&format!("{tags}/nope"))
    });
    let reply = http.get(
        &format!("-/package/{}/dist-tags", escape("@acme/absent")),
        &[],
    );
    assert_eq!(reply.status, 404);
}

#[test]
fn tarball_routes_serve_only_their_own_package() {
    let server = seeded(&[]);
    assert_eq!(
        publish_http(&server.http(), "@acme/other", "1.0.0").status,
        201
    );
    let http = server.http();
    let ok = http.get("@acme/widget/-/widget-1.0.0.tgz", &[]);
    assert_eq!(ok.status, 200);
    assert_eq!(ok.body, tarball(NAME, "1.0.0"));
    assert_eq!(ok.header("content-type"), Some("application/octet-stream"));
    assert!(
        ok.header("cache-control")
            .unwrap()
            .contains("max-age=31536000")
    );
    assert_eq!(
        ok.header("content-length"),
        Some(ok.body.len().to_string().as_str())
    );
    for path in [
        "@acme/widget/-/other-1.0.0.tgz",
        "@acme/other/-/widget-1.0.0.tgz",
        "@acme/widget/-/widget-1.0.1.tgz",
        "@acme/widget/-/widget-..%2f..%2fother%2f-%2fother-1.0.0.tgz",
    ] {
        assert_eq!(http.get(path, &[]).status, 404, "{path}");
    }
}

#[test]
fn packuments_revalidate_compress_and_abbreviate() {
    let server = seeded(&[]);
    let http = server.http();
    let path = escape(NAME);
    let full = http.get(&path, &[("accept", "application/json")]);
    assert_eq!(full.status, 200);
    assert_eq!(full.header("cache-control"), Some("private, no-cache"));
    assert_eq!(full.header("vary"), Some("Accept, Accept-Encoding"));
    assert!(full.header("last-modified").unwrap().ends_with("GMT"));
    let doc = full.json();
    assert_eq!(doc["_id"], NAME);
    assert!(doc["_rev"].as_str().unwrap().starts_with("1-"));
    assert_eq!(
        doc["versions"]["1.0.0"]["dist"]["tarball"],
        format!("{}@acme/widget/-/widget-1.0.0.tgz", server.url)
    );
    let etag = full.header("etag").unwrap().to_string();
    assert!(etag.contains(doc["_rev"].as_str().unwrap()));

    let revalidated = http.get(&path, &[("if-none-match", &etag)]);
    assert_eq!(revalidated.status, 304);
    assert!(revalidated.body.is_empty());
    assert_eq!(revalidated.header("etag"), Some(etag.as_str()));

    let gz = http.get(&path, &[("accept-encoding", "gzip,deflate")]);
    assert_eq!(gz.header("content-encoding"), Some("gzip"));
    let mut text = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&gz.body[..]), &mut text)
        .unwrap();
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), doc);

    let corgi = "application/vnd.npm.install-v1+json; q=1.0, application/json; q=0.8, */*";
    let abbr = http.get(&path, &[("accept", corgi)]);
    assert_eq!(
        abbr.header("content-type"),
        Some("application/vnd.npm.install-v1+json")
    );
    let abbr = abbr.json();
    assert_eq!(abbr["modified"], doc["time"]["modified"]);
    assert!(abbr.get("_rev").is_none() && abbr.get("time").is_none());
    // ?write=true always gets the full document with _rev.
    let write = http
        .get(&format!("{path}?write=true"), &[("accept", corgi)])
        .json();
    assert_eq!(write["_rev"], doc["_rev"]);

    // A new publish changes the ETag, so the next install sees it.
    assert_eq!(publish_http(&http, NAME, "1.1.0").status, 201);
    let after = http.get(&path, &[("if-none-match", &etag)]);
    assert_eq!(after.status, 200);
    assert_ne!(after.header("etag"), Some(etag.as_str()));
    assert_eq!(after.json()["dist-tags"]["latest"], "1.1.0");
}

#[test]
fn version_manifests_by_version_tag_and_range() {
    let server = seeded(&[]);
    let http = server.http();
    assert_eq!(publish_http(&http, NAME, "1.2.0").status, 201);
    for (spec, expected) in [
        ("1.0.0", "1.0.0"),
        ("latest", "1.2.0"),
        ("%5E1.0.0", "1.2.0"),
        ("1.0.x", "1.0.0"),
    ] {
        let reply = http.get(&format!("{}/{spec}", escape(NAME)), &[]);
        assert_eq!(reply.status, 200, "{spec}");
        let manifest = reply.json();
        assert_eq!(manifest["version"], expected, "{spec}");
        assert_eq!(
            manifest["dist"]["tarball"],
            format!("{}@acme/widget/-/widget-{expected}.tgz", server.url)
        );
    }
    assert_eq!(
        http.get(&format!("{}/2.0.0", escape(NAME)), &[]).status,
        404
    );
    assert_eq!(http.get("@acme%2fabsent", &[]).status, 404);
}

#[test]
fn concurrent_publishes_of_one_package_keep_every_version() {
    let server = seeded(&[]);
    let versions: Vec<String> = (1..=8).map(|i| format!("1.{i}.0")).collect();
    std::thread::scope(|s| {
        for v in &versions {
            let http = server.http();
            s.spawn(move || {
                let reply = publish_http(&http, NAME, v);
                assert_eq!(
                    reply.status,
                    201,
                    "{v}: {}",
                    String::from_utf8_lossy(&reply.body)
                );
            });
        }
    });
    let doc = server.http().get(&escape(NAME), &[]).json();
    let stored = doc["versions"].as_object().unwrap();
    assert_eq!(stored.len(), 9);
    for v in &versions {
        assert!(stored.contains_key(v), "{v} lost");
        assert_eq!(
            server
                .http()
                .get(&format!("@acme/widget/-/widget-{v}.tgz",), &[])
                .status,
            200
        );
    }
    assert!(doc["_rev"].as_str().unwrap().starts_with("9-"));
}

#[test]
fn fixed_endpoints() {
    let server = Server::start(&[]);
    let http = server.http();
    let ping = http.get("-/ping", &[]);
    assert_eq!((ping.status, ping.json()), (200, json!({})));
    let whoami = http.get("-/whoami", &[("authorization", "Bearer anything")]);
    assert_eq!(whoami.json(), json!({"username": "anonymous"}));
    assert_eq!(http.delete("-/user/token/npm_abc").status, 200);
    assert_eq!(http.get("-/nope", &[]).status, 404);
}

#[test]
fn rejected_writes_leave_the_connection_usable() {
    use std::io::Write;
    let server = Server::start(&[]);
    let addr = "127.0.0.1";
    let stream = server.connect();
    let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    let body = body("1.0.0").to_string();
    for (path, status) in [
        ("@acme%2f..%2fx", 400),
        ("lodash", 403),
        ("@acme%2fwidget", 201),
    ] {
        // Refused or not, the body is read, so the keep-alive connection
        // stays open for the client's next request, even when the body
        // arrives after the headers (as a large one does).
        write!(
            writer,
            "PUT /{path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .unwrap();
        let (first, rest) = body.as_bytes().split_at(body.len() / 2);
        writer.write_all(first).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(150));
        let _ = writer.write_all(rest);
        let response = common::read_response(&mut reader).expect("a response");
        assert_eq!(response.status, status, "{response:?}");
        write!(writer, "GET /-/ping HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
        let ping = common::read_response(&mut reader).expect("the connection is still open");
        assert_eq!(ping.status, 200, "{ping:?}");
    }
}
