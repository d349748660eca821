#!/usr/bin/env bash
# Benchmark nmr's read path with a real HTTP load generator (wrk).
#
# Fills a fresh registry with 200 packages x 5 versions (one version of one
# package carries a ~100 KB tarball, another a 10 MB one), then prints, at
# concurrency 1, 16 and 64: req/s and p50/p99 latency for the hot full
# packument, the abbreviated packument, a 304 revalidation and the 100 KB
# tarball; MB/s for the 10 MB tarball; and the server's peak RSS.
#
# Usage: scripts/bench.sh [seconds-per-run]   (default 5)
# Needs: wrk (apt-get install wrk), python3, a release build (it builds one).
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-5}"
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install -y wrk" >&2; exit 1; }
cargo build --release --quiet
work="$(mktemp -d)"
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT

NMR_AUTH__TYPE=none NMR_SERVER__HOST=127.0.0.1 NMR_SERVER__PORT=0 NMR_LOGGER__LEVEL="${NMR_LOGGER__LEVEL:-warn}" \
  NMR_DB__PATH="$work/db" NMR_STORAGE__LOCAL__PATH="$work/storage" \
  ./target/release/nmr >"$work/out" 2>"$work/err" &
pid=$!
until grep -q "listening" "$work/out" 2>/dev/null; do sleep 0.05; done
url="$(sed -n 's/.*public URL \(.*\))$/\1/p' "$work/out")"
echo "nmr pid $pid at $url (log level ${NMR_LOGGER__LEVEL:-warn})"

python3 - "$url" <<'PY'
import base64, hashlib, io, json, os, sys, tarfile, urllib.request
url = sys.argv[1]
def tgz(name, version, payload):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for path, data in [("package/package.json", json.dumps({"name": name, "version": version}).encode()),
                           ("package/index.js", payload)]:
            info = tarfile.TarInfo(path); info.size = len(data); tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()
def publish(name, version, payload):
    data = tgz(name, version, payload)
    body = {"_id": name, "name": name, "dist-tags": {"latest": version},
            "versions": {version: {"name": name, "version": version, "description": "bench package " + name,
                                   "dependencies": {"@bench/pkg-000": "^1.0.0"},
                                   "dist": {"integrity": "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode(),
                                            "shasum": hashlib.sha1(data).hexdigest()}}},
            "_attachments": {f"{name}-{version}.tgz": {"data": base64.b64encode(data).decode(), "length": len(data)}}}
    req = urllib.request.Request(url + name.replace("/", "%2f", 1), json.dumps(body).encode(), method="PUT",
                                 headers={"content-type": "application/json"})
    urllib.request.urlopen(req).read()
for i in range(200):
    for v in range(5):
        name = f"@bench/pkg-{i:03d}"
        payload = b"module.exports = 1;\n"
        if i == 1 and v == 0: payload = os.urandom(100 * 1024)        # ~100 KB tarball
        if i == 2 and v == 0: payload = os.urandom(10 * 1024 * 1024)  # 10 MB tarball
        publish(name, f"1.0.{v}", payload)
print("filled: 200 packages x 5 versions")
PY

hot="${url}@bench%2fpkg-000"
etag="$(curl -s -D - -o /dev/null "$hot" | sed -n 's/^[Ee][Tt][Aa][Gg]: \(.*\)\r$/\1/p')"
ls -l "$work/storage/@bench/pkg-001/-/pkg-001-1.0.0.tgz" "$work/storage/@bench/pkg-002/-/pkg-002-1.0.0.tgz" | awk '{print "tarball", $5, "bytes", $9}'

run() { # label, concurrency, url, extra wrk args...
  local label="$1" c="$2" target="$3"; shift 3
  local threads=$(( c < 2 ? 1 : 2 ))
  local out; out="$(wrk -t"$threads" -c"$c" -d"${secs}s" --latency "$@" "$target")"
  local rps p50 p99 tps
  rps="$(awk '/Requests\/sec/ {print $2}' <<<"$out")"
  p50="$(awk '$1=="50%" {print $2}' <<<"$out")"
  p99="$(awk '$1=="99%" {print $2}' <<<"$out")"
  tps="$(awk '/Transfer\/sec/ {print $2}' <<<"$out")"
  printf '%-28s c=%-3s %10s req/s  p50 %-9s p99 %-9s transfer %s/s\n' "$label" "$c" "$rps" "$p50" "$p99" "$tps"
}
echo "peak RSS after filling (includes the 10 MB publish): $(awk '/VmHWM/ {printf "%.1f MiB", $2/1024}' /proc/$pid/status)"
echo 5 > "/proc/$pid/clear_refs" 2>/dev/null || echo "(cannot reset the RSS high-water mark; the figure below includes the fill)"
for c in 1 16 64; do
  run "full packument (gzip)" "$c" "$hot" -H "Accept: application/json" -H "Accept-Encoding: gzip,deflate"
  run "full packument (plain)" "$c" "$hot" -H "Accept: application/json"
  run "abbreviated packument" "$c" "$hot" -H "Accept: application/vnd.npm.install-v1+json; q=1.0, application/json; q=0.8, */*" -H "Accept-Encoding: gzip,deflate"
  run "304 revalidation" "$c" "$hot" -H "If-None-Match: $etag" -H "Accept-Encoding: gzip,deflate"
  run "100 KB tarball" "$c" "${url}@bench/pkg-001/-/pkg-001-1.0.0.tgz"
  run "10 MB tarball" "$c" "${url}@bench/pkg-002/-/pkg-002-1.0.0.tgz"
done
echo "peak RSS under load: $(awk '/VmHWM/ {printf "%.1f MiB", $2/1024}' /proc/$pid/status)"
