"""Python publisher for inferscope's wire protocol v1 (docs/PROTOCOL.md).

Depends on pyzmq and msgpack (Debian: python3-zmq, python3-msgpack).

    from inferscope_client import Publisher
    with Publisher("tcp://127.0.0.1:5555", "gateway-1") as pub:
        pub.request("vllm-0", "llama-3-70b", e2e_ms=812.0, ttft_ms=95.0, output_tokens=120)
        pub.gauge("vllm-0", "llama-3-70b", "kv_cache_usage", 0.71)

Events are batched (``batch_size`` per message) and every message carries the publisher id and a
sequence number that grows by one per message, so the engine can count lost and duplicate
messages. Not thread-safe: use one Publisher per thread.

AckedPublisher is the acknowledged mode (docs/PROTOCOL.md §9, a ``mode: router`` source): messages
are kept and resent until the engine acknowledges them as durable, so every event counts exactly
once, across engine restarts too.

Both take ``curve=CurveKeys(...)`` for an engine source that requires CurveZMQ keys
(docs/PROTOCOL.md, "Security"):

    keys = CurveKeys.from_files("gateway-1.key", "engine.pub")  # files from `inferscope keygen`
    pub = Publisher("tcp://engine:5555", "gateway-1", curve=keys)
"""

from __future__ import annotations

import collections
import math
import os
import time

import msgpack
import zmq
import zmq.utils.z85
from typing import Any, Callable, Dict, List, Optional, Union

Name = Union[str, bytes]

PROTOCOL_VERSION = 1
MAX_STRING_BYTES = 255  # the engine's kMaxNameBytes (pipeline/names.h)

__all__ = ["Publisher", "AckedPublisher", "Rejection", "CurveKeys", "load_key_file",
           "encode_payload", "request_event", "gauge_event", "PROTOCOL_VERSION",
           "MAX_EVENTS_PER_MESSAGE", "MAX_MESSAGE_BYTES", "escape_topic_name",
           "unescape_topic_name", "summary_topic_prefix", "alert_topic_prefix", "parse_topic"]


def _is_z85_key(text):
    if len(text) != 40:
        return False
    try:
        zmq.utils.z85.decode(text)
    except Exception:  # pylint: disable=broad-except
        return False
    return True


def load_key_file(path: str) -> str:
    """Returns the Z85 key (str) of a key file written by `inferscope keygen` (NAME.key or
    NAME.pub): the line holding a 40-character key; '#' lines are comments."""
    key = None
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            words = line.split()
            if not words:
                continue
            if len(words) == 1 and _is_z85_key(words[0]):
                if key is not None:
                    raise ValueError(f"{path}:{number}: a second key (a key file holds one)")
                key = words[0]
            elif not words[0].startswith("#"):
                raise ValueError(f"{path}:{number}: expected a 40-character Z85 key")
    if key is None:
        raise ValueError(f"{path}: no key")
    return key


class CurveKeys:
    """CurveZMQ client keys (Z85 strings) for an engine endpoint that requires them: the
    endpoint's public key, this client's secret key and (derived when None) its public key."""

    def __init__(self, server_public_key: str, secret_key: str,
                 public_key: Optional[str] = None) -> None:
        if not zmq.has("curve"):
            raise RuntimeError("this libzmq was built without CURVE (libsodium)")
        for name, key in (("server_public_key", server_public_key), ("secret_key", secret_key)):
            if not isinstance(key, str) or not _is_z85_key(key):
                raise ValueError(f"{name} must be a 40-character Z85 key")
        if public_key is None:
            public_key = zmq.curve_public(secret_key.encode("ascii")).decode("ascii")
        elif not _is_z85_key(public_key):
            raise ValueError("public_key must be a 40-character Z85 key")
        self.server_public_key = server_public_key
        self.secret_key = secret_key
        self.public_key = public_key

    @classmethod
    def from_files(cls, secret_key_file, server_public_key_file):
        """From this client's NAME.key and the engine endpoint's NAME.pub."""
        return cls(load_key_file(server_public_key_file), load_key_file(secret_key_file))

    def apply(self, sock: zmq.Socket) -> None:
        """Makes `sock` (before it connects) a CurveZMQ client."""
        sock.setsockopt(zmq.CURVE_SERVERKEY, self.server_public_key.encode("ascii"))
        sock.setsockopt(zmq.CURVE_PUBLICKEY, self.public_key.encode("ascii"))
        sock.setsockopt(zmq.CURVE_SECRETKEY, self.secret_key.encode("ascii"))


def _now_ms():
    return time.time_ns() // 1_000_000


def encode_payload(publisher_id: str, seq: int, events: List[Dict[str, Any]],
                   incarnation: Optional[int] = None) -> bytes:
    """Returns the msgpack payload of one message: {"v": 1, "pub", "seq", "events"}, and "inc"
    when an incarnation is given."""
    payload = {"v": PROTOCOL_VERSION, "pub": publisher_id, "seq": seq, "events": events}
    if incarnation is not None:
        payload["inc"] = incarnation
    return msgpack.packb(payload, use_bin_type=True)


def _check_name(what, value):
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty string")
    if len(value.encode("utf-8")) > MAX_STRING_BYTES:
        raise ValueError(f"{what} is longer than {MAX_STRING_BYTES} bytes")


def _check_number(what, value, lo=None, hi=None):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} must be a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{what} must be finite")
    if lo is not None and value < lo:
        raise ValueError(f"{what} must be >= {lo}")
    if hi is not None and value > hi:
        raise ValueError(f"{what} must be <= {hi}")


def _event_time(time_ms):
    if time_ms is None:
        return _now_ms()
    if isinstance(time_ms, bool) or not isinstance(time_ms, int) or time_ms <= 0:
        raise ValueError("time_ms must be a positive int (ms since the Unix epoch)")
    return time_ms


def request_event(instance: str, model: str, e2e_ms: Optional[float] = None,
                  ttft_ms: Optional[float] = None, tpot_ms: Optional[float] = None,
                  prompt_tokens: Optional[int] = None, output_tokens: Optional[int] = None,
                  cached_tokens: Optional[int] = None,
                  error: Optional[str] = None, cost_usd: Optional[float] = None,
                  quality: Optional[float] = None, time_ms: Optional[int] = None) -> Dict[str, Any]:
    """Returns the validated event map of one request outcome (docs/PROTOCOL.md §3)."""
    _check_name("instance", instance)
    _check_name("model", model)
    event = {"k": "r", "i": instance, "m": model, "t": _event_time(time_ms)}
    # e2e_ms=None: not known yet (a gateway reporting at first-token time); the request still
    # counts and feeds ttft, and is absent from e2e windows.
    for key, name, value in (("e2e", "e2e_ms", e2e_ms), ("ttft", "ttft_ms", ttft_ms),
                             ("tpot", "tpot_ms", tpot_ms), ("cost", "cost_usd", cost_usd)):
        if value is not None:
            _check_number(name, value, lo=0)
            event[key] = value
    for key, name, value in (("pt", "prompt_tokens", prompt_tokens),
                             ("ot", "output_tokens", output_tokens),
                             ("ct", "cached_tokens", cached_tokens)):
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an int")
            _check_number(name, value, lo=0, hi=2**32 - 1)
            event[key] = value
    if quality is not None:
        _check_number("quality", quality, lo=0, hi=1)
        event["q"] = quality
    if error:
        if not isinstance(error, str):
            raise TypeError("error must be a string")
        event["err"] = error
    return event


def gauge_event(instance: str, model: str, name: str, value: float,
                time_ms: Optional[int] = None) -> Dict[str, Any]:
    """Returns the validated event map of one gauge sample (docs/PROTOCOL.md §3)."""
    _check_name("instance", instance)
    _check_name("model", model)
    _check_name("name", name)
    _check_number("value", value)
    return {"k": "g", "i": instance, "m": model, "t": _event_time(time_ms), "n": name,
            "val": value}


class Publisher:
    """Batches request outcomes and gauges and sends them as protocol-v1 messages.

    socket="push" connects a PUSH socket to an inferscope PULL source (the default); "pub" makes a
    PUB socket for SUB sources (it connects, or binds when bind=True). Each message is the two
    frames [topic, payload].

    Invalid arguments raise ValueError/TypeError at the call, so that a bad event never reaches the
    wire. Sending blocks for at most send_timeout_ms (a PUSH socket with no peer); a batch that
    cannot be sent then is dropped and counted in ``events_dropped``.

    Every Publisher is a new incarnation of its publisher id (``incarnation``, sent as "inc" in
    every message, docs/PROTOCOL.md §4): a process restarted with the same id starts again at seq 0
    and the engine takes it for a restart, not for duplicates of the old run's messages.
    """

    def __init__(self, endpoint, publisher_id, batch_size=256, socket="push", topic="metrics",
                 bind=False, sndhwm=1000, send_timeout_ms=5000, context=None, first_seq=0,
                 curve=None):
        _check_name("publisher_id", publisher_id)
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if socket not in ("push", "pub"):
            raise ValueError('socket must be "push" or "pub"')
        self.publisher_id = publisher_id
        self.batch_size = batch_size
        self.topic = topic.encode("utf-8") if isinstance(topic, str) else bytes(topic)
        self.seq = first_seq
        self.incarnation = _new_incarnation()
        self.messages_sent = 0
        self.events_sent = 0
        self.events_dropped = 0
        self._events = []
        self._own_context = context is None
        self._context = context or zmq.Context()
        self._socket = self._context.socket(zmq.PUSH if socket == "push" else zmq.PUB)
        self._socket.setsockopt(zmq.SNDHWM, sndhwm)
        self._socket.setsockopt(zmq.SNDTIMEO, send_timeout_ms)
        if curve is not None:
            if bind:
                raise ValueError("curve keys need a connecting socket (the engine binds)")
            curve.apply(self._socket)
        if bind:
            self._socket.bind(endpoint)
            self.endpoint = self._socket.getsockopt(zmq.LAST_ENDPOINT).decode()
        else:
            self._socket.connect(endpoint)
            self.endpoint = endpoint

    # -- events ------------------------------------------------------------------------------

    def request(self, instance: str, model: str, e2e_ms: Optional[float] = None,
                ttft_ms: Optional[float] = None, tpot_ms: Optional[float] = None,
                prompt_tokens: Optional[int] = None, output_tokens: Optional[int] = None,
                cached_tokens: Optional[int] = None,
                error: Optional[str] = None, cost_usd: Optional[float] = None,
                quality: Optional[float] = None, time_ms: Optional[int] = None) -> None:
        """Records the outcome of one inference request (latencies in ms). Every measure is
        optional: e2e_ms=None (e.g. reported at first-token time) still counts the request.

        error: None or "" for success; "timeout", "rate_limited", "server_error", "client_error",
        "cancelled", or any other string (counted as "other").
        """
        self._add(request_event(instance, model, e2e_ms, ttft_ms, tpot_ms, prompt_tokens,
                                output_tokens, cached_tokens, error, cost_usd, quality, time_ms))

    def gauge(self, instance: str, model: str, name: str, value: float,
              time_ms: Optional[int] = None) -> None:
        """Records a sampled value (kv_cache_usage, num_requests_waiting, ...)."""
        self._add(gauge_event(instance, model, name, value, time_ms))

    def flush(self) -> bool:
        """Sends the pending events as one message. Returns False if the send timed out."""
        if not self._events:
            return True
        events, self._events = self._events, []
        payload = encode_payload(self.publisher_id, self.seq, events, self.incarnation)
        self.seq += 1  # a lost message shows up as a gap on the engine side
        try:
            self._socket.send_multipart([self.topic, payload], copy=False)
        except zmq.Again:
            self.events_dropped += len(events)
            return False
        self.messages_sent += 1
        self.events_sent += len(events)
        return True

    def close(self, linger_ms: int = 2000) -> None:
        """Flushes, then closes the socket, waiting up to linger_ms for queued messages."""
        if self._socket is None:
            return
        try:
            self.flush()
        finally:
            self._socket.close(linger=linger_ms)
            self._socket = None
            if self._own_context:
                self._context.term()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    # -- internals -----------------------------------------------------------------------------

    def _add(self, event):
        if self._socket is None:
            raise RuntimeError("publisher is closed")
        self._events.append(event)
        if len(self._events) >= self.batch_size:
            self.flush()


Rejection = collections.namedtuple("Rejection", "incarnation seq events reason")
Rejection.__doc__ = """A message the engine refused for good (docs/PROTOCOL.md §9, the nack message)."""

MAX_EVENTS_PER_MESSAGE = 65536          # the engine's default max_events_per_message
MAX_MESSAGE_BYTES = 16 * 1024 * 1024    # the engine's default max_message_bytes
_EVENT_OVERHEAD_BYTES = 160             # an upper bound of an event's encoded size without strings
_SPOOL_SLACK_BYTES = 1 << 20


def _new_incarnation(above=0):
    """(ms since the epoch) << 22 | 22 random bits, and greater than `above`."""
    inc = (_now_ms() << 22) | (int.from_bytes(os.urandom(3), "big") & ((1 << 22) - 1))
    return max(inc, above + 1)


def _acked_header(publisher_id):
    """The fixed header of an acknowledged-mode payload and the offsets of its inc and seq.

    {"v": 1, "pub": id, "inc": <uint64>, "seq": <uint64>, "events": ...}, inc and seq as fixed
    uint64 (0xcf + 8 bytes) so that a stored payload can be renumbered (as the C++ client lays
    them out)."""
    head = (b"\x85\xa1v\x01\xa3pub" + msgpack.packb(publisher_id, use_bin_type=True)
            + b"\xa3inc\xcf")
    inc_at = len(head)
    head += b"\x00" * 8 + b"\xa3seq\xcf"
    seq_at = len(head)
    head += b"\x00" * 8 + b"\xa6events"
    return head, inc_at, seq_at


def _patch_u64(payload, at, value):
    return payload[:at] + value.to_bytes(8, "big") + payload[at + 8:]


class _Spool:
    """The append-only spool file of an AckedPublisher (same format as the C++ client's Spool:
    clients/README.md): the position and every unacknowledged message, written before it is sent.
    """

    MAGIC = b"ISSPOOL1"

    def __init__(self, path, sync):
        self.path = path
        self.sync = sync
        self._file = None
        self.bytes = 0

    @staticmethod
    def _record(kind, body):
        h = 0xcbf29ce484222325
        for c in kind + body:
            h = ((h ^ c) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
        return kind + len(body).to_bytes(4, "big") + body + h.to_bytes(8, "big")

    def open(self):
        """Reads the spool; returns its state (None when it holds no position) and rewrites it."""
        state = None
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            data = b""
        if data[:8] == self.MAGIC:
            state = self._replay(data)
        self.compact(state)
        return state

    def _replay(self, data):
        state = None
        at = 8
        while at + 5 <= len(data):
            kind = data[at:at + 1]
            n = int.from_bytes(data[at + 1:at + 5], "big")
            if at + 5 + n + 8 > len(data):
                break
            body = data[at + 5:at + 5 + n]
            if self._record(kind, body) != data[at:at + 5 + n + 8] or n < 16:
                break
            at += 5 + n + 8
            inc = int.from_bytes(body[0:8], "big")
            seq = int.from_bytes(body[8:16], "big")
            if state is None or state["incarnation"] != inc:
                state = {"incarnation": inc, "next_seq": 0, "acked": None, "unacked": {}}
            if kind == b"I":
                state["next_seq"] = max(state["next_seq"], seq)
            elif kind == b"M" and n >= 20:
                if state["acked"] is None or seq > state["acked"]:
                    state["unacked"][seq] = (int.from_bytes(body[16:20], "big"), body[20:])
                    state["next_seq"] = max(state["next_seq"], seq + 1)
            elif kind == b"A":
                if state["acked"] is None or seq > state["acked"]:
                    state["acked"] = seq
                for s in [s for s in state["unacked"] if s <= seq]:
                    del state["unacked"][s]
            elif kind == b"D":
                state["unacked"].pop(seq, None)
            else:
                break
        return state

    def compact(self, state):
        """Replaces the file by `state` (a write to a temporary file, then a rename)."""
        data = bytearray(self.MAGIC)
        if state is not None:
            inc = state["incarnation"]
            data += self._record(b"I", inc.to_bytes(8, "big") + state["next_seq"].to_bytes(8, "big"))
            if state["acked"] is not None:
                data += self._record(b"A", inc.to_bytes(8, "big") + state["acked"].to_bytes(8, "big"))
            for seq in sorted(state["unacked"]):
                events, payload = state["unacked"][seq]
                data += self._record(b"M", inc.to_bytes(8, "big") + seq.to_bytes(8, "big")
                                     + events.to_bytes(4, "big") + payload)
        tmp = self.path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())  # a rename must never expose an unwritten file
        os.replace(tmp, self.path)
        self.close()
        self._file = open(self.path, "ab", buffering=0)
        self.bytes = len(data)

    def _append(self, kind, body):
        record = self._record(kind, body)
        try:
            self._file.write(record)  # unbuffered: one write(2), survives the process being killed
            if self.sync:
                os.fdatasync(self._file.fileno())
        except OSError:
            try:
                self._file.truncate(self.bytes)  # cut a partial record off
            except OSError:
                pass
            raise
        self.bytes += len(record)

    def append_message(self, inc, seq, events, payload):
        self._append(b"M", inc.to_bytes(8, "big") + seq.to_bytes(8, "big")
                     + events.to_bytes(4, "big") + payload)

    def append_ack(self, inc, seq):
        self._append(b"A", inc.to_bytes(8, "big") + seq.to_bytes(8, "big"))

    def append_drop(self, inc, seq):
        self._append(b"D", inc.to_bytes(8, "big") + seq.to_bytes(8, "big"))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class AckedPublisher:
    """Publishes in acknowledged mode (docs/PROTOCOL.md §9) to a ``mode: router`` source.

    The engine acknowledges a message only once a checkpoint holding its effect is durable, so a
    message is either acknowledged or still in this publisher's resend buffer: nothing is lost when
    the engine crashes or restarts, and the engine drops resent messages it had applied already
    (exactly-once effect). Same options and behaviour as the C++ ``client::AckedPublisher``.

        pub = AckedPublisher("tcp://127.0.0.1:5558", "gateway-1", spool_path="/var/lib/gw/spool")
        pub.connect()                        # spool, DEALER connect + hello
        pub.request("vllm-0", "llama-3-70b", e2e_ms=812.0, ttft_ms=95.0)
        pub.gauge("vllm-0", "llama-3-70b", "kv_cache_usage", 0.71)
        if not pub.wait_acked(10.0):         # flushes, then waits for the acknowledgements
            ...                              # still unacknowledged: keep polling or retry later
        pub.close()

    Incarnations: every message carries the publisher's incarnation ("inc"), chosen by connect()
    ((ms since the epoch) << 22 | 22 random bits, moved above the one the engine reports if the
    clock went back) or restored from the spool; each incarnation numbers its messages from 0, so a
    restarted process never reuses an earlier process's sequence numbers.

    Options:
      publisher_id: 1..255 bytes, stable across restarts of this publisher.
      batch_size: events per message; request()/gauge() flush when reached.
      max_unacked: messages kept until acknowledged (the resend buffer). When it is full, flush()
        waits up to block_timeout_ms (-1: as long as it takes) for acknowledgements, then reports
        back-pressure by returning False; the events stay pending, nothing is dropped.
      resend_timeout_ms: without acknowledgement progress for this long, everything unacknowledged
        is sent again, oldest first. Must exceed the engine's checkpoint interval (default 1 s).
      hello_timeout_ms: how long connect() waits for the answer to its hello. An engine that does
        not answer is not an error: the publisher sends anyway and resends until acknowledged.
      max_events_per_message, max_message_bytes: the engine's limits (its source options of the
        same names; the defaults are the engine's). batch_size may not exceed the first; a message
        is sent early when the next event might make it larger than the second, and an event that
        alone is larger raises ValueError.
      spool_path: optional spool file, one per publisher process. The incarnation, the next
        sequence number and every message are written to it before the message is sent, and
        connect() resends the unacknowledged ones with their original incarnation and sequence
        number, so a process killed and restarted with the same spool loses nothing and duplicates
        nothing (the engine deduplicates exactly). Without a spool, a restarted process begins a
        new incarnation and what the dead process had not seen acknowledged is lost unless the
        engine had applied it. ``next_seq`` after connect() tells how many messages the spooled
        incarnation holds, so an application can resume its own input from there.
      spool_sync: fdatasync every spool record (survives an OS crash as well as a killed process).
      on_rejected: callable(Rejection), called for each message the engine refuses for good (a
        nack: e.g. batch_too_large under a lower engine limit, or stale_incarnation); such a
        message is not resent. ``rejected_messages``/``rejected_events`` count them.
      sndhwm, linger_ms: ZeroMQ socket options (nothing needs lingering: unacknowledged messages
        are resent).
      curve: CurveKeys for a source that requires CurveZMQ keys (None: plain ZeroMQ).

    Acknowledgements are read, and timed-out messages resent, inside every call; a publisher that
    stops calling for longer than resend_timeout_ms should call poll() now and then. Not
    thread-safe: use one AckedPublisher per thread, each with its own publisher_id.
    """

    def __init__(self, endpoint, publisher_id, topic="metrics", batch_size=256, max_unacked=4096,
                 block_timeout_ms=-1, resend_timeout_ms=3000, hello_timeout_ms=2000,
                 sndhwm=100000, linger_ms=0, context=None, max_events_per_message=MAX_EVENTS_PER_MESSAGE,
                 max_message_bytes=MAX_MESSAGE_BYTES, spool_path=None, spool_sync=False,
                 on_rejected=None, curve=None):
        if not endpoint:
            raise ValueError("endpoint is required")
        _check_name("publisher_id", publisher_id)
        if batch_size < 1 or max_unacked < 1:
            raise ValueError("batch_size and max_unacked must be >= 1")
        if batch_size > max_events_per_message:
            raise ValueError(f"batch_size must not exceed max_events_per_message "
                             f"({max_events_per_message})")
        if max_message_bytes < 1024:
            raise ValueError("max_message_bytes must be >= 1024")
        self.endpoint = endpoint
        self.publisher_id = publisher_id
        self.topic = topic.encode("utf-8") if isinstance(topic, str) else bytes(topic)
        self.batch_size = batch_size
        self.max_unacked = max_unacked
        self.block_timeout_ms = block_timeout_ms
        self.resend_timeout_ms = resend_timeout_ms
        self.hello_timeout_ms = hello_timeout_ms
        self.sndhwm = sndhwm
        self.linger_ms = linger_ms
        self.curve = curve
        self.max_events_per_message = max_events_per_message
        self.max_message_bytes = max_message_bytes
        self.on_rejected = on_rejected
        self.incarnation = None     # chosen (or restored from the spool) by connect()
        self.next_seq = 0           # the sequence number of the next message
        self.messages_sent = 0      # sends, resends included
        self.rejected_messages = 0  # messages the engine refused for good
        self.rejected_events = 0
        self.restored_from_spool = 0
        self.last_error = ""
        self.hello_answered = False
        self.hello_next = None      # the engine's "next" in its answer to the hello (None: unknown)
        self.hello_latest = None    # the publisher's current incarnation at the engine, per the hello
        self._events = []
        self._pending_bytes = 0     # an upper bound of the encoded size of self._events
        # [seq, events, payload, rejected, spooled], oldest first
        self._unacked = collections.deque()
        self._acked_seq = None
        self._resends = 0
        self._last_progress = time.monotonic()
        self._last_go_back = 0.0
        self._context = context
        self._own_context = context is None
        self._socket = None
        self._spool = _Spool(spool_path, spool_sync) if spool_path else None
        self._header, self._inc_at, self._seq_at = _acked_header(publisher_id)

    # -- lifecycle -----------------------------------------------------------------------------

    def connect(self) -> None:
        """Opens the spool (restoring the incarnation, the next sequence number and the
        unacknowledged messages it holds), creates the DEALER socket, connects, says hello,
        resends what the spool held, then waits up to hello_timeout_ms for the answer. Raises
        zmq.ZMQError when the socket cannot be created or the endpoint is invalid, OSError when
        the spool cannot be read or written."""
        if self._socket is not None:
            return
        if self._spool is not None:
            state = self._spool.open()
            if state is not None:
                self.incarnation = state["incarnation"]
                self.next_seq = state["next_seq"]
                self._acked_seq = state["acked"]
                for seq in sorted(state["unacked"]):
                    events, payload = state["unacked"][seq]
                    self._unacked.append([seq, events, payload, False, True])
                self.restored_from_spool = len(self._unacked)
            else:
                self.incarnation = _new_incarnation()
                self._spool.compact(self._spool_state())
        elif self.incarnation is None:
            self.incarnation = _new_incarnation()
        if self._context is None:
            self._context = zmq.Context()
        sock = self._context.socket(zmq.DEALER)
        try:
            sock.setsockopt(zmq.SNDHWM, self.sndhwm)
            sock.setsockopt(zmq.LINGER, self.linger_ms)
            if self.curve is not None:
                self.curve.apply(sock)
            sock.connect(self.endpoint)
        except zmq.ZMQError as e:
            sock.close(linger=0)
            self.last_error = f"connect {self.endpoint}: {e}"
            raise
        self._socket = sock
        self._send_hello()
        self._last_progress = time.monotonic()
        for message in self._unacked:
            self._send(message)
        deadline = time.monotonic() + self.hello_timeout_ms / 1000.0
        while not self.hello_answered and time.monotonic() < deadline:
            self.poll(10)

    def close(self) -> None:
        """Closes the socket (and the spool). Unacknowledged messages are not waited for: call
        wait_acked() first (with a spool, a later process resends them)."""
        if self._socket is not None:
            self._socket.close(linger=self.linger_ms)
            self._socket = None
        if self._own_context and self._context is not None:
            self._context.term()
            self._context = None
        if self._spool is not None:
            self._spool.close()

    def __enter__(self):
        if self._socket is None:
            self.connect()
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    # -- events --------------------------------------------------------------------------------

    def request(self, instance: str, model: str, e2e_ms: Optional[float] = None,
                ttft_ms: Optional[float] = None, tpot_ms: Optional[float] = None,
                prompt_tokens: Optional[int] = None, output_tokens: Optional[int] = None,
                cached_tokens: Optional[int] = None,
                error: Optional[str] = None, cost_usd: Optional[float] = None,
                quality: Optional[float] = None, time_ms: Optional[int] = None) -> bool:
        """Adds one request outcome (see Publisher.request); flushes when the batch is full.
        Returns False when a flush reported back-pressure: the flush this event triggered (the
        event is pending), or the flush before it when the message would otherwise have grown
        past max_message_bytes (the event was not added: call again)."""
        return self._add(request_event(instance, model, e2e_ms, ttft_ms, tpot_ms, prompt_tokens,
                                       output_tokens, cached_tokens, error, cost_usd, quality,
                                       time_ms))

    def gauge(self, instance: str, model: str, name: str, value: float,
              time_ms: Optional[int] = None) -> bool:
        """Adds one gauge sample; flushes when the batch is full. False on back-pressure (see
        request())."""
        return self._add(gauge_event(instance, model, name, value, time_ms))

    def flush(self) -> bool:
        """Sends the pending events as one message, keeping it until acknowledged. Returns False
        on back-pressure (the resend buffer stayed full for block_timeout_ms); the events then
        stay pending and a later flush sends them. A message that cannot be written to the spool
        raises OSError and stays buffered, unsent; a later flush writes and sends it."""
        if self._socket is None:
            self.last_error = "not connected"
            return False
        if not self._events:
            self.poll(0)
            self._spool_pending()
            return True
        deadline = time.monotonic() + self.block_timeout_ms / 1000.0
        self.poll(0)
        while len(self._unacked) >= self.max_unacked:
            if self.block_timeout_ms >= 0 and time.monotonic() >= deadline:
                self.last_error = (f"back-pressure: {len(self._unacked)} messages await "
                                   "acknowledgement")
                return False
            self.poll(10)
        if not self._unacked:
            self._last_progress = time.monotonic()
        seq = self.next_seq
        events = self._events
        payload = self._encode(seq, events)
        self._events = []
        self._pending_bytes = 0
        self.next_seq = seq + 1
        message = [seq, len(events), payload, False, self._spool is None]
        self._unacked.append(message)
        if self._spool is None:
            self._send(message)
        else:
            self._spool_pending()
        return True

    def poll(self, timeout_ms: int = 0) -> None:
        """Reads acknowledgements and nacks (waiting up to timeout_ms for the first) and resends
        everything unacknowledged when there was no acknowledgement progress for
        resend_timeout_ms."""
        if self._socket is None:
            return
        try:
            wait = timeout_ms
            while self._socket.poll(wait, zmq.POLLIN):
                frames = self._socket.recv_multipart(zmq.NOBLOCK)
                if len(frames) == 2 and frames[0] == b"ack":
                    self._handle_ack(frames[1])
                elif len(frames) == 2 and frames[0] == b"nack":
                    self._handle_nack(frames[1])
                wait = 0  # drain what is there, then return
        except zmq.Again:
            pass
        except zmq.ZMQError as e:
            self.last_error = f"receive: {e}"
        if (self._unacked and
                time.monotonic() - self._last_progress > self.resend_timeout_ms / 1000.0):
            self._resend_all()

    def wait_acked(self, timeout_s: float) -> bool:
        """Flushes, then waits until every message is acknowledged (or refused for good). False on
        timeout (or back-pressure in the flush)."""
        if not self.flush():
            return False
        deadline = time.monotonic() + timeout_s
        while self._unacked:
            if time.monotonic() >= deadline:
                self.last_error = f"{len(self._unacked)} messages not acknowledged in time"
                return False
            self.poll(10)
        return True

    # -- state ---------------------------------------------------------------------------------

    @property
    def acked_seq(self) -> Optional[int]:
        """The highest acknowledged sequence number of this incarnation (cumulative), or None."""
        return self._acked_seq

    @property
    def unacked(self) -> int:
        """Messages sent and not yet acknowledged (the resend buffer)."""
        return len(self._unacked)

    @property
    def resends(self) -> int:
        """Messages sent again after resend_timeout_ms without acknowledgement progress."""
        return self._resends

    @property
    def pending(self) -> int:
        """Events added and not yet flushed."""
        return len(self._events)

    # -- internals -----------------------------------------------------------------------------

    def _encode(self, seq, events):
        return (_patch_u64(_patch_u64(self._header, self._inc_at, self.incarnation), self._seq_at,
                           seq) + msgpack.packb(events, use_bin_type=True))

    def _add(self, event):
        if self._socket is None:
            raise RuntimeError("publisher is not connected")
        bound = _EVENT_OVERHEAD_BYTES + sum(len(v.encode("utf-8")) for v in event.values()
                                            if isinstance(v, str))
        header = len(self._header) + 5
        if header + bound > self.max_message_bytes:
            size = len(msgpack.packb(event, use_bin_type=True))
            if header + size > self.max_message_bytes:
                raise ValueError(f"event of {size} bytes exceeds max_message_bytes "
                                 f"({self.max_message_bytes})")
            bound = size
        if self._events and header + self._pending_bytes + bound > self.max_message_bytes:
            if not self.flush():
                return False  # back-pressure; this event was not added
        self._events.append(event)
        self._pending_bytes += bound
        return len(self._events) < self.batch_size or self.flush()

    def _send_hello(self):
        hello = msgpack.packb({"v": PROTOCOL_VERSION, "pub": self.publisher_id,
                               "inc": self.incarnation}, use_bin_type=True)
        try:
            self._socket.send_multipart([b"hello", hello], zmq.NOBLOCK)
        except zmq.ZMQError as e:
            self.last_error = f"send: {e}"

    def _send(self, message):
        if not message[4]:
            return  # not in the spool yet: never sent before it is
        # DEALER queues while disconnected; a full queue (sndhwm) drops the send here, and the
        # resend timer brings the message back.
        try:
            self._socket.send_multipart([self.topic, message[2]], zmq.NOBLOCK, copy=False)
            self.messages_sent += 1
        except zmq.Again:
            pass
        except zmq.ZMQError as e:
            self.last_error = f"send: {e}"

    def _spool_pending(self):
        first = len(self._unacked)
        while first > 0 and not self._unacked[first - 1][4]:
            first -= 1
        for i in range(first, len(self._unacked)):
            message = self._unacked[i]
            self._spool.append_message(self.incarnation, message[0], message[1], message[2])
            message[4] = True
            self._send(message)

    def _spool_state(self):
        return {"incarnation": self.incarnation, "next_seq": self.next_seq,
                "acked": self._acked_seq,
                "unacked": {m[0]: (m[1], m[2]) for m in self._unacked if m[4]}}

    def _maybe_compact_spool(self):
        if self._spool is None:
            return
        live = sum(len(m[2]) + 33 for m in self._unacked)
        if self._spool.bytes > 2 * live + _SPOOL_SLACK_BYTES:
            self._spool.compact(self._spool_state())

    def _reject(self, message, reason):
        if message[3]:
            return
        message[3] = True
        self.rejected_messages += 1
        self.rejected_events += message[1]
        self.last_error = f"message {message[0]} refused: {reason}"
        if self.on_rejected is not None:
            self.on_rejected(Rejection(self.incarnation, message[0], message[1], reason))

    def _can_reincarnate(self):
        return self._acked_seq is None and (not self._unacked or self._unacked[0][0] == 0)

    def _reincarnate(self, above):
        """Begins a new incarnation above `above` and renumbers the buffered messages from 0.
        Only while nothing of this incarnation is acknowledged: the engine then applied none of
        them (it refuses older incarnations than its latest)."""
        self.incarnation = _new_incarnation(above)
        seq = 0
        for message in self._unacked:
            message[0] = seq
            message[2] = _patch_u64(_patch_u64(message[2], self._inc_at, self.incarnation),
                                    self._seq_at, seq)
            message[3] = False
            seq += 1
        self.next_seq = seq
        if self._spool is not None:
            self._spool.compact(self._spool_state())
        self._send_hello()
        self._resend_all()

    def _handle_ack(self, payload):
        ack = _control_map(payload)
        if ack is None or ack.get("pub") != self.publisher_id:
            return
        inc = _uint_field(ack, "inc") or 0
        acked = _uint_field(ack, "ack")
        next_seq = _uint_field(ack, "next")
        latest = _uint_field(ack, "latest")
        if not self.hello_answered:
            self.hello_answered = True
            self.hello_next = next_seq
            self.hello_latest = latest
        # The engine knows a newer incarnation of this id than ours (our clock went back): move
        # above it while that is safe.
        if latest is not None and latest > self.incarnation and self._can_reincarnate():
            self._reincarnate(latest)
            return
        if inc != self.incarnation:
            return  # about an incarnation we left
        if acked is not None and (self._acked_seq is None or acked > self._acked_seq):
            self._acked_seq = acked
            self._last_progress = time.monotonic()
            if self._spool is not None:
                self._spool.append_ack(self.incarnation, acked)
        while self._acked_seq is not None and self._unacked and self._unacked[0][0] <= self._acked_seq:
            self._unacked.popleft()
        self._maybe_compact_spool()
        # The engine expects an older message than some we sent (lost in a reconnect or an engine
        # restart): go back to it now rather than at the resend timeout, at most every 100 ms.
        now = time.monotonic()
        if (next_seq is not None and self._unacked and self._unacked[0][0] <= next_seq <= self._unacked[-1][0]
                and now - self._last_go_back > _GO_BACK_INTERVAL_S):
            self._last_go_back = now
            for message in self._unacked:
                if message[0] >= next_seq:
                    self._send(message)
                    self._resends += 1
            self._last_progress = now

    def _handle_nack(self, payload):
        nack = _control_map(payload)
        if nack is None or nack.get("pub") != self.publisher_id:
            return
        if (_uint_field(nack, "inc") or 0) != self.incarnation:
            return
        seq = _uint_field(nack, "seq")
        reason = nack.get("reason") if isinstance(nack.get("reason"), str) else "unknown"
        index = next((i for i, m in enumerate(self._unacked) if m[0] == seq), None)
        if seq is None or index is None:
            return  # already acknowledged or dropped
        message = self._unacked[index]
        if nack.get("consumed") is True:
            # The engine moved past it; kept until an ack covers it (should the engine lose that
            # step in a crash, it must see the message again).
            self._reject(message, reason)
            return
        latest = _uint_field(nack, "latest")
        if latest is not None and latest > self.incarnation and self._can_reincarnate():
            self._reincarnate(latest)
            return
        self._reject(message, reason)
        if self._spool is not None:
            self._spool.append_drop(self.incarnation, seq)
        del self._unacked[index]
        self._last_progress = time.monotonic()

    def _resend_all(self):
        if not self.hello_answered:
            self._send_hello()  # the first one may have been lost with the connection
        for message in self._unacked:
            self._send(message)
        self._resends += len(self._unacked)
        self._last_progress = time.monotonic()


_GO_BACK_INTERVAL_S = 0.1  # at most one go-back resend per interval (the engine's hints come in bursts)


def _control_map(payload):
    """An ack/nack map from the engine, or None (bounded parsing; never raises)."""
    try:
        value = msgpack.unpackb(payload, raw=False, max_str_len=1024, max_bin_len=1024,
                                max_array_len=64, max_map_len=64, max_ext_len=1024)
    except Exception:  # not a message we understand; ignore it
        return None
    return value if isinstance(value, dict) else None


def _uint_field(mapping, key):
    """An unsigned integer field of an ack map; None when absent, nil or of another type."""
    value = mapping.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


# --- Topics of the summary and alert streams (docs/PROTOCOL.md, "Topics") ---
#
# Every name in a topic is escaped ('.', '%' and every byte outside printable ASCII 0x21..0x7E
# become '%' and two uppercase hex digits) and followed by '.', so a prefix selects exactly the
# names given: summary_topic_prefix("vllm-1") == b"summaries.vllm-1.", which instance
# "vllm-1.eu" (topic b"summaries.vllm-1%2Eeu.<model>.") does not match.
#
#     sub.setsockopt(zmq.SUBSCRIBE, alert_topic_prefix("critical", "10.0.0.5", "llama-3.1-8b"))


def _name_bytes(name):
    return name.encode("utf-8") if isinstance(name, str) else bytes(name)


def escape_topic_name(name: Name) -> bytes:
    """The topic segment (bytes, without the terminating '.') of a name (str or bytes)."""
    out = bytearray()
    for b in _name_bytes(name):
        if b < 0x21 or b > 0x7E or b in (0x2E, 0x25):  # '.', '%'
            out += b"%%%02X" % b
        else:
            out.append(b)
    return bytes(out)


def unescape_topic_name(segment: Name) -> bytes:
    """The name (bytes) an escaped segment stands for; ValueError when it is not one."""
    segment = _name_bytes(segment)
    out = bytearray()
    i = 0
    while i < len(segment):
        b = segment[i]
        if b == 0x2E:
            raise ValueError("a topic segment holds no raw '.'")
        if b != 0x25:
            out.append(b)
            i += 1
            continue
        digits = segment[i + 1:i + 3]
        if len(digits) != 2 or not all(d in b"0123456789ABCDEFabcdef" for d in digits):
            raise ValueError("bad '%' escape in a topic segment")
        out.append(int(digits, 16))
        i += 3
    return bytes(out)


def _prefix(kind, names):
    prefix = kind + b"."
    for name in names:
        if not name:
            break
        prefix += escape_topic_name(name) + b"."
    return prefix


def summary_topic_prefix(instance: Optional[Name] = None, model: Optional[Name] = None) -> bytes:
    """Subscription prefix (bytes): b"summaries." (all), b"summaries.<instance>." or
    b"summaries.<instance>.<model>."."""
    return _prefix(b"summaries", [instance, model])


def alert_topic_prefix(severity: Optional[Name] = None, instance: Optional[Name] = None,
                       model: Optional[Name] = None) -> bytes:
    """Subscription prefix (bytes): b"alerts." (all), b"alerts.<severity>.",
    b"alerts.<severity>.<instance>." or b"alerts.<severity>.<instance>.<model>."."""
    return _prefix(b"alerts", [severity, instance, model])


def parse_topic(topic: Name) -> List[str]:
    """The names of a received topic as str: ["summaries", instance, model] or
    ["alerts", severity, instance, model] (names that are not UTF-8 keep their bytes with
    surrogateescape). ValueError when the topic is not in this format."""
    topic = _name_bytes(topic)
    if not topic.endswith(b"."):
        raise ValueError("a stream topic ends with '.'")
    names = [unescape_topic_name(s).decode("utf-8", "surrogateescape")
             for s in topic[:-1].split(b".")]
    if not ((names[0] == "summaries" and len(names) == 3) or
            (names[0] == "alerts" and len(names) == 4)):
        raise ValueError("not a summary or alert topic")
    return names
