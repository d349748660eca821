#!/usr/bin/env bash
# Benchmark the metadata store and the hot read path (scripts/bench_store.py
# does the work; its docstring lists the phases and what each prints):
# a package published to 10,000 versions (PUT latency, database size, RSS,
# GET req/s), the hot path against nginx serving the same bytes (ratios and
# CPU per request, auth.type github and none), and readers' p99 while a
# writer publishes. BASELINE=REV also measures a build of REV in the same run.
#
# Usage: scripts/bench-store.sh [versions|ceiling|mixed|instances ...]
#   (default: versions ceiling mixed; instances needs python3 to import
#   moto, pip install "moto[server]==5.2.5", run by scripts/moto_server.py)
#   SECS=5 VERSIONS=10000 BASELINE=<git rev>
# Needs: wrk, nginx (Debian's nginx-light), python3; builds a release binary.
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in wrk nginx python3; do
  command -v "$tool" >/dev/null || { echo "$tool is needed: apt-get install -y wrk nginx-light python3" >&2; exit 1; }
done
cargo build --release --quiet
exec python3 scripts/bench_store.py "$@"
