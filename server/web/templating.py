"""Jinja2 rendering for the web pages, with the signed-in user's language bound in.

Templates call ``_("English text %(x)s", x=...)``; the function is the
user's Translator (core.i18n), so one template serves both languages.
``t`` is the Translator itself (``t.time(moment, station.time_zone)``).
Autoescaping is on for every template.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from core.i18n import DEFAULT_LANGUAGE, LANGUAGES, negotiate, translator

TEMPLATES = Path(__file__).resolve().parent / "templates"

env = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=select_autoescape(default=True, default_for_string=True),
    undefined=StrictUndefined,  # a misspelt variable is an error in the tests, not a blank on the page
    trim_blocks=True,
    lstrip_blocks=True,
)

def N_(message: str) -> str:
    """Marks a string for the catalog without translating it here (it is translated when shown)."""
    return message


ROLE_NAMES = {"admin": N_("Administrator"), "staff": N_("Enrollment staff"), "auditor": N_("Auditor")}

# (path, message id, roles) of the navigation bar, in order.
NAV: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("/dashboard", N_("Usage"), ("admin", "auditor")),
    ("/entries", N_("Entry log"), ("admin", "auditor")),
    ("/workers", N_("Workers"), ("admin",)),
    ("/enroll", N_("Enroll"), ("admin", "staff")),
    ("/enroll/sessions", N_("Enrollment sessions"), ("admin", "staff")),
    ("/stations", N_("Stations"), ("admin", "auditor")),
    ("/users", N_("Users"), ("admin",)),
    ("/audit", N_("Audit trail"), ("admin", "auditor")),
)


def language_of(request: Request) -> str:
    user = getattr(request.state, "user", None)
    if user is not None:
        return user.language
    return request.cookies.get("ws_lang") if request.cookies.get("ws_lang") in LANGUAGES else negotiate(
        request.headers.get("accept-language")
    ) or DEFAULT_LANGUAGE


def render(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """Render ``template`` for this request's user and language."""
    lang = language_of(request)
    tr = translator(lang)
    user = getattr(request.state, "user", None)
    nav = [(path, tr.gettext(label)) for path, label, roles in NAV if user is not None and user.role in roles]
    html = env.get_template(template).render(
        request=request,
        user=user,
        csrf_token=user.csrf_token if user is not None else context.pop("csrf_token", ""),
        lang=lang,
        languages=LANGUAGES,
        nav=nav,
        role_name=tr.gettext(ROLE_NAMES[user.role]) if user is not None else "",
        path=request.url.path,
        t=tr,
        _=tr.gettext,
        ngettext=tr.ngettext,
        **context,
    )
    return HTMLResponse(html, status_code=status_code, headers=SECURITY_HEADERS)


# No inline scripts and no third-party origins: the pages' JS is in /static.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; style-src 'self'; "
        "script-src 'self'; object-src 'none'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
