"""The store and hot-path benchmark (scripts/bench-store.sh runs it).

Phases, each printing its figures:

1. versions: one package, @bench/huge, published version after version by
   direct PUTs of npm's body shape (a few KB of manifest and readme each)
   up to VERSIONS (default 10000). PUT p50 over versions 1-10, 990-1000 and
   the last ten; the database directory's size, the live data (the full
   packument's bytes) and nmr's RSS at 1,000 and at the end; then full and
   abbreviated GET req/s and p99 at c=16 (cache hits), and the cold render
   (first GET after a publish).
2. ceiling: 200 packages x 5 versions; nginx serving byte-identical copies
   of what nmr serves (gzip packuments via gzip_static, the tarballs) from
   disk with sendfile and open_file_cache; wrk at c=64 against both for the
   full and abbreviated packuments, a 304 and the 100 KB tarball; nmr with
   auth.type = "github" (a fake GitHub, answers cached) and "none", all
   three measured in turn in each of ROUNDS rounds. Each figure (the
   median round) as a ratio to nginx's, with CPU ms per request from /proc.
3. mixed: c=64 readers of the 200 packuments alone, then while one writer
   publishes continuously: both p99s and their ratio.
4. instances (only when named): two db.type = "s3" instances on one moto
   bucket against one db.type = "local" instance: publish p50 (50
   sequential PUTs each), hot packument req/s at c=64 per instance, and 8
   concurrent publishers spread over both instances (publishes per second,
   refusals, versions lost).
5. baseline (BASELINE=REV): the same hot reads against a build of REV
   (a git worktree, built into BASELINE_TARGET if set), interleaved in
   ROUNDS rounds in the same run.

Environment: SECS (per wrk run, default 5), ROUNDS (interleaved rounds of
the ceiling, default 3; the median is printed), VERSIONS, BASELINE, NMR
(the binary).
"""
import base64
import hashlib
import http.server
import io
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.request

SECS = int(os.environ.get("SECS", "5"))
VERSIONS = int(os.environ.get("VERSIONS", "10000"))
NMR = os.environ.get("NMR", "./target/release/nmr")
TOKEN = "ghp_bench_token_0001"
HZ = os.sysconf("SC_CLK_TCK")
WORK = tempfile.mkdtemp(prefix="nmr-bench-")
os.chmod(WORK, 0o755)  # nginx's workers run as another user


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FakeGitHub(http.server.BaseHTTPRequestHandler):
    """GET /user and GET /repos/{owner}/{repo} as GitHub answers them, for
    one token that is admin everywhere (nmr caches both answers)."""

    def do_GET(self):
        if self.headers.get("authorization", "") not in (f"Bearer {TOKEN}", f"token {TOKEN}"):
            return self.reply(401, {"message": "Bad credentials"})
        if self.path == "/user":
            return self.reply(200, {"login": "bench", "id": 1})
        parts = self.path.strip("/").split("/")
        if len(parts) == 3 and parts[0] == "repos":
            return self.reply(200, {"id": abs(hash(parts[2])) % 10**9, "name": parts[2],
                                    "owner": {"login": parts[1], "id": 2}, "private": True,
                                    "permissions": {"admin": True, "maintain": True, "push": True,
                                                    "triage": True, "pull": True}})
        self.reply(404, {"message": "Not Found"})

    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def start_fake_github():
    port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), FakeGitHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{port}"


class Nmr:
    def __init__(self, binary, label, auth, github=None, extra=None):
        self.dir = os.path.join(WORK, label)
        os.makedirs(self.dir, exist_ok=True)
        env = dict(os.environ, NMR_SERVER__HOST="127.0.0.1", NMR_SERVER__PORT="0",
                   NMR_LOGGER__LEVEL="warn", NMR_AUTH__TYPE=auth,
                   NMR_DB__PATH=os.path.join(self.dir, "db"),
                   NMR_STORAGE__LOCAL__PATH=os.path.join(self.dir, "storage"))
        if github:
            env["NMR_AUTH__GITHUB__API_URL"] = github
        env.update(extra or {})
        self.proc = subprocess.Popen([binary], env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline()
        self.url = line.split("public URL ")[1].strip().rstrip(")")

    def cpu(self):
        return cpu_of([self.proc.pid])

    def rss_mib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


def cpu_of(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except FileNotFoundError:
            pass
    return total / HZ


def tgz(name, version, payload=b"module.exports = 1;\n", fields=None):
    buf = io.BytesIO()
    meta = dict(fields or {}, name=name, version=version)
    meta.pop("readme", None)
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for path, data in [("package/package.json", json.dumps(meta).encode()),
                           ("package/index.js", payload)]:
            info = tarfile.TarInfo(path)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


README = ("# bench\n\n" + "Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 30 + "\n")


def fields_of(name, version, rich):
    manifest = {"name": name, "version": version, "description": "bench package " + name,
                "repository": "github:" + name[1:]}
    if rich:
        manifest.update({
            "keywords": ["bench", "registry", "npm", "scale"],
            "license": "MIT", "main": "index.js",
            "scripts": {"test": "node test.js", "build": "tsc -p ."},
            "dependencies": {f"dep-{i}": f"^{i}.0.0" for i in range(20)},
            "devDependencies": {f"dev-{i}": f"~{i}.1.0" for i in range(20)},
            "engines": {"node": ">=18"},
            "author": {"name": "Bench", "email": "bench@example.com"},
            "readme": README,
        })
    return manifest


def body(name, version, data, rich):
    manifest = dict(fields_of(name, version, rich),
                    dist={"integrity": "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode(),
                          "shasum": hashlib.sha1(data).hexdigest()})
    return {"_id": name, "name": name, "dist-tags": {"latest": version},
            "versions": {version: manifest}, "readme": README if rich else "",
            "_attachments": {f"{name}-{version}.tgz": {
                "content_type": "application/octet-stream",
                "data": base64.b64encode(data).decode(), "length": len(data)}}}


def put(url, name, version, payload=b"module.exports = 1;\n", rich=False):
    data = tgz(name, version, payload, fields_of(name, version, rich))
    raw = json.dumps(body(name, version, data, rich)).encode()
    req = urllib.request.Request(url + name.replace("/", "%2f", 1), raw, method="PUT",
                                 headers={"content-type": "application/json",
                                          "authorization": f"Bearer {TOKEN}"})
    start = time.perf_counter()
    urllib.request.urlopen(req).read()
    return time.perf_counter() - start


def get(url, headers=None):
    req = urllib.request.Request(url, headers=dict({"authorization": f"Bearer {TOKEN}"}, **(headers or {})))
    with urllib.request.urlopen(req) as r:
        # The headers as received, looked up without regard to case (nmr
        # sends `etag`, nginx `ETag`): a plain dict would miss one of them.
        return r.read(), r.headers


def dir_mib(path):
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            total += os.path.getsize(os.path.join(root, f))
    return total / (1 << 20)


def wrk(target, c, headers=(), script=None):
    args = ["wrk", f"-t{2 if c > 1 else 1}", f"-c{c}", f"-d{SECS}s", "--latency"]
    for h in headers:
        args += ["-H", h]
    if script:
        args += ["-s", script]
    out = subprocess.run(args + [target], capture_output=True, text=True).stdout
    rps = float(next(l.split()[1] for l in out.splitlines() if l.startswith("Requests/sec")))
    p99 = next(l.split()[1] for l in out.splitlines() if l.strip().startswith("99%"))
    requests = int(next(l.split()[0] for l in out.splitlines() if "requests in" in l))
    return rps, p99, requests


def ms(p):
    """wrk's latency text (e.g. 1.23ms, 850.00us, 1.2s) in ms."""
    for unit, scale in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
        if p.endswith(unit):
            return float(p[: -len(unit)]) * scale
    return float(p)


GZ = "Accept-Encoding: gzip,deflate"
ABBR = "Accept: application/vnd.npm.install-v1+json; q=1.0, application/json; q=0.8, */*"
AUTH = f"Authorization: Bearer {TOKEN}"


def phase_versions(github):
    print(f"== versions: @bench/huge published to {VERSIONS} versions (auth github)")
    nmr = Nmr(NMR, "versions", "github", github)
    name = "@bench/huge"
    times = []
    for i in range(1, VERSIONS + 1):
        times.append(put(nmr.url, name, f"1.0.{i}", rich=True))
        if i == 1000 or i == VERSIONS:
            full, _ = get(nmr.url + "@bench%2fhuge")
            print(f"  at {i:>5} versions: PUT p50 1-10 {statistics.median(times[:10])*1000:.1f} ms, "
                  f"{i-9}-{i} {statistics.median(times[i-10:i])*1000:.1f} ms; "
                  f"db {dir_mib(os.path.join(nmr.dir, 'db')):.1f} MiB for {len(full)/(1<<20):.1f} MiB live "
                  f"(full packument); RSS {nmr.rss_mib():.0f} MiB")
    if VERSIONS >= 1000:
        print(f"  PUT p50 990-1000 / 1-10: {statistics.median(times[989:1000]) / statistics.median(times[:10]):.2f}x")
    print(f"  PUT p50 last ten / 1-10: {statistics.median(times[-10:]) / statistics.median(times[:10]):.2f}x")
    target = nmr.url + "@bench%2fhuge"
    for label, headers in (("full (gzip)", [GZ, AUTH]), ("abbreviated (gzip)", [ABBR, GZ, AUTH])):
        get(target, dict(h.split(": ", 1) for h in headers))
        rps, p99, _ = wrk(target, 16, headers)
        print(f"  hot {label:<20} c=16 {rps:>9.0f} req/s  p99 {p99}")
    for label, headers in (("full", {}), ("abbreviated", {"Accept": ABBR.split(": ", 1)[1]})):
        colds = []
        for k in range(5):
            put(nmr.url, name, f"2.0.{len(colds)}-{label}.{k}", rich=True)
            start = time.perf_counter()
            get(target, dict(headers, **{"Accept-Encoding": "gzip"}))
            colds.append(time.perf_counter() - start)
        print(f"  cold {label:<19} (first GET after a publish) p50 {statistics.median(colds)*1000:.0f} ms")
    print(f"  RSS after the reads: {nmr.rss_mib():.0f} MiB; db {dir_mib(os.path.join(nmr.dir, 'db')):.1f} MiB")
    nmr.stop()


def fill(url):
    for i in range(200):
        for v in range(5):
            payload = b"module.exports = 1;\n"
            if i == 1 and v == 0:
                payload = os.urandom(100 * 1024)
            put(url, f"@bench/pkg-{i:03d}", f"1.0.{v}", payload)


def start_nginx(root):
    port = free_port()
    conf = os.path.join(WORK, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""
worker_processes 2; pid {WORK}/nginx.pid; error_log {WORK}/nginx-error.log; daemon off;
events {{ worker_connections 4096; }}
http {{
  access_log off; sendfile on; tcp_nopush on; tcp_nodelay on; keepalive_requests 100000;
  open_file_cache max=1000 inactive=60s; open_file_cache_valid 60s;
  default_type application/octet-stream;
  server {{ listen 127.0.0.1:{port}; root {root}; gzip_static on; }}
}}
""")
    proc = subprocess.Popen(["nginx", "-c", conf, "-p", WORK], stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/nothing")
        except urllib.error.HTTPError:
            break
        except OSError:
            time.sleep(0.05)
    return proc, f"http://127.0.0.1:{port}/"


def nginx_pids(master):
    out = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True).stdout
    return [master] + [int(p) for p in out.split()]


def copy_for_nginx(url, root):
    """What nmr serves, byte for byte, at nginx paths."""
    paths = {}
    for label, headers, path in (("full", {}, "@bench/pkg-000"), ("abbr", {"Accept": ABBR.split(": ", 1)[1]}, "abbr/@bench/pkg-000")):
        plain, _ = get(url + "@bench%2fpkg-000", headers)
        gz, _ = get(url + "@bench%2fpkg-000", dict(headers, **{"Accept-Encoding": "gzip"}))
        os.makedirs(os.path.dirname(os.path.join(root, path)), exist_ok=True)
        open(os.path.join(root, path), "wb").write(plain)
        open(os.path.join(root, path + ".gz"), "wb").write(gz)
        paths[label] = path
    tarball = "@bench/pkg-001/-/pkg-001-1.0.0.tgz"
    data, _ = get(url + tarball)
    os.makedirs(os.path.dirname(os.path.join(root, tarball)), exist_ok=True)
    open(os.path.join(root, tarball), "wb").write(data)
    paths["tarball"] = tarball
    return paths


def cases_of(base, paths, etag):
    return (("full packument", base + paths["full"], [GZ]),
            ("abbreviated packument", base + paths["abbr"], [GZ, ABBR]),
            ("304 revalidation", base + paths["full"], [GZ, f"If-None-Match: {etag}"]),
            ("100 KB tarball", base + paths["tarball"], []))


def check_304(target, headers):
    """The 304 case must be one: a missing ETag would measure 200s."""
    req = urllib.request.Request(target, headers=dict(h.split(": ", 1) for h in headers))
    try:
        urllib.request.urlopen(req)
    except urllib.error.HTTPError as e:
        if e.code == 304:
            return
    raise SystemExit(f"{target} with {headers} did not answer 304")


def measure_once(target, pids, headers):
    before = cpu_of(pids())
    rps, p99, n = wrk(target, 64, headers)
    return rps, p99, (cpu_of(pids()) - before) * 1000 / max(n, 1)


ROUNDS = int(os.environ.get("ROUNDS", "3"))


def phase_ceiling(github):
    print(f"== ceiling: 200 packages x 5 versions, c=64, against nginx serving the same bytes "
          f"(median of {ROUNDS} interleaved rounds)")
    nmr_gh = Nmr(NMR, "ceiling-github", "github", github)
    fill(nmr_gh.url)
    nmr_none = Nmr(NMR, "ceiling-none", "none")
    fill(nmr_none.url)
    root = os.path.join(WORK, "nginx-root")
    paths = copy_for_nginx(nmr_gh.url, root)
    nginx, nginx_url = start_nginx(root)
    nmr_paths = {"full": "@bench%2fpkg-000", "abbr": "@bench%2fpkg-000", "tarball": paths["tarball"]}
    servers = {}
    for who, url, p, pids, headers in (
            ("nginx", nginx_url, paths, lambda: nginx_pids(nginx.pid), []),
            ("nmr github", nmr_gh.url, nmr_paths, lambda: [nmr_gh.proc.pid], [AUTH]),
            ("nmr none", nmr_none.url, nmr_paths, lambda: [nmr_none.proc.pid], [])):
        _, h = get(url + p["full"], {"Accept-Encoding": "gzip"})
        servers[who] = (cases_of(url, p, h.get("ETag")), pids, headers)
        _, target, extra = servers[who][0][2]
        check_304(target, extra + headers)
    # LevelDB compacts after the fills: let it finish before measuring.
    time.sleep(5)
    runs = {who: {} for who in servers}
    for i, case in enumerate(c[0] for c in servers["nginx"][0]):
        samples = {who: [] for who in servers}
        # Each round measures every server once, so the machine's drift
        # (a shared 2-core VM) weighs on all of them alike.
        for _ in range(ROUNDS):
            for who, (cases, pids, headers) in servers.items():
                _, target, extra = cases[i]
                samples[who].append(measure_once(target, pids, extra + headers))
        for who, got in samples.items():
            got.sort(key=lambda r: r[0])
            runs[who][case] = got[len(got) // 2]
    nmr_gh.stop()
    nmr_none.stop()
    nginx.terminate()
    nginx.wait()
    ref = runs["nginx"]
    for case in ref:
        print(f"  {case}:")
        for who, res in runs.items():
            rps, p99, cpu = res[case]
            print(f"    {who:<11} {rps:>9.0f} req/s ({rps / ref[case][0]:.2f}x nginx)  p99 {p99:<9} "
                  f"CPU {cpu:.3f} ms/req ({cpu / max(ref[case][2], 1e-9):.1f}x nginx)")
    return runs


def phase_mixed(github):
    print("== mixed: c=64 readers of 200 packuments, alone and while one writer publishes")
    nmr = Nmr(NMR, "mixed", "github", github)
    fill(nmr.url)
    script = os.path.join(WORK, "rotate.lua")
    with open(script, "w") as f:
        f.write('local i = 0\nrequest = function()\n  i = (i + 1) % 200\n'
                '  return wrk.format("GET", string.format("/@bench%%2fpkg-%03d", i))\nend\n')
    _, alone, _ = wrk(nmr.url, 64, [GZ, AUTH], script)
    stop = threading.Event()
    published = [0]

    def writer():
        k = 0
        while not stop.is_set():
            put(nmr.url, f"@bench/pkg-{k % 200:03d}", f"2.0.{k}")
            k += 1
            published[0] = k
    t = threading.Thread(target=writer)
    t.start()
    _, during, _ = wrk(nmr.url, 64, [GZ, AUTH], script)
    stop.set()
    t.join()
    print(f"  readers' p99 alone {alone}, during {published[0]} publishes {during}: "
          f"{ms(during) / ms(alone):.2f}x")
    nmr.stop()


def start_moto():
    """moto's S3 server (pip install "moto[server]==5.2.5") through
    scripts/moto_server.py, which makes its conditional writes atomic, as
    db.type = "s3" needs and the tests run it. Returns (process, env)."""
    port = free_port()
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "moto_server.py")
    proc = subprocess.Popen(["python3", script, "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), 0.1).close()
            break
        except OSError:
            time.sleep(0.05)
    urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/tarballs", method="PUT")).read()
    env = {"NMR_STORAGE__TYPE": "s3", "NMR_STORAGE__S3__BUCKET": "tarballs",
           "NMR_STORAGE__S3__ENDPOINT": f"http://127.0.0.1:{port}",
           "NMR_STORAGE__S3__FORCE_PATH_STYLE": "true", "NMR_STORAGE__S3__PREFIX": "npm",
           "NMR_STORAGE__S3__ACCESS_KEY_ID": "k", "NMR_STORAGE__S3__SECRET_ACCESS_KEY": "s"}
    return proc, env


def phase_instances():
    print("== instances: two db.type = \"s3\" instances on one moto bucket against one "
          "db.type = \"local\" instance (tarballs in the same kind of bucket)")
    moto, s3env = start_moto()
    local = Nmr(NMR, "inst-local", "none", extra=s3env)
    shared = [Nmr(NMR, f"inst-{x}", "none", extra=dict(s3env, NMR_DB__TYPE="s3")) for x in "ab"]
    n = 50
    local_t = [put(local.url, "@bench/inst", f"1.0.{i}") for i in range(n)]
    # Another package than local's: its tarball keys in the same bucket
    # would be taken, and every publish would go through a claim.
    shared_t = [put(shared[i % 2].url, "@bench/alt", f"1.0.{i}") for i in range(n)]
    one_t = [put(shared[0].url, "@bench/one", f"1.0.{i}") for i in range(n)]
    lp, sp = statistics.median(local_t) * 1000, statistics.median(shared_t) * 1000
    op = statistics.median(one_t) * 1000
    print(f"  publish p50 over {n} sequential PUTs: local {lp:.1f} ms; s3 alternating between the "
          f"instances {sp:.1f} ms ({sp / lp:.2f}x), s3 through one instance {op:.1f} ms ({op / lp:.2f}x)")
    time.sleep(1)
    rl, _, _ = wrk(local.url + "@bench%2finst", 64, [GZ])
    print(f"  hot packument c=64 (50 versions): local {rl:.0f} req/s")
    for x, inst in zip("ab", shared):
        get(inst.url + "@bench%2falt", {"Accept-Encoding": "gzip"})
        r, _, _ = wrk(inst.url + "@bench%2falt", 64, [GZ])
        print(f"  hot packument c=64: s3 instance {x} {r:.0f} req/s ({r / rl:.2f}x local)")
    per, writers = 20, 8
    failures = []

    def publisher(w):
        for k in range(per):
            try:
                put(shared[(w + k) % 2].url, "@bench/concurrent", f"3.{w}.{k}")
            except Exception as e:  # noqa: BLE001 - reported below
                failures.append(f"3.{w}.{k}: {e}")
    start = time.perf_counter()
    threads = [threading.Thread(target=publisher, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    time.sleep(1.2)
    doc, _ = get(shared[0].url + "@bench%2fconcurrent")
    kept = len(json.loads(doc)["versions"])
    print(f"  {writers} concurrent publishers over both instances: {writers * per} publishes in "
          f"{elapsed:.1f} s, {writers * per / elapsed:.1f} publishes/s, {len(failures)} refused, "
          f"{kept} versions kept ({writers * per - len(failures) - kept} lost)")
    for f in failures[:3]:
        print(f"    refused: {f}")
    for inst in [local] + shared:
        inst.stop()
    moto.terminate()


def phase_baseline(rev):
    print(f"== baseline: hot reads of this build against {rev}, same run "
          f"(median of {ROUNDS} interleaved rounds)")
    tree = os.path.join(WORK, "baseline")
    subprocess.run(["git", "worktree", "add", "--detach", tree, rev], check=True, capture_output=True)
    try:
        target = os.environ.get("BASELINE_TARGET", os.path.join(tree, "target"))
        subprocess.run(["cargo", "build", "--release", "--quiet", "--target-dir", target],
                       cwd=tree, check=True)
        servers = {}
        for label, binary in (("this", NMR), (rev, os.path.join(target, "release/nmr"))):
            nmr = Nmr(binary, "baseline-" + label.replace("/", "_"), "none")
            fill(nmr.url)
            hot = nmr.url + "@bench%2fpkg-000"
            _, headers = get(hot, {"Accept-Encoding": "gzip"})
            servers[label] = (nmr, [(hot, [GZ]), (hot, [GZ, ABBR]),
                                    (hot, [GZ, f"If-None-Match: {headers.get('ETag')}"])])
            check_304(*servers[label][1][2])
        time.sleep(5)
        results = {label: [] for label in servers}
        for i in range(3):
            samples = {label: [] for label in servers}
            for _ in range(ROUNDS):
                for label, (_, cases) in servers.items():
                    samples[label].append(wrk(cases[i][0], 64, cases[i][1])[0])
            for label, got in samples.items():
                results[label].append(sorted(got)[len(got) // 2])
        for nmr, _ in servers.values():
            nmr.stop()
        for i, case in enumerate(("full packument", "abbreviated packument", "304 revalidation")):
            a, b = results["this"][i], results[rev][i]
            print(f"  {case:<22} this {a:>9.0f} req/s, {rev} {b:>9.0f} req/s: {a / b:.2f}x")
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", tree], capture_output=True)


def main():
    github = start_fake_github()
    phases = sys.argv[1:] or ["versions", "ceiling", "mixed"]
    try:
        if "versions" in phases:
            phase_versions(github)
        if "ceiling" in phases:
            phase_ceiling(github)
        if "mixed" in phases:
            phase_mixed(github)
        if "instances" in phases:
            phase_instances()
        if os.environ.get("BASELINE"):
            phase_baseline(os.environ["BASELINE"])
    finally:
        shutil.rmtree(WORK, ignore_errors=True)


main()
