"""Every place meterwatch reaches into faust-streaming's internals, and the version it was read on.

Faust offers no public hook for these; each patch names the internal it touches, so an upgrade is
reviewed here and nowhere else (tests/stream/test_faust_internals.py fails when an internal
moves):

- `current_event`: a table write outside Faust's own stream iteration binds to the event whose
  changelog partition it belongs to (`faust.streams._current_event`).
- `delete_key`: a table key deleted from a timer (retention.py) writes its tombstone to the
  key's changelog partition through a stand-in current event, and the memory store's
  `_key_partition` (filled by changelog recovery, never emptied by a delete) forgets it too.
- `resubscribe_soon` / `subscribe_new_topics`: a new per-meter topic is read within seconds
  (the conductor waits `_resubscribe_sleep_lock_seconds`, 45 s, and resubscribes only when
  `_flag_changes` was called).
- `tansu_fetch_wait`: only with MW_BROKER_KIND=tansu, a shorter fetch wait (Tansu answers after
  half of it).
- `one_transaction_per_worker`: only with MW_PROCESSING_GUARANTEE=exactly_once (see
  docs/RELIABILITY.md); re-check it with tests/integration/test_faults.py after an upgrade.
"""

from __future__ import annotations

import logging
import time
import weakref

log = logging.getLogger("meterwatch.worker")

# The faust-streaming release these patches were written for and tested on.
FAUST_VERSION = "0.15.3"
RESUBSCRIBE_S = 1.0  # Faust waits 45 s before it reads a topic added while running
TANSU_FETCH_WAIT_MS = 100  # Faust passes 1500 ms; Tansu answers after half of it
_version_warned = False  # check_faust_version's warning went out


def _patch(owner: type, name: str, value: object) -> None:
    """Set `owner.name`, a Faust internal named in the module docstring (or our mark that a
    patch is in place): the one way this module changes Faust, which declares no such hook."""
    setattr(owner, name, value)


class current_event:
    """Make `event` Faust's current event, so a table write goes to its changelog partition."""

    def __init__(self, event):
        self.event = event

    def __enter__(self):
        from faust.streams import _current_event

        self.token = _current_event.set(weakref.ref(self.event))

    def __exit__(self, *exc):
        from faust.streams import _current_event

        _current_event.reset(self.token)


class _Position:
    """A stand-in event: Faust reads only `message.topic` and `message.partition` of the
    current event when it sends a table change to the changelog."""

    def __init__(self, topic: str, partition: int):
        self.message = self
        self.topic, self.partition = topic, partition


def delete_key(table, key, topic: str, partition: int) -> bool:
    """Delete `key` from a Faust table outside any stream iteration: the tombstone goes to
    changelog partition `partition` (that of `topic`, which the table is co-partitioned with).
    False when the table did not hold the key."""
    if key not in table:
        return False
    position = _Position(topic, partition)  # current_event holds it weakly: keep it alive
    with current_event(position):
        del table[key]
    getattr(table.data, "_key_partition", {}).pop(key, None)  # the memory store's, see above
    return True


def resubscribe_soon(app) -> None:
    """Topics added to a running app are subscribed after RESUBSCRIBE_S, not 45 s."""
    app.topics._resubscribe_sleep_lock_seconds = RESUBSCRIBE_S


def subscribe_new_topics(app, topic, names: list[str]) -> None:
    """Add `names` to the running `topic` and tell the conductor to resubscribe."""
    topic.topics.extend(names)
    app.topics._flag_changes()


def tansu_fetch_wait() -> None:
    """Tansu answers a fetch only after half the client's max wait (Faust hard-codes 1500 ms):
    lower it so latency is not 1 s+. Applied only when the backend is Tansu."""
    from faust.transport.drivers import aiokafka as driver

    if getattr(driver.AIOKafkaConsumerThread, "tansu_fetch_wait", False):  # once per process
        return
    original = driver.AIOKafkaConsumerThread._create_worker_consumer

    def create(self, transport):
        consumer = original(self, transport)
        consumer._fetch_max_wait_ms = TANSU_FETCH_WAIT_MS
        return consumer

    _patch(driver.AIOKafkaConsumerThread, "_create_worker_consumer", create)
    _patch(driver.AIOKafkaConsumerThread, "tansu_fetch_wait", True)


EOS_BATCH_WAIT_S = 10.0  # longest a commit waits for a batch in progress to finish


def one_transaction_per_worker() -> None:
    """Make Faust's exactly_once work; applied only when MW_PROCESSING_GUARANTEE=exactly_once.

    Faust sends each message through the transactional producer of its destination partition
    but ends a transaction only when offsets of a consumed partition of the same number are
    committed (faust/transport/consumer.py, `TransactionManager.send` and `.commit`). A reading
    re-keyed from input partition 1 to internal partition 2 then waits for a partition-2 commit
    that never comes (the read_committed scoring agent cannot read partition 2 before it): the
    worker stalls. A send to a partition of another worker fails outright.

    Here all of a worker's sends and offsets go through one transaction, on the producer of its
    lowest assigned partition (Faust still starts one per assigned partition: that fences a
    stale owner and aborts a crashed one's open transaction). Each commit (every 2.8 s, Faust's
    commit interval) waits until no `take_events` batch is half processed, drains Faust's
    buffer of table writes (its own `flush` gives up after 0.1 s without a send, and returns
    while the last write it took is still on its way: a batch's state could then fall into the
    next transaction while its alerts commit in this one, and a kill in between sent those
    alerts again), flushes the producer (aiokafka's commit does not flush), then commits
    the outputs with the offsets read so far — or alone (a timer's alert must not wait for
    input). So a batch's state, alerts and offset are committed together; a batch processed
    after the offsets were chosen is committed without its offset and, after a crash, read
    again and recognised as duplicates by its source offsets."""
    import asyncio

    from aiokafka.errors import ProducerFenced
    from faust.exceptions import ProducerSendError
    from faust.streams import Stream
    from faust.transport.consumer import Consumer, TransactionManager
    from faust.transport.producer import ProducerBuffer

    if getattr(TransactionManager, "one_transaction", False):  # patched once per process
        return
    in_batch = {"n": 0}  # take_events batches handed to an agent and not yet done
    idle, open_ = asyncio.Event(), asyncio.Event()  # no batch in progress / no commit waiting
    idle.set()
    open_.set()
    original_take_events = Stream.take_events

    async def take_events(self, max_, within):
        async for events in original_take_events(self, max_, within):
            await open_.wait()
            in_batch["n"] += 1
            idle.clear()
            try:
                yield events
            finally:
                in_batch["n"] -= 1
                if not in_batch["n"]:
                    idle.set()

    sending = {"n": 0}  # table writes the buffer took off its queue and has not sent yet
    original_send_pending = ProducerBuffer._send_pending

    async def send_pending(self, fut) -> None:
        sending["n"] += 1
        try:
            await original_send_pending(self, fut)
        finally:
            sending["n"] -= 1

    async def drain(buffer) -> None:
        """Until every table write queued is handed to the producer."""
        waited = time.monotonic()
        while buffer.size or sending["n"]:
            await buffer.flush()  # waits for sends while there are queued writes
            if sending["n"]:
                await asyncio.sleep(0.001)
            if time.monotonic() - waited > EOS_BATCH_WAIT_S:
                log.warning("exactly_once: table writes still queued after %.0f s",
                            EOS_BATCH_WAIT_S)
                waited = time.monotonic()

    def lead(manager) -> str | None:
        producers = manager.producer._transaction_producers
        return min(producers) if producers else None

    async def send(self, topic, key, value, partition, timestamp, headers, *,
                   transactional_id=None):
        tid = lead(self)
        if tid is None:
            raise ProducerSendError("exactly_once: this worker holds no partition to send for")
        p = self.consumer.key_partition(topic, key, partition)
        return await self.producer.send(topic, key, value, p, timestamp, headers,
                                        transactional_id=tid)

    async def commit(self, offsets, start_new_transaction=True) -> bool:
        tid = lead(self)
        if tid is None:
            return False
        producer = self.producer
        open_.clear()
        try:
            try:
                await asyncio.wait_for(idle.wait(), EOS_BATCH_WAIT_S)
            except TimeoutError:
                log.warning("exactly_once: committing while a batch is still in progress")
            await drain(producer.buffer)  # table writes: they go out through `send`
            async with producer._trn_locks[tid]:
                txn = producer._transaction_producers[tid]
                if not txn._txn_manager.is_in_transaction():  # ended at a rebalance
                    if not offsets:
                        return False
                    await txn.begin_transaction()
                await txn.flush()
                if offsets:
                    await txn.send_offsets_to_transaction(offsets, self.app.conf.id)
                await txn.commit_transaction()
                if start_new_transaction:
                    await txn.begin_transaction()
        except ProducerFenced as exc:  # a newer owner of the partition: stop, as Faust does
            await self.app.crash(exc)
            return False
        finally:
            open_.set()
        return True

    original_commit_tps = Consumer._commit_tps

    async def commit_tps(self, tps, start_new_transaction: bool) -> bool:
        if await original_commit_tps(self, tps, start_new_transaction):
            return True
        return await self.transactions.commit({}, start_new_transaction)

    _patch(ProducerBuffer, "_send_pending", send_pending)
    _patch(Stream, "take_events", take_events)
    _patch(TransactionManager, "send", send)
    _patch(TransactionManager, "commit", commit)
    _patch(Consumer, "_commit_tps", commit_tps)
    _patch(TransactionManager, "one_transaction", True)


def check_faust_version() -> None:
    """A warning, once per process, when the installed Faust is not the one patched here."""
    import faust

    global _version_warned
    if faust.__version__ != FAUST_VERSION and not _version_warned:
        _version_warned = True
        log.warning("faust-streaming %s is installed; meterwatch's patches of its internals were "
                    "written for %s (stream_app/stream/patches.py)", faust.__version__,
                    FAUST_VERSION)
