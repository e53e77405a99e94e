# One image for every registry-bot service: webhooks, worker, scheduler, bot, predict.
# The command is chosen per service in docker-compose.yml.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Copy only what the package build needs (never .env, .git or a local venv).
COPY pyproject.toml README.md ./
COPY registry ./registry
COPY webhooks ./webhooks
COPY worker ./worker
COPY bot ./bot

RUN pip install . \
    && useradd --create-home --uid 10001 app

USER app

EXPOSE 8000 3000 8100
CMD ["gunicorn", "--bind", "0.0.0.0:8000", "--workers", "2", "webhooks:create_app()"]
