"""One router per resource; server.api.create_app mounts them under /api."""
