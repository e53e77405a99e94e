"""Gunicorn's settings for the doors: `gunicorn --config python:registry.process.gunicorn_conf`."""

# Gunicorn reads this module's names as its settings when it starts, before any app is built,
# so LOG_LEVEL is read here, once, as `python -m` reads it in configure_logging.

import logging

from registry.process.logs import log_level, logging_config

# One JSON object a line on stderr, gunicorn's own lines included, as under `python -m`.
logconfig_dict = logging_config()
loglevel = log_level().lower()
logging.captureWarnings(True)

# Gunicorn 25+ opens a control socket under $HOME by default; the image's root filesystem is
# read-only and nothing here uses `gunicornc`.
control_socket_disable = True
