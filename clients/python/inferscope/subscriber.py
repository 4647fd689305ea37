"""SUB helper for the engine's summary and alert streams (docs/PROTOCOL.md, "Summary stream" and
"Alert stream").

    from inferscope import Subscriber
    with Subscriber.summaries("tcp://127.0.0.1:5556", instance="vllm-1") as sub:
        for message in sub:            # blocks; sub.recv(timeout_ms=...) returns None on timeout
            print(message.names, message.payload["metric"], message.payload.get("p95"))

Prefixes are built with the same escaping as the C++ client (clients/cpp/topics.h), so
``Subscriber.summaries(endpoint, instance="vllm-1")`` receives instance "vllm-1" and not
"vllm-1.eu".
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, List, Optional, Union

import msgpack
import zmq

from inferscope.client import CurveKeys, alert_topic_prefix, parse_topic, summary_topic_prefix

Name = Union[str, bytes]

# Topics whose topic_seq is followed; as many as a stream sink numbers (sinks/stream_sink.h).
_MAX_TOPICS = 1 << 18


@dataclass(frozen=True)
class StreamMessage:
    """One message of a stream: the raw topic, its names (["summaries", instance, model] or
    ["alerts", severity, instance, model]; None for a topic in another format), the decoded
    payload map, and `lost_before`: how many messages of this topic were lost to this subscriber
    just before this one (the gap in the payload's `topic_seq`; docs/PROTOCOL.md, "Lost
    messages")."""

    topic: bytes
    names: Optional[List[str]]
    payload: dict[str, Any]
    lost_before: int = 0

    @property
    def kind(self) -> str:
        """The stream: "summaries", "alerts", ... (the topic's first segment)."""
        return self.topic.split(b".", 1)[0].decode("ascii", "replace")


def decode_stream_payload(payload: bytes) -> dict[str, Any]:
    """The map of a stream payload, msgpack (the sinks' default) or JSON text (`format: json`).
    A msgpack map never starts with '{' (0x7B is a msgpack integer), so the first byte tells.
    ValueError when the payload is neither or not a map."""
    try:
        if payload[:1] == b"{":
            value = json.loads(payload.decode("utf-8"))
        else:
            value = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    except Exception as e:  # msgpack raises several types; report one
        raise ValueError(f"undecodable stream payload: {e}") from e
    if not isinstance(value, dict):
        raise ValueError("a stream payload is a map")
    return value


class Subscriber:
    """A SUB socket connected to a stream sink's PUB endpoint, subscribed to topic prefixes.

    `prefixes` are bytes (or str) such as ``summary_topic_prefix("vllm-1")``; none subscribes to
    nothing until subscribe() is called. `curve` (CurveKeys) for a sink that requires CurveZMQ.
    Not thread-safe (one ZeroMQ socket)."""

    def __init__(
        self,
        endpoint: str,
        prefixes: Iterable[Name] = (),
        *,
        curve: Optional[CurveKeys] = None,
        rcvhwm: int = 10000,
        context: Optional[zmq.Context] = None,
    ) -> None:
        self.endpoint = endpoint
        self._own_context = context is None
        self._context = context if context is not None else zmq.Context()
        self._socket = self._context.socket(zmq.SUB)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.setsockopt(zmq.RCVHWM, rcvhwm)
        if curve is not None:
            curve.apply(self._socket)
        for prefix in prefixes:
            self.subscribe(prefix)
        self._socket.connect(endpoint)
        self.received = 0
        self.undecodable = 0
        self.lost = 0  # messages the engine published that never reached this subscriber
        self._last_seq: dict[bytes, int] = {}  # topic_seq by topic

    @classmethod
    def summaries(
        cls, endpoint: str, instance: Optional[Name] = None, model: Optional[Name] = None, **kwargs: Any
    ) -> "Subscriber":
        """Subscribed to the summaries of every series, one instance or one instance and model."""
        return cls(endpoint, [summary_topic_prefix(instance, model)], **kwargs)

    @classmethod
    def alerts(
        cls,
        endpoint: str,
        severity: Optional[Name] = None,
        instance: Optional[Name] = None,
        model: Optional[Name] = None,
        **kwargs: Any,
    ) -> "Subscriber":
        """Subscribed to every alert change, one severity, or narrower (severity first: topics are
        alerts.<severity>.<instance>.<model>.)."""
        if severity is None and (instance is not None or model is not None):
            raise ValueError("alert topics start with the severity: name it to select an instance")
        return cls(endpoint, [alert_topic_prefix(severity, instance, model)], **kwargs)

    def subscribe(self, prefix: Name) -> None:
        self._socket.setsockopt(zmq.SUBSCRIBE, prefix.encode("utf-8") if isinstance(prefix, str) else prefix)

    def unsubscribe(self, prefix: Name) -> None:
        raw = prefix.encode("utf-8") if isinstance(prefix, str) else prefix
        self._socket.setsockopt(zmq.UNSUBSCRIBE, raw)
        # What is published while unsubscribed is not lost: forget where those topics were.
        for topic in [t for t in self._last_seq if t.startswith(raw)]:
            del self._last_seq[topic]

    def recv(self, timeout_ms: Optional[int] = None) -> Optional[StreamMessage]:
        """The next message (None when none arrives within `timeout_ms`; None waits forever).
        Messages that are not [topic, map payload] are skipped and counted in `undecodable`."""
        while True:
            if timeout_ms is not None and not self._socket.poll(timeout_ms, zmq.POLLIN):
                return None
            frames = self._socket.recv_multipart()
            if len(frames) != 2:
                self.undecodable += 1
                continue
            try:
                payload = decode_stream_payload(frames[1])
            except ValueError:
                self.undecodable += 1
                continue
            try:
                names: Optional[List[str]] = parse_topic(frames[0])
            except ValueError:
                names = None
            self.received += 1
            topic = bytes(frames[0])
            lost = 0
            seq = payload.get("topic_seq")
            if isinstance(seq, int) and not isinstance(seq, bool):
                if len(self._last_seq) >= _MAX_TOPICS:
                    self._last_seq.clear()
                before = self._last_seq.get(topic, 0)
                if before > 0 and seq > before + 1:
                    lost = seq - before - 1  # smaller than before: the engine restarted
                self._last_seq[topic] = seq
                self.lost += lost
            return StreamMessage(topic=topic, names=names, payload=payload, lost_before=lost)

    def __iter__(self) -> Iterator[StreamMessage]:
        while True:
            message = self.recv()
            if message is not None:
                yield message

    def close(self) -> None:
        self._socket.close(0)
        if self._own_context:
            self._context.term()

    def __enter__(self) -> "Subscriber":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
