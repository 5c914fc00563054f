"""`python -m openwit <command>`: the same as the `openwit` command (torchrun launches modules this way:
`torchrun --nproc_per_node 8 -m openwit train ...`)."""

import sys

from openwit.cli import main

sys.exit(main())
