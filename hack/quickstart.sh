#!/usr/bin/env bash
# jobforge quickstart: one command, a real build end to end on the embedded dev stack.
#
#   ./hack/quickstart.sh          # build, test and publish examples/hello-world, then keep the stack up
#   ./hack/quickstart.sh --once   # same, then stop everything it started
#   ./hack/quickstart.sh --check-only  # only check it has what it needs to get the binaries; start nothing
#   ./hack/quickstart.sh --multi-stage [--once]
#                                 # also build examples/multi-stage (FROM debian:bookworm-slim, a build
#                                 # arg, a build secret from Vault, a target stage): a Debian base
#                                 # image is made with debootstrap (root; ~3 minutes the first time,
#                                 # then cached under target/docker-images), served by the local
#                                 # registry, which jobforge/config names as docker.io's mirror
#   ./hack/quickstart.sh --profile docker [--once]
#                                 # the same build through the docker profile: a container engine
#                                 # (podman's Docker Engine API with runc, hack/docker-engine.sh),
#                                 # the tool image built from Debian's packages (cached under
#                                 # target/docker-images; the first build takes ~3 minutes), and
#                                 # every phase a container of the dev stack's Nomad docker driver
#
# It installs what is missing (buildah, skopeo, docker-registry, busybox-static, git; apt, only when
# absent), builds the workspace, starts the dev stack (Consul, Nomad, Vault emulators), a registry and
# a git daemon on loopback, starts jobforge-controller with the raw_exec profile (its Vault token
# made from examples/deploy/vault-policy-controller.hcl; the tasks of namespace default get
# examples/deploy/vault-policy-namespace.hcl through hack/vault-team-policy.sh), writes the Vault
# secret the example references, submits examples/hello-world/buildrequest.yaml with the jobforge CLI
# and follows it to the end. Ctrl-C stops everything it started.
#
# Ports (override with the environment): CONSUL_PORT=8500 NOMAD_PORT=4646 VAULT_PORT=8200
# CONTROLLER_PORT=9090 REGISTRY_PORT=5000 GIT_PORT=9418. State lives in JOBFORGE_STATE
# (default .state/quickstart), wiped at each start. JOBFORGE_BIN_DIR=<dir> uses binaries already
# built there instead of running cargo (the test suite does); cargo is then not needed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

ONCE=0
CHECK_ONLY=0
PROFILE=raw_exec
MULTI_STAGE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --once) ONCE=1; shift ;;
    --check-only) CHECK_ONLY=1; shift ;;
    --multi-stage) MULTI_STAGE=1; shift ;;
    --profile)
      PROFILE=${2:-}; shift 2 || true
      case "$PROFILE" in raw_exec|docker) ;; *) echo "quickstart: --profile raw_exec|docker" >&2; exit 2 ;; esac ;;
    -h|--help) sed -n '2,31p' "$0"; exit 0 ;;
    *) echo "quickstart: unknown argument $1 (allowed: --once, --check-only, --multi-stage, --profile raw_exec|docker)" >&2; exit 2 ;;
  esac
done

CONSUL_PORT=${CONSUL_PORT:-8500}
NOMAD_PORT=${NOMAD_PORT:-4646}
VAULT_PORT=${VAULT_PORT:-8200}
CONTROLLER_PORT=${CONTROLLER_PORT:-9090}
REGISTRY_PORT=${REGISTRY_PORT:-5000}
GIT_PORT=${GIT_PORT:-9418}
STATE=${JOBFORGE_STATE:-$ROOT/.state/quickstart}

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
die() { printf 'quickstart: %s\n' "$*" >&2; exit 1; }

BIN=${JOBFORGE_BIN_DIR:-$ROOT/target/debug}

# check_binaries: with JOBFORGE_BIN_DIR the three binaries must be there (cargo is not needed);
# without it the quickstart builds them, so cargo must be installed.
check_binaries() {
  if [ -n "${JOBFORGE_BIN_DIR:-}" ]; then
    for b in jobforge jobforge-controller jobforge-devstack; do
      [ -x "$BIN/$b" ] || die "JOBFORGE_BIN_DIR=$BIN has no executable $b"
    done
  else
    command -v cargo >/dev/null || die "cargo is not installed: install Rust from your distribution or rustup (or set JOBFORGE_BIN_DIR to prebuilt binaries)"
  fi
}

if [ "$CHECK_ONLY" -eq 1 ]; then
  check_binaries
  echo "quickstart: ready to get the binaries (${JOBFORGE_BIN_DIR:+prebuilt in }${JOBFORGE_BIN_DIR:-cargo build})"
  exit 0
fi

PIDS=()
ENGINE_STATE=""
cleanup() {
  local code=$?
  trap - EXIT INT TERM
  if [ ${#PIDS[@]} -gt 0 ]; then
    say "stopping what the quickstart started"
    # Newest first: the controller and the dev stack (which removes its containers) go before
    # the engine and the registry they use.
    for ((i=${#PIDS[@]}-1; i>=0; i--)); do
      pid=${PIDS[$i]}
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -KILL "$pid" 2>/dev/null || true
    done
  fi
  if [ -n "$ENGINE_STATE" ]; then
    hack/docker-engine.sh clean --state "$ENGINE_STATE" || true
  fi
  exit "$code"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in "$CONSUL_PORT" "$NOMAD_PORT" "$VAULT_PORT" "$CONTROLLER_PORT" "$REGISTRY_PORT" "$GIT_PORT"; do
  port_free "$p" || die "port $p on 127.0.0.1 is in use (is another quickstart running? override with the *_PORT variables)"
done

say "installing missing prerequisites"
hack/prereqs.sh --no-python || die "prerequisites could not be installed (see above)"
check_binaries

if [ -z "${JOBFORGE_BIN_DIR:-}" ]; then
  say "building jobforge"
  cargo build --locked -q -p jobforge-devstack -p jobforge-controller -p jobforge-cli
fi

if [ -d "$STATE/engine" ]; then hack/docker-engine.sh clean --state "$STATE/engine" || true; fi
rm -rf "$STATE" && mkdir -p "$STATE"/{registry,git,devstack,logs}

# wait_for URL WHAT: waits up to 30 s for URL to answer.
wait_for() {
  for _ in $(seq 1 300); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  die "$2 did not come up at $1 (logs in $STATE/logs)"
}

say "starting the registry on 127.0.0.1:$REGISTRY_PORT"
cat >"$STATE/registry/config.yml" <<EOF
version: 0.1
log: {level: warn}
storage:
  filesystem: {rootdirectory: $STATE/registry/data}
  delete: {enabled: true}
http: {addr: 127.0.0.1:$REGISTRY_PORT}
EOF
docker-registry serve "$STATE/registry/config.yml" >"$STATE/logs/registry.log" 2>&1 &
PIDS+=($!)
wait_for "http://127.0.0.1:$REGISTRY_PORT/v2/" "the registry"

say "serving examples/hello-world as a git repository on git://127.0.0.1:$GIT_PORT/"
repo="$STATE/git/hello-world.git"
work="$STATE/git/work"
mkdir -p "$work"
cp -r examples/hello-world/. "$work/"
cp "$(command -v busybox)" "$work/busybox"
git -C "$work" init -q -b main
git -C "$work" -c user.name=quickstart -c user.email=quickstart@localhost add -A
git -C "$work" -c user.name=quickstart -c user.email=quickstart@localhost commit -q -m "hello-world example"
git clone -q --bare "$work" "$repo"
touch "$repo/git-daemon-export-ok"
git daemon --reuseaddr --listen=127.0.0.1 --port="$GIT_PORT" --base-path="$STATE/git" --export-all \
  "$STATE/git" >"$STATE/logs/git-daemon.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do git ls-remote "git://127.0.0.1:$GIT_PORT/hello-world.git" >/dev/null 2>&1 && break; sleep 0.1; done
git ls-remote "git://127.0.0.1:$GIT_PORT/hello-world.git" >/dev/null || die "git daemon did not come up"

if [ "$MULTI_STAGE" -eq 1 ]; then
  say "serving examples/multi-stage as git://127.0.0.1:$GIT_PORT/multi-stage.git"
  ms_work="$STATE/git/ms-work"
  mkdir -p "$ms_work"
  cp -r examples/multi-stage/. "$ms_work/"
  git -C "$ms_work" init -q -b main
  git -C "$ms_work" -c user.name=quickstart -c user.email=quickstart@localhost add -A
  git -C "$ms_work" -c user.name=quickstart -c user.email=quickstart@localhost commit -q -m "multi-stage example"
  git clone -q --bare "$ms_work" "$STATE/git/multi-stage.git"
  touch "$STATE/git/multi-stage.git/git-daemon-export-ok"
  say "making (or reusing) the Debian base image and serving it as 127.0.0.1:$REGISTRY_PORT/library/debian:bookworm-slim"
  hack/docker-engine.sh debian-base --registry "127.0.0.1:$REGISTRY_PORT" >/dev/null \
    || die "the Debian base image could not be made (see above)"
fi

DOCKER_ARGS=()
if [ "$PROFILE" = docker ]; then
  ENGINE_STATE="$STATE/engine"
  say "starting the container engine (podman system service, runc) on unix://$ENGINE_STATE/engine.sock"
  hack/docker-engine.sh serve --state "$ENGINE_STATE" --insecure-registry "127.0.0.1:$REGISTRY_PORT" \
    >"$STATE/logs/engine.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 1 300); do
    curl -fsS -o /dev/null --unix-socket "$ENGINE_STATE/engine.sock" http://docker/_ping 2>/dev/null && break
    sleep 0.1
  done
  curl -fsS -o /dev/null --unix-socket "$ENGINE_STATE/engine.sock" http://docker/_ping \
    || die "the container engine did not come up (log: $STATE/logs/engine.log)"
  say "building (or reusing) the docker profile's tool image from Debian's packages"
  TOOLS_IMAGE=$(hack/docker-engine.sh images --registry "127.0.0.1:$REGISTRY_PORT") \
    || die "the tool image could not be built (see above)"
  DOCKER_ARGS=(--docker-host "unix://$ENGINE_STATE/engine.sock")
fi

say "starting the dev stack (Consul :$CONSUL_PORT, Nomad :$NOMAD_PORT, Vault :$VAULT_PORT)"
"$BIN/jobforge-devstack" --consul-addr "127.0.0.1:$CONSUL_PORT" --nomad-addr "127.0.0.1:$NOMAD_PORT" \
  --vault-addr "127.0.0.1:$VAULT_PORT" --data-dir "$STATE/devstack" "${DOCKER_ARGS[@]}" \
  >"$STATE/logs/devstack.log" 2>&1 &
PIDS+=($!)
wait_for "http://127.0.0.1:$CONSUL_PORT/v1/status/leader" "the Consul emulator"

export CONSUL_HTTP_ADDR="127.0.0.1:$CONSUL_PORT"
export NOMAD_ADDR="http://127.0.0.1:$NOMAD_PORT"
export VAULT_ADDR="http://127.0.0.1:$VAULT_PORT"
export VAULT_TOKEN=root

# The example's namespace is `default`: its secrets live under secret/data/jobforge/default/ (the
# controller refuses a request naming a Vault path outside its namespace's prefix, docs/tenancy.md).
say "writing the Vault secret the example references (secret/data/jobforge/default/registry)"
curl -fsS -X POST -H "X-Vault-Token: $VAULT_TOKEN" -H 'Content-Type: application/json' \
  --data '{"data":{"username":"quickstart","password":"quickstart"}}' \
  "$VAULT_ADDR/v1/secret/data/jobforge/default/registry" >/dev/null || die "could not write the Vault secret"
if [ "$MULTI_STAGE" -eq 1 ]; then
  say "writing the build secret of examples/multi-stage (secret/data/jobforge/default/release)"
  curl -fsS -X POST -H "X-Vault-Token: $VAULT_TOKEN" -H 'Content-Type: application/json' \
    --data "{\"data\":{\"token\":\"quickstart-release-$(date +%s)\"}}" \
    "$VAULT_ADDR/v1/secret/data/jobforge/default/release" >/dev/null || die "could not write the Vault secret"
fi

# Vault enforces ACL policies: load the shipped ones through Vault's API, as an operator would
# (`vault policy write NAME FILE`), and give the controller a least-privilege token.
vault_policy() {
  python3 -c 'import json, sys; print(json.dumps({"policy": open(sys.argv[1]).read()}))' "$2" |
    curl -fsS -X PUT -H "X-Vault-Token: $VAULT_TOKEN" -H 'Content-Type: application/json' --data @- \
      "$VAULT_ADDR/v1/sys/policies/acl/$1" >/dev/null || die "could not write the Vault policy $1"
}
say "loading the Vault policies jobforge-default (the tasks of namespace default) and jobforge-controller from examples/deploy/"
hack/vault-team-policy.sh default >/dev/null || die "could not write the Vault policy jobforge-default"
vault_policy jobforge-controller examples/deploy/vault-policy-controller.hcl
CONTROLLER_VAULT_TOKEN=$(curl -fsS -X POST -H "X-Vault-Token: $VAULT_TOKEN" -H 'Content-Type: application/json' \
  --data '{"policies":["jobforge-controller"],"display_name":"jobforge-controller"}' \
  "$VAULT_ADDR/v1/auth/token/create" |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["auth"]["client_token"])') ||
  die "could not create the controller's Vault token"

# Issue 20: every published image is signed by the controller with a Vault transit key that never
# leaves Vault (docs/supply-chain.md), as an operator sets it up: `vault secrets enable transit`,
# `vault write -f transit/keys/jobforge type=ecdsa-p256`.
say "enabling Vault's transit engine and creating the signing key transit/keys/jobforge (ecdsa-p256)"
curl -fsS -X POST -H "X-Vault-Token: $VAULT_TOKEN" -H 'Content-Type: application/json' \
  --data '{"type":"transit"}' "$VAULT_ADDR/v1/sys/mounts/transit" >/dev/null ||
  die "could not enable the transit engine"
curl -fsS -X POST -H "X-Vault-Token: $VAULT_TOKEN" -H 'Content-Type: application/json' \
  --data '{"type":"ecdsa-p256"}' "$VAULT_ADDR/v1/transit/keys/jobforge" >/dev/null ||
  die "could not create the transit key jobforge"

# Webhooks may reach only public addresses unless the operator allowlists CIDRs; everything here
# (a receiver you try, the example in examples/webhook-receiver/) runs on this machine's loopback,
# so the quickstart allows 127.0.0.0/8 explicitly. Never do that where Consul, Nomad or Vault
# listen on loopback for others (docs/tenancy.md).
config='"tenancy":{"webhook_allow_cidrs":["127.0.0.0/8"]},"signing":{"transit_key":"jobforge","builder_id":"https://jobforge.example/quickstart"}'
if [ "$MULTI_STAGE" -eq 1 ]; then
  # FROM debian:bookworm-slim means docker.io/library/debian:bookworm-slim: the local registry
  # is docker.io's mirror (plain HTTP), so the pull never leaves this machine.
  config="\"build\":{\"registry_mirrors\":[{\"prefix\":\"docker.io\",\"mirror\":\"127.0.0.1:$REGISTRY_PORT\",\"insecure\":true}]},$config"
fi
if [ "$PROFILE" = docker ]; then
  # The tool containers share the client's network: the registry and git daemon listen on its
  # loopback. On a real cluster leave docker_network_mode unset.
  config="\"buildah_image\":\"$TOOLS_IMAGE\",\"docker_network_mode\":\"host\",$config"
fi
say "writing the controller's defaults to jobforge/config: {$config}"
curl -fsS -X PUT --data "{$config}" \
  "http://$CONSUL_HTTP_ADDR/v1/kv/jobforge/config" >/dev/null || die "could not write jobforge/config"

say "starting jobforge-controller ($PROFILE profile, metrics and health on 127.0.0.1:$CONTROLLER_PORT)"
VAULT_TOKEN="$CONTROLLER_VAULT_TOKEN" "$BIN/jobforge-controller" --http-addr "127.0.0.1:$CONTROLLER_PORT" --profile "$PROFILE" \
  --registry-tls-verify=false >"$STATE/logs/controller.log" 2>&1 &
PIDS+=($!)
wait_for "http://127.0.0.1:$CONTROLLER_PORT/readyz" "jobforge-controller"

request="$STATE/buildrequest.yaml"
sed -e "s|git://127.0.0.1:9418/|git://127.0.0.1:$GIT_PORT/|" -e "s|127.0.0.1:5000/|127.0.0.1:$REGISTRY_PORT/|" \
  examples/hello-world/buildrequest.yaml >"$request"

say "submitting examples/hello-world/buildrequest.yaml"
set +e
"$BIN/jobforge" submit "$request" --wait
result=$?
set -e
if [ "$result" -ne 0 ]; then
  echo
  "$BIN/jobforge" get hello || true
  die "the build did not succeed (controller log: $STATE/logs/controller.log)"
fi

reference=$("$BIN/jobforge" get hello -o json | sed -n 's/.*"reference": *"\([^"]*\)".*/\1/p' | head -n1)
digest=$("$BIN/jobforge" get hello -o json | sed -n 's/.*"digest": *"\([^"]*\)".*/\1/p' | head -n1)
echo
say "Succeeded: $reference"
echo "    digest:   $digest"
echo "    tags:     $(curl -fsS "http://127.0.0.1:$REGISTRY_PORT/v2/demo/hello-world/tags/list")"
echo
say "verifying its signature and SLSA provenance with the transit public key (jobforge verify)"
"$BIN/jobforge" verify "$reference" --insecure-registry || die "jobforge verify failed (controller log: $STATE/logs/controller.log)"
cat <<EOF

Look around:
    export CONSUL_HTTP_ADDR=$CONSUL_HTTP_ADDR
    $BIN/jobforge get hello
    $BIN/jobforge logs hello --phase build
    VAULT_ADDR=$VAULT_ADDR VAULT_TOKEN=root $BIN/jobforge verify $reference --insecure-registry
    curl -s http://$CONSUL_HTTP_ADDR/v1/kv/jobforge/status/default/hello?raw
    curl -s http://127.0.0.1:$REGISTRY_PORT/v2/demo/hello-world/tags/list
    curl -s http://127.0.0.1:$CONTROLLER_PORT/metrics | grep ^jobforge_
EOF

if [ "$MULTI_STAGE" -eq 1 ]; then
  ms_request="$STATE/multi-stage.yaml"
  sed -e "s|git://127.0.0.1:9418/|git://127.0.0.1:$GIT_PORT/|" -e "s|127.0.0.1:5000/|127.0.0.1:$REGISTRY_PORT/|" \
    examples/multi-stage/buildrequest.yaml >"$ms_request"
  echo
  say "submitting examples/multi-stage/buildrequest.yaml (FROM debian:bookworm-slim through the mirror)"
  "$BIN/jobforge" submit "$ms_request" --wait || {
    "$BIN/jobforge" get multi-stage || true
    die "the multi-stage build did not succeed (controller log: $STATE/logs/controller.log)"
  }
  say "Succeeded: $("$BIN/jobforge" get multi-stage -o json | sed -n 's/.*"reference": *"\([^"]*\)".*/\1/p' | head -n1)"
fi

if [ "$ONCE" -eq 1 ]; then
  exit 0
fi
echo
say "the stack keeps running; stop with Ctrl-C (it stops everything the quickstart started)"
wait
