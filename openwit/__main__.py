"""`python -m openwit <command>`: the same as the `openwit` command (torchrun launches modules this way:
`torchrun --nproc_per_node 8 -m openwit train ...`)."""

import sys

from openwit.cli import main

# Guarded: process pools (openwit eval-index) import this module again in their workers.
if __name__ == "__main__":
    sys.exit(main())
