#!/usr/bin/env bash
# Runs every test of switchboard, as CI does. It installs what the tests need
# when it is missing (Debian packages; root or sudo), checks that generated
# code is up to date, vets every module, and runs every module's tests.
set -euo pipefail
cd "$(dirname "$0")/.."
# This script installs every dependency the integration tests need, so from
# here on a missing one is a failure, not a reason to skip: the tests' guards
# fail instead of skipping when CI is set.
export CI="${CI:-1}"

need=()
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || need+=(chromium)
command -v git >/dev/null 2>&1 || need+=(git)
# Integration tests run against the real servers (services/lb, services/dns).
[ -x /usr/sbin/haproxy ] || command -v haproxy >/dev/null 2>&1 || need+=(haproxy)
[ -x /usr/sbin/knotd ] || command -v knotd >/dev/null 2>&1 || need+=(knot)
command -v kdig >/dev/null 2>&1 || need+=(knot-dnsutils)
command -v kzonecheck >/dev/null 2>&1 || need+=(knot-dnssecutils)
# services/watcher runs against a real Graphite (carbon + graphite-web).
[ -x /usr/bin/carbon-cache ] || need+=(graphite-carbon)
[ -d /usr/lib/python3/dist-packages/graphite ] || need+=(graphite-web)
# deploy/ checks the systemd units with systemd-analyze verify.
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
if [ ${#need[@]} -gt 0 ]; then
  echo "== installing test dependencies: ${need[*]}"
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

BUF="go run github.com/bufbuild/buf/cmd/buf@v1.75.0"
echo "== proto: lint, breaking changes, generated code up to date"
(
  cd proto
  $BUF lint
  # The baseline image is the last published schema; refresh it with
  # `buf build -o buf.baseline.binpb` only when a release is cut.
  $BUF breaking --against buf.baseline.binpb
  $BUF generate
)
# status, not diff: a newly generated file that was never committed counts too.
if [ -n "$(git status --porcelain -- proto/ 2>/dev/null)" ]; then
  git status --short -- proto/
  echo "generated code in proto/ is out of date: run (cd proto && $BUF generate) and commit" >&2
  exit 1
fi

mods=$(go list -m -f '{{.Dir}}')
echo "== gofmt"
unformatted=$(gofmt -l $mods | grep -v '\.pb\.go$' || true)
if [ -n "$unformatted" ]; then
  echo "gofmt would change: $unformatted" >&2
  exit 1
fi

echo "== each module builds and vets on its own (GOWORK=off)"
for m in $mods; do
  (cd "$m" && GOWORK=off go build ./... && GOWORK=off go vet ./...)
done

echo "== tests, each module on its own (GOWORK=off)"
failed=()
for m in $mods; do
  echo "-- ${m#$PWD/}"
  (cd "$m" && GOWORK=off go test -race -count=1 -timeout 15m ./...) || failed+=("${m#$PWD/}")
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "tests failed in: ${failed[*]}" >&2
  exit 1
fi
