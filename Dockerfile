# atp-service container image (docs/security.md, deploy/).
#
# Stage 1 builds wheels for the service and its dependencies and installs them into a virtual
# environment; the runtime stage copies only that environment: no compiler, no pip, no wheels,
# no source tree. The runtime runs as a non-root uid and writes only under /data (the embedded
# Redis's AOF and socket: a volume) and /tmp, so it runs with a read-only root filesystem.
#
#   docker build -t atp-service:0.1.0 .
#   docker build --build-arg EMBEDDED_REDIS=0 -t atp-service:0.1.0-noredis .  # ATP_REDIS_URL only
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# Dependencies first (their wheels are the slow part and change rarely), then the package.
COPY pyproject.toml README.md ./
COPY atp_service ./atp_service
RUN python3 -m venv /opt/atp \
 && /opt/atp/bin/pip wheel --wheel-dir /wheels . \
 && /opt/atp/bin/pip install --no-index --find-links /wheels atp-service \
 && /opt/atp/bin/pip uninstall -y pip setuptools \
 && /opt/atp/bin/python -m compileall -q /opt/atp \
 && /opt/atp/bin/atp-service --help > /dev/null

FROM ${PYTHON_IMAGE} AS runtime
# 1 (default): redis-server is in the image for the embedded default (one replica, state
# under /data). 0: a smaller image that needs ATP_REDIS_URL, as every multi-replica deploy does.
ARG EMBEDDED_REDIS=1
RUN set -eux; \
    if [ "$EMBEDDED_REDIS" = 1 ]; then \
      apt-get update; \
      apt-get install -y --no-install-recommends redis-server; \
      rm -rf /var/lib/apt/lists/* /var/log/apt /var/log/dpkg.log /var/cache/debconf/*-old; \
    fi; \
    groupadd --system --gid 10001 atp; \
    useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin atp; \
    mkdir -p /data; \
    chown 10001:10001 /data; \
    chmod 0700 /data
COPY --from=build /opt/atp /opt/atp
ENV PATH=/opt/atp/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TMPDIR=/tmp \
    ATP_HTTP_HOST=0.0.0.0 \
    ATP_HTTP_PORT=8080 \
    ATP_DATA_DIR=/data
# Numeric uid:gid, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8080
# /healthz is up-ness only (no Redis round trip); readiness (/readyz) is the orchestrator's.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python3", "-c", "import os,ssl,sys,urllib.request as u; e=os.environ.get; tls=bool(e('ATP_TLS_CERT','').strip()); url='%s://127.0.0.1:%s/healthz' % ('https' if tls else 'http', e('ATP_HTTP_PORT','').strip() or '8080'); sys.exit(0 if u.urlopen(url, timeout=2, context=ssl._create_unverified_context() if tls else None).status == 200 else 1)"]
ENTRYPOINT ["atp-service"]
CMD ["serve"]
