//! nmr under hostile traffic, on real sockets: bodies are not read before
//! the caller is known, slow or idle connections are closed, connections are
//! capped, and anonymous traffic cannot spend the GitHub budget.
//!
//! The cast is `common::github::cast`: alice (admin of the private
//! `acme/widget`), carol (pull), dave (no access).

mod common;

use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::github::cast::*;
use common::github::{Mode, seeded, with_cast as github};
use common::{Npm, RawReply, Server, escape, publish_with_repository, read_response};
use serde_json::json;

/// The server's peak resident memory so far (VmHWM), in KiB.
fn peak_rss_kib(server: &Server) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Whether the server closes the connection (EOF or reset) within `limit`.
fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[test]
fn an_anonymous_100_mib_put_is_refused_before_its_body() {
    let gh = github();
    let server = seeded(&gh, &[]);
    let before = peak_rss_kib(&server);
    let mut stream = server.connect();
    write!(
        stream,
        "PUT /{} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        escape("@acme/widget"),
        100 << 20
    )
    .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let sent = std::thread::spawn(move || {
        let chunk = "0,".repeat(512 * 1024).into_bytes();
        let mut sent = 0usize;
        writer.write_all(b"[").ok();
        while sent < 100 << 20 {
            if writer.write_all(&chunk).is_err() {
                break;
            }
            sent += chunk.len();
        }
        sent
    });
    let mut reader = BufReader::new(stream);
    let RawReply { status, head, body } = read_response(&mut reader).expect("an answer");
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("authentication required"), "{body}");
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    let sent = sent.join().unwrap();
    assert!(sent < 100 << 20, "nmr read the whole body ({sent} bytes)");
    let grown = peak_rss_kib(&server).saturating_sub(before);
    assert!(grown < 16 * 1024, "peak RSS grew by {grown} KiB");
    // A junk token and an outsider are refused the same way, before the body.
    // (A client that sends its whole body before reading may see the
    // connection close under it; this one reads the answer while sending.)
    for (token, status) in [("ghp_junk", 401), (DAVE, 404), (CAROL, 403)] {
        let mut stream = server.connect();
        write!(
            stream,
            "PUT /{} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\n\r\n",
            escape("@acme/widget"),
            1 << 20
        )
        .unwrap();
        let _ = stream.write_all(&[b' '; 16 * 1024]);
        let reply = read_response(&mut BufReader::new(stream)).expect("an answer");
        assert_eq!(reply.status, status, "{token}: {}", reply.body);
        assert!(
            reply
                .head
                .to_ascii_lowercase()
                .contains("connection: close")
        );
    }
    assert_eq!(gh.calls_with("ghp_junk"), 1);
}

#[test]
fn npm_prints_the_early_refusal_of_a_large_publish() {
    let gh = github();
    let server = seeded(&gh, &[]);
    // A package whose publish body is far larger than what nmr drains.
    let big = |npm: &Npm| {
        let dir = npm.package(
            "@acme/widget",
            "2.0.0",
            "big",
            json!({"repository": "github:acme/widget"}),
        );
        let noise: Vec<u8> = (0..2_000_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        std::fs::write(dir.join("noise.bin"), noise).unwrap();
        dir
    };
    let junk = Npm::new(&server.url, Some("ghp_not_a_token"));
    junk.fails(&big(&junk), &["publish"], "E401");
    let carol = Npm::new(&server.url, Some(CAROL));
    carol.fails(
        &big(&carol),
        &["publish"],
        "needs push permission on the GitHub repository acme/widget; carol has pull",
    );
    let dave = Npm::new(&server.url, Some(DAVE));
    dave.fails(&big(&dave), &["publish"], "E404");
    let versions = server.http_as(ALICE).get("@acme/widget/2.0.0", &[]);
    assert_eq!(versions.status, 404, "nothing was published");
}

#[test]
fn a_publish_tells_no_outsider_whether_a_name_is_taken() {
    let gh = github();
    let server = seeded(&gh, &[]);
    let dave = server.http_as(DAVE);
    let taken = publish_with_repository(&dave, "@acme/widget", "2.0.0", Some("acme/widget"));
    let free = publish_with_repository(&dave, "@acme/free", "1.0.0", Some("acme/widget"));
    assert_eq!((taken.status, free.status), (404, 404));
    assert_eq!(
        taken.error().replace("@acme/widget", "NAME"),
        free.error().replace("@acme/free", "NAME")
    );
    // Reads agree too.
    let read_taken = dave.get(&escape("@acme/widget"), &[]);
    let read_free = dave.get(&escape("@acme/free"), &[]);
    assert_eq!(
        read_taken.error().replace("@acme/widget", "NAME"),
        read_free.error().replace("@acme/free", "NAME")
    );
    assert_eq!(taken.error(), read_taken.error());
}

#[test]
fn small_routes_have_small_body_limits() {
    let gh = github();
    let server = seeded(&gh, &[]);
    // Declared sizes beyond the route's limit are refused without reading.
    for (path, auth, size) in [
        ("/-/user/org.couchdb.user:alice", String::new(), 20 << 20),
        (
            "/-/package/@acme%2fwidget/dist-tags/beta",
            format!("Authorization: Bearer {ALICE}\r\n"),
            1 << 20,
        ),
    ] {
        let mut stream = server.connect();
        write!(
            stream,
            "PUT {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: {size}\r\n\r\n"
        )
        .unwrap();
        let RawReply { status, body, .. } =
            read_response(&mut BufReader::new(stream)).expect("an answer");
        assert_eq!(status, 413, "{path}: {body}");
    }
    assert_eq!(
        gh.calls("/user"),
        1,
        "only alice's first publish asked GitHub"
    );
}

#[test]
fn slow_and_idle_connections_are_closed() {
    let server = Server::start(&[
        ("NMR_SERVER__HEADER_TIMEOUT", "1"),
        ("NMR_SERVER__BODY_TIMEOUT", "1"),
        ("NMR_SERVER__KEEP_ALIVE_TIMEOUT", "3"),
    ]);
    // Headers that never finish.
    let mut never = server.connect();
    never
        .write_all(b"GET /-/ping HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    // A connection that sends nothing at all.
    let mut silent = server.connect();
    assert!(closed_within(&mut never, Duration::from_secs(10)));
    assert!(closed_within(&mut silent, Duration::from_secs(10)));

    // A body that stops: 408, then the connection closes.
    let mut stalled = server.connect();
    write!(
        stalled,
        "PUT /@acme%2fwidget HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{{\"name\""
    )
    .unwrap();
    let mut reader = BufReader::new(stalled.try_clone().unwrap());
    let RawReply { status, body, .. } = read_response(&mut reader).expect("an answer");
    assert_eq!(status, 408, "{body}");
    assert!(body.contains("server.body_timeout"), "{body}");
    assert!(closed_within(&mut stalled, Duration::from_secs(10)));

    // Kept alive: an idle connection outlives the header timeout and is
    // closed after the keep-alive timeout.
    let mut idle = server.connect();
    let mut reader = BufReader::new(idle.try_clone().unwrap());
    idle.write_all(b"GET /-/ping HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut reader).unwrap().status, 200);
    std::thread::sleep(Duration::from_millis(1800));
    idle.write_all(b"GET /-/ping HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert_eq!(
        read_response(&mut reader).unwrap().status,
        200,
        "closed too early"
    );
    let idle_since = Instant::now();
    assert!(closed_within(&mut idle, Duration::from_secs(10)));
    assert!(
        idle_since.elapsed() >= Duration::from_secs(2),
        "closed before the keep-alive timeout"
    );
}

#[test]
fn connections_beyond_the_cap_wait_for_a_free_slot() {
    let server = Server::start(&[("NMR_SERVER__MAX_CONNECTIONS", "2")]);
    let held: Vec<TcpStream> = (0..2).map(|_| server.connect()).collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut third = server.connect();
    third
        .write_all(b"GET /-/ping HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    third
        .set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    let mut buf = [0u8; 64];
    assert!(third.read(&mut buf).is_err(), "served beyond the cap");
    drop(held);
    third
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(third);
    assert_eq!(read_response(&mut reader).unwrap().status, 200);
    assert!(server.log().contains("serving at most 2 connections"));
}

#[test]
fn unknown_tokens_are_budgeted_per_address_and_known_ones_never() {
    let gh = github();
    let mut server = seeded(&gh, &[("NMR_AUTH__GITHUB__MAX_LOOKUPS_PER_MINUTE", "20")]);
    server.restart();
    let before = gh.calls("/user");
    let mut statuses = std::collections::BTreeMap::new();
    for i in 0..500 {
        let reply = server
            .http_as(&format!("ghp_junk_{i}"))
            .get(&escape("@acme/widget"), &[]);
        *statuses.entry(reply.status).or_insert(0) += 1;
        if reply.status == 429 {
            assert!(reply.header("retry-after").is_some());
        }
    }
    let caused = gh.calls("/user") - before;
    assert!(
        caused <= 22,
        "{caused} GitHub calls for junk tokens: {statuses:?}"
    );
    assert!(statuses[&429] >= 470, "{statuses:?}");
    // alice's token was accepted before the restart: still served, though
    // her answers are no longer cached and her address spent its budget.
    let reply = server.http_as(ALICE).get(&escape("@acme/widget"), &[]);
    assert_eq!(reply.status, 200, "{}", reply.error());
    // A new user from the same address waits for the budget.
    let carol = server.http_as(CAROL).get(&escape("@acme/widget"), &[]);
    assert_eq!(carol.status, 429);
    assert!(
        carol.error().contains("too many unknown tokens"),
        "{}",
        carol.error()
    );
}

#[test]
fn credentials_that_cannot_be_tokens_cost_no_github_call() {
    let gh = github();
    let server = seeded(&gh, &[]);
    let before = gh.total_calls();
    let basic = |s: &str| {
        use base64::Engine;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(s)
        )
    };
    for auth in [
        basic("x:tab\tinside"),
        basic("x:"),
        format!("Bearer {}", "a".repeat(300)),
        "Digest abc".into(),
        basic("x:caf\u{e9}"),
    ] {
        let reply = server
            .http()
            .get(&escape("@acme/widget"), &[("authorization", &auth)]);
        assert_eq!(reply.status, 401, "{auth}");
        assert!(
            reply.error().contains("no usable token"),
            "{}",
            reply.error()
        );
    }
    assert_eq!(gh.total_calls(), before);
    // GitHub's own `token` scheme works.
    let reply = server.http().get(
        &escape("@acme/widget"),
        &[("authorization", &format!("token {CAROL}"))],
    );
    assert_eq!(reply.status, 200);
}

#[test]
fn a_rate_limited_token_is_not_asked_again_before_the_reset() {
    let gh = github();
    let server = seeded(&gh, &[]);
    gh.set_mode(Mode::RateLimited);
    for _ in 0..20 {
        let reply = server.http_as(CAROL).get(&escape("@acme/widget"), &[]);
        assert_eq!(reply.status, 503);
        assert!(reply.error().contains("rate limit"), "{}", reply.error());
        let wait: u64 = reply.header("retry-after").unwrap().parse().unwrap();
        assert!(wait > 60, "Retry-After {wait}");
    }
    assert_eq!(gh.calls_with(CAROL), 1);
    // alice's cached answers keep serving.
    assert_eq!(
        server
            .http_as(ALICE)
            .get(&escape("@acme/widget"), &[])
            .status,
        200
    );
}

#[test]
fn a_failing_github_is_asked_about_once_per_second() {
    let gh = github();
    let server = seeded(&gh, &[]);
    gh.set_mode(Mode::Down);
    let started = Instant::now();
    let before = gh.total_calls();
    let mut served = 0;
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let server = &server;
                s.spawn(move || {
                    let mut n = 0;
                    while started.elapsed() < Duration::from_secs(3) {
                        let reply = server.http_as(CAROL).get(&escape("@acme/widget"), &[]);
                        assert_eq!(reply.status, 503, "thread {t}");
                        assert!(!reply.error().contains("acme/widget"), "{}", reply.error());
                        assert!(reply.header("retry-after").is_some());
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        served = handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .sum::<usize>();
    });
    let calls = gh.total_calls() - before;
    let seconds = started.elapsed().as_secs_f64();
    assert!(served > 20, "{served} requests");
    assert!(
        (calls as f64) <= seconds + 1.0,
        "{calls} GitHub calls in {seconds:.1} s for {served} requests"
    );
    // Not an error line per request.
    let warnings = server.log().matches("GitHub could not be asked").count();
    assert!(warnings <= 2, "{warnings} log lines:\n{}", server.log());
    // Once GitHub is back, the next probe closes the circuit.
    gh.set_mode(Mode::Normal);
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        server
            .http_as(CAROL)
            .get(&escape("@acme/widget"), &[])
            .status,
        200
    );
}

#[test]
fn junk_floods_leave_cached_reads_alone() {
    let gh = github();
    let server = seeded(&gh, &[("NMR_LOGGER__LEVEL", "warn")]);
    let alice = server.http_as(ALICE);
    assert_eq!(alice.get(&escape("@acme/widget"), &[]).status, 200);
    let calls = gh.total_calls();
    let junk = {
        use base64::Engine;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("x:control\x01char")
        )
    };
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                let http = server.http();
                for _ in 0..25_000 {
                    let reply = http.get(&escape("@acme/widget"), &[("authorization", &junk)]);
                    assert_eq!(reply.status, 401);
                }
            });
        }
    });
    let flood = started.elapsed();
    let started = Instant::now();
    for _ in 0..100 {
        assert_eq!(alice.get(&escape("@acme/widget"), &[]).status, 200);
    }
    println!(
        "100,000 junk requests in {flood:?}; then 100 cached reads took {:?} on average",
        started.elapsed() / 100
    );
    assert_eq!(gh.total_calls(), calls, "junk reached GitHub");
    assert!(!server.log().contains("ERROR"), "{}", server.log());
}

#[test]
fn installation_tokens_are_refused_with_a_reason() {
    let gh = github();
    gh.installation_token("ghs_actions_token");
    let server = seeded(&gh, &[]);
    let reply = server
        .http_as("ghs_actions_token")
        .get(&escape("@acme/widget"), &[]);
    assert_eq!(reply.status, 401);
    assert!(
        reply.error().contains("installation token"),
        "{}",
        reply.error()
    );
}

#[test]
fn a_tarball_delete_with_a_stale_rev_conflicts() {
    let server = Server::start(&[]);
    let http = server.http();
    common::publish_http(&http, "@acme/widget", "1.0.0");
    common::publish_http(&http, "@acme/widget", "1.1.0");
    let rev = http.get(&escape("@acme/widget"), &[]).json()["_rev"]
        .as_str()
        .unwrap()
        .to_string();
    let path = "@acme/widget/-/widget-1.0.0.tgz/-rev";
    let stale = http.delete(&format!("{path}/1-0000"));
    assert_eq!(stale.status, 409, "{}", stale.error());
    assert!(stale.error().contains("out of date"));
    assert_eq!(http.delete(&format!("{path}/{rev}")).status, 200);
}

#[test]
fn the_answer_cache_stays_within_its_bound() {
    // 5,000 unknown tokens against a 1,024-entry cache whose denials would
    // otherwise hold for an hour: asked again, at most 1,024 answers can
    // still be cached, so at least 3,976 go to GitHub again. An unbounded
    // cache would answer all 5,000 from memory. (Which entries stay is the
    // cache's policy: those admitted while it fills stay until something
    // used twice displaces them, so a flood cannot push out what is in use.)
    // A power of two, as the cache splits its capacity over a power of two
    // of shards, rounding each shard's share up.
    const CAPACITY: usize = 1_024;
    const THREADS: usize = 4;
    const PER_THREAD: usize = 1_250;
    const TOKENS: usize = THREADS * PER_THREAD;
    let gh = github();
    let capacity = CAPACITY.to_string();
    let server = seeded(
        &gh,
        &[
            ("NMR_AUTH__GITHUB__CACHE_SIZE", &capacity),
            ("NMR_AUTH__GITHUB__DENIED_CACHE_TTL", "3600"),
            ("NMR_AUTH__GITHUB__MAX_LOOKUPS_PER_MINUTE", "1000000"),
            ("NMR_LOGGER__LEVEL", "warn"),
        ],
    );
    let alice = server.http_as(ALICE);
    for _ in 0..20 {
        assert_eq!(alice.get(&escape("@acme/widget"), &[]).status, 200);
    }
    let alice_calls = gh.calls_with(ALICE);
    let token = |t: usize, i: usize| format!("ghp_unknown_{t}_{i}");
    let flood = || {
        let started = Instant::now();
        let done = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for t in 0..THREADS {
                let (server, done) = (&server, &done);
                s.spawn(move || {
                    for i in 0..PER_THREAD {
                        let reply = server
                            .http_as(&token(t, i))
                            .get(&escape("@acme/widget"), &[]);
                        assert_eq!(reply.status, 401);
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                });
            }
            // alice keeps reading meanwhile.
            s.spawn(|| {
                while done.load(Ordering::SeqCst) < THREADS {
                    assert_eq!(alice.get(&escape("@acme/widget"), &[]).status, 200);
                }
            });
        });
        started.elapsed()
    };
    let calls = || -> usize {
        (0..THREADS)
            .flat_map(|t| (0..PER_THREAD).map(move |i| (t, i)))
            .map(|(t, i)| gh.calls_with(&token(t, i)))
            .sum()
    };
    println!("{TOKENS} unknown tokens in {:?}", flood());
    assert_eq!(calls(), TOKENS, "each was asked once");
    flood();
    let asked_again = calls() - TOKENS;
    println!("asked again: {asked_again} of {TOKENS}");
    assert!(
        asked_again >= TOKENS - CAPACITY,
        "only {asked_again} of {TOKENS} answers were asked again: the cache held more than {CAPACITY}"
    );
    // alice's answers, in use all along, stayed cached.
    let started = Instant::now();
    assert_eq!(alice.get(&escape("@acme/widget"), &[]).status, 200);
    println!("a cached read after the flood: {:?}", started.elapsed());
    assert_eq!(gh.calls_with(ALICE), alice_calls, "alice was asked again");
}

#[test]
fn forwarded_addresses_count_only_behind_a_trusted_proxy() {
    let gh = github();
    let budget = [("NMR_AUTH__GITHUB__MAX_LOOKUPS_PER_MINUTE", "5")];
    let behind = |server: &Server, token: &str, client: &str| {
        server
            .http_as(token)
            .get(&escape("@acme/widget"), &[("x-forwarded-for", client)])
            .status
    };
    let proxied = seeded(
        &gh,
        &[budget[0], ("NMR_SERVER__TRUSTED_PROXIES", "127.0.0.1")],
    );
    let statuses: Vec<u16> = (0..8)
        .map(|i| behind(&proxied, &format!("ghp_a_{i}"), "203.0.113.1"))
        .collect();
    assert_eq!(statuses, [401, 401, 401, 401, 401, 429, 429, 429]);
    // Another client behind the same proxy has a budget of its own.
    assert_eq!(
        behind(&proxied, "ghp_b_0", "198.51.100.7, 203.0.113.9"),
        401
    );
    assert!(
        proxied.log().contains("203.0.113.9 GET"),
        "{}",
        proxied.log()
    );

    // Without a trusted proxy the header is the client's word: ignored.
    let direct = seeded(&gh, &budget);
    let statuses: Vec<u16> = (0..8)
        .map(|i| behind(&direct, &format!("ghp_c_{i}"), &format!("203.0.113.{i}")))
        .collect();
    // alice's first publish spent one lookup of this address.
    assert_eq!(statuses, [401, 401, 401, 401, 429, 429, 429, 429]);
}
