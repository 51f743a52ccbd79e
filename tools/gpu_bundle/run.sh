#!/usr/bin/env bash
# moero GPU bundle: gpu-bundle/run.sh OUTDIR [--rehearse]
#
# On a GPU machine with no network: installs the wheelhouse offline into a virtual environment that sees
# the machine's torch (its python's site folders), runs the CUDA tests, the GPU benchmarks and the gpu-short chapters (01, 06-09),
# writes a time and memory estimate, and packs everything into at most 8 files under OUTDIR.
# --rehearse: the same on CPU, training cut to a few steps; the machine's own packages (numpy, scipy,
# h5py, ...; machine-standin.txt) are first installed from the package index into the fresh environment.
#
# Environment: PYTHON (the machine's python, default python3), MOERO_BUNDLE_WORK (scratch folder, default
# a new /tmp folder), MOERO_BUNDLE_BUDGET (seconds for the whole run; default 585, 900 with --rehearse).
set -u -o pipefail
STARTED=$(date +%s)
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
usage() { echo "usage: $0 OUTDIR [--rehearse]" >&2; exit 2; }
OUT="" REHEARSE=0
for arg in "$@"; do
  case "$arg" in
    --rehearse) REHEARSE=1 ;;
    -h|--help) usage ;;
    -*) echo "unknown option $arg" >&2; usage ;;
    *) [ -z "$OUT" ] && OUT=$arg || usage ;;
  esac
done
[ -n "$OUT" ] || usage
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
PY=${PYTHON:-python3}
WORK=${MOERO_BUNDLE_WORK:-$(mktemp -d /tmp/moero-gpu-bundle.XXXXXX)}
mkdir -p "$WORK/logs" && WORK=$(cd "$WORK" && pwd)
BUDGET=${MOERO_BUNDLE_BUDGET:-$([ $REHEARSE = 1 ] && echo 900 || echo 585)}
SRC="$HERE/src"
LOG="$WORK/logs/install.log"
echo "moero GPU bundle: out $OUT, scratch $WORK, budget ${BUDGET} s, rehearse=$REHEARSE"

install() {
  set -e
  "$PY" -c 'import sys, torch; print(sys.version.split()[0], sys.executable, "torch", torch.__version__)'
  # a virtual environment that sees the machine's packages: what --system-site-packages does, but done with a
  # .pth file naming the site folders of the machine's python, because that python may itself be a virtual
  # environment (/opt/torch/.venv), whose packages --system-site-packages would not see (only its base's)
  "$PY" -m venv "$WORK/venv" || "$PY" -m venv --without-pip "$WORK/venv"
  VPY="$WORK/venv/bin/python"
  SITE=$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  "$PY" -c 'import site, sys
dirs = [p for p in sys.path if p.rstrip("/").endswith(("site-packages", "dist-packages"))]
print("\n".join(dict.fromkeys(dirs)))' > "$SITE/_moero_machine_site.pth"
  if "$VPY" -m pip --version >/dev/null 2>&1; then PIP=("$VPY" -m pip); else PIP=("$PY" -m pip --python "$VPY"); fi
  PIPQ=("${PIP[@]}" --disable-pip-version-check --no-input)
  INSTALL=(install -q --no-compile)
  if [ $REHEARSE = 1 ]; then
    echo "rehearsal: the machine's own packages from the package index (machine-standin.txt)"
    "${PIPQ[@]}" "${INSTALL[@]}" -c "$SRC/constraints.txt" -r "$HERE/machine-standin.txt"
  fi
  # offline: the wheelhouse only (no index, no local find-links or constraints from this machine's pip settings)
  env -u PIP_FIND_LINKS -u PIP_EXTRA_INDEX_URL -u PIP_INDEX_URL -u PIP_CONSTRAINT PIP_CONFIG_FILE=/dev/null \
    "${PIPQ[@]}" "${INSTALL[@]}" --no-index --find-links "$HERE/wheelhouse" -r "$HERE/wheelhouse/requirements.txt"
  PYTHONPATH="$SRC" "$VPY" -c 'import papermill, jupytext, nbclient, ipykernel, torch, numpy, h5py, moero
print("installed: papermill", papermill.__version__, "jupytext", jupytext.__version__, "torch", torch.__version__)'
}
( install ) > "$LOG" 2>&1
INSTALL_RC=$?
INSTALL_S=$(( $(date +%s) - STARTED ))
tail -n 3 "$LOG"
echo "install: exit $INSTALL_RC after ${INSTALL_S} s"
VPY="$WORK/venv/bin/python"
[ -x "$VPY" ] || VPY="$PY"
ARGS=(--out "$OUT" --work "$WORK" --root "$SRC" --python "$VPY" --started "$STARTED" --budget "$BUDGET"
      --install-rc "$INSTALL_RC" --install-s "$INSTALL_S")
[ $REHEARSE = 1 ] && ARGS+=(--rehearse)
# the driver needs the standard library only: it packs OUT even when the install failed
DRIVER_PY="$VPY"
"$DRIVER_PY" -c 'import json' 2>/dev/null || DRIVER_PY="$PY"
PYTHONPATH="$SRC" "$DRIVER_PY" "$SRC/tools/gpu_bundle/driver.py" "${ARGS[@]}"
