#!/usr/bin/env sh
# Installs Debian's chromium for the dashboard test (tests/gateway.rs drives
# it headless over the DevTools protocol). Does nothing when a chromium is
# already on the PATH. Needs root or sudo to install.
set -eu
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
else
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends chromium
chromium --version
