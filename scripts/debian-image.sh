#!/bin/bash
# debian-image.sh — builds kiln's small Debian 12 (bookworm) whole-disk UEFI image.
#
# Usage:   scripts/debian-image.sh OUTDIR
# Makes:   OUTDIR/debian-12.raw.gz         gzip -1 of a raw GPT disk image (~1.1 GiB raw)
#          OUTDIR/debian-12.raw.gz.sha256  the gzip file's SHA-256 (hex digest only)
#          and prints both paths on stdout (progress goes to stderr).
# Layout:  partition 1 = EFI system partition (FAT32, label ESP) holding
#          \EFI\BOOT\BOOTX64.EFI, a standalone GRUB built from the image's own
#          grub-efi-amd64-bin; partition 2 (the last) = ext4 root, label
#          "debroot", fstab by label. kiln's deploy agent grows the last
#          partition to the disk and cloud-init's resizefs grows the filesystem.
# Inside:  linux-image-cloud-amd64 (KILN_IMAGE_KERNEL=generic: linux-image-amd64,
#          for real servers: the cloud kernel lacks ahci, so no SATA disks),
#          systemd, openssh-server (no host keys),
#          cloud-init (NoCloud, None) rendering network config through netplan
#          onto systemd-networkd + systemd-resolved, serial console on ttyS0,
#          empty machine-id, no docs/man/translations, no apt lists.
# Needs:   root (mmdebstrap's root mode chroots), network access to the Debian
#          mirror, and the host packages mmdebstrap, fdisk (sfdisk), e2fsprogs
#          (>= 1.47: mkfs.ext4 -d -E offset), dosfstools, mtools, gzip.
#          No loop devices, no mounts of the image.
# Env:     SOURCE_DATE_EPOCH (default 1735689600) — fixed mtimes, filesystem
#          times and GRUB/FAT timestamps; DEBIAN_MIRROR, DEBIAN_SECURITY_MIRROR;
#          ROOT_MIB (default 1024; 2048 with the generic kernel) root
#          partition size; KILN_IMAGE_KERNEL (cloud or generic); KILN_WORK (default
#          OUTDIR/.work) scratch space (~1.5 GB while building, removed after).
# Reruns:  outputs are reused when OUTDIR/.debian-12.stamp matches this
#          script's checksum and the settings above.
set -euo pipefail

if [ "$#" -ne 1 ]; then
    echo "usage: $0 OUTDIR" >&2
    exit 2
fi
OUTDIR=$1
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-1735689600}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SECURITY="${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
KERNEL_FLAVOUR="${KILN_IMAGE_KERNEL:-cloud}"
case "$KERNEL_FLAVOUR" in
    cloud) KERNEL_PKG=linux-image-cloud-amd64; ROOT_MIB="${ROOT_MIB:-1024}" ;;
    generic) KERNEL_PKG=linux-image-amd64; ROOT_MIB="${ROOT_MIB:-2048}" ;;
    *) echo "KILN_IMAGE_KERNEL must be cloud or generic, not $KERNEL_FLAVOUR" >&2; exit 2 ;;
esac
ESP_MIB=64
LABEL=debroot
# Fixed identifiers keep the image reproducible (every cloud image shares its
# filesystem UUIDs across the machines it is written to, too).
DISK_GUID=6b696c6e-0000-4000-8000-000000000000
ESP_GUID=6b696c6e-0000-4000-8000-000000000001
ROOT_GUID=6b696c6e-0000-4000-8000-000000000002
ROOT_FS_UUID=6b696c6e-0000-4000-8000-0000000000e4
ESP_VOLID=6b696c6e

log() { printf '%s debian-image: %s\n' "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (mmdebstrap root mode, file ownership in the image)"
for tool in mmdebstrap sfdisk mkfs.ext4 dumpe2fs debugfs e2fsck mkfs.vfat mmd mcopy gzip sha256sum; do
    command -v "$tool" >/dev/null || die "missing $tool (apt-get install mmdebstrap fdisk e2fsprogs dosfstools mtools)"
done

mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
OUT_GZ="$OUTDIR/debian-12.raw.gz"
OUT_SUM="$OUTDIR/debian-12.raw.gz.sha256"
STAMP="$OUTDIR/.debian-12.stamp"
WANT_STAMP="$(sha256sum "$0" | cut -d' ' -f1) $SOURCE_DATE_EPOCH $MIRROR $SECURITY $ROOT_MIB $KERNEL_PKG"

if [ -f "$OUT_GZ" ] && [ -f "$OUT_SUM" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT_STAMP" ]; then
    log "up to date (stamp matches), reusing $OUT_GZ"
    printf '%s\n%s\n' "$OUT_GZ" "$OUT_SUM"
    exit 0
fi
rm -f "$STAMP"

WORK="${KILN_WORK:-$OUTDIR/.work}/debian-image"
ROOT="$WORK/rootfs"
START=$(date +%s)
step_start=$START
step() {
    local now
    now=$(date +%s)
    log "$1 ($((now - step_start)) s)"
    step_start=$now
}

rm -rf "$WORK"
mkdir -p "$WORK"

# --- 1. the root filesystem from Debian's packages ---------------------------
PACKAGES=(
    "$KERNEL_PKG" systemd-sysv udev dbus openssh-server cloud-init
    sudo curl ca-certificates iproute2 e2fsprogs initramfs-tools zstd
    grub-efi-amd64-bin netbase
    # cloud-init's netplan renderer passes kiln's v2 network-config through
    # untouched (match by macaddress or by name "en*"); netplan writes
    # systemd-networkd units. cloud-init 22.4's own networkd renderer drops
    # `match: name:` and would match a NIC literally named "kiln0".
    netplan.io systemd-resolved
)
# Dropped at unpack time (kept out of later installs too).
DPKG_OPTS=(
    'path-exclude=/usr/share/doc/*'
    'path-include=/usr/share/doc/*/copyright'
    'path-exclude=/usr/share/man/*'
    'path-exclude=/usr/share/info/*'
    'path-exclude=/usr/share/locale/*'
    'path-include=/usr/share/locale/locale.alias'
    'path-exclude=/usr/share/lintian/*'
    'path-exclude=/usr/share/linda/*'
    'path-exclude=/usr/share/bug/*'
)
mm_args=(--variant=apt --mode=root --format=directory
    --aptopt='APT::Install-Recommends "false"'
    --include="$(IFS=,; echo "${PACKAGES[*]}")")
for o in "${DPKG_OPTS[@]}"; do
    mm_args+=(--dpkgopt="$o")
done
# Before the kernel's postinst builds the initramfs: small and quick to unpack.
# shellcheck disable=SC2016 # $1 is mmdebstrap's, expanded by its hook shell
mm_args+=(--essential-hook='mkdir -p "$1/etc/initramfs-tools/conf.d" && printf "MODULES=most\nCOMPRESS=zstd\n" > "$1/etc/initramfs-tools/conf.d/kiln.conf" && echo RESUME=none > "$1/etc/initramfs-tools/conf.d/resume"')
log "mmdebstrap bookworm (${#PACKAGES[@]} packages + dependencies) into $ROOT"
mmdebstrap "${mm_args[@]}" bookworm "$ROOT" \
    "deb $MIRROR bookworm main" \
    "deb $MIRROR bookworm-updates main" \
    "deb $SECURITY bookworm-security main" >&2
step "root filesystem unpacked"

# --- 2. configuration ----------------------------------------------------------
echo debian > "$ROOT/etc/hostname"
cat > "$ROOT/etc/hosts" <<'EOF'
127.0.0.1	localhost
::1		localhost ip6-localhost ip6-loopback
ff02::1		ip6-allnodes
ff02::2		ip6-allrouters
EOF
cat > "$ROOT/etc/fstab" <<EOF
# <file system>  <mount point>  <type>  <options>  <dump>  <pass>
LABEL=$LABEL  /          ext4  defaults,errors=remount-ro  0  1
LABEL=ESP      /boot/efi  vfat  umask=0077,nofail           0  2
EOF
mkdir -p "$ROOT/boot/efi"
# cloud-init's locale module: with LANG unset in /etc/default/locale it runs
# update-locale, which fails without generated locales (status: error).
echo 'LANG=C.UTF-8' > "$ROOT/etc/default/locale"
cat > "$ROOT/etc/cloud/cloud.cfg.d/90_kiln.cfg" <<'EOF'
# kiln: the seed is written into /var/lib/cloud/seed/nocloud/ by the deploy agent.
datasource_list: [ NoCloud, None ]
system_info:
  network:
    renderers: [ netplan, networkd ]
    activators: [ netplan, networkd ]
EOF
# networkd/resolved do the network; DNS through resolved's stub.
ln -sf ../run/systemd/resolve/stub-resolv.conf "$ROOT/etc/resolv.conf"
chroot "$ROOT" systemctl enable systemd-networkd.service systemd-resolved.service >&2
# No host keys (cloud-init writes kiln's), first-boot machine-id.
rm -f "$ROOT"/etc/ssh/ssh_host_*
: > "$ROOT/etc/machine-id"
rm -f "$ROOT/var/lib/dbus/machine-id"
# Leftovers that differ from build to build.
rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/apt/*.bin "$ROOT"/var/cache/apt/archives/*.deb \
    "$ROOT"/var/cache/debconf/*-old "$ROOT"/var/lib/dpkg/*-old "$ROOT"/var/cache/ldconfig/aux-cache \
    "$ROOT"/var/log/*.log "$ROOT"/var/log/apt/* "$ROOT"/tmp/* "$ROOT"/var/tmp/*
if [ ! -e "$ROOT/vmlinuz" ] || [ ! -e "$ROOT/initrd.img" ]; then
    die "the kernel postinst made no /vmlinuz, /initrd.img links"
fi

# --- 3. the EFI loader: standalone GRUB from the image's grub-efi-amd64-bin ----
# Prefers the last partition (gpt2) of the disk the loader came from, so a
# second disk carrying an older copy of this image is not booted instead.
cat > "$WORK/grub-embed.cfg" <<EOF
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
set timeout=1
search --no-floppy --label --set=root $LABEL
if regexp --set=1:bootdisk '^\\(([^,]+),gpt1\\)' "\$cmdpath"; then
  if probe --set=rootlabel --label "(\$bootdisk,gpt2)"; then
    if [ "\$rootlabel" = "$LABEL" ]; then set root="\$bootdisk,gpt2"; fi
  fi
fi
menuentry 'Debian GNU/Linux 12' {
  linux /vmlinuz root=LABEL=$LABEL ro console=tty0 console=ttyS0,115200
  initrd /initrd.img
}
EOF
# What grub-mkstandalone does, minus its time-stamped memdisk: the config in
# a fixed tar, every module built in (all_video: the kernel gets the EFI
# framebuffer, so console=tty0 shows on a BMC's remote screen).
mkdir -p "$WORK/memdisk/boot/grub"
cp "$WORK/grub-embed.cfg" "$WORK/memdisk/boot/grub/grub.cfg"
tar --sort=name --mtime="@$SOURCE_DATE_EPOCH" --owner=0 --group=0 --numeric-owner \
    --format=ustar -C "$WORK/memdisk" -cf "$ROOT/tmp/memdisk.tar" boot
chroot "$ROOT" grub-mkimage -O x86_64-efi -o /tmp/BOOTX64.EFI -p '(memdisk)/boot/grub' \
    -m /tmp/memdisk.tar memdisk tar part_gpt part_msdos ext2 fat search search_label \
    linux normal configfile serial terminal echo regexp probe test all_video
mv "$ROOT/tmp/BOOTX64.EFI" "$WORK/BOOTX64.EFI"
rm -f "$ROOT/tmp/memdisk.tar"
step "configured, BOOTX64.EFI built"

# Fixed mtimes (files created by maintainer scripts carry the build's time).
find "$ROOT" -xdev -newermt "@$SOURCE_DATE_EPOCH" -exec touch --no-dereference -d "@$SOURCE_DATE_EPOCH" {} +
touch -d "@$SOURCE_DATE_EPOCH" "$WORK/BOOTX64.EFI"

# --- 4. the disk: GPT, ESP, ext4 root written in place (no loop devices) -------
RAW="$WORK/debian-12.raw"
ESP_START=2048
ESP_SECTORS=$((ESP_MIB * 2048))
ROOT_START=$((ESP_START + ESP_SECTORS))
ROOT_SECTORS=$((ROOT_MIB * 2048))
truncate -s $(((ROOT_START + ROOT_SECTORS) * 512 + 1024 * 1024)) "$RAW"
sfdisk -q "$RAW" <<EOF
label: gpt
label-id: $DISK_GUID
start=$ESP_START, size=$ESP_SECTORS, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=$ESP_GUID, name=ESP
start=$ROOT_START, size=$ROOT_SECTORS, type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, uuid=$ROOT_GUID, name=root
EOF
# Root: mke2fs straight into the partition's byte range.
E2FSPROGS_FAKE_TIME=$SOURCE_DATE_EPOCH mkfs.ext4 -q -F -L "$LABEL" -U "$ROOT_FS_UUID" \
    -E "offset=$((ROOT_START * 512)),nodiscard,hash_seed=$ROOT_FS_UUID,root_owner=0:0" \
    -d "$ROOT" "$RAW" "$((ROOT_MIB * 1024))k" >&2
# mke2fs -d (1.47.0) copies each file's ctime and atime, which are the
# build's clock, and stamps the superblock's write time: set them all to
# SOURCE_DATE_EPOCH (every inode in use).
ROOT_FS="$RAW?offset=$((ROOT_START * 512))"
dumpe2fs "$ROOT_FS" 2>/dev/null | awk -v t="@$SOURCE_DATE_EPOCH" '
/^Inodes per group:/ { ipg = $4 }
/^Group [0-9]+:/ { g = $2; sub(":", "", g) }
/^  Free inodes:/ {
    delete free
    n = split(substr($0, index($0, ":") + 1), parts, ",")
    for (i = 1; i <= n; i++) {
        p = parts[i]; gsub(/ /, "", p)
        if (p == "") continue
        if (split(p, r, "-") == 2) { for (j = r[1]; j <= r[2]; j++) free[j] = 1 } else free[p] = 1
    }
    for (j = g * ipg + 1; j <= (g + 1) * ipg; j++)
        if (!(j in free)) printf "sif <%d> ctime %s\nsif <%d> atime %s\n", j, t, j, t
}' > "$WORK/times.debugfs"
[ -s "$WORK/times.debugfs" ] || die "dumpe2fs listed no inodes in use"
echo "ssv wtime @$SOURCE_DATE_EPOCH" >> "$WORK/times.debugfs"
E2FSPROGS_FAKE_TIME=$SOURCE_DATE_EPOCH debugfs -w -f "$WORK/times.debugfs" "$ROOT_FS" >/dev/null 2>"$WORK/debugfs.err" ||
    die "debugfs: $(tail -n 3 "$WORK/debugfs.err")"
e2fsck -fn "$ROOT_FS" >"$WORK/e2fsck.log" 2>&1 || die "e2fsck: $(tail -n 5 "$WORK/e2fsck.log")"
# ESP: a FAT32 file system image, copied into partition 1.
ESP_IMG="$WORK/esp.img"
rm -f "$ESP_IMG"
mkfs.vfat -C -F 32 -n ESP -i "$ESP_VOLID" --invariant "$ESP_IMG" $((ESP_MIB * 1024)) >/dev/null
mmd -i "$ESP_IMG" ::/EFI ::/EFI/BOOT
mcopy -m -i "$ESP_IMG" "$WORK/BOOTX64.EFI" ::/EFI/BOOT/BOOTX64.EFI
dd if="$ESP_IMG" of="$RAW" bs=1M seek=$((ESP_START / 2048)) conv=notrunc,sparse status=none
touch -d "@$SOURCE_DATE_EPOCH" "$RAW"
step "disk image assembled ($(du -h --apparent-size "$RAW" | cut -f1) raw, $(du -h "$RAW" | cut -f1) allocated)"

# --- 5. compress, digest, publish ---------------------------------------------
gzip -1 -n -c "$RAW" > "$OUT_GZ.tmp"
sha256sum "$OUT_GZ.tmp" | cut -d' ' -f1 > "$OUT_SUM.tmp"
mv "$OUT_GZ.tmp" "$OUT_GZ"
mv "$OUT_SUM.tmp" "$OUT_SUM"
step "compressed: $(du -h "$OUT_GZ" | cut -f1), sha256 $(cat "$OUT_SUM")"
rm -rf "$WORK"
rmdir "$(dirname "$WORK")" 2>/dev/null || true
echo "$WANT_STAMP" > "$STAMP"
log "done in $(($(date +%s) - START)) s"
printf '%s\n%s\n' "$OUT_GZ" "$OUT_SUM"
