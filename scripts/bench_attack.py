#!/usr/bin/env python3
"""Benchmark nmr under attack: a legitimate client's hot-packument latency
alone and while anonymous clients send large bodies, trickle headers and
spray junk tokens. Run through scripts/bench-attack.sh.

Everything runs on loopback: a fake GitHub (this script), nmr (release
build, auth.type = "github"), wrk for the legitimate client, and the
attackers in a second Python process (this script with --attack). The
attackers run at a lower CPU priority (ATTACK_NICE, default 10): on a 2-core
machine they would otherwise largely measure their own competition for the
cores, which real attackers on other machines do not cause; the achieved
attack rates are printed. Every loop is bounded in time and stops by
itself.
"""

import base64
import hashlib
import http.client
import http.server
import io
import json
import os
import re
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time

GOOD = "ghp_bench_good_token_0001"
SECONDS = int(os.environ.get("SECS", "10"))
NICE = int(os.environ.get("ATTACK_NICE", "10"))


class FakeGitHub(http.server.BaseHTTPRequestHandler):
    """GET /user and GET /repos/bench/repo for one good token; every other
    token is "Bad credentials". Counts calls by kind."""

    calls = {"good": 0, "junk": 0}
    lock = threading.Lock()
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        token = self.headers.get("Authorization", "").split(" ")[-1]
        kind = "good" if token == GOOD else "junk"
        with self.lock:
            self.calls[kind] += 1
        if kind == "junk":
            self.reply(401, {"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest", "status": "401"})
        elif self.path == "/user":
            self.reply(200, {"login": "bencher", "id": 1})
        elif self.path == "/repos/bench/repo":
            self.reply(200, {"id": 7, "name": "repo", "full_name": "bench/repo", "private": True,
                             "permissions": {"admin": True, "maintain": True, "push": True, "triage": True, "pull": True}})
        else:
            self.reply(404, {"message": "Not Found", "status": "404"})

    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-ratelimit-remaining", "4999")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def start_github():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeGitHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def start_nmr(work, github_url):
    env = dict(os.environ, NMR_AUTH__TYPE="github", NMR_AUTH__GITHUB__API_URL=github_url,
               NMR_SERVER__HOST="127.0.0.1", NMR_SERVER__PORT="0", NMR_LOGGER__LEVEL="warn",
               NMR_DB__PATH=f"{work}/db", NMR_STORAGE__LOCAL__PATH=f"{work}/storage")
    proc = subprocess.Popen(["./target/release/nmr"], env=env, stdout=subprocess.PIPE,
                            stderr=open(f"{work}/err", "w"), text=True)
    line = proc.stdout.readline()
    url = re.search(r"public URL (\S+)\)", line).group(1)
    return proc, url


def publish(url, name, version):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for path, data in [("package/package.json", json.dumps({"name": name, "version": version}).encode()),
                           ("package/index.js", b"module.exports = 1;\n")]:
            info = tarfile.TarInfo(path)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    tgz = buf.getvalue()
    body = {"_id": name, "name": name, "dist-tags": {"latest": version},
            "versions": {version: {"name": name, "version": version, "repository": "github:bench/repo",
                                   "dist": {"integrity": "sha512-" + base64.b64encode(hashlib.sha512(tgz).digest()).decode(),
                                            "shasum": hashlib.sha1(tgz).hexdigest()}}},
            "_attachments": {f"{name}-{version}.tgz": {"data": base64.b64encode(tgz).decode(), "length": len(tgz)}}}
    host, port = hostport(url)
    conn = http.client.HTTPConnection(host, port)
    conn.request("PUT", "/" + name.replace("/", "%2f"), json.dumps(body),
                 {"content-type": "application/json", "authorization": f"Bearer {GOOD}"})
    response = conn.getresponse()
    assert response.status == 201, (response.status, response.read())


def hostport(url):
    host, port = url.split("//")[1].rstrip("/").split(":")
    return host, int(port)


def wrk(url, label):
    out = subprocess.run(["wrk", "-t2", "-c16", f"-d{SECONDS}s", "--latency",
                          "-H", f"Authorization: Bearer {GOOD}", "-H", "Accept-Encoding: gzip",
                          url + "@bench%2fpkg"], capture_output=True, text=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    p99_ms = float(p99.group(1)) * {"us": 0.001, "ms": 1, "s": 1000}[p99.group(2)]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    print(f"{label:<34} {rps:10.0f} req/s  p99 {p99_ms:7.2f} ms  non-2xx {non2xx.group(1) if non2xx else 0}")
    return rps, p99_ms


def rss(pid, field):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field):
            return int(line.split()[1]) / 1024
    return 0.0


def attack(url, stop, counters):
    host, port = hostport(url)
    threads = []

    def big_bodies():
        # 20 anonymous clients, each sending 50 MiB PUT bodies in a loop.
        chunk = b"0," * (256 * 1024)
        while not stop.is_set():
            try:
                s = socket.create_connection((host, port), timeout=5)
                s.sendall(f"PUT /@bench%2fpkg HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                          f"Content-Length: {50 << 20}\r\n\r\n".encode())
                sent = 0
                while sent < 50 << 20 and not stop.is_set():
                    s.sendall(chunk)
                    sent += len(chunk)
                counters["big_sent"] += sent
            except OSError:
                pass
            counters["big"] += 1
            try:
                s.close()
            except Exception:
                pass
            time.sleep(0.05)

    def tricklers():
        # 200 sockets that send a header byte every few seconds.
        sockets = []
        while not stop.is_set():
            while len(sockets) < 200 and not stop.is_set():
                try:
                    s = socket.create_connection((host, port), timeout=5)
                    s.sendall(b"GET /@bench%2fpkg HTTP/1.1\r\nHost: x\r\n")
                    sockets.append(s)
                    counters["trickle_opened"] += 1
                except OSError:
                    time.sleep(0.1)
            for s in list(sockets):
                try:
                    s.sendall(b"X")
                except OSError:
                    sockets.remove(s)
                    counters["trickle_closed"] += 1
            stop.wait(3)
        for s in sockets:
            s.close()

    def junk(offset):
        # 1,000 requests per second in all, each with a token never seen.
        conn = http.client.HTTPConnection(host, port, timeout=5)
        i = 0
        next_at = time.time()
        while not stop.is_set():
            next_at += 1 / 250
            delay = next_at - time.time()
            if delay > 0:
                time.sleep(delay)
            try:
                conn.request("GET", "/@bench%2fpkg", headers={"authorization": f"Bearer ghp_junk_{offset}_{i}"})
                response = conn.getresponse()
                response.read()
                counters[f"junk_{response.status}"] = counters.get(f"junk_{response.status}", 0) + 1
            except (OSError, http.client.HTTPException):
                conn = http.client.HTTPConnection(host, port, timeout=5)
            i += 1

    for _ in range(20):
        threads.append(threading.Thread(target=big_bodies, daemon=True))
    threads.append(threading.Thread(target=tricklers, daemon=True))
    for k in range(4):
        threads.append(threading.Thread(target=junk, args=(k,), daemon=True))
    for t in threads:
        t.start()
    return threads


def attack_process(url, seconds):
    stop = threading.Event()
    counters = {"big": 0, "big_sent": 0, "trickle_opened": 0, "trickle_closed": 0}
    threads = attack(url, stop, counters)
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join(timeout=10)
    print(json.dumps(counters))


def main():
    if sys.argv[1:2] == ["--attack"]:
        return attack_process(sys.argv[2], float(sys.argv[3]))
    github = start_github()
    github_url = f"http://127.0.0.1:{github.server_address[1]}"
    with tempfile.TemporaryDirectory() as work:
        proc, url = start_nmr(work, github_url)
        try:
            publish(url, "@bench/pkg", "1.0.0")
            print(f"nmr pid {proc.pid} at {url}, auth.type = github against a fake GitHub; wrk c=16 for {SECONDS} s")
            _, alone = wrk(url, "hot packument, alone")
            print(f"  RSS {rss(proc.pid, 'VmRSS'):.1f} MiB")
            before = dict(FakeGitHub.calls)
            open(f"/proc/{proc.pid}/clear_refs", "w").write("5")
            duration = SECONDS + 4
            attackers = subprocess.Popen([sys.executable, __file__, "--attack", url, str(duration)],
                                         stdout=subprocess.PIPE, text=True, preexec_fn=lambda: os.nice(NICE))
            time.sleep(2)
            stop = threading.Event()
            peak = [0.0]

            def sample():
                while not stop.is_set():
                    peak[0] = max(peak[0], rss(proc.pid, "VmRSS"))
                    time.sleep(0.1)
            threading.Thread(target=sample, daemon=True).start()
            _, attacked = wrk(url, "hot packument, under attack")
            stop.set()
            counters = json.loads(attackers.communicate(timeout=60)[0])
            elapsed = duration
            junk_calls = FakeGitHub.calls["junk"] - before["junk"]
            print(f"  p99 under attack / alone: {attacked / alone:.2f}x (target <= 3x)")
            print(f"  nmr RSS peak {max(peak[0], rss(proc.pid, 'VmHWM')):.1f} MiB (target < 256 MiB)")
            junk = {k: v for k, v in counters.items() if k.startswith("junk_")}
            print(f"  attackers at nice {NICE}: {sum(junk.values()) / elapsed:.0f} junk requests/s achieved, "
                  f"{counters['big'] / elapsed:.0f} large bodies/s")
            print(f"  junk requests: {junk}; GitHub calls they caused: {junk_calls} "
                  f"(budget: 120/min per address = {120 * elapsed / 60 + 120:.0f} in {elapsed:.0f} s)")
            print(f"  50 MiB bodies attempted: {counters['big']}, bytes they got sent: {counters['big_sent'] / 2**20:.0f} MiB")
            print(f"  trickling sockets opened: {counters['trickle_opened']}, closed by nmr: {counters['trickle_closed']}")
            print(f"  GitHub calls for the legitimate token: {FakeGitHub.calls['good']}")
        finally:
            proc.terminate()
            proc.wait(timeout=30)


if __name__ == "__main__":
    sys.exit(main())
