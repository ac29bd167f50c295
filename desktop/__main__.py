"""``python -m desktop`` opens the Hearth window."""

from __future__ import annotations

from desktop.app import main

raise SystemExit(main())
