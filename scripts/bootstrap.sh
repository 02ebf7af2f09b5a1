#!/usr/bin/env bash
# Sets up what `make serve` or `make test` needs, idempotently:
#   scripts/bootstrap.sh test            every Debian package in scripts/apt-packages.txt
#   scripts/bootstrap.sh serve [CONFIG]  only those the configuration runs (Chromium for
#                                        webchat; see scripts/system_packages.py)
# then a virtualenv in .venv, pinned Python packages, and the core plus every bundled
# plugin installed editable. A stamp file skips the pip step when nothing it depends
# on has changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv
PURPOSE=${1:-test}
CONFIG=${2:-}

"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
    echo "bootstrap: Python 3.11 or newer is required (found $("$PYTHON" --version))" >&2; exit 1; }

# --- system packages -------------------------------------------------------
packages=$("$PYTHON" scripts/system_packages.py "$PURPOSE" ${CONFIG:+"$CONFIG"})
missing=()
for pkg in $packages; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    echo "bootstrap: installing Debian packages: ${missing[*]}"
    SUDO=""; [[ $(id -u) -eq 0 ]] || SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- python ----------------------------------------------------------------
[[ -x $VENV/bin/python ]] || "$PYTHON" -m venv "$VENV"

# Every bundled plugin, and the example plugins whose tests run in `make test`
# (the tutorial plugin, and the web-login demo that the webchat tests log in to).
plugins=(plugins/*/ examples/third_party_plugin/ examples/webchat-demo/)
stamp_input=$(cat constraints.txt pyproject.toml plugins/*/pyproject.toml examples/third_party_plugin/pyproject.toml examples/webchat-demo/pyproject.toml scripts/bootstrap.sh | sha256sum | cut -d' ' -f1)
if [[ -f $VENV/.bootstrap-stamp && $(cat $VENV/.bootstrap-stamp) == "$stamp_input" ]]; then
    exit 0
fi
echo "bootstrap: installing Python packages into $VENV"
$VENV/bin/python -m pip install -q --upgrade pip
editables=(-e ".[dev,uvloop]")
for p in "${plugins[@]}"; do editables+=(-e "$p"); done
$VENV/bin/python -m pip install -q -c constraints.txt "${editables[@]}"
echo "$stamp_input" > $VENV/.bootstrap-stamp
