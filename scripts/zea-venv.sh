#!/usr/bin/env bash
# Creates (once) the virtualenv `.venv-zea` with the real zea package, the peer of the zea
# interoperability tests (tests/zea.rs): zea 0.1.8 and jax[cpu], about 1.4 GB, kept apart
# from `.venv` so that the other test peers stay small. Safe to run repeatedly and from
# several processes at once (flock); prints the interpreter's path.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv-zea
exec 9>"$venv.lock"
flock 9
if ! KERAS_BACKEND=jax "$venv/bin/python" -c 'import zea, hdf5plugin' >/dev/null 2>&1; then
  echo "zea-venv: installing zea and jax[cpu] into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r scripts/requirements-zea.txt >&2
fi
echo "$PWD/$venv/bin/python"
