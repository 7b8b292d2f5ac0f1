"""``python -m yofo`` (also what ``torchrun -m yofo`` runs)."""

import sys

from yofo.cli import main

sys.exit(main())
