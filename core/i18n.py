"""Translations and locale-aware formatting: the only module that imports Babel.

Source strings are English; Simplified Chinese (``zh_CN``, the default for the
stations) comes from gettext catalogs in ``locale/zh_CN/LC_MESSAGES/*.po``.
Every ``.po`` file in that folder is one part of the same catalog (one per
area of the app, so people translating one page do not edit another's file);
they are read with Babel at start-up, so there is no compile step and nothing
generated is committed. A test extracts every marked string from the code and
templates and fails if one lacks a Chinese translation.

Marking strings: call ``t.gettext("…")`` / ``t.ngettext(...)`` on a
:class:`Translator`, or ``_("…")`` in Jinja templates. Placeholders use
``%(name)s``; pass the values as keyword arguments (they are substituted after
translation, so translators can move them).
"""

from __future__ import annotations

import functools
import logging
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel import Locale, UnknownLocaleError
from babel.dates import format_datetime as _format_datetime
from babel.messages.catalog import Catalog
from babel.messages.pofile import read_po
from babel.numbers import format_decimal

log = logging.getLogger(__name__)

LOCALE_DIR = Path(__file__).resolve().parent.parent / "locale"
LANGUAGES: dict[str, str] = {"zh_CN": "简体中文", "en": "English"}
DEFAULT_LANGUAGE = "zh_CN"
DEFAULT_TIME_ZONE = "Asia/Shanghai"


class Translator:
    """gettext for one language; English returns the source string."""

    def __init__(self, language: str, messages: dict[str, str | tuple[str, ...]]) -> None:
        self.language = language
        self._messages = messages
        self.locale = Locale.parse(language)

    def gettext(self, message: str, /, **values: object) -> str:
        found = self._messages.get(message)
        text = found if isinstance(found, str) and found else message
        return text % values if values else text

    def ngettext(self, singular: str, plural: str, n: int, /, **values: object) -> str:
        """Plural-aware gettext; ``%(num)s`` is ``n`` unless given."""
        found = self._messages.get(singular)
        values.setdefault("num", n)
        if isinstance(found, tuple) and all(found):
            text = found[min(_plural_index(self.language, n), len(found) - 1)]
        else:
            text = singular if n == 1 else plural
        return text % values

    def time(self, moment: datetime | None, time_zone: str | None = None, fmt: str = "medium") -> str:
        """``moment`` shown in ``time_zone`` (a station's IANA zone; default Asia/Shanghai) and this language."""
        if moment is None:
            return "—"
        return _format_datetime(moment, fmt, tzinfo=zone(time_zone), locale=self.locale)

    def number(self, value: float | int) -> str:
        return format_decimal(value, locale=self.locale)


def _plural_index(language: str, n: int) -> int:
    return 0 if language.startswith("zh") else (0 if n == 1 else 1)


def zone(name: str | None) -> ZoneInfo:
    """The IANA time zone ``name``; an unknown name falls back to Asia/Shanghai with a warning."""
    try:
        return ZoneInfo(name or DEFAULT_TIME_ZONE)
    except (ZoneInfoNotFoundError, ValueError):
        log.warning("unknown time zone %r; showing Asia/Shanghai time", name)
        return ZoneInfo(DEFAULT_TIME_ZONE)


def is_time_zone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def load_catalog(language: str, locale_dir: Path = LOCALE_DIR) -> Catalog:
    """All ``.po`` parts of ``language`` merged into one Babel catalog (a later file wins on a clash)."""
    merged = Catalog(locale=language)
    folder = locale_dir / language / "LC_MESSAGES"
    for po in sorted(folder.glob("*.po")) if folder.is_dir() else []:
        with po.open("rb") as handle:
            part = read_po(handle, locale=language)
        for message in part:
            if message.id:
                merged[message.id] = message
    return merged


@functools.cache
def translator(language: str | None) -> Translator:
    """The cached Translator for ``language`` (an unknown one gets the default, Simplified Chinese)."""
    lang = language if language in LANGUAGES else DEFAULT_LANGUAGE
    messages: dict[str, str | tuple[str, ...]] = {}
    if lang != "en":
        for message in load_catalog(lang):
            key = message.id[0] if isinstance(message.id, tuple) else message.id
            value = message.string
            messages[key] = tuple(value) if isinstance(value, (list, tuple)) else value
    return Translator(lang, messages)


def negotiate(accept_language: str | None) -> str:
    """The best of LANGUAGES for an HTTP Accept-Language header (default: Simplified Chinese)."""
    for part in (accept_language or "").split(","):
        tag = part.split(";")[0].strip().replace("-", "_")
        if not tag:
            continue
        try:
            loc = Locale.parse(tag)
        except (ValueError, UnknownLocaleError):
            continue
        if loc.language == "zh":
            return "zh_CN"
        if loc.language == "en":
            return "en"
    return DEFAULT_LANGUAGE
