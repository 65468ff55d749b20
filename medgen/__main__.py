"""`python -m medgen ...` runs the `medgen` command, e.g. under a launcher:
`accelerate launch --num_processes 8 -m medgen generate ...`."""

import sys

from medgen.cli import main

if __name__ == "__main__":
    sys.exit(main())
