"""``python -m fewstep`` (used by ``torchrun -m fewstep train ...``)."""

from .cli import main

raise SystemExit(main())
