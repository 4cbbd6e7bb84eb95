"""``python -m fedrec.cli``: the ``fedrec`` command."""

import sys

from fedrec.cli.main import main

sys.exit(main())
