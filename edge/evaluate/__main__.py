"""``python -m edge.evaluate`` (what ``./run evaluate`` runs)."""

from edge.evaluate.cli import main

raise SystemExit(main())
