"""Empty: see pyproject.toml."""
