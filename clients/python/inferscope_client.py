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
"""

import collections
import math
import time

import msgpack
import zmq

PROTOCOL_VERSION = 1
MAX_STRING_BYTES = 255

__all__ = ["Publisher", "AckedPublisher", "encode_payload", "request_event", "gauge_event",
           "PROTOCOL_VERSION", "escape_topic_name", "unescape_topic_name", "summary_topic_prefix",
           "alert_topic_prefix", "parse_topic"]


def _now_ms():
    return time.time_ns() // 1_000_000


def encode_payload(publisher_id, seq, events):
    """Returns the msgpack payload of one message: {"v": 1, "pub", "seq", "events"}."""
    return msgpack.packb(
        {"v": PROTOCOL_VERSION, "pub": publisher_id, "seq": seq, "events": events},
        use_bin_type=True,
    )


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


def request_event(instance, model, e2e_ms, ttft_ms=None, tpot_ms=None, prompt_tokens=None,
                  output_tokens=None, cached_tokens=None, error=None, cost_usd=None, quality=None,
                  time_ms=None):
    """Returns the validated event map of one request outcome (docs/PROTOCOL.md §3)."""
    _check_name("instance", instance)
    _check_name("model", model)
    _check_number("e2e_ms", e2e_ms, lo=0)
    event = {"k": "r", "i": instance, "m": model, "t": _event_time(time_ms), "e2e": e2e_ms}
    for key, name, value in (("ttft", "ttft_ms", ttft_ms), ("tpot", "tpot_ms", tpot_ms),
                             ("cost", "cost_usd", cost_usd)):
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


def gauge_event(instance, model, name, value, time_ms=None):
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
    """

    def __init__(self, endpoint, publisher_id, batch_size=256, socket="push", topic="metrics",
                 bind=False, sndhwm=1000, send_timeout_ms=5000, context=None, first_seq=0):
        _check_name("publisher_id", publisher_id)
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if socket not in ("push", "pub"):
            raise ValueError('socket must be "push" or "pub"')
        self.publisher_id = publisher_id
        self.batch_size = batch_size
        self.topic = topic.encode("utf-8") if isinstance(topic, str) else bytes(topic)
        self.seq = first_seq
        self.messages_sent = 0
        self.events_sent = 0
        self.events_dropped = 0
        self._events = []
        self._own_context = context is None
        self._context = context or zmq.Context()
        self._socket = self._context.socket(zmq.PUSH if socket == "push" else zmq.PUB)
        self._socket.setsockopt(zmq.SNDHWM, sndhwm)
        self._socket.setsockopt(zmq.SNDTIMEO, send_timeout_ms)
        if bind:
            self._socket.bind(endpoint)
            self.endpoint = self._socket.getsockopt(zmq.LAST_ENDPOINT).decode()
        else:
            self._socket.connect(endpoint)
            self.endpoint = endpoint

    # -- events ------------------------------------------------------------------------------

    def request(self, instance, model, e2e_ms, ttft_ms=None, tpot_ms=None, prompt_tokens=None,
                output_tokens=None, cached_tokens=None, error=None, cost_usd=None, quality=None,
                time_ms=None):
        """Records the outcome of one inference request (latencies in ms).

        error: None or "" for success; "timeout", "rate_limited", "server_error", "client_error",
        "cancelled", or any other string (counted as "other").
        """
        self._add(request_event(instance, model, e2e_ms, ttft_ms, tpot_ms, prompt_tokens,
                                output_tokens, cached_tokens, error, cost_usd, quality, time_ms))

    def gauge(self, instance, model, name, value, time_ms=None):
        """Records a sampled value (kv_cache_usage, num_requests_waiting, ...)."""
        self._add(gauge_event(instance, model, name, value, time_ms))

    def flush(self):
        """Sends the pending events as one message. Returns False if the send timed out."""
        if not self._events:
            return True
        events, self._events = self._events, []
        payload = encode_payload(self.publisher_id, self.seq, events)
        self.seq += 1  # a lost message shows up as a gap on the engine side
        try:
            self._socket.send_multipart([self.topic, payload], copy=False)
        except zmq.Again:
            self.events_dropped += len(events)
            return False
        self.messages_sent += 1
        self.events_sent += len(events)
        return True

    def close(self, linger_ms=2000):
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


class AckedPublisher:
    """Publishes in acknowledged mode (docs/PROTOCOL.md §9) to a ``mode: router`` source.

    The engine acknowledges a message only once a checkpoint holding its effect is durable, so a
    message is either acknowledged or still in this publisher's resend buffer: nothing is lost when
    the engine crashes or restarts, and the engine drops resent messages it had applied already
    (exactly-once effect). Same options and behaviour as the C++ ``client::AckedPublisher``.

        pub = AckedPublisher("tcp://127.0.0.1:5558", "gateway-1")
        pub.connect()                        # DEALER connect + hello: resumes at the engine's "next"
        pub.request("vllm-0", "llama-3-70b", e2e_ms=812.0, ttft_ms=95.0)
        pub.gauge("vllm-0", "llama-3-70b", "kv_cache_usage", 0.71)
        if not pub.wait_acked(10.0):         # flushes, then waits for the acknowledgements
            ...                              # still unacknowledged: keep polling or retry later
        pub.close()

    Options:
      publisher_id: 1..255 bytes, stable across restarts of this publisher (the engine resumes it).
      batch_size: events per message; request()/gauge() flush when reached.
      max_unacked: messages kept until acknowledged (the resend buffer). When it is full, flush()
        waits up to block_timeout_ms (-1: as long as it takes) for acknowledgements, then reports
        back-pressure by returning False; the events stay pending, nothing is dropped.
      resend_timeout_ms: without acknowledgement progress for this long, everything unacknowledged
        is sent again, oldest first. Must exceed the engine's checkpoint interval (default 1 s).
      hello_timeout_ms: how long connect() waits for the answer to its hello. An engine that does
        not answer is not an error: the publisher then starts at sequence 0 and resends until
        acknowledged.
      sndhwm, linger_ms: ZeroMQ socket options (nothing needs lingering: unacknowledged messages
        are resent).

    Acknowledgements are read, and timed-out messages resent, inside every call; a publisher that
    stops calling for longer than resend_timeout_ms should call poll() now and then. Not
    thread-safe: use one AckedPublisher per thread, each with its own publisher_id.
    """

    def __init__(self, endpoint, publisher_id, topic="metrics", batch_size=256, max_unacked=4096,
                 block_timeout_ms=-1, resend_timeout_ms=3000, hello_timeout_ms=2000,
                 sndhwm=100000, linger_ms=0, context=None):
        if not endpoint:
            raise ValueError("endpoint is required")
        _check_name("publisher_id", publisher_id)
        if batch_size < 1 or max_unacked < 1:
            raise ValueError("batch_size and max_unacked must be >= 1")
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
        self.next_seq = 0          # the sequence number of the next message
        self.messages_sent = 0     # sends, resends included
        self.last_error = ""
        self.hello_answered = False
        self.hello_next = None     # the engine's "next" in its answer to the hello (None: unknown)
        self._events = []
        self._unacked = collections.deque()  # (seq, payload), oldest first
        self._acked_seq = None
        self._resends = 0
        self._last_progress = time.monotonic()
        self._last_go_back = 0.0
        self._context = context
        self._own_context = context is None
        self._socket = None

    # -- lifecycle -----------------------------------------------------------------------------

    def connect(self):
        """Creates the DEALER socket, connects and says hello, then waits up to hello_timeout_ms
        for the answer (which tells where to resume). Raises zmq.ZMQError when the socket cannot
        be created or the endpoint is invalid."""
        if self._socket is not None:
            return
        if self._context is None:
            self._context = zmq.Context()
        sock = self._context.socket(zmq.DEALER)
        try:
            sock.setsockopt(zmq.SNDHWM, self.sndhwm)
            sock.setsockopt(zmq.LINGER, self.linger_ms)
            sock.connect(self.endpoint)
            hello = msgpack.packb({"v": PROTOCOL_VERSION, "pub": self.publisher_id},
                                  use_bin_type=True)
            sock.send_multipart([b"hello", hello])
        except zmq.ZMQError as e:
            sock.close(linger=0)
            self.last_error = f"connect {self.endpoint}: {e}"
            raise
        self._socket = sock
        self._last_progress = time.monotonic()
        deadline = time.monotonic() + self.hello_timeout_ms / 1000.0
        while not self.hello_answered and time.monotonic() < deadline:
            self.poll(10)

    def close(self):
        """Closes the socket. Unacknowledged messages are not waited for: call wait_acked()
        first."""
        if self._socket is not None:
            self._socket.close(linger=self.linger_ms)
            self._socket = None
        if self._own_context and self._context is not None:
            self._context.term()
            self._context = None

    def __enter__(self):
        if self._socket is None:
            self.connect()
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    # -- events --------------------------------------------------------------------------------

    def request(self, instance, model, e2e_ms, ttft_ms=None, tpot_ms=None, prompt_tokens=None,
                output_tokens=None, cached_tokens=None, error=None, cost_usd=None, quality=None,
                time_ms=None):
        """Adds one request outcome (see Publisher.request); flushes when the batch is full.
        Returns False when that flush reported back-pressure."""
        return self._add(request_event(instance, model, e2e_ms, ttft_ms, tpot_ms, prompt_tokens,
                                       output_tokens, cached_tokens, error, cost_usd, quality,
                                       time_ms))

    def gauge(self, instance, model, name, value, time_ms=None):
        """Adds one gauge sample; flushes when the batch is full. False on back-pressure."""
        return self._add(gauge_event(instance, model, name, value, time_ms))

    def flush(self):
        """Sends the pending events as one message, keeping it until acknowledged. Returns False
        on back-pressure (the resend buffer stayed full for block_timeout_ms); the events then
        stay pending and a later flush sends them."""
        if not self._events:
            self.poll(0)
            return True
        if self._socket is None:
            self.last_error = "not connected"
            return False
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
        payload = encode_payload(self.publisher_id, seq, self._events)
        self._events = []
        self.next_seq = seq + 1
        message = (seq, payload)
        self._unacked.append(message)
        self._send(message)
        return True

    def poll(self, timeout_ms=0):
        """Reads acknowledgements (waiting up to timeout_ms for the first) and resends everything
        unacknowledged when there was no acknowledgement progress for resend_timeout_ms."""
        if self._socket is None:
            return
        try:
            wait = timeout_ms
            while self._socket.poll(wait, zmq.POLLIN):
                frames = self._socket.recv_multipart(zmq.NOBLOCK)
                if len(frames) == 2 and frames[0] == b"ack":
                    self._handle_ack(frames[1])
                wait = 0  # drain what is there, then return
        except zmq.Again:
            pass
        except zmq.ZMQError as e:
            self.last_error = f"receive: {e}"
        if (self._unacked and
                time.monotonic() - self._last_progress > self.resend_timeout_ms / 1000.0):
            self._resend_all()

    def wait_acked(self, timeout_s):
        """Flushes, then waits until every message is acknowledged. False on timeout (or
        back-pressure in the flush)."""
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
    def acked_seq(self):
        """The highest acknowledged sequence number (cumulative), or None before any ack."""
        return self._acked_seq

    @property
    def unacked(self):
        """Messages sent and not yet acknowledged (the resend buffer)."""
        return len(self._unacked)

    @property
    def resends(self):
        """Messages sent again after resend_timeout_ms without acknowledgement progress."""
        return self._resends

    @property
    def pending(self):
        """Events added and not yet flushed."""
        return len(self._events)

    # -- internals -----------------------------------------------------------------------------

    def _add(self, event):
        if self._socket is None:
            raise RuntimeError("publisher is not connected")
        self._events.append(event)
        return len(self._events) < self.batch_size or self.flush()

    def _send(self, message):
        # DEALER queues while disconnected; a full queue (sndhwm) drops the send here, and the
        # resend timer brings the message back.
        try:
            self._socket.send_multipart([self.topic, message[1]], zmq.NOBLOCK, copy=False)
            self.messages_sent += 1
        except zmq.Again:
            pass
        except zmq.ZMQError as e:
            self.last_error = f"send: {e}"

    def _handle_ack(self, payload):
        try:
            ack = msgpack.unpackb(payload, raw=False)
        except Exception:  # not an ack we understand; ignore it
            return
        if not isinstance(ack, dict):
            return
        acked = _uint_field(ack, "ack")
        next_seq = _uint_field(ack, "next")
        if not self.hello_answered:
            self.hello_answered = True
            self.hello_next = next_seq
            # A fresh publisher (nothing buffered, nothing pending) resumes where the engine
            # expects.
            if not self._unacked and not self._events and next_seq is not None:
                self.next_seq = max(next_seq, self.next_seq)
        if acked is not None and (self._acked_seq is None or acked > self._acked_seq):
            self._acked_seq = acked
            self._last_progress = time.monotonic()
        while self._acked_seq is not None and self._unacked and self._unacked[0][0] <= self._acked_seq:
            self._unacked.popleft()
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

    def _resend_all(self):
        for message in self._unacked:
            self._send(message)
        self._resends += len(self._unacked)
        self._last_progress = time.monotonic()


_GO_BACK_INTERVAL_S = 0.1  # at most one go-back resend per interval (the engine's hints come in bursts)


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


def escape_topic_name(name):
    """The topic segment (bytes, without the terminating '.') of a name (str or bytes)."""
    out = bytearray()
    for b in _name_bytes(name):
        if b < 0x21 or b > 0x7E or b in (0x2E, 0x25):  # '.', '%'
            out += b"%%%02X" % b
        else:
            out.append(b)
    return bytes(out)


def unescape_topic_name(segment):
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


def summary_topic_prefix(instance=None, model=None):
    """Subscription prefix (bytes): b"summaries." (all), b"summaries.<instance>." or
    b"summaries.<instance>.<model>."."""
    return _prefix(b"summaries", [instance, model])


def alert_topic_prefix(severity=None, instance=None, model=None):
    """Subscription prefix (bytes): b"alerts." (all), b"alerts.<severity>.",
    b"alerts.<severity>.<instance>." or b"alerts.<severity>.<instance>.<model>."."""
    return _prefix(b"alerts", [severity, instance, model])


def parse_topic(topic):
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
