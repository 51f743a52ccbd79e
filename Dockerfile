# The CMRxRecon2025 test-phase container: CUDA runtime, the pinned environment, the package, a checkpoint.
#
#   docker build -t moero-cmrxrecon --build-arg CHECKPOINT=runs/moero/checkpoint.pt .
#   docker run --gpus all -v <test data>:/input:ro -v <results>:/output moero-cmrxrecon
#
# The entrypoint (docker/entrypoint.sh) runs `moero predict` from /input to /output and writes
# /output/Submission.zip; see README.md, "Challenge container".
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

ARG CHECKPOINT=checkpoint.pt
ENV DEBIAN_FRONTEND=noninteractive PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH \
    MOERO_INPUT=/input MOERO_OUTPUT=/output MOERO_CHECKPOINT=/opt/moero/checkpoint.pt

RUN apt-get update \
    && apt-get install -y --no-install-recommends software-properties-common \
    && add-apt-repository -y ppa:deadsnakes/ppa \
    && apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3.11 -m venv /opt/venv

WORKDIR /opt/moero/src
# torch first (the largest layer, survives source changes), then the package with the pinned versions
RUN pip install "torch==2.13.0"
COPY pyproject.toml constraints.txt README.md LICENSE ./
COPY moero ./moero
RUN pip install -c constraints.txt . && python -c "import moero"

COPY docker/entrypoint.sh /usr/local/bin/moero-entrypoint
COPY ${CHECKPOINT} /opt/moero/checkpoint.pt
ENV MOERO_PYTHON=/opt/venv/bin/python
WORKDIR /opt/moero
ENTRYPOINT ["/usr/local/bin/moero-entrypoint"]
