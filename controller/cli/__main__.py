"""`python -m controller.cli`: the `laadplein` command."""

import sys

from controller.cli.main import main

sys.exit(main())
