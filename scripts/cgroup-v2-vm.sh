#!/usr/bin/env bash
# Runs presize on a real cgroup v2 kernel: boots Debian 12's cloud kernel under qemu (TCG;
# nested KVM does not work on this machine kind) with an initramfs holding busybox, the
# presize binary and its libraries, and runs the scenarios of scripts/cgroup-v2-vm/init.sh
# inside (cap + OOM kill + escalation, timeout with a setsid escapee, pids.max fork bomb,
# page cache vs memory.peak, a shared delegated cgroup, a user without root).
#
# Usage: scripts/cgroup-v2-vm.sh [--release | --bin PATH] [--keep] [--bench [PAIRS]]
#   default binary: target/debug/presize (`cargo build --bin presize`; a no-op after
#   `cargo test`). --release builds and uses target/release/presize instead. --bench adds
#   scenario 7: the fixed cost of `presize run -q -- /bin/true` over a bare spawn, paired
#   (PAIRS per comparison, default 60; use with a release binary).
# Prints every scenario's VMRESULT line and output, then the final marker; exits 0 only if
# the VM reached the marker with failed=0. Exit 2: a prerequisite is missing and cannot be
# installed (not root); the reason is printed.
# Cache (kernel .deb, vmlinuz, modules): target/cgroup-v2-vm/. Needs network only the first
# time (apt-get download of linux-image-cloud-amd64, ~27 MB).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
bin=""
profile=debug
keep=0
bench=""
while [ $# -gt 0 ]; do
  case "$1" in
    --release) profile=release ;;
    --bin) bin=$2; shift ;;
    --keep) keep=1 ;;
    --bench)
      bench=" presize_bench=1"
      case "${2:-}" in [0-9]*) bench="$bench presize_bench_pairs=$2"; shift ;; esac ;;
    *) echo "usage: $0 [--release | --bin PATH] [--keep] [--bench [PAIRS]]" >&2; exit 2 ;;
  esac
  shift
done
cache=$root/target/cgroup-v2-vm
mkdir -p "$cache"

# Host packages: qemu (TCG), a static busybox, cpio (without it the initramfs comes out empty).
missing=()
command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
[ -x /bin/busybox ] && file -L /bin/busybox 2>/dev/null | grep -q 'statically linked' || missing+=(busybox-static)
command -v cpio >/dev/null || missing+=(cpio)
command -v mkfs.ext4 >/dev/null || missing+=(e2fsprogs)
command -v cc >/dev/null || missing+=(gcc libc6-dev)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "cgroup-v2-vm: missing ${missing[*]} and not root to install them (apt-get install ${missing[*]})" >&2
    exit 2
  fi
  echo "== apt-get install ${missing[*]}"
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Kernel: Debian's linux-image-cloud-amd64 (MEMCG, PIDS, serial console built in; the
# virtio block driver is a module and goes into the initramfs).
kdir=$(find "$cache" -maxdepth 1 -type d -name 'kernel-*' | sort | tail -n 1)
if [ -z "$kdir" ] || [ ! -f "$kdir/vmlinuz" ]; then
  echo "== apt-get download linux-image-cloud-amd64"
  dl=$(mktemp -d "$cache/dl.XXXXXX")
  (cd "$dl" && apt-get download -q linux-image-cloud-amd64 >"$dl/apt.log" 2>&1) || {
    cat "$dl/apt.log"
    echo "cgroup-v2-vm: apt-get download linux-image-cloud-amd64 failed (see above)" >&2
    exit 1
  }
  meta=$(ls "$dl"/linux-image-cloud-amd64_*.deb)
  pkg=$(dpkg-deb -f "$meta" Depends | grep -o 'linux-image-[0-9][^ ,]*-cloud-amd64' | head -n 1)
  (cd "$dl" && apt-get download -q "$pkg" >"$dl/apt.log" 2>&1) || {
    cat "$dl/apt.log"
    echo "cgroup-v2-vm: apt-get download $pkg failed (see above)" >&2
    exit 1
  }
  ver=${pkg#linux-image-}
  kdir=$cache/kernel-$ver
  mkdir -p "$kdir/modules"
  dpkg-deb --fsys-tarfile "$dl/${pkg}"_*.deb | tar -x -C "$dl" ./boot "./lib/modules/$ver/kernel/drivers/virtio" \
    "./lib/modules/$ver/kernel/drivers/block/virtio_blk.ko"
  cp "$dl/boot/vmlinuz-$ver" "$kdir/vmlinuz"
  find "$dl/lib/modules" -name '*.ko' -exec cp {} "$kdir/modules/" \;
  rm -rf "$dl"
fi
echo "== kernel $(basename "$kdir")"

# The presize binary.
if [ -z "$bin" ]; then
  if [ "$profile" = release ]; then
    cargo build --release --bin presize --quiet
  else
    cargo build --bin presize --quiet
  fi
  bin=$root/target/$profile/presize
fi
[ -x "$bin" ] || { echo "cgroup-v2-vm: $bin is not an executable" >&2; exit 2; }

work=$(mktemp -d "$cache/run.XXXXXX")
cleanup() { [ $keep = 1 ] && echo "kept $work" || rm -rf "$work"; }
trap cleanup EXIT
ir=$work/initramfs
mkdir -p "$ir"/{bin,dev,etc,proc,sys,tmp,mnt,root,modules,lib64,lib/x86_64-linux-gnu}
cp /bin/busybox "$ir/bin/busybox"
for applet in $(/bin/busybox --list); do
  [ "$applet" = busybox ] || ln -s busybox "$ir/bin/$applet"
done
objcopy --strip-debug "$bin" "$ir/bin/presize"
# The dynamic loader and the libraries ldd lists.
for lib in $(ldd "$bin" | grep -o '/[^ ]*'); do
  case "$lib" in
    */ld-linux*) cp -L "$lib" "$ir/lib64/" ;;
    *) cp -L "$lib" "$ir/lib/x86_64-linux-gnu/" ;;
  esac
done
cc -static -O2 -o "$ir/bin/vmtool" scripts/cgroup-v2-vm/vmtool.c
cp "$kdir"/modules/*.ko "$ir/modules/"
cp scripts/cgroup-v2-vm/init.sh "$ir/init"
chmod 755 "$ir/init"
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$ir/etc/passwd"
printf 'root:x:0:\nu1000:x:1000:\n' >"$ir/etc/group"
(cd "$ir" && find . | cpio -o -H newc --quiet | gzip -1) >"$work/initrd.gz"
# Scratch disk for the page-cache scenario (sparse).
truncate -s 512M "$work/disk.img"
mkfs.ext4 -q -F "$work/disk.img"
echo "== initramfs $(du -h "$work/initrd.gz" | cut -f1) ($bin)"

echo "== boot (qemu TCG, 2 cpus, 1 GiB)"
log=$work/serial.log
start=$(date +%s)
set +e
timeout "${VM_TIMEOUT:-300}" qemu-system-x86_64 -accel tcg -m 1024 -smp "${VM_CPUS:-2}" -nic none -kernel "$kdir/vmlinuz" \
  -initrd "$work/initrd.gz" -append "console=ttyS0 quiet panic=-1$bench" \
  -drive "file=$work/disk.img,format=raw,if=virtio" \
  -nographic -no-reboot -monitor none </dev/null 2>&1 | tr -d '\r' | tee "$log"
qrc=${PIPESTATUS[0]}
set -e
echo "== VM finished in $(($(date +%s) - start)) s (qemu exit $qrc)"
marker=$(grep -o 'CGROUP-V2-VM-RESULT passed=[0-9]* failed=[0-9]*' "$log" | tail -n 1 || true)
if [ -z "$marker" ]; then
  echo "cgroup-v2-vm: the VM did not reach the end of the scenarios (timeout or panic; see above)"
  exit 1
fi
echo "== summary"
grep '^VMRESULT ' "$log" || true
echo "$marker"
case "$marker" in *failed=0) exit 0 ;; *) exit 1 ;; esac
