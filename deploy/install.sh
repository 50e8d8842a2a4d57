#!/bin/sh
# Install an edgevib gateway agent from an `edgevib deploy bundle` (see docs/deploy.md).
#
#   sudo sh edgevib-bundle/install.sh [--prefix /opt/edgevib] [--confdir /etc/edgevib]
#        [--python python3] [--no-systemd] [--no-start] [--no-slim] [--check]
#
# PREFIX, CONFDIR, PYTHON and SYSTEMD_DIR may also come from the environment. Creates a virtualenv in
# PREFIX/venv, installs the bundled wheel(s), copies the config (CONFDIR), model
# (PREFIX/models), TLS files and signing key, renders the systemd unit and, unless
# --no-systemd, installs it (user `edgevib`) and starts it. Prints the ExecStart command.
# Before the unit, unless --no-slim, it removes what the running agent never loads (pip, setuptools
# and ONNX Runtime's C/C++ API library: 201 -> 142 MB; docs/edge_footprint.md "Install size").
set -eu

PREFIX=${PREFIX:-/opt/edgevib}
CONFDIR=${CONFDIR:-/etc/edgevib}
PYTHON=${PYTHON:-python3}
SYSTEMD_DIR=${SYSTEMD_DIR:-/etc/systemd/system}
SYSTEMD=1
START=1
CHECK=0
SLIM=${SLIM:-1}
SERVICE_USER=edgevib
UNIT=edgevib-agent.service

die() { echo "install.sh: $1; fix: $2" >&2; exit 2; }

while [ $# -gt 0 ]; do
    case $1 in
        --prefix) [ $# -ge 2 ] || die "--prefix needs a value" "pass --prefix DIR"; PREFIX=$2; shift 2 ;;
        --confdir) [ $# -ge 2 ] || die "--confdir needs a value" "pass --confdir DIR"; CONFDIR=$2; shift 2 ;;
        --python) [ $# -ge 2 ] || die "--python needs a value" "pass --python /usr/bin/python3.11"; PYTHON=$2; shift 2 ;;
        --no-systemd) SYSTEMD=0; shift ;;
        --no-start) START=0; shift ;;
        --no-slim) SLIM=0; shift ;;
        --check) CHECK=1; shift ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) die "unknown argument '$1'" "see --help" ;;
    esac
done

# Paths end up in a TOML file, a systemd unit and sed expressions: keep them plain.
for p in "$PREFIX" "$CONFDIR"; do
    case $p in
        /*) ;;
        *) die "path '$p' is not absolute" "use an absolute --prefix / --confdir" ;;
    esac
    case $p in
        *[!A-Za-z0-9._/-]*|*/../*|*/..) die "path '$p' has characters other than A-Z a-z 0-9 . _ - /" "choose a plain path" ;;
    esac
done
PREFIX=${PREFIX%/}; CONFDIR=${CONFDIR%/}
[ -n "$PREFIX" ] && [ -n "$CONFDIR" ] || die "PREFIX or CONFDIR is '/'" "install into a directory of its own"

HERE=$(cd "$(dirname "$0")" && pwd)
cd /  # a package directory in the caller's cwd must not shadow the installed one in the checks below
[ -f "$HERE/bundle.env" ] || die "no bundle.env next to install.sh in $HERE" "unpack the whole bundle: tar -xzf gw.tar.gz"
# shellcheck disable=SC1091
. "$HERE/bundle.env"  # EDGEVIB_VERSION EDGEVIB_WHEEL CONFIG_NAME MODEL_NAME PUBKEY_NAME OFFLINE PYTHON_VERSION

# 1. the bundle is whole (a truncated copy fails here, not half-way through the install)
if command -v sha256sum >/dev/null 2>&1; then
    (cd "$HERE" && sha256sum --quiet -c SHA256SUMS) || die "bundle checksums do not match" "copy the bundle again"
else
    echo "install.sh: sha256sum not found; bundle checksums not verified" >&2
fi

# 2. a Python that can run it
command -v "$PYTHON" >/dev/null 2>&1 || die "no '$PYTHON' on this machine" "install python3 (>= 3.11) with venv, or pass --python"
PYV=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
"$PYTHON" -c 'import sys, venv; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null \
    || die "$PYTHON is Python $PYV (or lacks venv)" "install Python >= 3.11 with the venv module (apt-get install python3-venv)"
if [ "$OFFLINE" = 1 ] && [ "$PYV" != "$PYTHON_VERSION" ]; then
    die "the bundled wheels are for Python $PYTHON_VERSION, $PYTHON is $PYV" \
        "pass --python pythonX.Y matching, or rebuild with: edgevib deploy bundle --python-version $PYV"
fi

VENV=$PREFIX/venv
EXEC="$VENV/bin/edgevib agent --config $CONFDIR/$CONFIG_NAME"
if [ "$CHECK" = 1 ]; then
    echo "install.sh: bundle edgevib $EDGEVIB_VERSION OK (offline=$OFFLINE); would install into $PREFIX, config $CONFDIR"
    echo "ExecStart=$EXEC"
    exit 0
fi

# 3. virtualenv + wheels
umask 022
mkdir -p "$PREFIX"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
# A slimmed venv (step 5) has no pip: put the interpreter's bundled one back (offline) to upgrade.
"$VENV/bin/python" -m pip --version >/dev/null 2>&1 || "$VENV/bin/python" -m ensurepip >/dev/null \
    || die "the virtualenv in $VENV has no pip and ensurepip failed" "remove $VENV and run install.sh again"
# The lock is complete (edgevib[edge] and everything below it, pinned): --no-deps installs
# exactly it, without resolving; the import check below proves nothing is missing.
if [ "$OFFLINE" = 1 ]; then
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps --no-index \
        --find-links "$HERE/wheels" -r "$HERE/requirements-edge.txt" "$HERE/wheels/$EDGEVIB_WHEEL"
else
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps \
        -r "$HERE/requirements-edge.txt" "$HERE/wheels/$EDGEVIB_WHEEL"
fi
"$VENV/bin/python" -m pip check -q >/dev/null 2>&1 || "$VENV/bin/python" -m pip check >&2 \
    || die "the installed packages are inconsistent" "rebuild the bundle from an environment with edgevib[edge]"
"$VENV/bin/python" -c 'import edgevib.edge.agent, edgevib.edge.mqtt, edgevib.edge.runtime' \
    || die "the edge agent cannot be imported" "see the error above; rebuild the bundle"
"$VENV/bin/edgevib" --version >/dev/null || die "the installed edgevib does not run" "see the pip output above"

# 4. files: model (readable), config + secrets (owner/group only)
render() {  # render SRC DST: replace the bundle's path tokens
    sed -e "s|@PREFIX@|$PREFIX|g" -e "s|@CONFDIR@|$CONFDIR|g" -e "s|@VENV@|$VENV|g" \
        -e "s|@CONFIG@|$CONFIG_NAME|g" -e "s|@USER@|$SERVICE_USER|g" "$1" > "$2"
}
mkdir -p "$PREFIX/models" "$PREFIX/share"
install -m 0644 "$HERE/models/$MODEL_NAME" "$PREFIX/models/$MODEL_NAME"
mkdir -p "$CONFDIR"
chmod 0755 "$CONFDIR"
umask 077
render "$HERE/config/$CONFIG_NAME" "$CONFDIR/$CONFIG_NAME.new"
mv "$CONFDIR/$CONFIG_NAME.new" "$CONFDIR/$CONFIG_NAME"
if [ -d "$HERE/config/tls" ]; then
    mkdir -p "$CONFDIR/tls"
    cp "$HERE"/config/tls/* "$CONFDIR/tls/"
fi
if [ -n "$PUBKEY_NAME" ]; then
    mkdir -p "$CONFDIR/keys"
    install -m 0644 "$HERE/keys/$PUBKEY_NAME" "$CONFDIR/keys/$PUBKEY_NAME"
fi
umask 022
render "$HERE/$UNIT.in" "$PREFIX/share/$UNIT"

# 5. slim: a gateway keeps only what the running agent loads. The installers (pip, setuptools)
#    come back with ensurepip when install.sh runs again (step 3). ONNX Runtime's wheel carries
#    its C/C++ API library (libonnxruntime.so, 35 MB) beside the Python binding, which is
#    self-contained and does not load it: the library is moved aside, the installed model is
#    loaded and run on zeros in a fresh interpreter, and only then deleted (else put back).
if [ "$SLIM" = 1 ]; then
    ORTLIBS=$("$VENV/bin/python" -c 'import glob, os, onnxruntime as o; print(" ".join(glob.glob(os.path.join(os.path.dirname(o.__file__), "capi", "libonnxruntime.so*"))))')
    for f in $ORTLIBS; do mv "$f" "$f.slim"; done
    if "$VENV/bin/python" - "$PREFIX/models/$MODEL_NAME" <<'PY'
import sys

import numpy as np
from edgevib.edge.runtime import OnnxModel

s = OnnxModel(sys.argv[1]).session
dims = {"float": np.float32, "double": np.float64, "int64": np.int64, "int32": np.int32}
feeds = {i.name: np.zeros([d if isinstance(d, int) else 1 for d in i.shape],
                          dims.get(i.type[7:-1], np.float32)) for i in s.get_inputs()}
s.run(None, feeds)
PY
    then
        for f in $ORTLIBS; do rm -f "$f.slim"; done
    else
        for f in $ORTLIBS; do mv "$f.slim" "$f"; done
        echo "install.sh: ONNX Runtime needs its C/C++ API library in this build; kept it" >&2
    fi
    "$VENV/bin/python" -m pip uninstall -y -q --disable-pip-version-check pip setuptools wheel 2>/dev/null \
        || echo "install.sh: could not remove pip/setuptools from $VENV (the agent does not need them)" >&2
    "$VENV/bin/edgevib" --version >/dev/null || die "the slimmed install does not run" "run install.sh again with --no-slim"
fi

# 6. systemd: dedicated user, group-readable secrets, unit enabled (and started)
if [ "$SYSTEMD" = 1 ]; then
    [ "$(id -u)" = 0 ] || die "installing the systemd unit needs root" "run with sudo, or pass --no-systemd"
    command -v systemctl >/dev/null 2>&1 || die "no systemctl on this machine" "pass --no-systemd and start the agent yourself"
    if ! id "$SERVICE_USER" >/dev/null 2>&1; then
        useradd --system --home-dir /var/lib/edgevib --no-create-home --shell /usr/sbin/nologin "$SERVICE_USER"
    fi
    chgrp "$SERVICE_USER" "$CONFDIR/$CONFIG_NAME"
    chmod 0640 "$CONFDIR/$CONFIG_NAME"
    if [ -d "$CONFDIR/tls" ]; then
        chgrp -R "$SERVICE_USER" "$CONFDIR/tls"
        chmod 0750 "$CONFDIR/tls"
        chmod 0640 "$CONFDIR"/tls/*
    fi
    install -m 0644 "$PREFIX/share/$UNIT" "$SYSTEMD_DIR/$UNIT"
    systemctl daemon-reload
    if [ "$START" = 1 ]; then
        systemctl enable "$UNIT"
        systemctl restart "$UNIT"
        echo "install.sh: $UNIT started; logs: journalctl -u $UNIT -f"
    else
        systemctl enable "$UNIT"
        echo "install.sh: $UNIT enabled, not started (systemctl start $UNIT)"
    fi
else
    echo "install.sh: unit not installed (--no-systemd); rendered at $PREFIX/share/$UNIT"
fi
echo "install.sh: edgevib $EDGEVIB_VERSION installed in $VENV"
echo "ExecStart=$EXEC"
