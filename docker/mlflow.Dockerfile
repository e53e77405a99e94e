# MLflow tracking server + Model Registry for the compose stack (backend store: Postgres).
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The driver docker-compose.yml names in its backend-store URI (postgresql+psycopg2://).
RUN pip install mlflow==3.17.2 "psycopg2-binary>=2.9,<3"

# Run as a non-root user; /mlartifacts is created here so a fresh named volume
# mounted on it inherits this ownership.
RUN useradd --create-home --uid 10001 mlflow \
    && mkdir -p /mlartifacts \
    && chown mlflow:mlflow /mlartifacts
USER mlflow
WORKDIR /home/mlflow

EXPOSE 5000
CMD ["mlflow", "server", "--host", "0.0.0.0", "--port", "5000"]
