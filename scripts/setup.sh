#!/usr/bin/env bash
# Set up everything edgekit needs on a fresh Debian/Ubuntu machine:
#   1. arm-none-eabi-gcc, newlib headers, binutils and qemu-system-arm (apt), if missing;
#   2. a virtual environment in .venv with the CPU build of torch, then edgekit itself.
# Idempotent: a second run only checks. Used by `make setup` (and so by `make demo`/`make test`).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

need_apt=()
command -v arm-none-eabi-gcc >/dev/null || need_apt+=(gcc-arm-none-eabi libnewlib-arm-none-eabi binutils-arm-none-eabi)
command -v qemu-system-arm >/dev/null || need_apt+=(qemu-system-arm)
command -v gcc >/dev/null || need_apt+=(gcc)
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "setup: installing ${need_apt[*]} (apt)"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

stamp="$VENV/.edgekit-setup"
want="$(sha256sum pyproject.toml | cut -c1-16)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$VENV/bin/edgekit" ]; then
    exit 0
fi
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
pip_install -e ".[dev]"
echo "$want" > "$stamp"
echo "setup: done"
