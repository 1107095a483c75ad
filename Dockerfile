# syntax=docker/dockerfile:1
# drift-sidecar image. Build: docker build -t drift-sidecar:0.1.0 .
# With torch (for the torch client helpers): --build-arg EXTRAS=torch
# (a CPU-only torch needs --build-arg PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu).

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY sidecar ./sidecar
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
ARG EXTRAS=""
ARG PIP_EXTRA_INDEX_URL=""
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=build /wheels /wheels
RUN set -eu; \
    wheel="$(ls /wheels/drift_sidecar-*.whl)"; \
    if [ -n "$EXTRAS" ]; then wheel="drift-sidecar[$EXTRAS] @ file://$wheel"; fi; \
    pip install "$wheel"; \
    rm -rf /wheels; \
    useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent drift-sidecar; \
    install -d -o 10001 -g 10001 /var/lib/drift-sidecar /var/run/drift-sidecar
USER 10001:10001
EXPOSE 9108
# Kubernetes ignores this (it uses the probes in k8s/); plain Docker and Compose use it.
HEALTHCHECK --interval=30s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9108/healthz', timeout=2)"]
ENTRYPOINT ["drift-sidecar", "run"]
CMD ["--config", "/etc/drift-sidecar/sidecar.yaml"]
