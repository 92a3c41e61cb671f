#!/usr/bin/env bash
# agent/mos/compare-size.sh: measures the original BAAS's approach to a management OS (a whole
# Debian rootfs used as the initramfs) against ours (agent/mos/build.sh: Debian's kernel,
# busybox, a few modules and the agent), and prints both sizes.
#
#   agent/mos/compare-size.sh [--mirror URL] [--suite SUITE] [--keep]
#
#   --mirror URL  Debian mirror for debootstrap (default: the first `deb.debian.org`-style URI
#                 in /etc/apt/sources.list*, else http://deb.debian.org/debian)
#   --suite S     Debian suite (default: the one apt is configured for, else bookworm)
#   --keep        keep the rootfs and its cpio (default: delete them, they are large)
#
# Needs root (debootstrap chroots and mknods) and the `debootstrap` and `cpio` packages (as root it
# apt-get installs them when missing). Works in /tmp/baas-compare-size. The rootfs is the *smallest*
# Debian: `debootstrap --variant=minbase`, no kernel modules, no agent; the original's image had
# more (systemd, its agent's Python/Go runtime), so this is a lower bound for its size.
# Our initramfs is target/mos/initrd.gz, built with agent/mos/build.sh when missing.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=/tmp/baas-compare-size
MIRROR=""
SUITE=""
KEEP=0
while [ $# -gt 0 ]; do
  case "$1" in
    --mirror) MIRROR=$2; shift 2 ;;
    --suite) SUITE=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "compare-size.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
say() { echo "compare-size: $*" >&2; }
[ "$(id -u)" -eq 0 ] || { echo "compare-size.sh: debootstrap needs root" >&2; exit 1; }

need=()
command -v debootstrap >/dev/null || [ -x /usr/sbin/debootstrap ] || need+=(debootstrap)
command -v cpio >/dev/null || need+=(cpio)
if [ ${#need[@]} -gt 0 ]; then
  say "installing ${need[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# The mirror and suite apt already uses (deb822 .sources or one-line .list).
sources=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
if [ -z "$MIRROR" ]; then
  MIRROR=$(printf '%s\n' "$sources" | grep -oE 'https?://[^ ]+/debian/?( |$)' | grep -v security | head -n1 | tr -d ' ' || true)
  MIRROR=${MIRROR:-http://deb.debian.org/debian}
fi
if [ -z "$SUITE" ]; then
  SUITE=$(printf '%s\n' "$sources" | sed -n 's/^Suites: *\([a-z]*\).*/\1/p' | head -n1)
  [ -n "$SUITE" ] || SUITE=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")
  SUITE=${SUITE:-bookworm}
fi

ours=$ROOT/target/mos/initrd.gz
if [ ! -f "$ours" ]; then
  say "building our management OS first (agent/mos/build.sh)"
  "$ROOT/agent/mos/build.sh" >&2
fi

rm -rf "$WORK"
mkdir -p "$WORK"
cleanup() { [ "$KEEP" -eq 1 ] || rm -rf "$WORK"; }
trap cleanup EXIT
rootfs=$WORK/rootfs
say "debootstrap --variant=minbase $SUITE from $MIRROR into $rootfs"
t0=$(date +%s)
if ! debootstrap --variant=minbase "$SUITE" "$rootfs" "$MIRROR" >"$WORK/debootstrap.log" 2>&1; then
  echo "compare-size.sh: debootstrap failed ($MIRROR, $SUITE); the end of its log:" >&2
  tail -n 20 "$WORK/debootstrap.log" >&2
  [ -f "$rootfs/debootstrap/debootstrap.log" ] && tail -n 20 "$rootfs/debootstrap/debootstrap.log" >&2
  exit 1
fi
t1=$(date +%s)
# What an initramfs would carry: the installed system, without apt's downloaded .debs.
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
( cd "$rootfs" && find . -print0 | cpio --null -o -H newc --quiet | gzip -9 ) >"$WORK/rootfs.cpio.gz"

tree=$(du -sb "$rootfs" | cut -f1)
theirs=$(stat -c %s "$WORK/rootfs.cpio.gz")
mine=$(stat -c %s "$ours")
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
echo "debootstrap --variant=minbase $SUITE: $((t1 - t0)) s, rootfs $(mib "$tree") unpacked"
printf '%-44s %12s bytes  %s\n' "theirs: minbase rootfs as gzip'd cpio" "$theirs" "$(mib "$theirs")"
printf '%-44s %12s bytes  %s\n' "ours: target/mos/initrd.gz" "$mine" "$(mib "$mine")"
awk -v a="$theirs" -v b="$mine" 'BEGIN { printf "theirs / ours: %.1fx\n", a / b }'
