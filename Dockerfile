# llmops: one image for the HTTP gateway, the Prefect worker and the Prefect server.
# Multi-stage: the build stage resolves the environment from uv.lock (exactly the locked
# versions, no dev tools); the runtime stage copies the virtualenv and runs as a non-root
# user. Build: docker build -t llmops:latest .
FROM python:3.11-slim AS build
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never
RUN pip install --no-cache-dir uv==0.13.9
WORKDIR /app
# Dependencies first (cached until the lock changes), then the project itself.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --locked --no-dev --no-install-project
COPY llmops ./llmops
COPY flows ./flows
COPY blocks ./blocks
RUN uv sync --locked --no-dev

FROM python:3.11-slim AS runtime
RUN groupadd --gid 10001 llmops && useradd --uid 10001 --gid llmops --create-home llmops
WORKDIR /app
COPY --from=build --chown=llmops:llmops /app /app
# What users edit (prompts, evals, reports, config) and the deployments file.
COPY --chown=llmops:llmops prompts ./prompts
COPY --chown=llmops:llmops evals ./evals
COPY --chown=llmops:llmops reports ./reports
COPY --chown=llmops:llmops config ./config
COPY --chown=llmops:llmops prefect.yaml ./prefect.yaml
RUN mkdir -p /data && chown llmops:llmops /data
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    LLMOPS_DATA_DIR=/data \
    PREFECT_HOME=/data/prefect \
    DO_NOT_TRACK=1 \
    PREFECT_SERVER_ANALYTICS_ENABLED=false
USER llmops
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)" || exit 1
ENTRYPOINT ["llmops"]
CMD ["gateway", "serve", "--host", "0.0.0.0", "--port", "8080"]
