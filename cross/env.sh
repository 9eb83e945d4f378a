# shellcheck shell=bash
# shellcheck disable=SC2034 # the variables set here are read by the scripts that source this file
# Sourced by the scripts in cross/: installs the cross toolchain if missing
# and exports what every cross build uses.
#
# The toolchain: Debian's rustc-web and rust-web-src (Rust 1.96, with the
# standard library's source) build std for any target with -Zbuild-std
# (RUSTC_BOOTSTRAP=1 unlocks the unstable flags on this stable compiler);
# cargo-zigbuild with ziglang (PyPI) links static musl binaries for every
# target with one linker; qemu-user-static runs them here. rustup is not
# used: it cannot download other targets on this machine, and the MIPS
# targets are tier 3 (no prebuilt std) anyway.

cross_log() { printf '==> %s\n' "$*" >&2; }

cross_as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        echo "cross: need root (or sudo) to run: $*" >&2
        return 1
    fi
}

cross_install() {
    local missing=()
    [ -x /usr/bin/rustc ] && /usr/bin/rustc --version | grep -q '^rustc 1\.\(9[6-9]\|[1-9][0-9][0-9]\)' || missing+=(rustc-web)
    [ -d /usr/lib/rustlib/src/rust/library/std ] || missing+=(rust-web-src)
    [ -x /usr/bin/cargo ] || missing+=(cargo-web)
    command -v qemu-mips-static >/dev/null || missing+=(qemu-user-static)
    # llvm-strip strips every architecture; the linker's -s keeps MIPS's
    # .pdr section (about 150 KB).
    command -v llvm-strip >/dev/null || missing+=(llvm)
    [ -x /usr/bin/time ] || missing+=(time) # cross/bench: peak RSS
    if [ ${#missing[@]} -gt 0 ]; then
        cross_log "apt-get install ${missing[*]}"
        cross_as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        cross_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
    fi
    if ! command -v cargo-zigbuild >/dev/null || ! python3 -m ziglang version >/dev/null 2>&1; then
        cross_log "pip install cargo-zigbuild ziglang"
        python3 -m pip install -q cargo-zigbuild ziglang
        hash -r
    fi
}

cross_install

# Debian's compiler and cargo, not rustup's.
export PATH="/usr/bin:$PATH"
export RUSTC=/usr/bin/rustc CARGO=/usr/bin/cargo RUSTC_BOOTSTRAP=1

# The appliance targets: big-endian MIPS 24Kc (ath79), little-endian MIPS
# (ramips), ARMv7 with hard float, AArch64.
CROSS_TARGETS=(mips-unknown-linux-musl mipsel-unknown-linux-musl armv7-unknown-linux-musleabihf aarch64-unknown-linux-musl)

# qemu-user emulator for a target triple.
cross_qemu() {
    case "$1" in
        mips-*) echo qemu-mips-static ;;
        mipsel-*) echo qemu-mipsel-static ;;
        armv7-*) echo qemu-arm-static ;;
        aarch64-*) echo qemu-aarch64-static ;;
        x86_64-*) echo "" ;;
        *) echo "cross: no emulator known for $1" >&2; return 1 ;;
    esac
}

# The size flags of a release build for an appliance (cross/README.md says
# what each one saves):
#   -Cpanic=immediate-abort   a panic traps at once: no panic messages,
#                             formatting or unwinding machinery (std is
#                             rebuilt the same way by -Zbuild-std)
#   -Cforce-unwind-tables=no  no .eh_frame: nothing unwinds
#   -Crelocation-model=static a static, non-PIE executable: no GOT-relative
#                             code and no dynamic relocations (large on MIPS)
#   -Zlocation-detail=none    no file/line strings for track_caller sites
#   -Zfmt-debug=shallow       derived Debug prints type names only (our own
#                             messages use Display; `{:?}` of strings stays)
#   -Clink-self-contained=no  zig provides musl's crt objects (Debian's rustc
#                             ships no self-contained ones for ARM)
CROSS_RUSTFLAGS="-Zunstable-options -Cpanic=immediate-abort -Cforce-unwind-tables=no -Crelocation-model=static -Zlocation-detail=none -Zfmt-debug=shallow -Clink-self-contained=no"
# std built for size: smaller sort, formatting and hashing code paths.
# shellcheck disable=SC2054 # the commas belong to one cargo flag
CROSS_BUILD_STD=(-Zbuild-std=std,panic_abort -Zbuild-std-features=optimize_for_size)

# cross_retry CMD...: runs CMD, and runs it again (at most 3 times in all,
# 30 s apart) when it failed because the disk was momentarily full (the
# shared disk of this workplace fills for seconds at a time under others'
# bursts); cargo resumes where it stopped. Any other failure stops at once.
cross_retry() {
    local attempt log
    log=$(mktemp)
    for attempt in 1 2 3; do
        if "$@" 2>&1 | tee "$log"; then
            rm -f "$log"
            return 0
        fi
        if ! grep -q 'No space left on device' "$log" || [ "$attempt" -eq 3 ]; then
            rm -f "$log"
            return 1
        fi
        cross_log "the disk was full for a moment; trying again in 30 s (attempt $((attempt + 1)) of 3)"
        sleep 30
    done
}
