# syntax=docker/dockerfile:1
# drift-sidecar image. Build: docker build -t drift-sidecar:0.1.0 .
# Every Python package comes at the version constraints.txt pins (regenerate it with
# scripts/constraints), so two builds of one commit install the same thing.
# With torch (for the torch client helpers): --build-arg EXTRAS=torch; torch is pinned by
# TORCH_VERSION (a CPU-only torch needs
# --build-arg PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu).
#
# Run with a config mounted where CMD reads it; it must say `http: {host: 0.0.0.0}` for
# `-p 9108:9108` to reach the daemon (its default, 127.0.0.1, is the container's own
# loopback). docs/deploy.md has a config for Docker:
#   docker run -p 9108:9108 -v "$PWD/sidecar.yaml:/etc/drift-sidecar/sidecar.yaml:ro" drift-sidecar:0.1.0

FROM python:3.11-slim AS build
WORKDIR /src
# PIP_CONSTRAINT, unlike -c, reaches the isolated build environment too (setuptools, wheel).
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_CONSTRAINT=/src/constraints.txt
COPY constraints.txt pyproject.toml README.md ./
COPY sidecar ./sidecar
RUN pip wheel --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
ARG EXTRAS=""
ARG PIP_EXTRA_INDEX_URL=""
ARG TORCH_VERSION=2.13.0
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=build /wheels /wheels
COPY --from=build /src/constraints.txt /wheels/constraints.txt
# torch==X also admits the CPU build X+cpu (a local version), so either index works.
RUN set -eu; \
    wheel="$(ls /wheels/drift_sidecar-*.whl)"; \
    if [ -n "$EXTRAS" ]; then wheel="drift-sidecar[$EXTRAS] @ file://$wheel"; fi; \
    printf 'torch==%s\n' "$TORCH_VERSION" >> /wheels/constraints.txt; \
    pip install -c /wheels/constraints.txt "$wheel"; \
    rm -rf /wheels; \
    useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent drift-sidecar; \
    install -d -o 10001 -g 10001 /var/lib/drift-sidecar /var/run/drift-sidecar
USER 10001:10001
EXPOSE 9108
# Kubernetes ignores this (it uses the probes in k8s/ and the chart); plain Docker and
# Compose use it. It reads the config CMD names, so it asks the port and address the
# daemon listens on (loopback for 0.0.0.0); with no file there, the defaults'.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, os, urllib.request; from sidecar.config import embedded_defaults, load_config; c = load_config(sys.argv[1]) if os.path.exists(sys.argv[1]) else embedded_defaults(); h = {'0.0.0.0': '127.0.0.1', '::': '::1'}.get(c.http.host, c.http.host); h = f'[{h}]' if ':' in h else h; urllib.request.urlopen(f'http://{h}:{c.http.port}/healthz', timeout=3)", "/etc/drift-sidecar/sidecar.yaml"]
ENTRYPOINT ["drift-sidecar", "run"]
CMD ["--config", "/etc/drift-sidecar/sidecar.yaml"]
