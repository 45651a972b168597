"""``python -m train COMMAND ...``: train/'s subcommands without the endoview entry point (torchrun)."""

from train.cli import main

raise SystemExit(main())
