#!/bin/sh
# Container entrypoint for the CMRxRecon2025 test phase: `moero predict` from the challenge's input
# mount to its output mount.
#
#   docker run --gpus all -v <test data>:/input:ro -v <results>:/output moero-cmrxrecon
#
# /input holds the organisers' tree (MultiCoil/<Modality>/TestSet/UnderSample_<Task>/...; masks in
# the files or in Mask_<Task>); every task found there is reconstructed into
# /output/<Task>/MultiCoil/... (img4ranking, MATLAB v5) and /output/Submission.zip. A fastMRI folder
# (*.h5) gets /output/reconstructions/<file>.h5 instead. Extra arguments go to `moero predict`
# (e.g. --task TaskR1, --device cpu).
#
# Settings (environment): MOERO_INPUT (default /input), MOERO_OUTPUT (/output), MOERO_CHECKPOINT
# (/opt/moero/checkpoint.pt: the weights baked into the image), MOERO_PYTHON (python3).
set -eu

input="${MOERO_INPUT:-/input}"
output="${MOERO_OUTPUT:-/output}"
checkpoint="${MOERO_CHECKPOINT:-/opt/moero/checkpoint.pt}"
python="${MOERO_PYTHON:-python3}"

if [ ! -d "$input" ]; then
    echo "error: input mount $input is not a directory (mount the test data there, or set MOERO_INPUT)" >&2
    exit 2
fi
if [ ! -f "$checkpoint" ] && [ ! -f "$checkpoint/checkpoint.pt" ]; then
    echo "error: checkpoint $checkpoint does not exist (bake it into the image, mount it, or set MOERO_CHECKPOINT)" >&2
    exit 2
fi
mkdir -p "$output"
exec "$python" -m moero predict --checkpoint "$checkpoint" --data "$input" --out "$output" --no-progress "$@"
