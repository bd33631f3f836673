# syntax=docker/dockerfile:1
#
# One image for every rowcast service; the subcommand picks the role:
#   docker run rowcast migrate            install/upgrade the schema rowcast (only) and exit
#   docker run rowcast api ...            REST API under /api and the web page at /
#   docker run rowcast notifier ...       WebSocket /ws, SSE /sse, long-poll /changes
#   docker run -p 8080:8080 rowcast up    everything in one process (embedded Postgres when no
#                                         DATABASE_URL is set; handy for a demo, not production)
# docker-compose.yml next to this file wires the production layout together.

# -- build: install the project and its dependencies into a self-contained virtualenv ----------
FROM python:3.12-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN python -m venv /opt/rowcast

WORKDIR /src
# Only what the package is built from (the folders pyproject.toml's package-dir maps into the one
# `rowcast` package), so the build needs no .dockerignore and never bakes a local .venv, .git, the
# benchmarks or test artefacts into a layer. tests/unit/test_deploy.py fails if a folder is added
# to package-dir but not copied here.
COPY pyproject.toml README.md ./
COPY api/ api/
COPY notifier/ notifier/
COPY db/ db/
COPY web/ web/
COPY rowcast/ rowcast/
COPY deploy/ deploy/
# A regular (non-editable) install: the image must not depend on /src, which is not copied on.
RUN /opt/rowcast/bin/pip install .

# -- runtime: the virtualenv on a clean base, run as an unprivileged user -----------------------
FROM python:3.12-slim

# ROWCAST_HOST: the loopback default would be unreachable from outside the container. The compose
# services pass --host explicitly anyway; this makes `docker run -p 8080:8080 rowcast up` work.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/rowcast/bin:$PATH \
    ROWCAST_HOST=0.0.0.0

# Same base image and path as the build stage, so the venv's interpreter links stay valid.
COPY --from=build /opt/rowcast /opt/rowcast

# Non-root: a compromised process gets no root in the container, and the embedded Postgres
# used by `rowcast up` refuses to run as root anyway.
RUN useradd --system --create-home --home-dir /home/rowcast --uid 10001 --user-group rowcast
USER rowcast
WORKDIR /home/rowcast

# api, notifier and `up` all listen on 8080 by default (--port / ROWCAST_PORT to change).
EXPOSE 8080

# No HEALTHCHECK here: the right probe depends on the role (/api/healthz for the api, /healthz
# for the notifier, none for migrate), so docker-compose.yml defines one per service.
ENTRYPOINT ["rowcast"]
CMD ["--help"]
