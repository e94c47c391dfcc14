"""``python -m meshproxy`` is the ``meshproxy`` console script."""

import sys

from .cli import main

sys.exit(main())
