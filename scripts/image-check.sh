#!/usr/bin/env bash
# Proves the container image: builds it with podman (offline, FROM scratch),
# exports its filesystem, and runs it with chroot using the image's own
# entrypoint, environment and user; checks that it serves /-/ping, that its
# health check passes, that it runs as the non-root user and writes its data
# under /data, and that SIGTERM stops it cleanly. Used by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
engine=(podman --storage-driver vfs)
export ENGINE=podman ENGINE_ARGS="--storage-driver vfs"
tag=localhost/nmr:ci
docker/build.sh "$tag" >/dev/null

work="$(mktemp -d)"
pid=""
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  "${engine[@]}" rm -f nmr-image-check >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

"${engine[@]}" rm -f nmr-image-check >/dev/null 2>&1 || true
"${engine[@]}" create --name nmr-image-check "$tag" >/dev/null
mkdir "$work/rootfs"
"${engine[@]}" export nmr-image-check | tar -x -C "$work/rootfs"
"${engine[@]}" image inspect "$tag" >"$work/inspect.json"

# The image's own entrypoint, environment, user, stop signal and health check.
python3 - "$work" <<'PY'
import json, shlex, sys
work = sys.argv[1]
image = json.load(open(f"{work}/inspect.json"))[0]
c = image["Config"]
assert c.get("User") == "65532:65532", c.get("User")
assert c.get("StopSignal") == "SIGTERM", c.get("StopSignal")
health = image.get("Healthcheck") or c.get("Healthcheck") or {}
assert health.get("Test") == ["CMD", "/nmr", "healthcheck"], health
assert "3000/tcp" in c.get("ExposedPorts", {}), c.get("ExposedPorts")
with open(f"{work}/run.sh", "w") as f:
    env = " ".join(shlex.quote(e) for e in c["Env"])
    entry = " ".join(shlex.quote(a) for a in c["Entrypoint"] + (c.get("Cmd") or []))
    f.write(f'exec env -i {env} chroot --userspec={c["User"]} "$1" {entry} "${{@:2}}"\n')
PY
ls -l "$work/rootfs" "$work/rootfs/data"

bash "$work/run.sh" "$work/rootfs" >"$work/out" 2>"$work/err" &
pid=$!
for _ in $(seq 100); do
  curl -sf http://127.0.0.1:3000/-/ping >/dev/null 2>&1 && break
  sleep 0.1
done
echo "GET /-/ping: $(curl -s -w ' %{http_code}' http://127.0.0.1:3000/-/ping)"
[ "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:3000/-/ping)" = 200 ]
bash "$work/run.sh" "$work/rootfs" healthcheck && echo "healthcheck: ok"
uid="$(ps -o uid= -p "$(pgrep -P "$pid" -f /nmr || echo "$pid")" | tr -d ' ')"
echo "running as uid $uid"
[ "$uid" = 65532 ]
[ -n "$(ls -A "$work/rootfs/data/db")" ] && echo "LevelDB created under /data/db"
kill -TERM "$pid"
wait "$pid" && echo "stopped cleanly on SIGTERM"
pid=""
grep -q "shut down cleanly" "$work/err"
echo "image check passed"
