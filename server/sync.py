"""Answering a station's sync request with pages of gallery changes.

A station asks for everything after the version it holds. It gets each changed
worker's latest state, oldest version first, in pages of at most
``page_size`` changes that each also stay under the contract's payload limit
(a worker may carry up to 16 encodings, so a page of 200 full workers would
not fit). A station that holds a version the server never issued gets a
snapshot: every current worker, which replaces its whole gallery once the last
page (``more`` false) has arrived.

All pages of one reply stop at the ``latest_version`` read at the start, so a
change committed meanwhile arrives live or with the next sync.

Every page carries the server's clock (``server_time``, sync_reply/2), from
which a station estimates its clock offset and reports it in its heartbeat.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from sqlalchemy.orm import Session

from models.messages import MAX_PAYLOAD_BYTES, GalleryChange, SyncReply, SyncRequest
from server.gallery import changes_since, latest_version
from server.tables import utcnow

# Room for the reply's own fields around the changes.
PAGE_BYTE_BUDGET = MAX_PAYLOAD_BYTES - 4096


def build_replies(*, session: Session, request: SyncRequest, page_size: int) -> Iterator[SyncReply]:
    """The reply pages for ``request``, lazily (a large snapshot is never all in memory)."""
    latest = latest_version(session=session)
    snapshot = request.since_version > latest
    since = 0 if snapshot else request.since_version

    def fetch(after: int) -> list[GalleryChange]:
        return changes_since(session=session, version=after, limit=page_size, up_to=latest, current_only=snapshot)

    pages = pack_pages(_all_changes(fetch, since, page_size), max_changes=page_size)
    for number, (changes, more) in enumerate(_with_more_flag(pages)):
        yield SyncReply(
            request_id=request.request_id,
            snapshot=snapshot,
            page=number,
            changes=tuple(changes),
            more=more,
            latest_version=latest,
            server_time=utcnow(),
        )


def _all_changes(fetch: Callable[[int], list[GalleryChange]], since: int, batch: int) -> Iterator[GalleryChange]:
    after = since
    while True:
        changes = fetch(after)
        yield from changes
        if len(changes) < batch:
            return
        after = changes[-1].version


def pack_pages(
    changes: Iterable[GalleryChange], *, max_changes: int, max_bytes: int = PAGE_BYTE_BUDGET
) -> Iterator[list[GalleryChange]]:
    """Group changes into pages by count and by encoded size; always at least one (maybe empty) page."""
    page: list[GalleryChange] = []
    size = 0
    for change in changes:
        n = len(change.model_dump_json(by_alias=True).encode("utf-8")) + 1  # +1: the comma
        if page and (len(page) >= max_changes or size + n > max_bytes):
            yield page
            page, size = [], 0
        page.append(change)
        size += n
    yield page


def _with_more_flag(pages: Iterator[list[GalleryChange]]) -> Iterator[tuple[list[GalleryChange], bool]]:
    """Pair each page with whether another follows (one page of look-ahead)."""
    current = next(pages)
    for following in pages:
        yield current, True
        current = following
    yield current, False
