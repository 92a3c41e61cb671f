#!/usr/bin/env bash
# agent/mos/build.sh: builds the BAAS management OS (MOS) from Debian packages only:
# Debian's kernel, busybox-static, the kernel modules real machines and QEMU need,
# and the baas-agent binary with the glibc libraries it links.
#
#   agent/mos/build.sh [--out DIR] [--agent PATH] [--install DATA_DIR]
#
#   --out DIR     output directory (default: target/mos). It gets vmlinuz and initrd.gz.
#   --agent PATH  the baas-agent binary to put in (default: builds target/release/baas-agent
#                 with `cargo build --release -p baas-agent --locked`).
#   --install DATA_DIR  then install them into the server's data directory
#                 (DATA_DIR/mos, what `baas-server admin install-mos` does), atomically.
#
# Downloads (`apt-get download`, no install) are cached in target/mos/cache; a second run takes
# a few seconds. Needs apt-get, dpkg-deb, depmod (kmod) and cpio; as root it apt-get installs
# cpio and kmod when they are missing. The initramfs must stay at or below 30 MiB.
#
# The MOS's /init reads the kernel command line the server's iPXE script writes:
#   baas.server=URL baas.mac=MAC baas.token=SECRET   the agent's configuration (see agent/src/config.rs)
#   baas.poweroff      run the agent for one job without rebooting, then power off (tests)
#   baas.qemu_exit=N   with QEMU's -device isa-debug-exit,iobase=0xf4,iosize=4: end QEMU with
#                      status (N<<1)|1 when the agent exited 0, ((N+1)<<1)|1 otherwise
#   baas.shell         drop to a shell on the console when the agent exits (debugging)
# Without baas.poweroff the agent runs as it would in a lab (it reboots after a flash), and
# when it exits the machine reboots (`reboot -f`).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=$ROOT/target/mos
AGENT=""
INSTALL=""
MAX_BYTES=$((30 * 1024 * 1024))
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT=$2; shift 2 ;;
    --agent) AGENT=$2; shift 2 ;;
    --install) INSTALL=$2; shift 2 ;;
    -h|--help) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
CACHE=${BAAS_MOS_CACHE:-$ROOT/target/mos/cache}
mkdir -p "$CACHE"
t0=$(date +%s.%N)
say() { echo "mos: $*" >&2; }

# Tools. cpio and kmod are not in a fresh Debian image.
need=()
command -v cpio >/dev/null || need+=(cpio)
command -v depmod >/dev/null || [ -x /usr/sbin/depmod ] || [ -x /sbin/depmod ] || need+=(kmod)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    say "installing ${need[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    echo "build.sh: missing ${need[*]}: apt-get install ${need[*]}" >&2; exit 1
  fi
fi
export PATH=$PATH:/usr/sbin:/sbin

# 1. Debian packages: the kernel linux-image-amd64 depends on, and busybox-static.
KPKG=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
[ -n "$KPKG" ] || { echo "build.sh: apt-cache knows no linux-image-amd64 (run apt-get update)" >&2; exit 1; }
KV=${KPKG#linux-image-}
fetch() { # fetch PACKAGE: the .deb's path in the cache
  local deb
  deb=$(ls "$CACHE"/"$1"_*.deb 2>/dev/null | head -n1 || true)
  if [ -z "$deb" ]; then
    say "apt-get download $1"
    (cd "$CACHE" && apt-get download -q "$1" >/dev/null 2>&1) || {
      echo "build.sh: apt-get download $1 failed" >&2; exit 1; }
    deb=$(ls "$CACHE"/"$1"_*.deb | head -n1)
  fi
  echo "$deb"
}
KDEB=$(fetch "$KPKG")
BBDEB=$(fetch busybox-static)

K=$CACHE/kernel-$KV
if [ ! -e "$K/.done" ]; then
  say "extracting $(basename "$KDEB")"
  rm -rf "$K"; mkdir -p "$K"
  dpkg-deb --fsys-tarfile "$KDEB" | tar -x -C "$K" --wildcards './boot/vmlinuz-*' './lib/modules/*'
  depmod -b "$K" "$KV"   # the .deb ships no modules.dep
  touch "$K/.done"
fi
BB=$CACHE/busybox
if [ ! -e "$BB/.done" ] || [ "$BBDEB" -nt "$BB/.done" ]; then
  rm -rf "$BB"; mkdir -p "$BB"
  dpkg-deb -x "$BBDEB" "$BB"   # never apt-get install it: it Conflicts with busybox
  touch "$BB/.done"
fi

# 2. The agent.
if [ -z "$AGENT" ]; then
  say "cargo build --release -p baas-agent"
  (cd "$ROOT" && cargo build --release -p baas-agent --locked -q)
  AGENT=$ROOT/target/release/baas-agent
fi
[ -x "$AGENT" ] || { echo "build.sh: no agent binary at $AGENT" >&2; exit 1; }

# 3. The initramfs tree.
S=$(mktemp -d "${TMPDIR:-/tmp}/baas-mos.XXXXXX")
trap 'rm -rf "$S"' EXIT
mkdir -p "$S"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,tmp,run,root,etc/udhcpc,lib/modules/$KV}
cp "$BB/bin/busybox" "$S/bin/busybox"
ln -s busybox "$S/bin/sh"
install -m755 "$BB/usr/share/doc/busybox-static/examples/udhcp/simple.script" "$S/etc/udhcpc/default.script"
install -m755 "$(dirname "$0")/init" "$S/init"
# The agent, stripped (a debug build shrinks about tenfold), and the libraries ldd lists, at the same paths.
objcopy --strip-all "$AGENT" "$S/usr/bin/baas-agent" 2>/dev/null || cp "$AGENT" "$S/usr/bin/baas-agent"
chmod 755 "$S/usr/bin/baas-agent"
for l in $(ldd "$AGENT" 2>/dev/null | grep -o '/[^ ]*' || true); do
  mkdir -p "$S$(dirname "$l")"; cp -L "$l" "$S$l"
done
echo "root:x:0:0:root:/root:/bin/sh" > "$S/etc/passwd"
echo "root:x:0:" > "$S/etc/group"
echo "hosts: files dns" > "$S/etc/nsswitch.conf"
echo "127.0.0.1 localhost" > "$S/etc/hosts"

# Kernel modules: QEMU's virtio devices, then the storage and NICs of real lab machines.
# Their dependencies come from modprobe --show-depends on the depmod'ed tree. /init loads the
# drivers of the devices present (by modalias) and this whole list only when no NIC shows up.
# NICs that need firmware (r8169, bnx2x, ...) lack it: firmware-* packages are non-free.
MODULES=(
  virtio_pci virtio_net virtio_blk virtio_scsi
  nvme ahci ata_piix sd_mod mpt3sas megaraid_sas
  e1000 e1000e igb igc ixgbe i40e ice bnxt_en tg3 r8169 atlantic mlx4_en mlx5_core
  af_packet
)
want=()
for m in "${MODULES[@]}"; do
  deps=$(modprobe -d "$K" -S "$KV" --show-depends --ignore-install "$m" 2>/dev/null || true)
  [ -n "$deps" ] || { say "no module $m in $KV (built in or absent)"; continue; }
  while read -r kind path _; do
    [ "$kind" = insmod ] && want+=("${path#"$K"}")
  done <<<"$deps"
done
for f in $(printf '%s\n' "${want[@]}" | sort -u); do
  mkdir -p "$S$(dirname "$f")"; cp "$K$f" "$S$f"
done
cp "$K/lib/modules/$KV"/modules.{order,builtin,builtin.modinfo} "$S/lib/modules/$KV/"
depmod -b "$S" "$KV"
printf '%s\n' "${MODULES[@]}" > "$S/etc/mos-modules"
cat > "$S/etc/mos-release" <<EOF
BAAS management OS
kernel=$KV ($(basename "$KDEB"))
busybox=$(basename "$BBDEB")
agent=$("$AGENT" --version 2>/dev/null || echo baas-agent)
EOF

# 4. Output.
cp "$K/boot/vmlinuz-$KV" "$OUT/vmlinuz.tmp" && mv "$OUT/vmlinuz.tmp" "$OUT/vmlinuz"
(cd "$S" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet --owner=0:0) \
  | gzip -6 > "$OUT/initrd.gz.tmp"
mv "$OUT/initrd.gz.tmp" "$OUT/initrd.gz"
size=$(stat -c %s "$OUT/initrd.gz")
ksize=$(stat -c %s "$OUT/vmlinuz")
tree=$(du -sb "$S" | cut -f1)
nmods=$(find "$S/lib/modules" -name '*.ko*' | wc -l)
mib() { awk -v b="$1" 'BEGIN{printf "%.1f MiB", b/1048576}'; }
say "kernel $KV: $OUT/vmlinuz $(mib "$ksize")"
say "initramfs: $OUT/initrd.gz $(mib "$size") gzip ($(mib "$tree") unpacked, $nmods modules, agent $(mib "$(stat -c %s "$S/usr/bin/baas-agent")"))"
say "built in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}') s"
if [ "$size" -gt "$MAX_BYTES" ]; then
  echo "build.sh: the initramfs is $(mib "$size"), over the 30 MiB limit" >&2; exit 1
fi
if [ -n "$INSTALL" ]; then
  mkdir -p "$INSTALL/mos"
  for f in vmlinuz initrd.gz; do
    cp "$OUT/$f" "$INSTALL/mos/.$f.new" && sync "$INSTALL/mos/.$f.new" && mv "$INSTALL/mos/.$f.new" "$INSTALL/mos/$f"
  done
  say "installed in $INSTALL/mos (the server serves it at /boot/mos/)"
fi
