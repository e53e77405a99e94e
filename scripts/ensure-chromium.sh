#!/usr/bin/env bash
# Make sure a Chromium is on PATH for the browser test (tests/test_demo.py); idempotent.
# Playwright drives the system's Chromium: it never downloads a browser of its own.
set -euo pipefail

found() {
    command -v chromium || command -v chromium-browser || command -v google-chrome || true
}

if [ -n "$(found)" ]; then
    exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    if [ -n "$(found)" ]; then
        exit 0
    fi
fi
echo "ensure-chromium: no Chromium found; install your distribution's chromium package" \
     "(Debian/Ubuntu: sudo apt-get install chromium) so that \`chromium\` is on PATH" >&2
exit 1
