# driftwatch: the worker (`driftwatch run`), the sidecar (`driftwatch sidecar`) and the simulator in one image.
#
#   docker build -t driftwatch:0.1.0 .
#   docker run --rm driftwatch:0.1.0 check-config --skip-secrets /etc/driftwatch/config/driftwatch.yaml
#
# The builder stage builds the wheel and installs it with its runtime dependencies only (no extras: no dev
# tools, no demo broker) into /opt/venv; the final stage copies that venv. The process runs as uid 10001,
# writes only to /tmp and to /var/lib/driftwatch (its working directory: the Faust data dir and the audit file),
# so the root filesystem can be mounted read-only (see docs/deployment.md).

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/venv
COPY pyproject.toml README.md ./
COPY src ./src
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
    && /opt/venv/bin/pip install /wheels/*.whl \
    && /opt/venv/bin/driftwatch version

FROM ${PYTHON_IMAGE} AS runtime
ARG UID=10001
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
RUN groupadd --system --gid ${UID} driftwatch \
    && useradd --system --uid ${UID} --gid ${UID} --home-dir /var/lib/driftwatch --shell /usr/sbin/nologin driftwatch \
    && install -d -o ${UID} -g ${UID} -m 0750 /var/lib/driftwatch
COPY --from=builder /opt/venv /opt/venv
COPY config/driftwatch.example.yaml /etc/driftwatch/driftwatch.example.yaml
WORKDIR /var/lib/driftwatch
VOLUME ["/var/lib/driftwatch"]
USER 10001:10001
# /metrics (worker), the API with /healthz and /readyz (worker), the sidecar.
EXPOSE 9464 9465 9466
ENTRYPOINT ["driftwatch"]
CMD ["--help"]
