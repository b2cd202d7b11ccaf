# The gobi server image (also carries the CLI). Used by docker-compose.yml.
#
#   docker build -t gobi:0.1.0 .                                         # pyproject.toml's version
#   docker run --rm -p 8080:8080 -v gobi-data:/var/lib/gobi gobi:0.1.0   # embedded defaults
#
# Two stages: the build stage has the compilers pyfuse3 needs (the package declares it for
# the client), the runtime stage only the shared libraries.

FROM python:3.11-slim-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc pkg-config libfuse3-dev \
 && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/gobi
WORKDIR /src
COPY pyproject.toml setup.cfg README.md ./
COPY gobi ./gobi
COPY server ./server
COPY drivers ./drivers
COPY fs ./fs
RUN /opt/gobi/bin/pip install --no-cache-dir --disable-pip-version-check .

FROM python:3.11-slim-bookworm
RUN apt-get update \
 && apt-get install -y --no-install-recommends libfuse3-3 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/gobi --shell /usr/sbin/nologin gobi \
 && install -d -o gobi -g gobi -m 0700 /var/lib/gobi /var/lib/gobi-keys
COPY --from=build /opt/gobi /opt/gobi
COPY docker/entrypoint.sh /usr/local/bin/gobi-entrypoint
COPY docker/healthcheck.py /usr/local/lib/gobi-healthcheck.py
# docker-compose.yml's s3-init job: creates the bucket GOBI_STORAGE names
COPY docker/s3-init.py /usr/local/lib/gobi-s3-init.py
ENV PATH=/opt/gobi/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    GOBI_HOST=0.0.0.0 \
    GOBI_PORT=8080 \
    GOBI_DATA_DIR=/var/lib/gobi
USER gobi
VOLUME ["/var/lib/gobi"]
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "/usr/local/lib/gobi-healthcheck.py"]
# SIGTERM drains: in-flight requests finish, WebSockets close with 1001.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/gobi-entrypoint"]
CMD ["gobi", "server"]
