#!/usr/bin/env bash
# Installs what scripts/vmrack/up.sh needs on Debian 12 (bookworm), if missing:
#
#   scripts/vmrack/deps.sh            # the rack (QEMU, OVMF, libvirt, libvirt-python)
#                                     # and `kiln image build` (mmdebstrap, grub, xorriso, ...)
#   scripts/vmrack/deps.sh --smoke    # the same (smoke.sh's test ISO needs nothing more)
#
# 1. apt packages (root; DEBIAN_FRONTEND=noninteractive, --no-install-recommends),
#    only those not installed. A qemu-utils from bookworm-backports (10.x,
#    on some machines from the start) is broken by bookworm's
#    qemu-system-x86 7.2, and apt would remove it and leave no qemu-img:
#    when the installed qemu-utils is of another version than the
#    qemu-system-x86 apt would use, qemu-utils is pinned to that version
#    (--allow-downgrades). After the install every package is checked again.
# 2. the interop venv (tests/interop/setup-python.sh, target/interop-venv)
#    plus libvirt-python, built from its sdist against libvirt-dev.
#
# Idempotent: when everything is there it runs no apt-get and no pip, and
# prints nothing. On success stdout gets one line only: the venv path.
# On failure: exit 1 with the failing command's output on stderr.
set -euo pipefail

# libvirt-python follows libvirt's version numbers but builds against older
# libvirt too; 12.8.0 builds against bookworm's libvirt 9.0 (see VM-LAB.md).
LIBVIRT_PYTHON_VERSION=12.8.0

smoke=0
for arg in "$@"; do
    case $arg in
    --smoke) smoke=1 ;;
    *)
        echo "usage: $0 [--smoke]" >&2
        exit 2
        ;;
    esac
done

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

pkgs=(qemu-system-x86 qemu-utils ovmf
    libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-clients
    libvirt-dev pkg-config gcc python3-dev python3-venv
    openssl curl ca-certificates)
# `kiln image build deploy-env|debian-12` (also smoke.sh's test ISO).
pkgs+=(mmdebstrap grub-efi-amd64-bin grub-common xorriso mtools dosfstools fdisk e2fsprogs cpio)
: "$smoke"

log=$(mktemp)
trap 'rm -f "$log"' EXIT

fail() {
    echo "vmrack deps.sh: $1 failed:" >&2
    tail -n 40 "$log" >&2
    exit 1
}

installed_version() { # prints the installed version of $1, or nothing
    { dpkg-query -W -f='${db:Status-Abbrev} ${Version}\n' "$1" 2>/dev/null || true; } |
        awk '$1 == "ii" { print $2 }'
}
candidate_version() {
    { apt-cache policy "$1" 2>/dev/null || true; } | awk '$1 == "Candidate:" { print $2 }'
}

missing=()
for p in "${pkgs[@]}"; do
    [[ -n $(installed_version "$p") ]] || missing+=("$p")
done

if ((${#missing[@]})); then
    if [[ $(id -u) != 0 ]]; then
        echo "vmrack deps.sh: missing packages ${missing[*]}; run as root" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >"$log" 2>&1 || fail "apt-get update"
    opts=(-y -qq --no-install-recommends
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
    install=("${missing[@]}")
    extra=()
    # A qemu-utils of another QEMU build (10.x from bookworm-backports comes
    # with some machines) than the qemu-system-x86 apt is going to use:
    # apt would quietly remove it (qemu-system-x86 7.2 breaks it) and leave
    # no qemu-img. Take qemu-utils from that same build instead.
    utils_ver=$(installed_version qemu-utils)
    qemu_ver=$(installed_version qemu-system-x86)
    [[ -n $qemu_ver ]] || qemu_ver=$(candidate_version qemu-system-x86)
    if [[ -n $utils_ver && -n $qemu_ver && $qemu_ver != "(none)" && $utils_ver != "$qemu_ver" ]]; then
        kept=()
        for p in "${install[@]}"; do
            [[ $p == qemu-utils ]] || kept+=("$p")
        done
        install=("${kept[@]}" "qemu-utils=$qemu_ver")
        extra=(--allow-downgrades)
        echo "vmrack deps.sh: qemu-utils $utils_ver does not fit qemu-system-x86 $qemu_ver; installing qemu-utils=$qemu_ver" >&2
    fi
    apt-get install -s "${opts[@]}" "${extra[@]}" "${install[@]}" >"$log" 2>&1 ||
        fail "apt-get install -s ${extra[*]} ${install[*]} (simulation)"
    echo "vmrack deps.sh: apt-get install ${install[*]}" >&2
    apt-get install "${opts[@]}" "${extra[@]}" "${install[@]}" >"$log" 2>&1 ||
        fail "apt-get install ${extra[*]} ${install[*]}"
    # apt may remove a package to install another: check that all are there.
    gone=()
    for p in "${pkgs[@]}"; do
        [[ -n $(installed_version "$p") ]] || gone+=("$p")
    done
    ((${#gone[@]} == 0)) || { echo "apt removed or did not install: ${gone[*]}" >>"$log"; fail "apt-get install"; }
fi

venv=$("$root/tests/interop/setup-python.sh")
have=$("$venv/bin/python" -c 'import libvirt, importlib.metadata as m
print(m.version("libvirt-python"))' 2>/dev/null || true)
if [[ $have != "$LIBVIRT_PYTHON_VERSION" ]]; then
    echo "vmrack deps.sh: pip install libvirt-python==$LIBVIRT_PYTHON_VERSION (builds from source, ~10 s)" >&2
    PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 \
        "$venv/bin/python" -m pip install --quiet \
        -c "$root/tests/interop/constraints.txt" \
        "libvirt-python==$LIBVIRT_PYTHON_VERSION" >"$log" 2>&1 ||
        fail "pip install libvirt-python==$LIBVIRT_PYTHON_VERSION (needs libvirt-dev, pkg-config, gcc, python3-dev)"
    "$venv/bin/python" -c 'import libvirt' >"$log" 2>&1 || fail "import libvirt"
fi
echo "$venv"
