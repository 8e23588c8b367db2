#!/bin/bash
# build.sh — builds kiln's deploy environment (kernel + busybox initramfs whose
# /init is the deploy agent, scripts/deploy-env/init) from Debian's packages.
#
# Usage:   scripts/deploy-env/build.sh OUTDIR
# Makes:   OUTDIR/vmlinuz          Debian's kernel
#          OUTDIR/initrd.img       gzip'd cpio (newc, sorted, fixed mtimes):
#                                  busybox, sfdisk + its libraries, the storage
#                                  and NIC modules, /init = the agent
#          OUTDIR/deploy.iso       UEFI-bootable ISO (GRUB from Debian's
#                                  grub-efi-amd64-bin); /boot/grub/grub.cfg is
#                                  padded to 4096 bytes so that kiln can put a
#                                  node's own grub.cfg in its place
#          OUTDIR/deploy-env.json  package versions and the outputs' SHA-256
#          and prints the four paths on stdout (progress goes to stderr).
# Kernel:  KILN_DEPLOY_KERNEL=generic (default, linux-image-amd64: the drivers
#          real servers need) or cloud (linux-image-cloud-amd64: smaller, VMs
#          only; it has no ahci, so no SATA disks).
# Needs:   root (mknod /dev/console), network access to the Debian mirror
#          (apt-get with a private state dir: the host's apt sources do not
#          matter), and the host tools apt-get, dpkg-deb, cpio, gzip,
#          grub-mkrescue (grub-common), xorriso, mtools. Module dependencies
#          and the initramfs' modules.dep come from the downloaded busybox.
# Env:     SOURCE_DATE_EPOCH (default 1735689600), DEBIAN_MIRROR,
#          DEBIAN_SECURITY_MIRROR, KILN_WORK (scratch, default OUTDIR/.work),
#          KILN_DEPLOY_MODULES (extra module names, space separated).
# Reruns:  outputs are reused when OUTDIR/.deploy-env.stamp matches the
#          checksums of this script and the agent and the settings above.
set -euo pipefail

if [ "$#" -ne 1 ]; then
    echo "usage: $0 OUTDIR" >&2
    exit 2
fi
OUTDIR=$1
HERE=$(cd "$(dirname "$0")" && pwd)
AGENT="$HERE/init"
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-1735689600}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SECURITY="${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
FLAVOUR="${KILN_DEPLOY_KERNEL:-generic}"
EXTRA_MODULES="${KILN_DEPLOY_MODULES:-}"
case "$FLAVOUR" in
    generic) KERNEL_META=linux-image-amd64 ;;
    cloud) KERNEL_META=linux-image-cloud-amd64 ;;
    *) echo "KILN_DEPLOY_KERNEL must be generic or cloud, not '$FLAVOUR'" >&2; exit 2 ;;
esac
ISO_VOLID=KILN_DEPLOY   # the agent skips a disk carrying this volume id
GRUB_CFG_SIZE=4096
PLACEHOLDER_URL=http://kiln.invalid/agent/NOTOKEN

# Modules loaded at boot (with their dependencies): storage, NICs, root fs.
MODULES=(
    # virtio (QEMU/KVM guests)
    virtio_pci virtio_blk virtio_scsi virtio_net
    # NVMe, SATA/SAS/SCSI disks, common RAID/HBA controllers
    nvme ahci sd_mod megaraid_sas mpt3sas smartpqi
    # server NICs: Mellanox/NVIDIA, Intel, Broadcom
    mlx5_core ice i40e ixgbe igb igc e1000e bnxt_en tg3
    # the root filesystem the seed is written to
    crc32c_generic crc32c_intel ext4
)
read -r -a extra_modules <<<"$EXTRA_MODULES"
MODULES+=("${extra_modules[@]}")
# Packages whose files make up sfdisk (util-linux's fdisk) and its libraries.
SFDISK_PACKAGES=(fdisk libc6 libfdisk1 libmount1 libsmartcols1 libblkid1 libuuid1
    libselinux1 libpcre2-8-0 libreadline8 libtinfo6 libncursesw6)

log() { printf '%s deploy-env: %s\n' "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (the initramfs needs a /dev/console node)"
[ -f "$AGENT" ] || die "no agent at $AGENT"
for tool in apt-get dpkg-deb cpio gzip grub-mkrescue xorriso mformat sha256sum; do
    command -v "$tool" >/dev/null || die "missing $tool (apt-get install cpio grub-common xorriso mtools)"
done

mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
OUTS=("$OUTDIR/vmlinuz" "$OUTDIR/initrd.img" "$OUTDIR/deploy.iso" "$OUTDIR/deploy-env.json")
STAMP="$OUTDIR/.deploy-env.stamp"
WANT_STAMP="$(cat "$0" "$AGENT" | sha256sum | cut -d' ' -f1) $FLAVOUR $SOURCE_DATE_EPOCH $MIRROR $SECURITY $EXTRA_MODULES"
all_there() { for f in "${OUTS[@]}"; do [ -f "$f" ] || return 1; done; }
if all_there && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT_STAMP" ]; then
    log "up to date (stamp matches), reusing $OUTDIR"
    printf '%s\n' "${OUTS[@]}"
    exit 0
fi
rm -f "$STAMP"

WORK="${KILN_WORK:-$OUTDIR/.work}/deploy-env-$FLAVOUR"
START=$(date +%s)
step_start=$START
step() {
    local now
    now=$(date +%s)
    log "$1 ($((now - step_start)) s)"
    step_start=$now
}
rm -rf "$WORK"
mkdir -p "$WORK"/{apt/state/lists/partial,apt/cache/archives/partial,apt/none,debs,stage,initrd,iso/boot/grub}

# --- 1. packages, with apt's own private state -------------------------------
APTDIR="$WORK/apt"
cat > "$APTDIR/sources.list" <<EOF
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $MIRROR bookworm main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $MIRROR bookworm-updates main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $SECURITY bookworm-security main
EOF
: > "$APTDIR/state/status"
APT=(-o "Dir::Etc::SourceList=$APTDIR/sources.list" -o "Dir::Etc::SourceParts=$APTDIR/none"
    -o "Dir::State=$APTDIR/state" -o "Dir::State::Status=$APTDIR/state/status"
    -o "Dir::Cache=$APTDIR/cache" -o "Dir::Etc::Preferences=$APTDIR/none"
    -o "Dir::Etc::PreferencesParts=$APTDIR/none" -o APT::Architecture=amd64
    -o APT::Architectures::=amd64 -o Acquire::Languages=none -o APT::Sandbox::User=root
    -o Debug::NoLocking=1 -o "Dir::Etc::Parts=$APTDIR/none" -o "Dir::Etc::Main=$APTDIR/none/apt.conf")
log "apt-get update (private lists in $APTDIR)"
apt-get "${APT[@]}" -q update >&2
KERNEL_PKG=$(apt-cache "${APT[@]}" depends "$KERNEL_META" | sed -n 's/^ *Depends: \(linux-image-[^ ]*\)$/\1/p' | head -n 1)
[ -n "$KERNEL_PKG" ] || die "cannot resolve $KERNEL_META to a kernel package"
PACKAGES=("$KERNEL_PKG" busybox-static grub-efi-amd64-bin "${SFDISK_PACKAGES[@]}")
(cd "$WORK/debs" && apt-get "${APT[@]}" -q download "${PACKAGES[@]}" >&2)
version_of() { dpkg-deb -f "$(ls "$WORK"/debs/"$1"_*.deb)" Version; }
KERNEL_VERSION=$(version_of "$KERNEL_PKG")
BUSYBOX_VERSION=$(version_of busybox-static)
GRUB_VERSION=$(version_of grub-efi-amd64-bin)
for deb in "$WORK"/debs/*.deb; do
    dpkg-deb -x "$deb" "$WORK/stage"
done
STAGE="$WORK/stage"
step "downloaded and unpacked ${#PACKAGES[@]} packages ($KERNEL_PKG $KERNEL_VERSION, busybox $BUSYBOX_VERSION)"

# --- 2. the initramfs tree -------------------------------------------------------
INITRD="$WORK/initrd"
BUSYBOX="$STAGE/bin/busybox"
mkdir -p "$INITRD"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,run,tmp,mnt,etc/kiln,root,lib/x86_64-linux-gnu,lib64}
cp "$BUSYBOX" "$INITRD/bin/busybox"
while read -r applet; do
    [ "$applet" = bin/busybox ] && continue
    [ -e "$INITRD/$applet" ] && continue
    mkdir -p "$INITRD/$(dirname "$applet")"
    ln -s /bin/busybox "$INITRD/$applet"
done < <("$BUSYBOX" --list-full | sort)
mknod -m 600 "$INITRD/dev/console" c 5 1
mknod -m 666 "$INITRD/dev/null" c 1 3
chmod 1777 "$INITRD/tmp"
printf '127.0.0.1\tlocalhost\n' > "$INITRD/etc/hosts"
printf 'hosts: files dns\n' > "$INITRD/etc/nsswitch.conf"
install -m 0755 "$AGENT" "$INITRD/init"

# sfdisk and the shared libraries it loads, found by the package's own loader.
SFDISK=""
for f in "$STAGE/sbin/sfdisk" "$STAGE/usr/sbin/sfdisk"; do
    [ -f "$f" ] && SFDISK=$f
done
[ -n "$SFDISK" ] || die "no sfdisk in the fdisk package"
install -m 0755 "$SFDISK" "$INITRD/sbin/sfdisk"
LDSO="$STAGE/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
[ -f "$LDSO" ] || die "no dynamic loader in libc6"
LIBPATH="$STAGE/lib/x86_64-linux-gnu:$STAGE/usr/lib/x86_64-linux-gnu"
libs=$("$LDSO" --library-path "$LIBPATH" --list "$SFDISK")
if grep -q 'not found' <<<"$libs"; then
    die "sfdisk needs libraries no package here has: $(grep 'not found' <<<"$libs" | tr '\n' ' ')"
fi
while read -r lib; do
    case "$lib" in
        "$STAGE"/*) cp -L "$lib" "$INITRD/lib/x86_64-linux-gnu/$(basename "$lib")" ;;
        *) die "sfdisk resolved a library outside the packages: $lib" ;;
    esac
done < <(sed -n 's/^.* => \(\/[^ ]*\) (0x.*$/\1/p' <<<"$libs")
cp -L "$LDSO" "$INITRD/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
ln -s /lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 "$INITRD/lib64/ld-linux-x86-64.so.2"
"$INITRD/lib64/ld-linux-x86-64.so.2" --library-path "$INITRD/lib/x86_64-linux-gnu" "$INITRD/sbin/sfdisk" --version >/dev/null ||
    die "the staged sfdisk does not run"

# Kernel modules: the list above plus their dependencies (modules.dep made by
# busybox depmod over the package's whole tree).
KVER=$(basename "$(find "$STAGE/lib/modules" -mindepth 1 -maxdepth 1 -type d | head -n 1)")
KMOD="$STAGE/lib/modules/$KVER"
cp "$STAGE/boot/vmlinuz-$KVER" "$WORK/vmlinuz"
"$BUSYBOX" depmod -b "$STAGE" "$KVER"
declare -A dep_of path_of
while IFS= read -r line; do
    mod=${line%%:*}
    name=$(basename "$mod")
    name=${name%%.ko*}
    name=${name//-/_}
    path_of[$name]=$mod
    dep_of[$name]=${line#*:}
done < "$KMOD/modules.dep"
builtin=$(sed 's#.*/##; s/\.ko.*$//; s/-/_/g' "$KMOD/modules.builtin" 2>/dev/null || true)
declare -A want=()
load=()
missing=()
add_module() {
    local name=$1 d dn
    [ -n "${want[$name]:-}" ] && return 0
    want[$name]=1
    for d in ${dep_of[$name]}; do
        dn=$(basename "$d")
        dn=${dn%%.ko*}
        add_module "${dn//-/_}"
    done
}
for m in "${MODULES[@]}"; do
    m=${m//-/_}
    if [ -n "${path_of[$m]:-}" ]; then
        add_module "$m"
        load+=("$m")
    elif grep -qx "$m" <<<"$builtin"; then
        :
    else
        missing+=("$m")
    fi
done
[ "${#missing[@]}" -eq 0 ] || log "not in $KERNEL_PKG (neither module nor built in): ${missing[*]}"
for name in "${!want[@]}"; do
    mkdir -p "$INITRD/lib/modules/$KVER/$(dirname "${path_of[$name]}")"
    cp "$KMOD/${path_of[$name]}" "$INITRD/lib/modules/$KVER/${path_of[$name]}"
done
for f in modules.order modules.builtin modules.builtin.modinfo; do
    [ -f "$KMOD/$f" ] && cp "$KMOD/$f" "$INITRD/lib/modules/$KVER/$f"
done
"$BUSYBOX" depmod -b "$INITRD" "$KVER"
printf '%s\n' "${load[@]}" > "$INITRD/etc/kiln/modules"
{
    echo "kernel=$KERNEL_PKG $KERNEL_VERSION"
    echo "busybox=$BUSYBOX_VERSION"
} > "$INITRD/etc/kiln/versions"
step "initramfs tree: ${#want[@]} modules ($(du -sh "$INITRD/lib/modules" | cut -f1)), busybox, sfdisk"

# --- 3. initrd.img: sorted newc cpio, fixed mtimes, gzip -9 -n ------------------
find "$INITRD" -exec touch --no-dereference -d "@$SOURCE_DATE_EPOCH" {} +
(cd "$INITRD" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0 --reproducible) |
    gzip -9 -n > "$WORK/initrd.img"
step "initrd.img: $(du -h "$WORK/initrd.img" | cut -f1)"

# --- 4. deploy.iso: GRUB (EFI) reading /boot/grub/grub.cfg from the ISO ----------
# all_video is built into GRUB's core: kiln's grub.cfg loads no video module,
# and without one `linux` finds no video mode (no EFI framebuffer for tty0).
ISO="$WORK/iso"
cp "$WORK/vmlinuz" "$ISO/vmlinuz"
cp "$WORK/initrd.img" "$ISO/initrd.img"
{
    cat <<EOF
# kiln deploy environment ($KERNEL_PKG $KERNEL_VERSION, busybox $BUSYBOX_VERSION).
# kiln replaces this file per node (the kiln.url below is a placeholder);
# it is padded to $GRUB_CFG_SIZE bytes so that a node's own grub.cfg always fits.
set default=0
set timeout=1
menuentry 'kiln deploy agent' {
	linux	/vmlinuz console=tty0 console=ttyS0,115200 kiln.url=$PLACEHOLDER_URL
	initrd	/initrd.img
}
EOF
    echo "#"
} > "$WORK/grub.cfg.head"
head_size=$(stat -c %s "$WORK/grub.cfg.head")
[ "$head_size" -lt "$GRUB_CFG_SIZE" ] || die "grub.cfg is already $head_size bytes"
{
    cat "$WORK/grub.cfg.head"
    pad=$((GRUB_CFG_SIZE - head_size))
    line="# padding ##################################################################"
    while [ "$pad" -gt "${#line}" ]; do
        echo "${line:0:$((${#line} - 1))}"
        pad=$((pad - ${#line}))
    done
    printf '%*s\n' "$((pad - 1))" '' | tr ' ' '#'
} > "$ISO/boot/grub/grub.cfg"
[ "$(stat -c %s "$ISO/boot/grub/grub.cfg")" -eq "$GRUB_CFG_SIZE" ] || die "grub.cfg padding is off"
find "$ISO" -exec touch --no-dereference -d "@$SOURCE_DATE_EPOCH" {} +
grub-mkrescue -d "$STAGE/usr/lib/grub/x86_64-efi" -o "$WORK/deploy.iso" \
    --locales= --fonts= --themes= --modules="all_video" \
    --install-modules="linux normal iso9660 part_gpt part_msdos fat ext2 search search_label search_fs_uuid configfile echo test true sleep all_video efi_gop efi_uga gfxterm serial terminal" \
    "$ISO" -- -volid "$ISO_VOLID" >"$WORK/grub-mkrescue.log" 2>&1 ||
    { cat "$WORK/grub-mkrescue.log" >&2; die "grub-mkrescue failed"; }
# The ISO's grub.cfg must be the one above, whole (kiln patches it in place).
xorriso -indev "$WORK/deploy.iso" -osirrox on -extract /boot/grub/grub.cfg "$WORK/grub.cfg.check" >/dev/null 2>&1 ||
    die "no /boot/grub/grub.cfg in the ISO"
cmp -s "$WORK/grub.cfg.check" "$ISO/boot/grub/grub.cfg" || die "the ISO's grub.cfg differs from the one built"
step "deploy.iso: $(du -h "$WORK/deploy.iso" | cut -f1)"

# --- 5. publish --------------------------------------------------------------------
sum() { sha256sum "$1" | cut -d' ' -f1; }
for f in vmlinuz initrd.img deploy.iso; do
    cp "$WORK/$f" "$OUTDIR/$f.tmp"
    mv "$OUTDIR/$f.tmp" "$OUTDIR/$f"
done
cat > "$OUTDIR/deploy-env.json.tmp" <<EOF
{
  "kernel": "$KERNEL_VERSION",
  "kernel_package": "$KERNEL_PKG",
  "busybox": "$BUSYBOX_VERSION",
  "grub": "$GRUB_VERSION",
  "modules": $(printf '"%s",' "${load[@]}" | sed 's/,$//; s/^/[/; s/$/]/'),
  "sha256": {
    "vmlinuz": "$(sum "$OUTDIR/vmlinuz")",
    "initrd.img": "$(sum "$OUTDIR/initrd.img")",
    "deploy.iso": "$(sum "$OUTDIR/deploy.iso")"
  }
}
EOF
mv "$OUTDIR/deploy-env.json.tmp" "$OUTDIR/deploy-env.json"
rm -rf "$WORK"
rmdir "$(dirname "$WORK")" 2>/dev/null || true
echo "$WANT_STAMP" > "$STAMP"
log "done in $(($(date +%s) - START)) s: vmlinuz $(du -h "$OUTDIR/vmlinuz" | cut -f1), initrd.img $(du -h "$OUTDIR/initrd.img" | cut -f1), deploy.iso $(du -h "$OUTDIR/deploy.iso" | cut -f1)"
printf '%s\n' "${OUTS[@]}"
