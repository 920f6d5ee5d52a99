# qnet services image: scheduler, aggregator, network, the WebSocket bridge and the schema migration.
# The core dependencies only, no vendor SDK; each Deployment names its module (python -m services.<name>.main).
# Build from the repository root (the context needs pyproject.toml, protos/ and the code):
#   docker build -f deploy/docker/services.Dockerfile -t qnet/services:0.1.0 .

# Build stage: the pinned requirements into a venv at /opt/qnet, the gRPC code generated from protos/.
FROM python:3.11.7-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /app
COPY pyproject.toml deploy/docker/requirements.py deploy/docker/constraints.txt ./
RUN python requirements.py > requirements.txt \
    && python requirements.py --tools > tools.txt \
    && python -m venv /opt/qnet \
    && /opt/qnet/bin/pip install --no-cache-dir --requirement requirements.txt --constraint constraints.txt \
    && python -m venv /opt/tools \
    && /opt/tools/bin/pip install --no-cache-dir --requirement tools.txt --constraint constraints.txt
COPY protos/ protos/
COPY scripts/gen_protos.py scripts/
COPY qnet_common/ qnet_common/
COPY services/ services/
RUN /opt/tools/bin/python scripts/gen_protos.py \
    && /opt/qnet/bin/python -m compileall -q qnet_common services gen

# Runtime stage: the venv and the code only, run as an unprivileged user with a read-only root filesystem
# (HOME and the caches point at /tmp, an emptyDir in the pod).
FROM python:3.11.7-slim-bookworm
ENV PATH=/opt/qnet/bin:$PATH \
    PYTHONPATH=/app:/app/gen \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    XDG_CACHE_HOME=/tmp/.cache \
    MPLCONFIGDIR=/tmp/matplotlib \
    NUMBA_CACHE_DIR=/tmp/numba
RUN groupadd --system --gid 10001 qnet \
    && useradd --system --uid 10001 --gid qnet --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin qnet
COPY --from=build /opt/qnet /opt/qnet
COPY --from=build /app/qnet_common /app/qnet_common
COPY --from=build /app/services /app/services
COPY --from=build /app/gen /app/gen
# The gateway serves the OpenAPI document at /api/v2/network/openapi.json (services/gateway/static.py; the
# console ships inside services/gateway/console/ above).
COPY deploy/openapi/qnet.swagger.json /app/deploy/openapi/qnet.swagger.json
WORKDIR /app
USER 10001:10001
