"""Entry point: `python -m service --help`."""

import sys

from service.cli import main

sys.exit(main())
