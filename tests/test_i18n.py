"""Every string the web app and the enroll CLI show has a Simplified Chinese translation.

The strings are extracted the way translators would (Babel's extractors over
the Python code and the Jinja templates), so a new string without a translation
fails here instead of appearing in English on a Chinese page.
"""

from __future__ import annotations

from pathlib import Path

from babel.messages.extract import extract_from_dir

from core.i18n import LOCALE_DIR, load_catalog, negotiate, translator

REPO = Path(__file__).resolve().parents[1]
KEYWORDS = {"_": None, "gettext": None, "ngettext": (1, 2), "N_": None}
SOURCES = ("server/web", "enroll")
METHODS = [("**/templates/**.html", "jinja2"), ("**.py", "python")]


def extracted() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for folder in SOURCES:
        for filename, lineno, message, _comments, _context in extract_from_dir(
            REPO / folder, METHODS, keywords=KEYWORDS, options_map={"**/templates/**.html": {"extensions": ""}}
        ):
            msgid = message[0] if isinstance(message, tuple) else message
            if msgid:
                found.setdefault(msgid, []).append(f"{folder}/{filename}:{lineno}")
    return found


def test_every_marked_string_has_a_chinese_translation() -> None:
    messages = extracted()
    assert len(messages) > 20, "the extraction found almost nothing: is the extractor configured right?"
    catalog = load_catalog("zh_CN")
    missing = {
        msgid: where for msgid, where in messages.items()
        if not (catalog.get(msgid) and (catalog.get(msgid).string if not isinstance(catalog.get(msgid).string, tuple)
                                       else all(catalog.get(msgid).string)))
    }
    assert not missing, "no zh_CN translation in locale/zh_CN/LC_MESSAGES/*.po for:\n" + "\n".join(
        f"  {m!r} ({', '.join(w[:2])})" for m, w in sorted(missing.items())
    )


def test_translations_keep_their_placeholders() -> None:
    import re

    pattern = re.compile(r"%\((\w+)\)s")
    for message in load_catalog("zh_CN"):
        if not message.id or not message.string:
            continue
        ids = message.id if isinstance(message.id, tuple) else (message.id,)
        strings = message.string if isinstance(message.string, tuple) else (message.string,)
        for s in strings:
            assert set(pattern.findall(s)) <= set(pattern.findall(" ".join(ids))) | {"num"}, (message.id, s)


def test_chinese_is_the_default_and_english_is_the_source() -> None:
    assert negotiate(None) == "zh_CN" and negotiate("fr-FR") == "zh_CN"
    assert negotiate("en-GB,en;q=0.8") == "en" and negotiate("zh-TW") == "zh_CN"
    assert translator("zh_CN").gettext("Sign out") == "退出登录"
    assert translator("en").gettext("Sign out") == "Sign out"
    assert translator("zh_CN").gettext("Too many failed sign-ins. Try again in %(minutes)s minutes.", minutes=3).count("3")


def test_catalog_parts_all_load() -> None:
    parts = sorted((LOCALE_DIR / "zh_CN" / "LC_MESSAGES").glob("*.po"))
    assert parts and all(p.read_text(encoding="utf-8").startswith("#") or "msgid" in p.read_text(encoding="utf-8") for p in parts)
