"""The application layer: the ``fedrec`` command line and everything it drives.

This package is the only part of ``fedrec`` that may import Flower or the Flower apps
(``server/``, ``clients/``): the CLI and its jobs, the experiments grid, the benchmarks
and the reports. The library below it (``fedrec.data``, ``fedrec.model``,
``fedrec.federated``, ``fedrec.privacy``, ...) knows nothing of Flower; the contract in
``pyproject.toml`` (``[tool.importlinter]``) is checked by the test suite.
"""

from fedrec.cli.main import main

__all__ = ["main"]
