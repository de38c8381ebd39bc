"""exactly_once on Faust: one transaction per worker, committed between batches.

Applied by the app only when MW_PROCESSING_GUARANTEE=exactly_once (see docs/RELIABILITY.md).
It patches faust-streaming internals; re-check it (tests/test_faults.py) after an upgrade.
"""

from __future__ import annotations

import logging

log = logging.getLogger("meterwatch.worker")

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
    commit interval) waits until no `take_events` batch is half processed, flushes Faust's
    buffer of table writes and the producer (aiokafka's commit does not flush), then commits
    the outputs with the offsets read so far — or alone (a timer's alert must not wait for
    input). So a batch's state, alerts and offset are committed together; a batch processed
    after the offsets were chosen is committed without its offset and, after a crash, read
    again and recognised as duplicates by its source offsets."""
    import asyncio

    from aiokafka.errors import ProducerFenced
    from faust.exceptions import ProducerSendError
    from faust.streams import Stream
    from faust.transport.consumer import Consumer, TransactionManager

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
            await producer.buffer.flush()  # table writes: they go out through `send`
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

    Stream.take_events = take_events
    TransactionManager.send = send
    TransactionManager.commit = commit
    Consumer._commit_tps = commit_tps
    TransactionManager.one_transaction = True
