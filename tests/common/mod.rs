//! Test helpers: spawn the real `nmr` binary on a free port with temporary
//! data directories, talk to it over HTTP, and drive the real `npm` client
//! with a temporary userconfig and cache.

#![allow(dead_code)]

pub mod github;
pub mod oidc;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Where a test server keeps tarballs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `storage.type = "local"`.
    Local,
    /// `storage.type = "s3"` against a real s3s-fs server, nmr streaming.
    S3,
    /// S3 with `storage.s3.redirect = true` (presigned 302s).
    S3Redirect,
    /// `db.type = "s3"`: metadata and tarballs in a moto S3 server, which
    /// enforces conditional writes (docs/s3-conditional-writes.md).
    Shared,
}

/// A running `nmr` process. Killed on drop.
pub struct Server {
    pub url: String,
    pub dir: tempfile::TempDir,
    env: Vec<(String, String)>,
    child: Option<Child>,
    stderr: Arc<Mutex<String>>,
    args: Vec<String>,
    /// The S3 server of an S3 backend.
    pub s3: Option<S3Server>,
}

impl Server {
    /// Starts nmr with `auth.type = none`, temp `db.path` and
    /// `storage.local.path`, plus `env` overrides.
    pub fn start(env: &[(&str, &str)]) -> Server {
        Self::start_with_args(&[], env)
    }

    /// Like [`Server::start`], with command-line `args` (e.g. `--config F`).
    pub fn start_with_args(args: &[&str], env: &[(&str, &str)]) -> Server {
        Self::launch(args, env, None)
    }

    /// Like [`Server::start`], with tarballs in `backend`.
    pub fn start_on(backend: Backend, env: &[(&str, &str)]) -> Server {
        if backend == Backend::Local {
            return Self::start(env);
        }
        let s3 = if backend == Backend::Shared {
            S3Server::start_moto()
        } else {
            S3Server::start()
        };
        let mut all = s3.env(backend == Backend::S3Redirect);
        if backend == Backend::Shared {
            all.extend(S3Server::shared_db_env());
        }
        all.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let borrowed: Vec<(&str, &str)> =
            all.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        Self::launch(&[], &borrowed, Some(s3))
    }

    fn launch(args: &[&str], env: &[(&str, &str)], s3: Option<S3Server>) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut server = Server {
            url: String::new(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            dir,
            child: None,
            stderr: Arc::new(Mutex::new(String::new())),
            args: args.iter().map(|s| s.to_string()).collect(),
            s3,
        };
        server.spawn();
        server
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("db")
    }

    /// Where tarball files appear: the local storage root, or the S3
    /// server's directory for the bucket and prefix.
    pub fn storage_path(&self) -> PathBuf {
        match &self.s3 {
            Some(s3) => s3.objects(),
            None => self.dir.path().join("storage"),
        }
    }

    /// Whether the tarball at `path` (e.g. `@acme/a/-/a-1.0.0.tgz`) is in
    /// this server's storage.
    pub fn has_tarball(&self, path: &str) -> bool {
        match &self.s3 {
            Some(s3) => s3.has(path),
            None => self.storage_path().join(path).is_file(),
        }
    }

    /// The command [`Server::start_again`] runs: nmr with this server's
    /// arguments, data directories and environment, stdout and stderr
    /// piped. For a test that must watch a start itself (and kill it).
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_nmr"));
        cmd.args(&self.args)
            .env_remove("RUST_LOG")
            .env("NMR_AUTH__TYPE", "none")
            .env("NMR_SERVER__HOST", "127.0.0.1")
            .env("NMR_SERVER__PORT", "0")
            .env("NMR_DB__PATH", self.db_path())
            .env("NMR_STORAGE__LOCAL__PATH", self.storage_path())
            .env("NMR_LOGGER__LEVEL", "debug")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    fn spawn(&mut self) {
        let mut child = self.command().spawn().expect("spawn nmr");
        let stderr = child.stderr.take().unwrap();
        let log = self.stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = log.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read nmr stdout");
        let Some(rest) = line.strip_prefix("nmr listening on ") else {
            let _ = child.wait();
            panic!("nmr did not start: {line:?}\n{}", self.log());
        };
        let public = rest
            .split("public URL ")
            .nth(1)
            .and_then(|s| s.strip_suffix(")\n"))
            .expect("public URL in the startup line");
        self.url = public.to_string();
        self.child = Some(child);
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server running").id()
    }

    /// Everything nmr wrote to stderr so far (its log).
    pub fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Sets `key` to `value` in the environment of the next start.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_string(), value.to_string()));
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("server running");
        let pid = child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(50));
                return status;
            }
            assert!(Instant::now() < deadline, "nmr did not stop after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the process with SIGKILL (no shutdown at all) and reaps it.
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("server running");
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Stops the server and starts it again on the same data directories
    /// (on a new port).
    pub fn restart(&mut self) {
        let status = self.stop();
        assert!(status.success(), "nmr exited with {status}");
        self.start_again();
    }

    /// Starts a stopped server again on the same data directories.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "server still running");
        self.spawn();
    }

    /// A raw TCP connection to the server (read timeout 20 s).
    pub fn connect(&self) -> std::net::TcpStream {
        let addr = self
            .url
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap()
            .to_string();
        let stream = std::net::TcpStream::connect(addr).expect("connect to nmr");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        stream
    }

    /// An HTTP client that reports every status as a response.
    pub fn http(&self) -> Http {
        Http {
            base: self.url.clone(),
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .max_redirects(0)
                .build()
                .into(),
            token: None,
        }
    }

    /// Like [`Server::http`], sending `Authorization: Bearer TOKEN`.
    pub fn http_as(&self, token: &str) -> Http {
        Http {
            token: Some(token.to_string()),
            ..self.http()
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A real S3-compatible server (s3s-fs, which checks request signatures) on
/// a free loopback port with a temporary root and a bucket `tarballs`.
pub struct S3Server {
    /// `http://localhost:PORT`: another host name than nmr's 127.0.0.1, so
    /// npm drops its credentials when redirected there.
    pub endpoint: String,
    pub root: tempfile::TempDir,
    child: Option<Child>,
    /// moto's server (objects in memory), not s3s-fs (objects in `root`).
    moto: bool,
}

impl S3Server {
    pub const BUCKET: &'static str = "tarballs";
    pub const PREFIX: &'static str = "npm";

    pub fn start() -> S3Server {
        let root = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(root.path().join(Self::BUCKET)).unwrap();
        let port = free_port();
        let child = Command::new("s3s-fs")
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", "testkey", "--secret-key", "testsecret"])
            .arg(root.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "s3s-fs must be installed: cargo install s3s-fs@0.14.1 --features binary --locked",
            );
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "s3s-fs did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        S3Server {
            endpoint: format!("http://localhost:{port}"),
            root,
            child: Some(child),
            moto: false,
        }
    }

    /// moto's S3 server (`pip install "moto[server]==5.2.5"`) through
    /// `scripts/moto_server.py`, which makes its conditional writes atomic,
    /// on a free loopback port with the bucket created: the store the
    /// shared-metadata tests need (docs/s3-conditional-writes.md). It keeps
    /// objects in memory ([`S3Server::objects`] is empty).
    pub fn start_moto() -> S3Server {
        let root = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/moto_server.py");
        let mut child = Command::new("python3")
            .args([script, "-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 must be installed (scripts/test installs it)");
        // Its port may accept connections (and reset them) before the
        // server answers: retry the bucket's creation until it does.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let created =
                ureq::put(&format!("http://127.0.0.1:{port}/{}", Self::BUCKET)).send_empty();
            match created {
                // 409: an earlier attempt created it before its answer was lost.
                Ok(_) | Err(ureq::Error::StatusCode(409)) => break,
                Err(e) => {
                    if let Ok(Some(status)) = child.try_wait() {
                        panic!(
                            "scripts/moto_server.py exited ({status}): python3 needs moto, \
                             pip install \"moto[server]==5.2.5\" (scripts/test installs it)"
                        );
                    }
                    assert!(
                        Instant::now() < deadline,
                        "moto's server did not start (creating the bucket: {e})"
                    );
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        S3Server {
            endpoint: format!("http://localhost:{port}"),
            root,
            child: Some(child),
            moto: true,
        }
    }

    /// Whether the object `key` (under the bucket and prefix) exists.
    pub fn has(&self, key: &str) -> bool {
        if !self.moto {
            return self.objects().join(key).is_file();
        }
        use object_store::ObjectStoreExt;
        let (store, path) = self.client(key);
        block_on(store.head(&path)).is_ok()
    }

    /// Deletes the object `key` (under the bucket and prefix) of a moto
    /// server, as an operator might by hand.
    pub fn delete_object(&self, key: &str) {
        use object_store::ObjectStoreExt;
        let (store, path) = self.client(key);
        block_on(store.delete(&path)).expect("deleting an object");
    }

    /// A client of this moto server and the path of `key` under the prefix.
    fn client(&self, key: &str) -> (object_store::aws::AmazonS3, object_store::path::Path) {
        let store = object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(Self::BUCKET)
            .with_endpoint(&self.endpoint)
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_access_key_id("testkey")
            .with_secret_access_key("testsecret")
            .build()
            .expect("an S3 client");
        let path = object_store::path::Path::parse(format!("{}/{key}", Self::PREFIX)).unwrap();
        (store, path)
    }

    /// The settings that make an instance keep its metadata in the bucket
    /// (`db.type = "s3"`), revalidating after 300 ms.
    pub fn shared_db_env() -> Vec<(String, String)> {
        [("NMR_DB__TYPE", "s3"), ("NMR_DB__S3__MAX_STALENESS", "300")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// The `NMR_STORAGE__*` settings for this server.
    pub fn env(&self, redirect: bool) -> Vec<(String, String)> {
        [
            ("NMR_STORAGE__TYPE", "s3"),
            ("NMR_STORAGE__S3__BUCKET", Self::BUCKET),
            ("NMR_STORAGE__S3__ENDPOINT", &self.endpoint),
            ("NMR_STORAGE__S3__FORCE_PATH_STYLE", "true"),
            ("NMR_STORAGE__S3__PREFIX", Self::PREFIX),
            ("NMR_STORAGE__S3__ACCESS_KEY_ID", "testkey"),
            ("NMR_STORAGE__S3__SECRET_ACCESS_KEY", "testsecret"),
            (
                "NMR_STORAGE__S3__REDIRECT",
                if redirect { "true" } else { "false" },
            ),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// The directory holding the objects under the bucket and prefix.
    pub fn objects(&self) -> PathBuf {
        self.root.path().join(Self::BUCKET).join(Self::PREFIX)
    }

    /// Stops the server (S3 is down from then on).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `future` to completion on a throwaway runtime.
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A response as a test sees it.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `error` field of a JSON error body.
    pub fn error(&self) -> String {
        self.json()["error"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

/// A small HTTP client bound to one server.
pub struct Http {
    pub base: String,
    agent: ureq::Agent,
    token: Option<String>,
}

impl Http {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path.trim_start_matches('/'))
    }

    fn auth(&self) -> Option<String> {
        self.token.as_ref().map(|t| format!("Bearer {t}"))
    }

    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        let mut req = self.agent.get(self.url(path));
        if let Some(auth) = self.auth() {
            req = req.header("authorization", auth);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        finish(req.call())
    }

    pub fn put(&self, path: &str, body: &[u8]) -> Reply {
        let mut req = self
            .agent
            .put(self.url(path))
            .header("content-type", "application/json");
        if let Some(auth) = self.auth() {
            req = req.header("authorization", auth);
        }
        finish(req.send(body))
    }

    pub fn post(&self, path: &str, body: &[u8]) -> Reply {
        let req = self
            .agent
            .post(self.url(path))
            .header("content-type", "application/json");
        finish(req.send(body))
    }

    /// `POST path` with a JSON body (and the token, if any).
    pub fn post_json(&self, path: &str, body: &Value) -> Reply {
        let mut req = self
            .agent
            .post(self.url(path))
            .header("content-type", "application/json");
        if let Some(auth) = self.auth() {
            req = req.header("authorization", auth);
        }
        finish(req.send(body.to_string().as_bytes()))
    }

    pub fn put_json(&self, path: &str, body: &Value) -> Reply {
        self.put(path, body.to_string().as_bytes())
    }

    pub fn delete(&self, path: &str) -> Reply {
        let mut req = self.agent.delete(self.url(path));
        if let Some(auth) = self.auth() {
            req = req.header("authorization", auth);
        }
        finish(req.call())
    }
}

fn finish(result: Result<http::Response<ureq::Body>, ureq::Error>) -> Reply {
    let response = result.expect("HTTP request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let mut body = Vec::new();
    response
        .into_body()
        .into_reader()
        .read_to_end(&mut body)
        .expect("read body");
    Reply {
        status,
        headers,
        body,
    }
}

/// One HTTP/1.1 response read off a raw connection.
#[derive(Debug)]
pub struct RawReply {
    pub status: u16,
    /// The status line and headers, as sent.
    pub head: String,
    pub body: String,
}

/// Reads one HTTP/1.1 response (head and `Content-Length` body) from
/// `reader`; `None` when the server closed the connection instead.
pub fn read_response(reader: &mut BufReader<std::net::TcpStream>) -> Option<RawReply> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(RawReply {
        status,
        head,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// The real npm client with its own userconfig and cache.
pub struct Npm {
    pub dir: tempfile::TempDir,
    pub userconfig: PathBuf,
}

/// What an npm run printed.
#[derive(Debug)]
pub struct NpmOutput {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl NpmOutput {
    /// stdout and stderr together.
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

impl Npm {
    /// An npm whose default and `@acme` registry is `registry`, with `token`
    /// (if any) as `_authToken` for it; audit, fund and update checks off.
    pub fn new(registry: &str, token: Option<&str>) -> Npm {
        let dir = tempfile::tempdir().expect("temp dir");
        let userconfig = dir.path().join("npmrc");
        let nerf = registry
            .trim_start_matches("http:")
            .trim_start_matches("https:");
        let mut rc = format!(
            "registry={registry}\n@acme:registry={registry}\naudit=false\nfund=false\nupdate-notifier=false\nloglevel=warn\n"
        );
        if let Some(token) = token {
            rc.push_str(&format!("{nerf}:_authToken={token}\n"));
        }
        std::fs::write(&userconfig, rc).unwrap();
        Npm { dir, userconfig }
    }

    /// Runs `npm ARGS` in `cwd`.
    pub fn run(&self, cwd: &Path, args: &[&str]) -> NpmOutput {
        self.run_with_env(cwd, args, &[])
    }

    /// Runs `npm ARGS` in `cwd` with extra environment variables (e.g.
    /// `GITHUB_ACTIONS` and `NPM_ID_TOKEN` for trusted publishing).
    pub fn run_with_env(&self, cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> NpmOutput {
        let output = Command::new("npm")
            .args(args)
            .arg("--userconfig")
            .arg(&self.userconfig)
            .arg("--cache")
            .arg(self.dir.path().join("cache"))
            .current_dir(cwd)
            .env_remove("NPM_CONFIG_REGISTRY")
            .env_remove("GITHUB_ACTIONS")
            .env_remove("NPM_ID_TOKEN")
            .env_remove("ACTIONS_ID_TOKEN_REQUEST_URL")
            .env("NO_UPDATE_NOTIFIER", "1")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .output()
            .expect("run npm (is npm installed?)");
        NpmOutput {
            success: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Runs `npm login --registry=REGISTRY` (the default, web auth type)
    /// under a pseudo-terminal (`script`), as a user at a terminal would;
    /// once npm prints its login URL, `browser` is called with it, and npm
    /// is awaited (at most 60 s). Returns what npm printed.
    pub fn login_in_terminal(&self, registry: &str, browser: impl FnOnce(&str)) -> NpmOutput {
        let command = format!(
            "npm login --registry={registry} --userconfig={} --cache={}",
            self.userconfig.display(),
            self.dir.path().join("cache").display()
        );
        let mut child = Command::new("script")
            .args(["-qfec", &command, "/dev/null"])
            .env_remove("NPM_CONFIG_REGISTRY")
            .env_remove("GITHUB_ACTIONS")
            .env("NO_UPDATE_NOTIFIER", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run script(1) (util-linux) and npm");
        let printed = Arc::new(Mutex::new(String::new()));
        let mut stdout = child.stdout.take().unwrap();
        let sink = printed.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 1024];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let url = loop {
            let text = printed.lock().unwrap().clone();
            if let Some(at) = text.find("/-/v1/login/session/") {
                let start = text[..at].rfind("http").expect("a URL");
                let end = text[at..]
                    .find(|c: char| c.is_whitespace())
                    .map_or(text.len(), |e| at + e);
                if end > at + "/-/v1/login/session/".len() + 31 {
                    break text[start..end].to_string();
                }
            }
            assert!(
                Instant::now() < deadline,
                "npm printed no login URL:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        browser(&url);
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("npm login did not finish:\n{}", printed.lock().unwrap());
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        reader.join().unwrap();
        let mut stderr = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut stderr);
        }
        let stdout = printed.lock().unwrap().clone();
        NpmOutput {
            success: status.success(),
            stdout,
            stderr,
        }
    }

    /// Runs `npm login --auth-type=legacy --registry=REGISTRY` in `cwd`
    /// under a pseudo-terminal (`tests/support/npm_login.py`), answering
    /// its Username and Password prompts.
    pub fn legacy_login(
        &self,
        cwd: &Path,
        registry: &str,
        user: &str,
        password: &str,
    ) -> std::process::Output {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/npm_login.py");
        Command::new("python3")
            .args([
                script,
                registry,
                self.userconfig.to_str().unwrap(),
                user,
                password,
            ])
            .current_dir(cwd)
            .output()
            .expect("python3 runs the pty driver")
    }

    /// Runs npm and panics with its output unless it succeeds.
    pub fn ok(&self, cwd: &Path, args: &[&str]) -> NpmOutput {
        let out = self.run(cwd, args);
        assert!(out.success, "npm {args:?} failed:\n{}", out.all());
        out
    }

    /// Runs npm, checks that it fails and prints `needle` (the registry's
    /// error as npm shows it), and returns the output.
    pub fn fails(&self, cwd: &Path, args: &[&str], needle: &str) -> NpmOutput {
        let out = self.run(cwd, args);
        assert!(!out.success, "npm {args:?} succeeded:\n{}", out.all());
        assert!(
            out.all().contains(needle),
            "{needle:?} not in:\n{}",
            out.all()
        );
        out
    }

    /// Writes a package directory for `name@version` with an `index.js`
    /// exporting `marker`, and `package.json` fields merged from `extra`.
    pub fn package(&self, name: &str, version: &str, marker: &str, extra: Value) -> PathBuf {
        let dir = self
            .dir
            .path()
            .join("src")
            .join(format!("{}-{version}", name.replace('/', "_")));
        std::fs::create_dir_all(&dir).unwrap();
        let mut manifest = serde_json::json!({
            "name": name,
            "version": version,
            "description": format!("{name} for tests"),
            "main": "index.js",
            "license": "MIT",
        });
        if let (Value::Object(m), Value::Object(e)) = (&mut manifest, extra) {
            m.extend(e);
        }
        std::fs::write(dir.join("package.json"), manifest.to_string()).unwrap();
        std::fs::write(
            dir.join("index.js"),
            format!("module.exports = {marker:?};\n"),
        )
        .unwrap();
        std::fs::write(dir.join("README.md"), format!("# {name}\n")).unwrap();
        dir
    }

    /// An empty project directory to install into.
    pub fn project(&self, label: &str) -> PathBuf {
        let dir = self.dir.path().join("projects").join(label);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("package.json"),
            format!(r#"{{"name":"{label}","version":"1.0.0","private":true}}"#),
        )
        .unwrap();
        dir
    }
}

/// Publishes `name@version` over HTTP as npm would (tarball built in-process).
pub fn publish_http(http: &Http, name: &str, version: &str) -> Reply {
    publish_with_repository(http, name, version, None)
}

/// [`publish_http`] with the manifest's `repository` set to `repository`.
pub fn publish_with_repository(
    http: &Http,
    name: &str,
    version: &str,
    repository: Option<&str>,
) -> Reply {
    let tgz = nmr::verify::testing::tarball(name, version);
    let mut body = nmr::verify::testing::publish_body(name, version, "latest", &tgz);
    if let Some(repository) = repository {
        body["versions"][version]["repository"] = repository.into();
    }
    http.put_json(&escape(name), &body)
}

/// `@scope/name` → `@scope%2fname`, as npm writes document routes.
pub fn escape(name: &str) -> String {
    name.replacen('/', "%2f", 1)
}

/// Every file under `dir`, relative, sorted, with its bytes: a snapshot to
/// compare before and after a rejected request.
pub fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(base, &path, out);
            } else {
                out.push((
                    path.strip_prefix(base).unwrap().to_path_buf(),
                    std::fs::read(&path).unwrap(),
                ));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// A loopback port that was free a moment ago (for servers whose URL must be
/// known before they start).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Serves `routes` on loopback `port` (0: any free one) from a thread of its
/// own until the returned sender is dropped. Returns the port and the sender.
pub fn serve_in_background<F>(routes: F, port: u16) -> (u16, tokio::sync::oneshot::Sender<()>)
where
    F: warp::Filter + Clone + Send + Sync + 'static,
    F::Extract: warp::Reply,
{
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let (port_tx, port_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
                .await
                .unwrap();
            port_tx.send(listener.local_addr().unwrap().port()).unwrap();
            warp::serve(routes)
                .incoming(listener)
                .graceful(async {
                    let _ = rx.await;
                })
                .run()
                .await;
        });
    });
    (port_rx.recv().unwrap(), tx)
}

/// A stand-in for the upstream public registry: serves one unscoped package
/// (`left-pad-lite@1.0.0`) and records every request it receives.
pub struct Upstream {
    /// Base URL, with `localhost` as host so npm treats it as another host.
    pub url: String,
    /// `(path, had an Authorization header)` per request.
    pub requests: Arc<Mutex<Vec<(String, bool)>>>,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

impl Upstream {
    pub fn start() -> Upstream {
        use warp::Filter;
        let requests: Arc<Mutex<Vec<(String, bool)>>> = Arc::default();
        let recorded = requests.clone();
        // The port is needed inside the packument, before serving: reserve it.
        let port = free_port();
        let base = format!("http://localhost:{port}");
        let tgz = nmr::verify::testing::tarball_with(
            "left-pad-lite",
            "1.0.0",
            &[(
                "index.js",
                b"module.exports = 'from upstream';\n".as_slice(),
            )],
        );
        let body = nmr::verify::testing::publish_body("left-pad-lite", "1.0.0", "latest", &tgz);
        let mut manifest = body["versions"]["1.0.0"].clone();
        manifest["dist"]["tarball"] =
            format!("{base}/left-pad-lite/-/left-pad-lite-1.0.0.tgz").into();
        let packument = serde_json::json!({
            "_id": "left-pad-lite", "name": "left-pad-lite",
            "dist-tags": {"latest": "1.0.0"},
            "versions": {"1.0.0": manifest},
            "time": {"created": "2026-01-01T00:00:00.000Z", "modified": "2026-01-01T00:00:00.000Z", "1.0.0": "2026-01-01T00:00:00.000Z"},
        })
        .to_string();
        let routes = warp::path::full()
            .and(warp::header::optional::<String>("authorization"))
            .map(move |path: warp::path::FullPath, auth: Option<String>| {
                recorded
                    .lock()
                    .unwrap()
                    .push((path.as_str().to_string(), auth.is_some()));
                let (status, ctype, body) = match path.as_str() {
                    "/left-pad-lite" => (200, "application/json", packument.clone().into_bytes()),
                    "/left-pad-lite/-/left-pad-lite-1.0.0.tgz" => {
                        (200, "application/octet-stream", tgz.clone())
                    }
                    _ => (
                        404,
                        "application/json",
                        br#"{"error":"not found"}"#.to_vec(),
                    ),
                };
                http::Response::builder()
                    .status(status)
                    .header("content-type", ctype)
                    .header("cache-control", "no-cache")
                    .body(body)
                    .unwrap()
            });
        let (_, shutdown) = serve_in_background(routes, port);
        Upstream {
            url: format!("{base}/"),
            requests,
            _shutdown: shutdown,
        }
    }

    pub fn requests(&self) -> Vec<(String, bool)> {
        self.requests.lock().unwrap().clone()
    }
}
