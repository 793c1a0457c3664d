# Small runtime image: wheels built in a first stage, non-root, HEALTHCHECK on /healthz.
# The embedded default needs redis-server in the image; in production set ATP_REDIS_URL.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY atp_service ./atp_service
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /data atp \
 && mkdir -p /data && chown atp /data
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER atp
WORKDIR /data
ENV ATP_HTTP_HOST=0.0.0.0 \
    ATP_HTTP_PORT=8080 \
    ATP_DATA_DIR=/data \
    PYTHONUNBUFFERED=1
EXPOSE 8080
VOLUME ["/data"]
HEALTHCHECK --interval=10s --timeout=2s --start-period=20s --retries=3 \
  CMD python -c "import os,urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('ATP_HTTP_PORT','8080'), timeout=2)"
ENTRYPOINT ["atp-service"]
CMD ["serve"]
