"""``python -m bayes_animal.cli``."""

import sys

from .main import main

sys.exit(main())
