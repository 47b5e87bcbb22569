"""``python -m hardenctl`` (also what ``torchrun -m hardenctl`` runs)."""

import sys

from .cli import main

sys.exit(main())
