//! Operations: configuration errors stop startup with one clear line and exit
//! code 2, SIGTERM shuts down cleanly, tokens never reach the log, and an
//! acknowledged publish has been fsynced (shown with strace).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::{Server, escape, publish_http};

/// Runs nmr with `env` and returns (exit code, stderr).
fn start_fails(env: &[(&str, &str)]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_nmr"))
        .env_remove("RUST_LOG")
        .env("NMR_SERVER__HOST", "127.0.0.1")
        .env("NMR_SERVER__PORT", "0")
        .env("NMR_DB__PATH", dir.path().join("db"))
        .env("NMR_STORAGE__LOCAL__PATH", dir.path().join("storage"))
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_github_app_key_that_cannot_sign_stops_startup() {
    let not_a_key = format!("{}/tests/fixtures/README.md", env!("CARGO_MANIFEST_DIR"));
    for key in [not_a_key.as_str(), "/nonexistent/app.pem"] {
        let (code, stderr) = start_fails(&[
            ("NMR_AUTH__GITHUB__APP__ID", "424242"),
            ("NMR_AUTH__GITHUB__APP__PRIVATE_KEY", key),
        ]);
        assert_eq!(code, 2, "{key}: {stderr}");
        assert!(
            stderr.contains("auth.github.app.private_key") && stderr.contains(key),
            "{key}: {stderr}"
        );
    }
    let (code, stderr) = start_fails(&[("NMR_AUTH__GITHUB__APP__ID", "my-app")]);
    assert_eq!(code, 2);
    assert!(stderr.contains("auth.github.app.id"), "{stderr}");
}

#[test]
fn bad_configuration_exits_2_naming_the_key() {
    for (env, key) in [
        (("NMR_AUTH__TYPE", "ldap"), "auth.type"),
        (("NMR_SERVER__PORT", "eighty"), "server.port"),
        (("NMR_STORAGE__TYPE", "floppy"), "storage.type"),
        (("NMR_DB__PATH", "/proc/nmr-db"), "db.path"),
        (
            ("NMR_STORAGE__LOCAL__PATH", "/proc/nmr-storage"),
            "storage.local.path",
        ),
        (("NMR_UPSTREAM__URL", "not-a-url"), "upstream.url"),
    ] {
        let (code, stderr) = start_fails(&[env]);
        assert_eq!(code, 2, "{env:?}: {stderr}");
        assert_eq!(
            stderr.trim().lines().count(),
            1,
            "{env:?}: one line, got {stderr}"
        );
        assert!(stderr.contains(key), "{env:?}: {stderr}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_nmr"))
        .args(["--config", "/nonexistent/nmr.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/nmr.toml"));
}

#[test]
fn config_file_layers_under_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("nmr.toml");
    std::fs::write(
        &file,
        "[upstream]\nurl = \"http://from-file.test/\"\n[auth]\ntype = \"ldap\"\n",
    )
    .unwrap();
    // The file's bad auth.type is reported...
    let out = Command::new(env!("CARGO_BIN_EXE_nmr"))
        .arg("--config")
        .arg(&file)
        .env("NMR_SERVER__PORT", "0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("auth.type"));
    // A good file is used over the defaults...
    std::fs::write(&file, "[upstream]\nurl = \"http://from-file.test/\"\n").unwrap();
    let path = file.to_str().unwrap();
    let server = Server::start_with_args(&["--config", path], &[]);
    let reply = server.http().get("/lodash", &[]);
    assert_eq!(
        reply.header("location"),
        Some("http://from-file.test/lodash")
    );
    // ...and the environment overrides the file.
    let server = Server::start_with_args(
        &["--config", path],
        &[("NMR_UPSTREAM__URL", "http://from-env.test/")],
    );
    let reply = server.http().get("/lodash", &[]);
    assert_eq!(
        reply.header("location"),
        Some("http://from-env.test/lodash")
    );
}

#[test]
fn sigterm_finishes_and_closes_the_database() {
    let mut server = Server::start(&[]);
    assert_eq!(
        publish_http(&server.http(), "@acme/widget", "1.0.0").status,
        201
    );
    let status = server.stop();
    assert!(status.success(), "exit status {status}");
    let log = server.log();
    assert!(log.contains("SIGTERM received"), "{log}");
    assert!(log.contains("shut down cleanly"), "{log}");
    // LevelDB released its lock: the data opens again.
    server.start_again();
    assert_eq!(server.http().get(&escape("@acme/widget"), &[]).status, 200);
}

#[test]
fn tokens_never_reach_the_log() {
    // Every crate at trace level, not only nmr.
    let server = Server::start(&[("NMR_LOGGER__LEVEL", "trace,nmr=trace")]);
    let http = server.http();
    let token = "npm_SECRETtoken1234567890";
    http.get("-/whoami", &[("authorization", &format!("Bearer {token}"))]);
    http.get(
        &escape("@acme/widget"),
        &[("authorization", &format!("Bearer {token}"))],
    );
    publish_http(&http, "@acme/widget", "1.0.0");
    let reply = http.delete(&format!("-/user/token/{token}"));
    assert_eq!(reply.status, 200);
    std::thread::sleep(std::time::Duration::from_millis(100));
    let log = server.log();
    assert!(log.contains("DELETE /-/user/token/<redacted> 200"), "{log}");
    assert!(log.contains("PUT /@acme%2fwidget 201"), "{log}");
    assert!(!log.contains(token), "token in log:\n{log}");
    assert!(!log.contains("_attachments"), "publish body in log");
}

/// The publish answer comes only after the tarball and the LevelDB log were
/// fsynced: strace, attached to the running server, sees `fsync` (tarball
/// file and directory) and `fdatasync` (LevelDB write-ahead log) between
/// request and answer.
#[test]
fn an_acknowledged_publish_is_on_disk() {
    let server = Server::start(&[]);
    let pid = server.pid().to_string();
    let trace = server.dir.path().join("strace.out");
    let mut strace = Command::new("strace")
        .args(["-f", "-e", "trace=fsync,fdatasync", "-o"])
        .arg(&trace)
        .args(["-p", &pid])
        .stderr(Stdio::piped())
        .spawn()
        .expect("strace must be installed (.ci/run installs it)");
    let mut stderr = BufReader::new(strace.stderr.take().unwrap());
    let mut line = String::new();
    while stderr.read_line(&mut line).unwrap() > 0 && !line.contains("attached") {
        line.clear();
    }
    assert!(line.contains("attached"), "strace could not attach: {line}");
    std::thread::spawn(move || for _ in stderr.lines() {});

    let reply = publish_http(&server.http(), "@acme/widget", "1.0.0");
    assert_eq!(reply.status, 201);
    let _ = Command::new("kill")
        .args(["-INT", &strace.id().to_string()])
        .status();
    let _ = strace.wait();
    let text = std::fs::read_to_string(&trace).unwrap();
    let fsyncs = text
        .lines()
        .filter(|l| l.contains("fsync(") && l.contains("= 0"))
        .count();
    let fdatasyncs = text
        .lines()
        .filter(|l| l.contains("fdatasync(") && l.contains("= 0"))
        .count();
    assert!(
        fsyncs >= 2,
        "tarball file and directory fsync expected:\n{text}"
    );
    assert!(fdatasyncs >= 1, "LevelDB log fdatasync expected:\n{text}");
}

#[test]
fn healthcheck_reports_whether_the_server_answers() {
    let server = Server::start(&[]);
    let port = server
        .url
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .to_string();
    let check = |port: &str| {
        Command::new(env!("CARGO_BIN_EXE_nmr"))
            .arg("healthcheck")
            .env("NMR_SERVER__PORT", port)
            .output()
            .unwrap()
    };
    let up = check(&port);
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    drop(server);
    let down = check(&port);
    assert_eq!(down.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&down.stderr).contains("cannot connect"));
}
