#!/usr/bin/env bash
# Set up everything edgekit needs on a fresh Debian/Ubuntu machine:
#   1. arm-none-eabi-gcc, newlib headers, binutils, qemu-system-arm and openocd (apt), if missing;
#   2. a virtual environment in .venv with the CPU build of torch, then edgekit itself
#      (with the dev, boards and nas extras: pytest, pyocd, optuna + psycopg2);
#   3. edgekit's QEMU instruction-count plugin (edgekit profile), compiled against the
#      qemu-plugin.h of Debian's qemu source package (same version as the installed QEMU).
# Idempotent: a second run only checks. Used by `make setup` (and so by `make demo`/`make test`).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

need_apt=()
command -v arm-none-eabi-gcc >/dev/null || need_apt+=(gcc-arm-none-eabi libnewlib-arm-none-eabi binutils-arm-none-eabi)
command -v qemu-system-arm >/dev/null || need_apt+=(qemu-system-arm)
command -v gcc >/dev/null || need_apt+=(gcc)
command -v g++ >/dev/null || need_apt+=(g++)  # hls4ml's C-simulation
command -v xz >/dev/null || need_apt+=(xz-utils)
command -v openocd >/dev/null || need_apt+=(openocd)  # edgekit flash --probe openocd (and its tests)
command -v chromium >/dev/null || need_apt+=(chromium)  # headless browser tests of the HTML reports
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "setup: installing ${need_apt[*]} (apt)"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

stamp="$VENV/.edgekit-setup"
extras="dev,boards,nas"
want="$({ cat pyproject.toml; echo "$extras"; } | sha256sum | cut -c1-16)"
if ! { [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$VENV/bin/edgekit" ]; }; then
    echo "setup: creating $VENV (torch CPU build first, then edgekit and its dependencies)"
    [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
    log="$VENV/setup.log"
    pip_install() {
        if ! "$VENV/bin/python" -m pip install --disable-pip-version-check "$@" >>"$log" 2>&1; then
            tail -n 30 "$log"
            echo "setup: pip install $* failed; full log in $log" >&2
            exit 1
        fi
    }
    # The CPU wheel of torch 2.13.0 must come first: a looser request pulls a multi-GB CUDA build.
    pip_install "torch==2.13.0"
    pip_install -e ".[$extras]"  # boards: pyocd, for edgekit flash (and its no-probe tests)
    echo "$want" > "$stamp"
    echo "setup: done"
fi

# The QEMU TCG plugin that counts executed instructions (edgekit profile). No Debian
# binary package ships qemu-plugin.h, so take it from the qemu *source* package of the
# installed version, fetched with apt through a private list of deb-src entries derived
# from the system's own apt sources (the system's apt configuration is not touched).
plugin_src=edgekit/backends/cortexm/qemu_plugin/ek_insn.c
plugin_dir="$VENV/share/edgekit/qemu-plugin"
plugin_lib="$plugin_dir/libek_insn.so"
plugin_hdr="$plugin_dir/include/qemu-plugin.h"
fetch_plugin_header() {
    local work ver f opts tarball member
    work=$(mktemp -d)
    trap 'rm -rf "$work"' RETURN
    mkdir -p "$work/parts" "$work/lists/partial" "$work/cache/archives/partial" "$work/dl"
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] && sed -n 's/^[[:space:]]*deb[[:space:]]/deb-src /p' "$f"
    done > "$work/sources.list"
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] && sed 's/^Types:.*/Types: deb-src/' "$f" > "$work/parts/$(basename "$f")"
    done
    chmod -R a+rwX "$work"
    opts=(-o "Dir::Etc::SourceList=$work/sources.list" -o "Dir::Etc::SourceParts=$work/parts"
          -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache" -o "APT::Sandbox::User=root")
    $SUDO apt-get "${opts[@]}" update >"$work/apt.log" 2>&1 || true  # third-party repos may lack sources
    ver=$(dpkg-query -W -f='${source:Version}' qemu-system-arm 2>/dev/null || true)
    ( cd "$work/dl" && { $SUDO apt-get "${opts[@]}" source --download-only "qemu=$ver" \
        || $SUDO apt-get "${opts[@]}" source --download-only qemu; } ) >>"$work/apt.log" 2>&1 || {
        tail -n 5 "$work/apt.log" >&2; return 1; }
    tarball=$(ls "$work"/dl/qemu_*.orig.tar.* 2>/dev/null | head -n 1)
    [ -n "$tarball" ] || return 1
    mkdir -p "$work/src"
    tar -xf "$tarball" -C "$work/src" --wildcards '*/include/qemu/qemu-plugin.h' || return 1
    member=$(find "$work/src" -name qemu-plugin.h | head -n 1)
    [ -n "$member" ] || return 1
    mkdir -p "$(dirname "$plugin_hdr")"
    cp "$member" "$plugin_hdr"
}
if [ ! -f "$plugin_lib" ] || [ "$plugin_src" -nt "$plugin_lib" ]; then
    if [ ! -f "$plugin_hdr" ]; then
        echo "setup: fetching qemu-plugin.h from Debian's qemu source package (apt-get source, ~24 MB)"
        fetch_plugin_header || echo "setup: warning: could not get qemu-plugin.h; edgekit profile will not work" >&2
    fi
    if [ -f "$plugin_hdr" ]; then
        mkdir -p "$plugin_dir"
        gcc -shared -fPIC -O2 -Wall -Wextra -I"$(dirname "$plugin_hdr")" "$plugin_src" -o "$plugin_lib.tmp"
        mv "$plugin_lib.tmp" "$plugin_lib"
        echo "setup: built $plugin_lib"
    fi
fi
