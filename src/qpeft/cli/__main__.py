"""``python -m qpeft.cli`` (what torchrun runs): the ``qpeft`` command."""

from qpeft.cli import main

raise SystemExit(main())
