"""``python -m headstart`` runs the CLI."""

import sys

from headstart.cli import main

sys.exit(main())
