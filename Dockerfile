# The worker image: runtime only (no torch), CPU ONNX Runtime.
# For CUDA, build FROM an nvidia/cuda runtime image and install '.[gpu,rocksdb]' instead.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY stream_app ./stream_app
COPY training/__init__.py ./training/__init__.py
COPY onnx_models ./onnx_models
RUN pip install --no-cache-dir '.[cpu,rocksdb]'
ENV MW_MODEL_DIR=/app/onnx_models/default \
    MW_STORE=rocksdb:///var/lib/meterwatch \
    MW_WEB_PORT=6066
EXPOSE 6066
ENTRYPOINT ["meterwatch"]
CMD ["worker"]
