#!/usr/bin/env bash
# Make bench/.venv-peers: the comparison stacks of bench/throughput.py, ENet
# (pyenet) and aioquic, kept out of the project's venv and dependencies.
# Safe to run again: it only installs what is missing.
#
# pyenet ships a manylinux wheel for CPython 3.11; where pip has to build it
# from source instead, it needs Cython (pip brings it), a C compiler and the
# Python headers (Debian: apt-get install build-essential python3.11-dev).
set -uo pipefail
cd "$(dirname "$0")"
venv=.venv-peers
python=${PYTHON:-python3.11}

if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv" || { echo "setup_peers: cannot create $venv with $python" >&2; exit 1; }
fi
pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)
has() { "$venv/bin/python" -c "import $1" 2>/dev/null; }
status=0

has aioquic || "${pip[@]}" aioquic || true
if ! has aioquic; then
    echo "setup_peers: aioquic could not be installed" >&2
    status=1
fi

# The first name is the upstream package; the others are forks that install
# the same "enet" module, tried only if it cannot be installed or built.
for name in pyenet pyenet311 pyenet-vladfi pyenet313; do
    has enet && break
    echo "setup_peers: installing $name" >&2
    "${pip[@]}" "$name" || true
done
if has enet; then
    "$venv/bin/python" -m pip list --disable-pip-version-check 2>/dev/null \
        | grep -iE '^(pyenet|aioquic)' >&2 || true
else
    echo "setup_peers: no ENet binding could be installed (a C compiler and" \
         "python3.11-dev are needed to build pyenet from source)" >&2
    status=1
fi
exit "$status"
