"""The relay's batched sends (service/kafka.py `send_many`) put every message on the partition the
per-message `send` would: the same murmur2 of the key, modulo the partitions, as aiokafka's
DefaultPartitioner (and the Java client, so any producer of these topics agrees)."""

from __future__ import annotations

import random
import uuid

from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2

from service import kafka


def test_murmur2_equals_aiokafkas_for_every_length() -> None:
    rng = random.Random(14)
    keys = [bytes(rng.randrange(256) for _ in range(n)) for n in range(0, 80) for _ in range(20)]
    keys += [str(uuid.UUID(int=rng.getrandbits(128))).encode() for _ in range(2000)]
    assert [kafka.murmur2(k) for k in keys] == [aiokafka_murmur2(k) for k in keys]
    # Known values of the Java client's Utils.murmur2 (its test vectors, as unsigned ints).
    assert kafka.murmur2(b"21") == (-973932308) & 0xFFFFFFFF
    assert kafka.murmur2(b"a-little-bit-long-string") == (-985981536) & 0xFFFFFFFF


def test_partition_of_equals_the_default_partitioner() -> None:
    rng = random.Random(7)
    for count in (1, 2, 3, 7, 12):
        partitions = list(range(count))
        for _ in range(300):
            key = str(uuid.UUID(int=rng.getrandbits(128))).encode()
            assert kafka.partition_of(key, partitions) == DefaultPartitioner()(key, partitions, partitions)
