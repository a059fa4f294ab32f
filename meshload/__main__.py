"""`python -m meshload`: the `meshload` command, where the scripts are not on PATH."""

import sys

from meshload.cli import main

sys.exit(main())
