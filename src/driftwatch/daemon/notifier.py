"""The notifier's shell: reads the alerts topic, feeds the pure :class:`~driftwatch.alerts.notifier.Notifier`,
delivers through the one HTTP egress, and keeps the notifier's state in Kafka.

The state lives in the compacted topic ``<alerts topic>-notify-state``; the
alerts topic is committed only after the state covering it is written, so a
restart neither loses nor repeats a notification (see guarantees 14–16 in
docs/guarantees.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from driftwatch._log import get_logger
from driftwatch.alerts.notifier import (
    AuditHook,
    DeadLetter,
    DeliveryOutcome,
    Notification,
    Notifier,
    NotifyCounters,
    SilenceCheck,
)
from driftwatch.alerts.records import AlertRecordError
from driftwatch.config import Config
from driftwatch.daemon.http import EgressPolicy, HttpResult, post_json
from driftwatch.daemon.offsets import end_offsets
from driftwatch.daemon.signing import load_secrets, signature_headers
from driftwatch.daemon.stopping import stop_consumer
from driftwatch.errors import StreamingError
from driftwatch.exports.links import DashboardLinks

__all__ = ["NotifierService", "api_url"]

log = get_logger(__name__)


def api_url(config: Config) -> str | None:
    """Where people reach the HTTP API (approval links), if it is on."""
    api = config.alerting.api
    if not api.enabled:
        return None
    if api.external_url:
        return api.external_url
    host = f"[{api.host}]" if ":" in api.host else api.host
    return f"http://{host}:{api.port}"


class NotifierService:
    """Consumes the alerts topic, feeds a :class:`Notifier`, delivers, and keeps its state in Kafka.

    One active instance per ``notify.group_id``: the alerts topic is read in
    that consumer group, and the state is (re)loaded from the compacted
    ``<alerts topic>-notify-state`` topic whenever partitions are assigned.
    """

    def __init__(
        self,
        config: Config,
        bootstrap: str,
        *,
        audit: AuditHook | None = None,
        is_silenced: SilenceCheck | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        backoff_base: float = 1.0,
        backoff_cap: float = 60.0,
        max_concurrency: int = 8,
        report_status: Callable[[str], str | None] | None = None,
    ) -> None:
        self._report_status = report_status
        self.config = config
        self.bootstrap = bootstrap
        self.notify = config.alerting.notify
        self._config = config
        self.alerts_topic = config.kafka.alerts.name
        self.state_topic = f"{self.alerts_topic}-notify-state"
        self._clock = clock
        self._silence_check = is_silenced
        self._audit = audit
        self._rng = rng
        self._backoff = (backoff_base, backoff_cap)
        self.counters = NotifyCounters()
        self.notifier = self._new_core()
        self.state_loaded = asyncio.Event()
        self._assigned = 0  # assignments seen (counted by the rebalance listener) ...
        self._loaded = 0  # ... and the one the loaded state belongs to
        self._sem = asyncio.Semaphore(max_concurrency)
        self._egress = EgressPolicy.from_allow(config.alerting.egress.allow)
        self._secrets: dict[str, list[bytes]] = {}
        self._bearer: dict[str, str] = {}
        self._consumer: Any = None
        self._producer: Any = None
        self._task: asyncio.Task[None] | None = None
        self._running = False
        self._inflight: set[asyncio.Task[None]] = set()
        self._dead: list[DeadLetter] = []
        self._positions: dict[Any, int] = {}
        self._committed: dict[Any, int] = {}

    def _new_core(self) -> Notifier:
        return Notifier(
            self.notify,
            is_silenced=self._silence_check,
            audit=self._audit,
            rng=self._rng,
            backoff_base=self._backoff[0],
            backoff_cap=self._backoff[1],
            counters=self.counters,  # one set of counters across state reloads
            approvals={name: ac.requires_approval for name, ac in self._config.alerting.actions.items()},
            api_url=api_url(self._config),
            dashboards=DashboardLinks.from_config(self._config),
            report_status=self._report_status,
        )

    # Counters as plain attributes, for the exporter.
    @property
    def sent(self) -> int:
        """Notifications delivered (2xx)."""
        return self.counters.sent

    @property
    def retried(self) -> int:
        """Failed attempts scheduled for a retry."""
        return self.counters.retried

    @property
    def dead_lettered(self) -> int:
        """Notifications given up on and written to the dead-letter topic."""
        return self.counters.dead_lettered

    @property
    def suppressed(self) -> Counter[str]:
        """Notifications not sent, by reason (silenced, dedup, resolved_before_notification, …)."""
        return self.counters.suppressed

    async def start(self) -> None:
        """Read secrets, create missing topics, start the clients and the delivery loop."""
        for rc in self.notify.receivers:
            if rc.secret is not None and rc.kind == "webhook":
                self._secrets[rc.name] = load_secrets(rc.secret.read())
            if rc.bearer_token is not None:
                self._bearer[rc.name] = rc.bearer_token.read().decode()
        await self._ensure_topics()
        self._producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=5)
        await self._producer.start()
        session = max(1.0, self.config.kafka.session_timeout)
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=self.notify.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=int(session * 1000),
            heartbeat_interval_ms=int(max(session / 6, 0.2) * 1000),
        )
        self._consumer.subscribe([self.alerts_topic], listener=_Rebalance(self))
        await self._consumer.start()
        self._running = True
        self._task = asyncio.create_task(self._run(), name="driftwatch-notifier")

    async def stop(self) -> None:
        """Finish in-flight attempts (briefly), write the state, commit, and close the clients."""
        self._running = False
        if self._task is not None:
            await self._task
            self._task = None
        await self._drain()
        if self._consumer is not None:
            with contextlib.suppress(Exception):  # the broker may be gone; the state topic has what was written
                await self._persist()
            await stop_consumer(self._consumer, "notifier")
            self._consumer = None
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def _ensure_topics(self) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=10_000)
        try:
            await admin.start()
        except Exception as e:  # aiokafka raises several unrelated types for an unreachable broker
            raise StreamingError(f"notifier: cannot reach the Kafka broker at {self.bootstrap}: {e}") from e
        try:
            existing = set(await admin.list_topics())
            a, d = self.config.kafka.alerts, self.notify.dead_letter
            wanted = [
                NewTopic(a.name, num_partitions=a.partitions, replication_factor=a.replication),
                NewTopic(d.name, num_partitions=d.partitions, replication_factor=d.replication),
                NewTopic(
                    self.state_topic,
                    num_partitions=1,
                    replication_factor=a.replication,
                    topic_configs={"cleanup.policy": "compact"},
                ),
            ]
            missing = [t for t in wanted if t.name not in existing]
            if missing:
                with contextlib.suppress(TopicAlreadyExistsError):
                    await admin.create_topics(missing)
        finally:
            await admin.close()

    async def _load_state(self) -> None:
        """Read the state topic to its end and rebuild the core from it."""
        reader = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        await reader.start()
        entries: dict[str, bytes] = {}
        try:
            await reader.topics()
            tps = [
                TopicPartition(self.state_topic, p)
                for p in sorted(reader.partitions_for_topic(self.state_topic) or {0})
            ]
            reader.assign(tps)
            end = await end_offsets(reader, tps)
            await reader.seek_to_beginning(*tps)
            while [tp for tp in tps if await reader.position(tp) < end[tp]]:
                batch = await reader.getmany(*tps, timeout_ms=500)
                for msgs in batch.values():
                    for m in msgs:
                        key = m.key.decode()
                        if m.value is None:
                            entries.pop(key, None)
                        else:
                            entries[key] = m.value
        finally:
            await reader.stop()
        self.notifier = self._new_core()
        self.notifier.restore(entries)

    async def _run(self) -> None:
        while self._running:
            try:
                await self._step()
            except Exception:  # the loop must outlive any one failure (a broker hiccup while loading, a bug)
                log.exception("notifier_step_failed")
                await asyncio.sleep(1.0)  # error backoff

    async def _step(self) -> None:
        """Read a batch of alert records, start due deliveries, write the state, commit."""
        wait = 0.2
        nxt = self.notifier.next_due()
        if nxt is not None:
            wait = min(wait, max(0.0, nxt - self._clock()))
        try:
            batch = await self._consumer.getmany(timeout_ms=int(wait * 1000), max_records=500)
        except KafkaError as e:  # e.g. the broker is away: deliveries go on, reading resumes later
            log.warning("alerts_read_failed", topic=self.alerts_topic, error=type(e).__name__)
            batch = {}
        if self._assigned != self._loaded:
            await self._reload()  # the batch is dropped: it is fetched again from the committed offsets
            return
        now = self._clock()
        for tp, msgs in batch.items():
            for m in msgs:
                self._positions[tp] = m.offset + 1
                try:
                    self.notifier.update(m.value or b"", now)
                except AlertRecordError as e:  # counted by the core
                    log.warning(
                        "alert_record_rejected", topic=tp.topic, partition=tp.partition, offset=m.offset, error=str(e)
                    )
        for n in self.notifier.due(now):
            task = asyncio.create_task(self._deliver(n))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)
        await self._persist()

    async def _reload(self) -> None:
        """After an assignment: load the state, then read the alerts topic again from the committed offsets.

        aiokafka may fetch records while an assignment callback still runs, so
        the callback only raises a flag and the load happens here, in the one
        task that feeds the core; whatever was fetched meanwhile is re-read.
        """
        generation = self._assigned
        await self._load_state()
        self._positions.clear()
        self._committed.clear()
        for tp in self._consumer.assignment():
            offset = await self._consumer.committed(tp)
            if offset is None:
                await self._consumer.seek_to_beginning(tp)
            else:
                self._consumer.seek(tp, offset)
        self._loaded = generation
        self.state_loaded.set()

    async def _persist(self) -> None:
        """Write dead letters and state changes, then commit the alerts offsets they cover."""
        dead, self._dead = self._dead, []
        changes = self.notifier.changes()
        try:
            futures = [
                await self._producer.send(
                    self.notify.dead_letter.name,
                    key=d.notification.receiver.encode(),
                    value=d.notification.body,
                    headers=[
                        ("reason", d.reason.encode()),
                        ("receiver", d.notification.receiver.encode()),
                        ("webhook-id", d.notification.id.encode()),
                        ("last-error", d.last_error.encode()),
                    ],
                )
                for d in dead
            ]
            futures += [
                await self._producer.send(self.state_topic, key=k.encode(), value=v) for k, v in changes.items()
            ]
            await asyncio.gather(*futures)
        except BaseException:
            self._dead[:0] = dead  # the next persist writes them again
            self.notifier.unwritten(changes)
            raise
        todo = {tp: off for tp, off in self._positions.items() if self._committed.get(tp) != off}
        if todo and self._consumer is not None:
            await self._consumer.commit(todo)
            self._committed.update(todo)

    async def _deliver(self, n: Notification) -> None:
        rc = self.notifier.receivers.get(n.receiver)
        if rc is None:
            return
        async with self._sem:
            headers: dict[str, str] = {}
            secrets = self._secrets.get(rc.name)
            if secrets:
                headers.update(signature_headers(secrets, n.id, n.body, self._clock()))
            else:  # unsigned, but receivers can still dedupe on the id
                headers.update({"webhook-id": n.id, "webhook-timestamp": str(math.floor(self._clock()))})
            token = self._bearer.get(rc.name)
            if token:
                headers["Authorization"] = f"Bearer {token}"
            try:
                res = await post_json(n.url, n.body, headers, timeout=rc.timeout, policy=self._egress)
            except Exception:  # a bug here must not leave the notification in flight for ever
                log.exception("notification_attempt_crashed", receiver=n.receiver)
                res = HttpResult(DeliveryOutcome.RETRY, "internal_error")
        dead = self.notifier.result(n.id, res.outcome, self._clock(), retry_after=res.retry_after, reason=res.reason)
        if dead is not None:
            self._dead.append(dead)  # written with the state change that drops it (_persist)

    async def _drain(self) -> None:
        """Let in-flight attempts finish within the longest receiver timeout, then cancel the rest."""
        if not self._inflight:
            return
        grace = max((rc.timeout for rc in self.notify.receivers), default=1.0) + 0.5
        _, late = await asyncio.wait(set(self._inflight), timeout=grace)
        for t in late:
            t.cancel()
        if late:
            await asyncio.wait(late)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    """Asks for a state load when partitions are assigned; writes the state and commits when they are revoked."""

    def __init__(self, service: NotifierService) -> None:
        self.service = service

    async def on_partitions_revoked(self, revoked: Any) -> None:
        s = self.service
        if not revoked:
            return
        await s._drain()
        with contextlib.suppress(Exception):
            await s._persist()
        s._positions.clear()
        s._committed.clear()
        s.state_loaded.clear()
        s.notifier = s._new_core()  # not ours any more: whoever is assigned the partitions delivers

    async def on_partitions_assigned(self, assigned: Any) -> None:
        if assigned:
            self.service.state_loaded.clear()
            self.service._assigned += 1
