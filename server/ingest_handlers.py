"""The handlers of the station messages other than entries (status, sync, config answers, snapshots).

A mixin of :class:`server.ingest.Ingest`, split off to keep that module about
its loop, batching and durability. Each handler runs on the ingest thread
with one delivery, refuses a bad payload through the host's ``_accept`` /
``_refuse`` (logged on one line, counted) and acknowledges the delivery only
once its effect is stored. Sync replies are built on the host's sync thread.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy.orm import Session, sessionmaker

from core.mqtt import Delivery, MqttLink
from models import topics
from models.errors import ContractError, PayloadTooLarge, TopicMismatch
from models.messages import StationStatus, SyncAck, SyncRequest, encode
from models.snapshot import decode_snapshot
from models.station_config import StationConfigAck
from server.config import ServerSettings
from server.snapshots import SnapshotRefused, check_image, store_snapshot
from server.station_config import record_config_ack
from server.stations import record_ack, record_status
from server.sync import build_replies

log = logging.getLogger("server.ingest")  # the same logger as the rest of the ingest: one place in the journal
T = TypeVar("T")


class StationMessages:
    """Status, sync acks and requests, config answers and snapshots; mixed into ``Ingest``."""

    if TYPE_CHECKING:  # provided by server.ingest.Ingest
        settings: ServerSettings
        link: MqttLink
        _sessions: sessionmaker[Session]
        _sync_pool: ThreadPoolExecutor | None

        def _accept(self, delivery: Delivery, cls: Any) -> Any: ...
        def _refuse(self, counter: str, delivery: Delivery, why: str) -> None: ...
        def _registered(self, station_ids: set[str]) -> set[str]: ...
        def _count(self, name: str, n: int = 1) -> None: ...
        def _with_db(self, fn: Callable[[Session], T]) -> T: ...

    def _on_status(self, delivery: Delivery) -> None:
        status = self._accept(delivery, StationStatus)
        if status is None:
            return
        self._with_db(lambda s: record_status(session=s, status=status))
        self._count("statuses")
        delivery.ack()

    def _on_sync_ack(self, delivery: Delivery) -> None:
        ack = self._accept(delivery, SyncAck)
        if ack is None:
            return
        self._with_db(lambda s: record_ack(session=s, ack=ack))
        self._count("acks")
        delivery.ack()

    def _on_snapshot(self, delivery: Delivery) -> None:
        """A refused face's picture (server/snapshots.py): checked, then stored next to its entry, or refused."""
        try:
            snapshot = decode_snapshot(delivery.payload, topic=delivery.topic)
        except PayloadTooLarge as err:
            return self._refuse("rejected_too_large", delivery, str(err))
        except TopicMismatch as err:
            return self._refuse("rejected_topic_mismatch", delivery, str(err))
        except ContractError as err:
            return self._refuse("rejected_malformed", delivery, str(err))
        if not self._registered({snapshot.station_id}):
            why = f"station {snapshot.station_id!r} is not registered"
            return self._refuse("rejected_unknown_station", delivery, why)
        try:
            jpeg = check_image(snapshot)
            new = self._with_db(lambda s: store_snapshot(session=s, snapshot=snapshot, jpeg=jpeg))
        except SnapshotRefused as err:
            return self._refuse("rejected_snapshot", delivery, str(err))
        self._count("snapshots" if new else "duplicates")
        delivery.ack()

    def _on_config_ack(self, delivery: Delivery) -> None:
        if not delivery.payload:  # a retained acknowledgement cleared (server/station_config.py: clear)
            delivery.ack()
            return
        ack = self._accept(delivery, StationConfigAck)
        if ack is None:
            return
        # Stored by whichever process receives it: the station page reads the database (server/station_config.py).
        if self._with_db(lambda s: record_config_ack(session=s, ack=ack)) is False:  # removed meanwhile
            return self._refuse("rejected_unknown_station", delivery, f"station {ack.station_id!r} is not registered")
        self._count("config_acks")
        delivery.ack()

    def _on_sync_request(self, delivery: Delivery) -> None:
        request = self._accept(delivery, SyncRequest)
        if request is None:
            return
        self._count("sync_requests")
        pool = self._sync_pool
        if pool is not None:
            pool.submit(self._reply, request)
        delivery.ack()  # a reply that does not arrive makes the station ask again

    def _reply(self, request: SyncRequest) -> None:
        """Publish every page answering an (already accepted) sync request; runs on the sync thread."""
        try:
            self._publish_replies(request)
        except Exception:
            self._count("errors")
            log.exception("answering the sync request of %s failed", request.station_id)

    def _publish_replies(self, request: SyncRequest) -> None:
        reply_topic = topics.sync_reply(request.station_id)
        reply = None
        with self._sessions() as session:
            for reply in build_replies(session=session, request=request, page_size=self.settings.sync_page_size):
                if not self.link.publish(reply_topic, encode(reply), qos=1):
                    # The station repeats its request when the last page does not arrive.
                    log.warning(
                        "sync reply to %s stopped at page %d: MQTT is disconnected", request.station_id, reply.page
                    )
                    return
                self._count("sync_pages")
        if reply is not None:
            log.info(
                "answered sync request of %s since version %d with %d page(s)%s, latest version %d",
                request.station_id,
                request.since_version,
                reply.page + 1,
                " (snapshot)" if reply.snapshot else "",
                reply.latest_version,
            )
