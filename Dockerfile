# Image for the keep_samd pipeline's components on Kubeflow Pipelines / Vertex AI
# (the image pipelines/kubeflow_v2_runner.py --image points at).
FROM python:3.11-slim
ENV TF_USE_LEGACY_KERAS=1 PYTHONUNBUFFERED=1
WORKDIR /pipeline
COPY requirements.lock setup.py ./
RUN pip install --no-cache-dir --no-deps --ignore-requires-python -r requirements.lock
COPY schemas schemas
COPY synthetic synthetic
COPY components components
COPY models models
COPY trainers trainers
COPY pipelines pipelines
COPY serving serving
RUN pip install --no-cache-dir --no-deps --no-build-isolation -e .
