"""``python -m app [view options]``: the viewer without the ``endoview`` entry point."""

import sys

from app.cli import main

sys.exit(main())
