#!/usr/bin/env bash
# Vendor the console's front-end libraries from the npm registry into
# fleet_server/console/static/vendor/ (committed): the console is served to
# control rooms with no internet, so nothing is ever loaded from a CDN.
#
# Only the built, minified files a page loads are copied, with each package's
# licence file beside them; versions are pinned here and written to
# vendor/VERSIONS. Re-run after changing a version; review the diff.
#
#   Leaflet 1.9.4               BSD-2-Clause   map, pan/zoom, vector layers
#   leaflet.markercluster 1.5.3 MIT            clustering of 8,333 markers
#
# Other console pages may add packages below (one `vendor` line each).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$HERE/fleet_server/console/static/vendor"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# vendor <package> <version> <dest-subdir> <file in package>...
vendor() {
  local package="$1" version="$2" subdir="$3"
  shift 3
  (cd "$WORK" && npm pack --silent "${package}@${version}" >/dev/null)
  local tarball
  tarball="$(ls "$WORK"/*.tgz)"
  mkdir -p "$WORK/x" "$DEST/$subdir"
  tar -xzf "$tarball" -C "$WORK/x"
  for file in "$@"; do
    cp "$WORK/x/package/$file" "$DEST/$subdir/$(basename "$file")"
  done
  cp "$WORK"/x/package/*LICEN[CS]E* "$DEST/$subdir/LICENSE.txt"
  echo "${package} ${version} $(sha256sum "$tarball" | cut -d' ' -f1)" >>"$DEST/VERSIONS.new"
  rm -rf "$WORK/x" "$tarball"
}

rm -f "$DEST/VERSIONS.new"
vendor leaflet 1.9.4 leaflet dist/leaflet.js dist/leaflet.css
vendor leaflet.markercluster 1.5.3 markercluster \
  dist/leaflet.markercluster.js dist/MarkerCluster.css dist/MarkerCluster.Default.css
mv "$DEST/VERSIONS.new" "$DEST/VERSIONS"
echo "vendored into $DEST:"
cat "$DEST/VERSIONS"
