//! S3 storage against a real S3-compatible server (s3s-fs, which checks
//! signatures): presigned URLs work with plain curl and expire, S3 being down
//! answers 503 and changes nothing, startup refuses an unreachable bucket,
//! and object keys only ever come from validated names.

mod common;

use std::process::{Command, Stdio};

use common::{Backend, S3Server, Server, escape, publish_http, snapshot};

fn curl(url: &str) -> (String, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("body");
    let out = Command::new("curl")
        .args(["-s", "-o"])
        .arg(&body)
        .args(["-w", "%{http_code}", url])
        .output()
        .expect("curl");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        std::fs::read(&body).unwrap_or_default(),
    )
}

#[test]
fn presigned_urls_work_with_curl_carry_no_token_and_expire() {
    let server = Server::start_on(Backend::S3Redirect, &[("NMR_STORAGE__S3__EXPIRES", "2")]);
    assert_eq!(
        publish_http(&server.http(), "@acme/widget", "1.0.0").status,
        201
    );
    let token = "npm_user_secret_token";
    let reply = server
        .http_as(token)
        .get("@acme/widget/-/widget-1.0.0.tgz", &[]);
    assert_eq!(reply.status, 302);
    let location = reply.header("location").unwrap().to_string();
    let endpoint = &server.s3.as_ref().unwrap().endpoint;
    assert!(
        location.starts_with(&format!(
            "{endpoint}/tarballs/npm/%40acme/widget/-/widget-1.0.0.tgz?"
        )),
        "{location}"
    );
    assert!(location.contains("X-Amz-Signature="), "{location}");
    assert!(location.contains("X-Amz-Expires=2"), "{location}");
    assert!(!location.contains(token));
    assert_eq!(reply.header("cache-control"), Some("no-store"));

    let (status, body) = curl(&location);
    assert_eq!(status, "200");
    assert_eq!(body, nmr::verify::testing::tarball("@acme/widget", "1.0.0"));
    // A tampered signature is refused by the store.
    let (status, _) = curl(&location.replace("X-Amz-Expires=2", "X-Amz-Expires=3600"));
    assert_ne!(status, "200");
    std::thread::sleep(std::time::Duration::from_millis(3100));
    let (status, _) = curl(&location);
    assert_eq!(status, "403", "the presigned URL expired");
    // A version that is not live gets no URL at all.
    assert_eq!(
        server
            .http()
            .get("@acme/widget/-/widget-9.9.9.tgz", &[])
            .status,
        404
    );
}

#[test]
fn s3_down_answers_503_and_leaves_the_packument_untouched() {
    let mut server = Server::start_on(Backend::S3, &[]);
    let http = server.http();
    assert_eq!(publish_http(&http, "@acme/widget", "1.0.0").status, 201);
    let before = http.get(&escape("@acme/widget"), &[]).body;
    let db = snapshot(&server.db_path());
    server.s3.as_mut().unwrap().stop();

    let reply = publish_http(&http, "@acme/widget", "1.1.0");
    assert_eq!(reply.status, 503, "{}", reply.error());
    assert!(
        reply
            .error()
            .contains("tarball storage (s3 bucket \"tarballs\""),
        "{}",
        reply.error()
    );
    assert!(
        reply.error().contains("nothing was published"),
        "{}",
        reply.error()
    );
    assert_eq!(http.get(&escape("@acme/widget"), &[]).body, before);
    assert!(snapshot(&server.db_path()) == db, "database changed");
    // Downloads fail the same way, and metadata reads keep working.
    assert_eq!(http.get("@acme/widget/-/widget-1.0.0.tgz", &[]).status, 503);
    assert_eq!(http.get(&escape("@acme/widget"), &[]).status, 200);
}

#[test]
fn startup_refuses_an_unreachable_bucket() {
    let s3 = S3Server::start();
    let cases = [
        (
            "NMR_STORAGE__S3__BUCKET",
            "no-such-bucket".to_string(),
            "no-such-bucket",
        ),
        (
            "NMR_STORAGE__S3__ENDPOINT",
            "http://localhost:1".to_string(),
            "http://localhost:1",
        ),
        (
            "NMR_STORAGE__S3__SECRET_ACCESS_KEY",
            "wrong".to_string(),
            "tarballs",
        ),
    ];
    for (key, value, named) in cases {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_nmr"))
            .envs(s3.env(false))
            .env(key, &value)
            .env("NMR_AUTH__TYPE", "none")
            .env("NMR_SERVER__HOST", "127.0.0.1")
            .env("NMR_SERVER__PORT", "0")
            .env("NMR_DB__PATH", dir.path().join("db"))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{key}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains("not reachable") && stderr.contains(named),
            "{key}: {stderr}"
        );
    }
}

#[test]
fn object_keys_never_contain_unvalidated_input() {
    let server = Server::start_on(Backend::S3, &[]);
    let http = server.http();
    for name in ["@acme/widget", "@acme/a.b-c_d"] {
        assert_eq!(publish_http(&http, name, "1.0.0-rc.1").status, 201);
    }
    for path in [
        "@acme%2f..%2f..%2fescape",
        "@acme/..%2fescape",
        "@ACME%2fwidget",
    ] {
        let tgz = nmr::verify::testing::tarball("@acme/x", "1.0.0");
        let body = nmr::verify::testing::publish_body("@acme/x", "1.0.0", "latest", &tgz);
        assert_eq!(http.put_json(path, &body).status, 400, "{path}");
    }
    let root = server
        .s3
        .as_ref()
        .unwrap()
        .root
        .path()
        .join(S3Server::BUCKET);
    let keys: Vec<String> = snapshot(&root)
        .into_iter()
        .map(|(p, _)| p.to_string_lossy().into_owned())
        .collect();
    assert_eq!(keys.len(), 2, "{keys:?}");
    for key in keys {
        let parts: Vec<&str> = key.split('/').collect();
        assert_eq!(parts.len(), 5, "{key}");
        assert_eq!(
            (parts[0], parts[1], parts[3]),
            ("npm", "@acme", "-"),
            "{key}"
        );
        assert!(
            parts[4].starts_with(&format!("{}-", parts[2])) && parts[4].ends_with(".tgz"),
            "{key}"
        );
    }
}
