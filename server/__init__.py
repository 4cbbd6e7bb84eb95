"""The Flower ServerApp (``server.app:app``) and the simulation launcher."""

import logging

# Flower imports alembic, whose plugin set-up logs at INFO through any configured root logger.
logging.getLogger("alembic").setLevel(logging.WARNING)
