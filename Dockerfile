# syntax=docker/dockerfile:1
# The meterwatch image: the runtime only (no torch), run as the non-root user `meterwatch`.
#   docker build -t meterwatch .                   CPU (onnxruntime): the default target
#   docker build --target gpu -t meterwatch:gpu .  CUDA 12 + cuDNN 9 (onnxruntime-gpu)
# docker-compose.yml builds each once and reuses it for every service. The default bundle is
# inside the wheel (stream_app/models/default) and seeds the model registry volume
# (/var/lib/meterwatch/models, see deploy/image/install.sh).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
# onnxruntime-gpu's PyPI wheels are built for CUDA 12 and cuDNN 9
ARG CUDA_IMAGE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04

# The wheel, from the sources the sdist holds (the worker's code and the default bundle).
FROM ${PYTHON_IMAGE} AS wheel
WORKDIR /src
COPY pyproject.toml README.md LICENSE MANIFEST.in ./
COPY stream_app ./stream_app
COPY training ./training
COPY onnx_models/default ./onnx_models/default
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# GPU: Ubuntu's Python 3.12 in a venv on NVIDIA's CUDA runtime image.
FROM ${CUDA_IMAGE} AS gpu
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/meterwatch
ENV PATH=/opt/meterwatch/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HOME=/var/lib/meterwatch \
    XDG_STATE_HOME=/var/lib/meterwatch/state
COPY --from=wheel /wheels /tmp/wheels
COPY deploy/image/install.sh /tmp/install.sh
RUN sh /tmp/install.sh gpu,rocksdb && rm /tmp/install.sh
USER meterwatch
WORKDIR /var/lib/meterwatch
EXPOSE 6066
ENTRYPOINT ["meterwatch"]
CMD ["worker"]

# CPU, the default target (last).
FROM ${PYTHON_IMAGE} AS cpu
ENV PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/var/lib/meterwatch \
    XDG_STATE_HOME=/var/lib/meterwatch/state
COPY --from=wheel /wheels /tmp/wheels
COPY deploy/image/install.sh /tmp/install.sh
RUN sh /tmp/install.sh cpu,rocksdb && rm /tmp/install.sh
USER meterwatch
WORKDIR /var/lib/meterwatch
EXPOSE 6066
ENTRYPOINT ["meterwatch"]
CMD ["worker"]
