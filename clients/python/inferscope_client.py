"""Python publisher for inferscope's wire protocol v1 (docs/PROTOCOL.md).

Depends on pyzmq and msgpack (Debian: python3-zmq, python3-msgpack).

    from inferscope_client import Publisher
    with Publisher("tcp://127.0.0.1:5555", "gateway-1") as pub:
        pub.request("vllm-0", "llama-3-70b", e2e_ms=812.0, ttft_ms=95.0, output_tokens=120)
        pub.gauge("vllm-0", "llama-3-70b", "kv_cache_usage", 0.71)

Events are batched (``batch_size`` per message) and every message carries the publisher id and a
sequence number that grows by one per message, so the engine can count lost and duplicate
messages. Not thread-safe: use one Publisher per thread.
"""

import math
import time

import msgpack
import zmq

PROTOCOL_VERSION = 1
MAX_STRING_BYTES = 255

__all__ = ["Publisher", "encode_payload", "PROTOCOL_VERSION"]


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
        _check_name("instance", instance)
        _check_name("model", model)
        _check_number("e2e_ms", e2e_ms, lo=0)
        event = {"k": "r", "i": instance, "m": model, "t": self._time(time_ms), "e2e": e2e_ms}
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
        self._add(event)

    def gauge(self, instance, model, name, value, time_ms=None):
        """Records a sampled value (kv_cache_usage, num_requests_waiting, ...)."""
        _check_name("instance", instance)
        _check_name("model", model)
        _check_name("name", name)
        _check_number("value", value)
        self._add({"k": "g", "i": instance, "m": model, "t": self._time(time_ms), "n": name,
                   "val": value})

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

    @staticmethod
    def _time(time_ms):
        if time_ms is None:
            return _now_ms()
        if isinstance(time_ms, bool) or not isinstance(time_ms, int) or time_ms <= 0:
            raise ValueError("time_ms must be a positive int (ms since the Unix epoch)")
        return time_ms

    def _add(self, event):
        if self._socket is None:
            raise RuntimeError("publisher is closed")
        self._events.append(event)
        if len(self._events) >= self.batch_size:
            self.flush()
