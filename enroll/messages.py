"""What staff read about an enrollment: one sentence per problem code, saying what to do.

core.quality reports problems as codes with measured values; the server's
enrollment API, the enrollment page and ``./run enroll`` turn them into these
sentences in the staff member's language (core.i18n; the Chinese is in
``locale/zh_CN/LC_MESSAGES/enrollment.po``). Keeping the words out of core
lets the CLI and the server say exactly the same thing.

The consent text lives here too: its version is recorded with every consent,
so a new wording must get a new ``CONSENT_TEXT_VERSION`` (and keep the old
one in CONSENT_TEXTS, since consents given under it stay valid).
"""

from __future__ import annotations

import re

from core.i18n import Translator
from core.quality import Problem


def _(message: str) -> str:
    """Marks a string for the catalog; it is translated when shown (``Translator.gettext``)."""
    return message


PROBLEMS: dict[str, str] = {
    # core.quality's checks
    "no_face": _("No face was found. The worker should face the camera, close enough, with nothing covering the "
                 "face."),
    "several_faces": _("%(faces)s faces are in the picture: only the worker should be in front of the camera."),
    "too_small": _("The face is too small (%(face_px)s pixels; at least %(min_px)s are needed). Ask the worker to "
                   "come closer to the camera."),
    "too_dark": _("The face is too dark. Turn on more light or turn the worker towards the light; avoid a bright "
                  "window behind them."),
    "too_bright": _("The face is too bright. Move out of direct sunlight or away from a lamp shining on the face."),
    "blurred": _("The picture is blurred. Ask the worker to hold still, and check that the camera lens is clean."),
    "not_frontal": _("The head is turned away. Ask the worker to look straight into the camera."),
    "eyes_closed": _("The eyes look closed. Ask the worker to open their eyes and look at the camera."),
    # the file itself (server/enrolling.py)
    "unreadable_image": _("This file is not a photo that can be used: it is damaged, cut off, or not a JPEG, PNG, "
                          "BMP or WebP image. Take the photo again or choose another file."),
    "image_too_large": _("This photo is too large to process safely (at most %(megapixels)s megapixels and "
                         "%(megabytes)s MB). Take a smaller photo."),
}
"""Problem code -> English sentence (a msgid); ``%(name)s`` takes the Problem's values."""

DEFAULTS: dict[str, float | int] = {"faces": 2}
"""Values a sentence needs when a Problem does not carry them."""


def problem_message(problem: Problem, t: Translator) -> str:
    """The sentence for one problem in ``t``'s language (an unknown code is named, never dropped)."""
    msgid = PROBLEMS.get(problem.code)
    if msgid is None:
        return t.gettext("The photo cannot be used (%(code)s).", code=problem.code)
    values = {**DEFAULTS, **problem.values}
    try:
        return t.gettext(msgid, **values)
    except (KeyError, TypeError, ValueError):  # a value missing: say it without the numbers rather than fail
        return t.gettext(msgid, **{k: "?" for k in _placeholders(msgid)})


def _placeholders(msgid: str) -> list[str]:
    return re.findall(r"%\((\w+)\)s", msgid)


# -- other enrollment sentences (server/api/routes/enrollment.py, the page, the CLI) ---------------------

CONSENT_REQUIRED = _("The worker's consent to face recognition must be recorded before any photo is kept.")
DUPLICATE = _("This face is already enrolled as %(name)s.")
PHONE_TAKEN = _("A worker with the phone number %(phone)s is already enrolled.")
UNKNOWN_CATEGORY = _("Unknown category %(category)s.")
UNKNOWN_SESSION = _("There is no enrollment session number %(session_id)s.")
UNKNOWN_STAFF = _("There is no active staff member or administrator named %(username)s.")
SESSION_TIMES = _("The session must end after it starts.")
VALID_UNTIL_PAST = _("The valid-until date must be in the future.")
UNKNOWN_CONSENT_TEXT = _("Unknown consent text version %(version)s.")
NOTHING_TO_WITHDRAW = _("This worker's consent was already withdrawn and no face data is left.")
CONSENT_WITHDRAWN = _("Consent withdrawn: the face data of %(name)s is deleted here and is being deleted at every "
                      "station.")

CATEGORIES: dict[str, str] = {
    "courier": _("Courier"),
    "food_delivery": _("Food delivery"),
    "sanitation": _("Sanitation"),
    "designated_driver": _("Designated driver"),
    "other": _("Other"),
}
"""server.tables.WORKER_CATEGORIES -> the name staff see."""

CONSENT_TEXT_VERSION = "2026-1"
CONSENT_TEXTS: dict[str, str] = {
    "2026-1": _(
        "I agree that Waystation stores a mathematical template of my face (not my photo) so that the doors of the "
        "union's rest stations can recognise me. The template is used only to open those doors and to record when "
        "I enter. I can withdraw this consent at any time at an enrollment session or from the union's staff; the "
        "template is then deleted from the server and from every station."
    ),
}
"""Consent text version -> its English wording (a msgid; the worker reads it in their language)."""

CONSENT_PHOTO = _("I also agree that a small photo of my face is kept so that the union's staff can recognise me.")
