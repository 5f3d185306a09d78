"""Enrollment tools for staff: turn photos into face encodings and register workers.

Photos are decoded and encoded on the staff member's machine; only the
encodings (128 numbers per sample) travel to the server, never the photos.
"""
