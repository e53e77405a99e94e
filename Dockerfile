# One image for every registry-bot service: webhooks, worker, scheduler, bot, predict.
# The command is chosen per service in docker-compose.yml and deploy/kubernetes/.
# It runs as uid 10001 with a read-only root filesystem: the only place it writes is the
# temporary directory (/tmp, a tmpfs in compose, an emptyDir in Kubernetes).
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Copy only what the package build needs (never .env, .git or a local venv), and the versions
# every install takes (make lock writes constraints.txt).
COPY pyproject.toml README.md LICENSE constraints.txt ./
COPY registry ./registry
COPY webhooks ./webhooks
COPY worker ./worker
COPY bot ./bot
COPY gate ./gate

# The serving extra: what the prediction API needs to load scikit-learn models and
# python_function models on numpy and pandas.
RUN pip install -c constraints.txt ".[serving]" \
    && groupadd --gid 10001 app \
    && useradd --create-home --uid 10001 --gid 10001 app

# Numeric, so that Kubernetes' runAsNonRoot can check it without reading /etc/passwd.
USER 10001:10001

EXPOSE 8000 3000 8100 9100
CMD ["gunicorn", "--config", "python:registry.process.gunicorn_conf", "--bind", "0.0.0.0:8000", "--workers", "2", "webhooks:create_app()"]
