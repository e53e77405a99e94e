# MLflow tracking server + Model Registry for the compose stack (backend store: Postgres),
# behind registry-bot's gate.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The versions registry-bot's own installs take (make lock writes them), the server's included;
# the driver is the one docker-compose.yml names in its backend-store URI (postgresql+psycopg2://).
COPY constraints.txt /tmp/constraints.txt
# registry-bot itself, for the gate (`mlflow server --app-name registry-bot`, SPEC 14): its
# app factory is an entry point of MLflow's `mlflow.app` group. It needs the core and the gate.
COPY pyproject.toml README.md LICENSE /tmp/registry-bot/
COPY registry /tmp/registry-bot/registry
COPY gate /tmp/registry-bot/gate
RUN pip install -c /tmp/constraints.txt mlflow psycopg2-binary /tmp/registry-bot

# Run as a non-root user; /mlartifacts is created here so a fresh named volume
# mounted on it inherits this ownership.
RUN groupadd --gid 10001 mlflow \
    && useradd --create-home --uid 10001 --gid 10001 mlflow \
    && mkdir -p /mlartifacts \
    && chown mlflow:mlflow /mlartifacts
USER 10001:10001
WORKDIR /home/mlflow

EXPOSE 5000
CMD ["mlflow", "server", "--host", "0.0.0.0", "--port", "5000"]
