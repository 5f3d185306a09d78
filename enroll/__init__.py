"""Enrollment tools for staff: consent first, then photos or a camera, checked by the server.

Photos (files, camera frames) are sent to the server's enrollment API, which
alone judges their quality, makes the face templates and checks for a face
enrolled under another name, so the command line and the web page give the
same verdict. The server keeps the encodings; it keeps a small thumbnail only
when the worker's consent allows it, and never the photos themselves.
"""
