"""The central server of Waystation.

The source of truth for who may enter, and the store of every entry:

- ``config``   ServerSettings (pydantic-settings: YAML file + WAYSTATION_SERVER_* env)
- ``tables``   SQLAlchemy ORM tables; ``db`` engines, sessions and Alembic migrations
- ``gallery``  workers and the versioned gallery change log
- ``stations`` registration and station status; ``entries`` the entry log
- ``sync``     pages answering a station's sync request
- ``ingest``   the MQTT side (entries, status, sync in; gallery changes out)
- ``api``      the FastAPI app (create_app); ``runtime`` all of it in one object
- ``__main__`` ``python -m server run|migrate|check-config``
"""
