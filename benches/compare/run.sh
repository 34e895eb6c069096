#!/usr/bin/env sh
# Baton side by side with LiteLLM's proxy and the Portkey gateway:
# installs both into benches/compare/.peers/ (PyPI `litellm[proxy]` in a
# venv, npm `@portkey-ai/gateway`), builds Baton, then runs the comparison
# (benches/compare/main.rs) in a network namespace with only `lo`, so that
# no peer can reach any outside host, and writes BENCHMARKS.md.
#
# Usage: benches/compare/run.sh            (from anywhere; needs root or
#        unprivileged user namespaces for `unshare`)
# Knobs: BATON_COMPARE_RATES (25,100,500,1000,5000), BATON_COMPARE_SECONDS (3).
set -eu
cd "$(dirname "$0")/../.."
peers=benches/compare/.peers
mkdir -p "$peers/portkey"

if [ ! -x "$peers/litellm-venv/bin/litellm" ]; then
    python3 -m venv "$peers/litellm-venv"
    "$peers/litellm-venv/bin/pip" install -q --disable-pip-version-check 'litellm[proxy]'
fi
if [ ! -f "$peers/portkey/node_modules/@portkey-ai/gateway/build/start-server.js" ]; then
    (cd "$peers/portkey" && { [ -f package.json ] || npm init -y >/dev/null; } && npm install --no-audit --no-fund @portkey-ai/gateway)
fi

cargo bench --bench compare --no-run
bench=$(ls -t target/release/deps/compare-* | grep -v '\.d$' | head -n 1)

# Root can make the namespace directly; others map themselves to root in a
# user namespace first.
if [ "$(id -u)" = 0 ]; then
    isolate="unshare --net"
else
    isolate="unshare --user --map-root-user --net"
fi
BATON_COMPARE_PEERS="$(pwd)/$peers" BATON_COMPARE_OUT="$(pwd)/BENCHMARKS.md" \
    $isolate sh -c 'ip link set lo up && exec "$0"' "$bench"
echo "wrote BENCHMARKS.md"
