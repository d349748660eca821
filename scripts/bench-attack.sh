#!/usr/bin/env bash
# Benchmark nmr under hostile traffic (scripts/bench_attack.py does the work).
#
# A legitimate client (wrk, c=16, with a GitHub token whose answers are
# cached) reads a hot packument, first alone, then while at the same time
# 20 anonymous clients send 50 MiB bodies, 200 sockets trickle headers and
# 1,000 requests per second carry junk tokens. Prints both p99s and their
# ratio, nmr's peak RSS under attack, and how many GitHub calls the junk
# caused against the per-address budget. All traffic stays on loopback.
#
# Usage: scripts/bench-attack.sh [seconds-per-run]   (default 10)
# Needs: wrk (apt-get install wrk), python3; builds a release binary.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install -y wrk" >&2; exit 1; }
cargo build --release --quiet
SECS="${1:-10}" python3 scripts/bench_attack.py
