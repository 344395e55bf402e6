#!/usr/bin/env bash
# Install the dashboard's browser packages at the exact versions in package-lock.json (npm ci) and
# copy the files the page loads into static/vendor/, which Django's staticfiles serves (no CDN).
# Usage: scripts/build_static.sh   (needs Node.js and npm; installs Debian's as root when missing)
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v npm >/dev/null; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "npm is missing: install Node.js and npm (Debian: apt-get install nodejs npm)" >&2
    exit 1
  fi
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
fi

npm ci --no-audit --no-fund --ignore-scripts --loglevel=error

mkdir -p static/vendor
# The source map travels with the bundle: its sourceMappingURL comment must resolve (collectstatic checks it).
cp node_modules/chart.js/dist/chart.umd.min.js node_modules/chart.js/dist/chart.umd.min.js.map static/vendor/
cp node_modules/chart.js/LICENSE.md static/vendor/chart.js.LICENSE.md
echo "static/vendor: $(ls static/vendor | tr '\n' ' ')"
