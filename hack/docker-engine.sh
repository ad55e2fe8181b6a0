#!/usr/bin/env bash
# The container engine of the dev stack's Nomad `docker` driver, and the images the docker
# profile needs, all from Debian's packages (nothing is pulled from the internet).
#
#   hack/docker-engine.sh serve  --state DIR [--insecure-registry HOST:PORT]...
#       Runs `podman system service` on unix://DIR/engine.sock (Docker Engine API, /v1.41) in the
#       foreground (exec: the caller owns the process and its group). Own storage under DIR, so
#       nothing touches the machine's containers. Two quirks of our machines are configured here:
#       the runtime is runc (crun refuses the hybrid cgroup layout: "cgroups in hybrid mode not
#       supported"), and nofile/nproc ulimits are set at the current soft limits (the machine has
#       no CAP_SYS_RESOURCE, so podman's defaults fail: "setrlimit RLIMIT_NPROC: Operation not
#       permitted"). Registries given with --insecure-registry are plain HTTP.
#   hack/docker-engine.sh clean  --state DIR
#       Removes every container, pod and volume of the engine at DIR and its storage.
#   hack/docker-engine.sh images [--registry HOST:PORT] [--repo jobforge/tools]
#       Builds (once per recipe, cached under target/docker-images/<hash>/) the tool image of the
#       docker profile: a Debian bookworm rootfs made with debootstrap (minbase, made once per
#       machine and shared with debian-base: minbase_rootfs below), then buildah,
#       skopeo, git and ca-certificates installed with apt from Debian's mirror; saves it as an
#       OCI archive and pushes it to HOST:PORT/<repo>:<hash> (plain HTTP). Prints the reference;
#       without --registry only fills the cache (hack/test.sh does, once, before the tests).
#       Concurrent callers wait for one build (flock on target/docker-images/.lock).
#       JOBFORGE_DEBIAN_MIRROR overrides the mirror (default: the first deb.debian.org-style URI
#       of /etc/apt, else http://deb.debian.org/debian).
#   hack/docker-engine.sh debian-base [--registry HOST:PORT[/PATH]]
#       A Debian bookworm base image made here (issue 19): debootstrap --variant=minbase from
#       Debian's mirror (the same JOBFORGE_DEBIAN_MIRROR rule as `images`), apt sources pointing
#       at that mirror, apt lists and caches removed; cached as an OCI archive under
#       target/docker-images/debian-<hash>/ (flock as above) and pushed as
#       HOST:PORT[/PATH]/library/debian:bookworm-slim, the name `FROM debian:bookworm-slim`
#       resolves to through a registry mirror of docker.io (build.registry_mirrors). Prints the
#       reference; without --registry only fills the cache and prints the archive.
#   hack/docker-engine.sh busybox --registry HOST:PORT
#       A tiny image of Debian's busybox-static (/bin/sh and the applets), for the driver's
#       conformance tests: cached as an OCI archive, pushed to HOST:PORT/jobforge/busybox:<hash>.
set -euo pipefail
cd "$(dirname "$0")/.."
root_dir=$PWD

die() { echo "docker-engine: $*" >&2; exit 1; }

cmd=${1:-}; shift || true
state=""; registry=""; repo="jobforge/tools"; insecure=()
while [ $# -gt 0 ]; do
  case "$1" in
    --state) state=$2; shift 2 ;;
    --registry) registry=$2; shift 2 ;;
    --repo) repo=$2; shift 2 ;;
    --insecure-registry) insecure+=("$2"); shift 2 ;;
    *) die "unknown argument $1" ;;
  esac
done

# minbase_rootfs DEST SUITE MIRROR: a Debian minbase rootfs at DEST, from `debootstrap
# --variant=minbase` once per machine: both images below start from it, so a clean machine (CI)
# runs debootstrap once, not twice. Cached as a tar under target/docker-images/minbase-<hash>.tar;
# the caller holds the flock on target/docker-images/.lock. Needs root when the cache is empty.
minbase_rootfs() {
  local dest=$1 suite=$2 mirror=$3 tar work
  tar="$root_dir/target/docker-images/minbase-$(minbase_key "$suite").tar"
  if [ ! -s "$tar" ]; then
    [ "$(id -u)" -eq 0 ] || die "debootstrap needs root (or run once as root to fill the cache)"
    work=$(mktemp -d "$root_dir/target/docker-images-work.XXXXXX")
    echo "docker-engine: debootstrap --variant=minbase $suite from $mirror (once per machine, about a minute)" >&2
    if ! debootstrap --variant=minbase "$suite" "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1; then
      tail -20 "$work/debootstrap.log" >&2
      rm -rf "$work"
      die "debootstrap failed"
    fi
    tar -C "$work/rootfs" --numeric-owner -cf "$tar.tmp" . && mv "$tar.tmp" "$tar"
    rm -rf "$work"
  fi
  mkdir -p "$dest"
  tar -C "$dest" --numeric-owner -xpf "$tar"
}

# minbase_key SUITE: the minbase cache key (minbase_rootfs's own text, the suite, the machine);
# part of both image keys, so a changed minbase rebuilds them.
minbase_key() {
  { sed -n '/^minbase_rootfs() {/,/^}/p' "$0"; echo "$1"; uname -m; } | sha256sum | cut -c1-16
}

podman_at() {
  CONTAINERS_CONF="$state/containers.conf" CONTAINERS_REGISTRIES_CONF="$state/registries.conf" \
    podman --root "$state/root" --runroot "$state/run" --storage-driver overlay "$@"
}

case "$cmd" in
serve)
  [ -n "$state" ] || die "serve needs --state DIR"
  command -v podman >/dev/null && command -v runc >/dev/null \
    || die "podman and runc are missing: run hack/prereqs.sh"
  mkdir -p "$state"
  state=$(cd "$state" && pwd)
  mkdir -p "$state/tmp" "$state/volumes"
  nofile=$(ulimit -n); nproc=$(ulimit -u)
  [ "$nproc" = unlimited ] && nproc=32768
  [ "$nofile" = unlimited ] && nofile=65536
  # podman lowers its own RLIMIT_NPROC to 32768 at start (see /proc/<pid>/limits of the
  # service), and runc cannot raise a container's limit above its parent's.
  [ "$nproc" -gt 32768 ] && nproc=32768
  cat >"$state/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]
log_driver = "k8s-file"
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
# Engines of concurrent tests must not share podman's default lock segment (/dev/shm/libpod_lock,
# numbered per engine: two engines would lock each other's containers) nor its tmp dir.
lock_type = "file"
tmp_dir = "$state/tmp"
volume_path = "$state/volumes"
EOF
  {
    echo 'unqualified-search-registries = []'
    for r in "${insecure[@]}"; do
      printf '[[registry]]\nlocation = "%s"\ninsecure = true\n' "$r"
    done
  } >"$state/registries.conf"
  rm -f "$state/engine.sock"
  # conmon leaves an empty `oom` file in its working directory when a container is OOM-killed
  # (observed with podman 4.3.1 / conmon 2.1.6 on cgroups v1): keep it inside the state dir.
  cd "$state"
  exec env CONTAINERS_CONF="$state/containers.conf" CONTAINERS_REGISTRIES_CONF="$state/registries.conf" \
    podman --root "$state/root" --runroot "$state/run" --storage-driver overlay \
    system service --time=0 "unix://$state/engine.sock"
  ;;
clean)
  [ -n "$state" ] || die "clean needs --state DIR"
  [ -d "$state" ] || exit 0
  podman_at rm --all --force >/dev/null 2>&1 || true
  podman_at volume rm --all --force >/dev/null 2>&1 || true
  podman_at system reset --force >/dev/null 2>&1 || true
  rm -rf "$state"
  ;;
images)
  for t in debootstrap buildah skopeo flock; do
    command -v "$t" >/dev/null || die "$t is missing: run hack/prereqs.sh"
  done
  [ "$(id -u)" -eq 0 ] || die "debootstrap needs root (or run once as root to fill the cache)"
  mirror=${JOBFORGE_DEBIAN_MIRROR:-}
  if [ -z "$mirror" ]; then
    mirror=$(grep -hoE '^URIs: *http[^ ]*debian/?$' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1 | sed 's/^URIs: *//') || true
    mirror=${mirror:-http://deb.debian.org/debian}
  fi
  suite=bookworm
  packages="buildah skopeo git ca-certificates"
  # The cache key: the recipe (this section of the script) and its inputs.
  recipe=$(sed -n '/^# recipe:begin/,/^# recipe:end/p' "$0")
  key=$(printf '%s\n%s\n%s\n%s\n%s\n' "$recipe" "$suite" "$packages" "$(uname -m)" "$(minbase_key "$suite")" | sha256sum | cut -c1-16)
  cache="$root_dir/target/docker-images/$key"
  archive="$cache/tools.oci.tar"
  mkdir -p "$root_dir/target/docker-images"
  exec 9>"$root_dir/target/docker-images/.lock"
  flock 9
  if [ ! -s "$archive" ]; then
    started=$(date +%s)
    echo "docker-engine: building the tool image $key (debootstrap $suite from $mirror; first run takes minutes)" >&2
    work=$(mktemp -d "$root_dir/target/docker-images-work.XXXXXX")
    bs=(buildah --root "$work/storage" --runroot "$work/run" --storage-driver vfs)
    cleanup() {
      "${bs[@]}" rm --all >/dev/null 2>&1 || true
      umount -R "$work/rootfs/proc" >/dev/null 2>&1 || true
      rm -rf "$work"
    }
    trap cleanup EXIT
# recipe:begin
    minbase_rootfs "$work/rootfs" "$suite" "$mirror"
    printf 'deb %s %s main\n' "$mirror" "$suite" >"$work/rootfs/etc/apt/sources.list"
    cp /etc/resolv.conf "$work/rootfs/etc/resolv.conf"
    mount -t proc proc "$work/rootfs/proc"
    chroot "$work/rootfs" /usr/bin/env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    chroot "$work/rootfs" /usr/bin/env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -qq --no-install-recommends $packages >"$work/apt.log" 2>&1 \
      || { tail -20 "$work/apt.log" >&2; die "apt-get install in the rootfs failed"; }
    chroot "$work/rootfs" apt-get clean
    umount "$work/rootfs/proc"
    rm -rf "$work/rootfs/var/lib/apt/lists/"* "$work/rootfs/var/cache/apt/"*.bin
    : >"$work/rootfs/etc/resolv.conf"
    # Unprivileged buildah inside a container: vfs storage, chroot isolation.
    mkdir -p "$work/rootfs/etc/containers"
    printf '[storage]\ndriver = "vfs"\nrunroot = "/run/containers/storage"\ngraphroot = "/var/lib/containers/storage"\n' \
      >"$work/rootfs/etc/containers/storage.conf"
    ctr=$("${bs[@]}" from scratch)
    mnt=$("${bs[@]}" mount "$ctr")
    tar -C "$work/rootfs" --exclude=./proc/* -cf - . | tar -C "$mnt" -xf -
    "${bs[@]}" umount "$ctr" >/dev/null
    "${bs[@]}" config --env STORAGE_DRIVER=vfs --env BUILDAH_ISOLATION=chroot \
      --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
      --cmd /bin/sh --label org.opencontainers.image.title=jobforge-tools "$ctr"
    mkdir -p "$cache"
    "${bs[@]}" commit --quiet "$ctr" "oci-archive:$archive.tmp" >/dev/null
# recipe:end
    mv "$archive.tmp" "$archive"
    echo "docker-engine: tool image cached at $archive after $(( $(date +%s) - started )) s" >&2
  fi
  flock -u 9
  if [ -z "$registry" ]; then
    echo "$archive"
    exit 0
  fi
  ref="$registry/$repo:$key"
  skopeo copy --quiet --dest-tls-verify=false "oci-archive:$archive" "docker://$ref" >&2 \
    || die "pushing $ref failed"
  echo "$ref"
  ;;
debian-base)
  for t in debootstrap buildah skopeo flock; do
    command -v "$t" >/dev/null || die "$t is missing: run hack/prereqs.sh"
  done
  mirror=${JOBFORGE_DEBIAN_MIRROR:-}
  if [ -z "$mirror" ]; then
    mirror=$(grep -hoE '^URIs: *http[^ ]*debian/?$' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1 | sed 's/^URIs: *//') || true
    mirror=${mirror:-http://deb.debian.org/debian}
  fi
  suite=bookworm
  recipe=$(sed -n '/^# debian-recipe:begin/,/^# debian-recipe:end/p' "$0")
  key=$(printf '%s\n%s\n%s\n%s\n' "$recipe" "$suite" "$(uname -m)" "$(minbase_key "$suite")" | sha256sum | cut -c1-16)
  cache="$root_dir/target/docker-images/debian-$key"
  archive="$cache/debian.oci.tar"
  mkdir -p "$root_dir/target/docker-images"
  exec 9>"$root_dir/target/docker-images/.lock"
  flock 9
  if [ ! -s "$archive" ]; then
    [ "$(id -u)" -eq 0 ] || die "debootstrap needs root (or run once as root to fill the cache)"
    started=$(date +%s)
    echo "docker-engine: making the Debian $suite base image $key (from the minbase rootfs)" >&2
    work=$(mktemp -d "$root_dir/target/docker-images-work.XXXXXX")
    bs=(buildah --root "$work/storage" --runroot "$work/run" --storage-driver vfs)
    trap '"${bs[@]}" rm --all >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
# debian-recipe:begin
    minbase_rootfs "$work/rootfs" "$suite" "$mirror"
    # Debian's own apt sources (the mirror it was made from), as the official image has.
    printf 'deb %s %s main\n' "$mirror" "$suite" >"$work/rootfs/etc/apt/sources.list"
    rm -rf "$work/rootfs/var/lib/apt/lists/"* "$work/rootfs/var/cache/apt/"*.bin \
      "$work/rootfs/var/cache/apt/archives/"*.deb "$work/rootfs/var/log/"*.log
    : >"$work/rootfs/etc/resolv.conf"
    ctr=$("${bs[@]}" from scratch)
    mnt=$("${bs[@]}" mount "$ctr")
    tar -C "$work/rootfs" --exclude=./proc/* --exclude=./dev/* --exclude=./sys/* -cf - . | tar -C "$mnt" -xf -
    "${bs[@]}" umount "$ctr" >/dev/null
    "${bs[@]}" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
      --cmd bash --label org.opencontainers.image.title=debian-bookworm-slim-jobforge "$ctr"
    mkdir -p "$cache"
    "${bs[@]}" commit --quiet "$ctr" "oci-archive:$archive.tmp" >/dev/null
# debian-recipe:end
    mv "$archive.tmp" "$archive"
    echo "docker-engine: Debian base image cached at $archive after $(( $(date +%s) - started )) s" >&2
  fi
  flock -u 9
  if [ -z "$registry" ]; then
    echo "$archive"
    exit 0
  fi
  ref="$registry/library/debian:bookworm-slim"
  skopeo copy --quiet --dest-tls-verify=false "oci-archive:$archive" "docker://$ref" >&2 \
    || die "pushing $ref failed"
  echo "$ref"
  ;;
busybox)
  [ -n "$registry" ] || die "busybox needs --registry HOST:PORT"
  bb=$(command -v busybox) || die "busybox is missing: run hack/prereqs.sh"
  key=$( { sha256sum "$bb"; sed -n '/^busybox)/,/^  ;;/p' "$0"; } | sha256sum | cut -c1-16)
  cache="$root_dir/target/docker-images/busybox-$key"
  archive="$cache/busybox.oci.tar"
  mkdir -p "$root_dir/target/docker-images"
  exec 9>"$root_dir/target/docker-images/.lock"
  flock 9
  if [ ! -s "$archive" ]; then
    work=$(mktemp -d "$root_dir/target/docker-images-work.XXXXXX")
    bs=(buildah --root "$work/storage" --runroot "$work/run" --storage-driver vfs)
    trap '"${bs[@]}" rm --all >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
    ctr=$("${bs[@]}" from scratch)
    mnt=$("${bs[@]}" mount "$ctr")
    mkdir -p "$mnt/bin" "$mnt/tmp" "$mnt/etc"
    cp "$bb" "$mnt/bin/busybox"
    for app in $("$bb" --list); do [ "$app" = busybox ] || ln -s busybox "$mnt/bin/$app"; done
    chmod 1777 "$mnt/tmp"
    "${bs[@]}" umount "$ctr" >/dev/null
    "${bs[@]}" config --env PATH=/bin --cmd /bin/sh "$ctr"
    mkdir -p "$cache"
    "${bs[@]}" commit --quiet "$ctr" "oci-archive:$archive.tmp" >/dev/null
    mv "$archive.tmp" "$archive"
  fi
  flock -u 9
  ref="$registry/jobforge/busybox:$key"
  skopeo copy --quiet --dest-tls-verify=false "oci-archive:$archive" "docker://$ref" >&2 \
    || die "pushing $ref failed"
  echo "$ref"
  ;;
*)
  die "usage: $0 serve|clean --state DIR | images|debian-base|busybox --registry HOST:PORT"
  ;;
esac
