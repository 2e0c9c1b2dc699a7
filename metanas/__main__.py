"""`python -m metanas` runs the `metanas` command (also under torchrun / accelerate launch)."""

import sys

from metanas.cli import main

if __name__ == "__main__":
    sys.exit(main())
