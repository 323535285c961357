#!/usr/bin/env bash
# Build the Cloud Rack test guest: a Debian cloud kernel and a busybox initramfs with iperf3,
# ethtool and a control agent on a serial port. Everything comes from Debian packages and lands
# outside the repository:
#
#   $CACHE/guest/vmlinuz              the kernel (from linux-image-<version>-cloud-amd64)
#   $CACHE/guest/initramfs.cpio.gz    busybox, iperf3 + its libraries, ethtool, virtio modules,
#                                     /init (scripts/guest/init) and /sbin/cr-agent
#   $CACHE/guest/manifest.json        what went in (versions, sizes, hashes, build time)
#   $CACHE/guest/stamp                the input key of the current build
#   $CACHE/guest/debs/                the downloaded kernel packages
# CACHE is $CLOUDRACK_CACHE, default /var/cache/cloudrack.
#
# Usage: build-guest.sh [--force] [--cache DIR] [--quiet]
#   Idempotent: when the kernel package version, the host binaries that get copied in and this
#   directory's scripts are unchanged, it only says the image is current. --force rebuilds.
#   Needs root only to install missing Debian packages (and to write the default cache).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${CLOUDRACK_CACHE:-/var/cache/cloudrack}
force=0
quiet=0
while [ $# -gt 0 ]; do
    case "$1" in
        --force) force=1 ;;
        --cache) CACHE=$2; shift ;;
        --cache=*) CACHE=${1#--cache=} ;;
        --quiet|-q) quiet=1 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "build-guest.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done

out=$CACHE/guest
say() { [ "$quiet" = 1 ] || echo "build-guest: $*" >&2; }
die() { echo "build-guest: error: $*" >&2; exit 1; }

# Modules the guest needs for a virtio NIC, in load order. Missing ones are fine when they are
# built into the kernel (modules.builtin); the rest are an error.
MODULES="virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci failover net_failover virtio_net"
# Debian packages this script and the VMs need on the host.
PACKAGES="qemu-system-x86 busybox-static cpio iperf3 ethtool gzip xz-utils zstd kmod"
# Host programs copied into the guest with their shared libraries (ldd).
GUEST_PROGRAMS="/usr/bin/iperf3 /usr/sbin/ethtool"
KERNEL_META=${CLOUDRACK_GUEST_KERNEL:-linux-image-cloud-amd64}

mkdir -p "$out"
exec 9>"$out/.lock"
flock 9   # one build at a time per cache

# --- 1. host packages --------------------------------------------------------------------------
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
missing=()
for p in $PACKAGES; do installed "$p" || missing+=("$p"); done
apt_updated=0
if [ "${#missing[@]}" -gt 0 ]; then
    [ "$(id -u)" -eq 0 ] || die "missing Debian packages: ${missing[*]} (run as root to install them)"
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; then
        apt-get update -qq; apt_updated=1
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
fi

# --- 2. which kernel ---------------------------------------------------------------------------
# The meta package (linux-image-cloud-amd64) depends on exactly one versioned image package;
# resolve it from the local apt lists (no network needed to decide the cache is current).
resolve_kernel() {
    apt-cache show --no-all-versions "$KERNEL_META" 2>/dev/null | awk '
        /^Depends:/ {
            n = split(substr($0, 10), deps, ",")
            for (i = 1; i <= n; i++) {
                d = deps[i]; gsub(/^ +| +$/, "", d)
                if (d ~ /^linux-image-[0-9]/) {
                    name = d; sub(/ .*/, "", name)
                    ver = d; sub(/^[^(]*\(= */, "", ver); sub(/ *\).*/, "", ver)
                    print name, ver; exit
                }
            }
        }'
}
read -r kpkg kver < <(resolve_kernel) || true
if [ -z "${kpkg:-}" ] && [ "$apt_updated" = 0 ]; then
    say "apt lists don't know $KERNEL_META; running apt-get update"
    apt-get update -qq; apt_updated=1
    read -r kpkg kver < <(resolve_kernel) || true
fi
[ -n "${kpkg:-}" ] && [ -n "${kver:-}" ] || die "can't resolve the image package behind $KERNEL_META"

# --- 3. is the cache current? ------------------------------------------------------------------
# The key covers everything that goes into the image: the kernel package, the guest scripts and
# this builder, and every host file copied in (busybox, programs, their libraries).
host_files() {
    echo /bin/busybox
    for prog in $GUEST_PROGRAMS; do
        echo "$prog"
        ldd "$prog" | awk '/=> \// { print $3 } /^\t\// { print $1 }'
    done
}
[ -x /bin/busybox ] || die "/bin/busybox missing (busybox-static)"
ldd /bin/busybox >/dev/null 2>&1 && die "/bin/busybox is not static: install busybox-static"
for prog in $GUEST_PROGRAMS; do [ -x "$prog" ] || die "$prog missing"; done
mapfile -t files < <(host_files | sort -u)
key=$( {
    echo "kernel $kpkg $kver"
    echo "modules $MODULES"
    sha256sum "$here/build-guest.sh" "$here/init" "$here/cr-agent"
    for f in "${files[@]}"; do echo "$f $(sha256sum < "$f")"; done
} | sha256sum | cut -d' ' -f1)

if [ "$force" = 0 ] && [ -f "$out/stamp" ] && [ "$(cat "$out/stamp")" = "$key" ] \
        && [ -s "$out/vmlinuz" ] && [ -s "$out/initramfs.cpio.gz" ] && [ -s "$out/manifest.json" ]; then
    say "guest image is current ($kpkg $kver): $out"
    exit 0
fi

start=$(date +%s.%N)
say "building guest: $kpkg $kver"

# --- 4. kernel package -------------------------------------------------------------------------
mkdir -p "$out/debs"
deb=$(ls "$out/debs/${kpkg}_${kver//:/%3a}_"*.deb 2>/dev/null | head -n1 || true)
if [ -z "$deb" ]; then
    say "downloading $kpkg=$kver"
    # apt drops privileges to _apt for downloads; the cache may not be writable for it.
    dl() { (cd "$out/debs" && apt-get download -q -o APT::Sandbox::User=root "$kpkg=$kver" >/dev/null); }
    if ! dl; then
        [ "$apt_updated" = 1 ] || { apt-get update -qq; apt_updated=1; }
        dl || die "apt-get download $kpkg=$kver failed"
    fi
    deb=$(ls "$out/debs/${kpkg}_"*.deb | head -n1)
    # keep only the current kernel's package
    for old in "$out/debs"/*.deb; do [ "$old" = "$deb" ] || rm -f "$old"; done
fi

work=$(mktemp -d "$out/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT
dpkg-deb -x "$deb" "$work/kpkg"
vmlinuz=$(ls "$work"/kpkg/boot/vmlinuz-* | head -n1)
[ -f "$vmlinuz" ] || die "no vmlinuz in $deb"
krel=${vmlinuz##*/vmlinuz-}
kmods=$work/kpkg/lib/modules/$krel
[ -d "$kmods" ] || kmods=$work/kpkg/usr/lib/modules/$krel
[ -d "$kmods" ] || die "no modules for $krel in $deb"

# --- 5. initramfs tree -------------------------------------------------------------------------
root=$work/root
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,tmp,run,root,var/run,var/log,lib/modules/cr}
cp /bin/busybox "$root/bin/busybox"
# Applet links at the paths busybox itself lists (bin/sh, sbin/ip, usr/bin/timeout, ...).
busybox --list-full | while read -r applet; do
    case "$applet" in */busybox|linuxrc|*/) continue ;; esac
    mkdir -p "$root/${applet%/*}"
    [ -e "$root/$applet" ] || ln -s /bin/busybox "$root/$applet"
done
for f in "${files[@]}"; do
    [ "$f" = /bin/busybox ] && continue
    mkdir -p "$root/${f%/*}"
    cp -L "$f" "$root/$f"
done
# Debian's own tools for the programs: ldd's loader path must exist (/lib64 on amd64).
[ -e "$root/lib64/ld-linux-x86-64.so.2" ] || die "dynamic loader not copied"

# Modules: copy (decompressing .xz/.zst/.gz, which busybox insmod can't read) in load order.
loaded=()
builtin=()
: > "$root/lib/modules/cr/load-order"
for mod in $MODULES; do
    alt=${mod//_/-}
    src=$(find "$kmods/kernel" \( -name "$mod.ko*" -o -name "$alt.ko*" \) -print -quit)
    if [ -z "$src" ]; then
        if grep -Eq "/($mod|$alt)\.ko\$" "$kmods/modules.builtin" 2>/dev/null; then
            builtin+=("$mod"); continue
        fi
        die "module $mod is neither in $kpkg nor built into its kernel"
    fi
    dst=$root/lib/modules/cr/$mod.ko
    case "$src" in
        *.ko)     cp "$src" "$dst" ;;
        *.ko.xz)  xz -dc "$src" > "$dst" ;;
        *.ko.zst) zstd -qdc "$src" > "$dst" ;;
        *.ko.gz)  gzip -dc "$src" > "$dst" ;;
        *) die "unknown module format: $src" ;;
    esac
    echo "$mod" >> "$root/lib/modules/cr/load-order"
    loaded+=("$mod")
done

install -m 0755 "$here/init" "$root/init"
install -m 0755 "$here/cr-agent" "$root/sbin/cr-agent"
cat > "$root/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PASSWD
cat > "$root/etc/group" <<'GROUP'
root:x:0:
tty:x:5:
nogroup:x:65534:
GROUP
printf '127.0.0.1\tlocalhost\n::1\tlocalhost\n' > "$root/etc/hosts"
printf 'export PATH=/usr/sbin:/usr/bin:/sbin:/bin\nexport PS1="\\h:\\w# "\n' > "$root/etc/profile"
echo "$krel" > "$root/etc/cr-kernel"

# Reproducible archive: sorted names, fixed owner and time.
find "$root" -exec touch -h -d @0 {} +
(cd "$root" && find . -mindepth 1 -print0 | LC_ALL=C sort -z \
    | cpio --null --create --format=newc --owner=0:0 --reproducible --quiet) \
    | gzip -9n > "$work/initramfs.cpio.gz"
cp "$vmlinuz" "$work/vmlinuz"

# --- 6. manifest and install -------------------------------------------------------------------
secs=$(echo "$(date +%s.%N) $start" | awk '{ printf "%.1f", $1 - $2 }')
json_list() { local first=1; printf '['; for x in "$@"; do [ $first = 1 ] || printf ', '; printf '"%s"' "$x"; first=0; done; printf ']'; }
pkgver() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || echo unknown; }
cat > "$work/manifest.json" <<MANIFEST
{
  "key": "$key",
  "built": "$(date -u +%Y-%m-%dT%H:%M:%SZ)",
  "build_seconds": $secs,
  "kernel_package": "$kpkg",
  "kernel_package_version": "$kver",
  "kernel_release": "$krel",
  "vmlinuz": "$out/vmlinuz",
  "vmlinuz_bytes": $(stat -c %s "$work/vmlinuz"),
  "vmlinuz_sha256": "$(sha256sum < "$work/vmlinuz" | cut -d' ' -f1)",
  "initramfs": "$out/initramfs.cpio.gz",
  "initramfs_bytes": $(stat -c %s "$work/initramfs.cpio.gz"),
  "initramfs_sha256": "$(sha256sum < "$work/initramfs.cpio.gz" | cut -d' ' -f1)",
  "modules_loaded": $(json_list "${loaded[@]}"),
  "modules_builtin": $(json_list "${builtin[@]}"),
  "busybox": "$(pkgver busybox-static)",
  "iperf3": "$(pkgver iperf3)",
  "ethtool": "$(pkgver ethtool)",
  "host_files": $(json_list "${files[@]}"),
  "cmdline_options": ["cr.ip=ADDR/PREFIX", "cr.mac=MAC", "cr.mtu=N", "cr.gw=ADDR", "cr.hostname=NAME", "cr.agent=DEV", "cr.noagent"]
}
MANIFEST
# Install: the image files first, the stamp last, so an interrupted build is never "current".
rm -f "$out/stamp"
mv -f "$work/vmlinuz" "$out/vmlinuz"
mv -f "$work/initramfs.cpio.gz" "$out/initramfs.cpio.gz"
mv -f "$work/manifest.json" "$out/manifest.json"
echo "$key" > "$out/stamp"
say "built in ${secs}s: vmlinuz $(du -h "$out/vmlinuz" | cut -f1), initramfs $(du -h "$out/initramfs.cpio.gz" | cut -f1) in $out"
