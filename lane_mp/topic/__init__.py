"""Topics: a Kafka-like multi-producer, multi-consumer log in shared memory, across processes.

Publishers in any process append under a cross-process ``flock`` (gap-free sequence numbers from
1, each publish atomic); every consumer reads every message at its own position without a lock,
sleeping on a FIFO doorbell at idle; retention reclaims what every registered consumer has passed
and applies the topic's policy (``block``, ``error``, ``drop_slowest``) when the log is full.

    owner = Topic.create("orders", capacity_bytes=8 << 20)      # this process unlinks it
    Topic.attach("orders").publisher("p1").publish(b"...")      # any process
    for msg in Topic.attach("orders").consumer("audit", start="earliest"): ...

The byte layout is documented in :mod:`lane_mp.topic.layout`; the lock in ``lock.py``; the wake-up
protocol in ``doorbell.py``; reading, commits and zero-copy rules in ``consumer.py``.
"""

from lane_mp.topic.consumer import Consumer
from lane_mp.topic.message import ConsumerInfo, Message, TopicStats
from lane_mp.topic.publisher import Publisher
from lane_mp.topic.topic import Topic

__all__ = ["Consumer", "ConsumerInfo", "Message", "Publisher", "Topic", "TopicStats"]
