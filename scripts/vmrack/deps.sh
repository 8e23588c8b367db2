#!/usr/bin/env bash
# Installs what scripts/vmrack/up.sh needs on Debian 12 (bookworm), if missing:
#
#   scripts/vmrack/deps.sh            # the rack: QEMU, OVMF, libvirt, libvirt-python
#   scripts/vmrack/deps.sh --smoke    # also what smoke.sh needs to build its test ISO
#
# 1. apt packages (root; DEBIAN_FRONTEND=noninteractive, --no-install-recommends).
#    qemu-utils must come from the same QEMU build as qemu-system-x86: a
#    qemu-utils from bookworm-backports (10.x) conflicts with bookworm's
#    qemu-system-x86 7.2. Only when the installed qemu-utils differs from the
#    version of qemu-system-x86 apt would use is it pinned to that version
#    (with --allow-downgrades).
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
((smoke)) && pkgs+=(grub-efi-amd64-bin grub-common xorriso mtools)

log=$(mktemp)
trap 'rm -f "$log"' EXIT

fail() {
    echo "vmrack deps.sh: $1 failed:" >&2
    tail -n 40 "$log" >&2
    exit 1
}

installed_version() { # prints the installed version of $1, or nothing
    dpkg-query -W -f='${db:Status-Abbrev} ${Version}\n' "$1" 2>/dev/null |
        awk '$1 == "ii" { print $2 }'
}
candidate_version() {
    apt-cache policy "$1" 2>/dev/null | awk '$1 == "Candidate:" { print $2 }'
}

missing=()
for p in "${pkgs[@]}"; do
    [[ -n $(installed_version "$p") ]] || missing+=("$p")
done

# The QEMU version apt will use: the installed qemu-system-x86, else its candidate.
qemu_utils_pin=
qemu_ver=$(installed_version qemu-system-x86)
utils_ver=$(installed_version qemu-utils)
if [[ -n $utils_ver ]]; then
    if [[ -z $qemu_ver ]]; then
        if ((${#missing[@]})); then
            apt-get update -qq >"$log" 2>&1 || fail "apt-get update"
            updated=1
        fi
        qemu_ver=$(candidate_version qemu-system-x86)
    fi
    if [[ -n $qemu_ver && $qemu_ver != "(none)" && $utils_ver != "$qemu_ver" ]]; then
        qemu_utils_pin="qemu-utils=$qemu_ver"
        missing+=(qemu-utils)
    fi
fi

if ((${#missing[@]})); then
    if [[ $(id -u) != 0 ]]; then
        echo "vmrack deps.sh: missing packages ${missing[*]}; run as root" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    if [[ -z ${updated:-} ]]; then
        apt-get update -qq >"$log" 2>&1 || fail "apt-get update"
    fi
    install=()
    for p in "${missing[@]}"; do
        if [[ $p == qemu-utils && -n $qemu_utils_pin ]]; then
            install+=("$qemu_utils_pin")
        else
            install+=("$p")
        fi
    done
    # Deduplicate (qemu-utils may be listed twice).
    mapfile -t install < <(printf '%s\n' "${install[@]}" | awk '!seen[$0]++')
    extra=()
    [[ -n $qemu_utils_pin ]] && extra+=(--allow-downgrades)
    echo "vmrack deps.sh: apt-get install ${install[*]}" >&2
    apt-get install -y -qq --no-install-recommends "${extra[@]}" \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        "${install[@]}" >"$log" 2>&1 ||
        fail "apt-get install ${install[*]}"
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
