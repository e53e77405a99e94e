"""The gate inside MLflow (SPEC 14): `mlflow server --app-name registry-bot`.

An app of MLflow's `mlflow.app` plugin group that serves MLflow unchanged, except that a
change to a protected model's Production is refused unless registry-bot makes it, and a
refused move into Production becomes a transition request in Slack. `gate.header` is the
other half: the request-header provider by which registry-bot's own MLflow calls prove
themselves with MLFLOW_GATE_TOKEN.
"""
