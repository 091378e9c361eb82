"""``python -m studio_client``: the ``studio`` command."""

import sys

from studio_client.cli import main

sys.exit(main())
