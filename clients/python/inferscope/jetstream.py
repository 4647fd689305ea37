"""Publishing into a NATS JetStream stream for the engine's ``jetstream`` source (docs/PROTOCOL.md,
"JetStream (partitions)"), with a small NATS client of its own: no NATS library is needed.

    from inferscope.jetstream import JetStreamPublisher
    pub = JetStreamPublisher("nats://127.0.0.1:4222", "INFERSCOPE", "gateway-1", partitions=4)
    pub.connect()                       # raises ConnectionError / NatsError
    pub.request("vllm-0", "llama-3-70b", e2e_ms=812.0, ttft_ms=95.0)
    pub.gauge("vllm-0", "llama-3-70b", "kv_cache_usage", 0.71)
    assert pub.flush()                  # every message stored (acknowledged by the stream)
    pub.close()

The same partitioning and messages as the C++ ``client::JetStreamPublisher``: an event goes to
partition ``FNV-1a-32(instance) mod partitions`` (subject ``<subject_prefix>.<p>``); each partition
has its own batch and sequence numbers under publisher id ``<publisher_id>/p<p>``; a message is one
protocol-v1 payload (the client's ``encode_payload``) with the header
``Nats-Msg-Id: <publisher_id>/p<p>:<start ns>:<seq>``, so the stream drops a copy published twice
within its duplicate window.

The NATS protocol spoken (https://docs.nats.io/reference/reference-protocols/nats-protocol): INFO,
CONNECT (headers, no_responders), PING/PONG (answered, and used to check the connection), SUB to a
reply inbox ``_INBOX.<random>.*``, HPUB with the message id header and a reply subject of that inbox,
then MSG/HMSG: JetStream's publish acknowledgement ``{"stream": .., "seq": .., "duplicate": ..}``,
an error ``{"error": {"code": .., "description": ..}}``, or a 503 status (no responders: no stream
takes the subject, e.g. while it has no leader). Plain TCP only: no TLS, no credentials.

Acknowledged, bounded, resent: at most ``max_in_flight`` messages are kept unacknowledged (a
publish beyond waits). A message refused or not acknowledged within ``ack_timeout_ms``, and every
message in flight when the connection was lost, is resent with the same Nats-Msg-Id (backoff 100 ms
doubling to 2 s) until ``resend_deadline_ms`` after its first publish; only then is it dropped and
counted in ``failed_messages`` (other refusals, such as a full stream, fail at once). Order within
a partition is kept as the C++ client keeps it: a partition with such a message publishes nothing
new, resends its oldest unacknowledged message until the stream takes it, then the others in order.
The same limit too: a message whose acknowledgement was lost while newer ones were stored is stored
after them when resent; the engine applies it late, once (docs/PROTOCOL.md §4). A lost connection is reopened (to any URL of
the list, every 250 ms) inside the calls. Not thread-safe: one publisher per thread.
"""

from __future__ import annotations

import collections
import json
import os
import select
import socket
import time
from typing import List, Optional, Tuple
from urllib.parse import urlsplit

from inferscope.client import _check_name, encode_payload, gauge_event, request_event

__all__ = ["JetStreamPublisher", "NatsError", "partition_of", "fnv1a_32"]

_FIRST_BACKOFF_S = 0.1
_MAX_BACKOFF_S = 2.0
_RECONNECT_WAIT_S = 0.25
# JetStream error codes of a refusal that can clear (the stream has no leader): 10008 temporarily
# unavailable, 10009 not leader, 10041 raft (as the C++ client). A code 0 (none given) too.
_TRANSIENT_ERR_CODES = (0, 10008, 10009, 10041)


class NatsError(Exception):
    """A NATS protocol error (-ERR from the server, or an answer this client cannot read)."""


def fnv1a_32(data: bytes) -> int:
    """FNV-1a, 32 bits (offset basis 2166136261, prime 16777619): docs/PROTOCOL.md."""
    h = 2166136261
    for b in data:
        h ^= b
        h = (h * 16777619) & 0xFFFFFFFF
    return h


def partition_of(instance: str, partitions: int) -> int:
    """The partition of ``instance`` among ``partitions``: FNV-1a-32 of its UTF-8 bytes modulo
    ``partitions``, as the engine (sources/partition.h) and the C++ client compute it."""
    if partitions < 1:
        return 0
    return fnv1a_32(instance.encode("utf-8")) % partitions


def _split_urls(urls: str) -> List[Tuple[str, int]]:
    out = []
    for item in urls.split(","):
        item = item.strip(" \t")
        if not item:
            raise ValueError(f"url: an empty item in the comma-separated list {urls!r}")
        parts = urlsplit(item if "://" in item else "nats://" + item)
        if parts.scheme not in ("nats", ""):
            raise ValueError(f"url: {item!r}: only nats:// (plain TCP) is supported")
        out.append((parts.hostname or "127.0.0.1", parts.port or 4222))
    return out


class _Connection:
    """One TCP connection speaking the NATS client protocol (the parts this publisher needs)."""

    def __init__(self, host, port, timeout_s, name):
        self.server = f"nats://{host}:{port}"
        self._buf = bytearray()
        self._sock = socket.create_connection((host, port), timeout=timeout_s)
        try:
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            line = self._read_line(time.monotonic() + timeout_s)
            if not line.startswith(b"INFO "):
                raise NatsError(f"{self.server}: expected INFO, got {line[:80]!r}")
            self.info = json.loads(line[5:])
            if not self.info.get("headers", False):
                raise NatsError(f"{self.server}: the server does not support headers (NATS >= 2.2)")
            connect = {"verbose": False, "pedantic": False, "headers": True,
                       "no_responders": True, "lang": "python-inferscope", "version": "1",
                       "protocol": 1, "name": name}
            self._sock.sendall(b"CONNECT " + json.dumps(connect).encode() + b"\r\nPING\r\n")
            deadline = time.monotonic() + timeout_s
            while True:
                line = self._read_line(deadline)
                if line == b"PONG":
                    break
                if line.startswith(b"-ERR"):
                    raise NatsError(f"{self.server}: {line.decode(errors='replace')}")
                if line == b"PING":
                    self._sock.sendall(b"PONG\r\n")
            self._sock.setblocking(False)
        except BaseException:
            self._sock.close()
            raise

    def _read_line(self, deadline):
        while True:
            at = self._buf.find(b"\r\n")
            if at >= 0:
                line = bytes(self._buf[:at])
                del self._buf[:at + 2]
                return line
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.server}: no answer")
            self._sock.settimeout(left)
            chunk = self._sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"{self.server}: connection closed")
            self._buf += chunk

    def send(self, data: bytes) -> None:
        """Sends all of ``data`` (waiting while the socket buffer is full)."""
        view = memoryview(data)
        while view:
            try:
                n = self._sock.send(view)
            except BlockingIOError:
                select.select([], [self._sock], [], 1.0)
                continue
            view = view[n:]

    def read(self, timeout_s: float):
        """Waits up to ``timeout_s`` for data; returns the messages received as
        (subject, reply, status, payload) tuples (status: the header line's code, "" without),
        answering the server's PINGs. Raises ConnectionError when the connection is closed."""
        ready, _, _ = select.select([self._sock], [], [], max(timeout_s, 0))
        if ready:
            try:
                chunk = self._sock.recv(1 << 20)
            except BlockingIOError:
                chunk = None
            if chunk == b"":
                raise ConnectionError(f"{self.server}: connection closed")
            if chunk:
                self._buf += chunk
        return self._parse()

    def _parse(self):
        out = []
        buf = self._buf
        while True:
            at = buf.find(b"\r\n")
            if at < 0:
                break
            line = bytes(buf[:at])
            if line.startswith(b"MSG ") or line.startswith(b"HMSG "):
                args = line.split()
                headered = args[0] == b"HMSG"
                total = int(args[-1])
                if len(buf) < at + 2 + total + 2:
                    break  # the rest of the message is not here yet
                body = bytes(buf[at + 2:at + 2 + total])
                del buf[:at + 2 + total + 2]
                subject = args[1].decode()
                if headered:
                    reply = args[3].decode() if len(args) == 6 else ""
                    header_len = int(args[-2])
                    header, payload = body[:header_len], body[header_len:]
                    first = header.split(b"\r\n", 1)[0].split()  # "NATS/1.0 503"
                    status = first[1].decode() if len(first) > 1 else ""
                else:
                    reply = args[3].decode() if len(args) == 5 else ""
                    payload, status = body, ""
                out.append((subject, reply, status, payload))
                continue
            del buf[:at + 2]
            if line == b"PING":
                self.send(b"PONG\r\n")
            elif line.startswith(b"-ERR"):
                raise NatsError(f"{self.server}: {line.decode(errors='replace')}")
            # PONG, +OK and INFO (cluster updates) need nothing
        return out

    def close(self) -> None:
        try:
            self._sock.close()
        except OSError:
            pass


class _Message:
    __slots__ = ("partition", "msg_id", "data", "first", "outstanding", "epoch", "done", "acked")

    def __init__(self, partition, msg_id, data, first):
        self.partition = partition
        self.msg_id = msg_id
        self.data = data          # the whole HPUB after the reply subject: header and payload
        self.first = first        # monotonic time of its first publish
        self.outstanding = 0      # publishes of it whose outcome has not come back
        self.epoch = 0            # connections opened when it was last published
        self.done = False         # acknowledged, or given up
        self.acked = False


class _Partition:
    __slots__ = ("subject", "pub_id", "seq", "events", "in_flight", "recovering", "probing",
                 "drained", "probe", "next_attempt", "backoff")

    def __init__(self, subject, pub_id):
        self.subject = subject
        self.pub_id = pub_id
        self.seq = 0
        self.events = []
        self.in_flight = collections.deque()  # _Message, publish order
        self.recovering = False
        self.probing = False
        self.drained = False
        self.probe = None
        self.next_attempt = 0.0
        self.backoff = _FIRST_BACKOFF_S


class JetStreamPublisher:
    """Batches request outcomes and gauges per partition and publishes each batch as one message
    into a JetStream stream, acknowledged, resent when refused or lost (see the module comment).

    Options:
      url: "nats://host:port", or several comma-separated (servers of one cluster): connect() and
        reconnections try them in turn.
      stream: the stream (it must exist: ``inferscope bridge --create-stream``, the C++
        ``JetStreamPublisher::EnsureStream`` or ``nats stream add``; subjects ``<prefix>.*``).
      publisher_id: 1..250 bytes; partition p's messages carry ``<publisher_id>/p<p>``.
      partitions: the stream's partition count (the engine's ``partitions`` cover 0..n-1).
      batch_size: events per message and partition.
      max_in_flight: messages published and not yet acknowledged (a publish beyond waits).
      ack_timeout_ms: how long one publish waits for its acknowledgement before it is resent.
      resend_deadline_ms: how long after its first publish a message is resent (0: never); keep
        it below the stream's duplicate window (2 minutes by default) minus ack_timeout_ms.
      connect_timeout_ms: per server, for connect() and reconnections.
    Counters: messages_published, events_published, failed_messages, resent_messages,
    reconnects; last_error.
    """

    def __init__(self, url: str, stream: str, publisher_id: str, partitions: int = 1,
                 subject_prefix: str = "inferscope.in", batch_size: int = 256,
                 max_in_flight: int = 1024, ack_timeout_ms: int = 10_000,
                 resend_deadline_ms: int = 30_000, connect_timeout_ms: int = 5_000,
                 name: str = "inferscope-python-publisher"):
        self._servers = _split_urls(url)
        _check_name("stream", stream)
        if any(c in stream for c in ".*> \t"):
            raise ValueError("stream must be a name without '.', '*', '>' or spaces")
        if not publisher_id or len(publisher_id.encode("utf-8")) > 250:
            raise ValueError("publisher_id must be 1..250 bytes")
        if partitions < 1 or batch_size < 1 or max_in_flight < 1:
            raise ValueError("partitions, batch_size and max_in_flight must be >= 1")
        if ack_timeout_ms < 1 or resend_deadline_ms < 0:
            raise ValueError("ack_timeout_ms must be >= 1 and resend_deadline_ms >= 0")
        self.url = url
        self.stream = stream
        self.publisher_id = publisher_id
        self.partitions = partitions
        self.subject_prefix = subject_prefix
        self.batch_size = batch_size
        self.max_in_flight = max_in_flight
        self.ack_timeout = ack_timeout_ms / 1000.0
        self.resend_deadline = resend_deadline_ms / 1000.0
        self.connect_timeout = connect_timeout_ms / 1000.0
        self.name = name
        self.incarnation = time.time_ns()  # in the message ids: a restart is not a duplicate
        self.messages_published = 0
        self.events_published = 0
        self.failed_messages = 0
        self.resent_messages = 0
        self.reconnects = 0
        self.last_error = ""
        self._failed_reported = 0
        self._parts = [_Partition(f"{subject_prefix}.{p}", f"{publisher_id}/p{p}")
                       for p in range(partitions)]
        self._by_id = {}       # msg id -> _Message, not done
        self._attempts = {}    # reply token -> (_Message, expiry)
        self._entries = 0      # messages kept
        self._inbox = "_INBOX." + os.urandom(11).hex()
        self._token = 0
        self._conn = None
        self._epoch = 0        # connections opened
        self._next_connect = 0.0
        self._server_index = 0

    # -- lifecycle -----------------------------------------------------------------------------

    def connect(self) -> None:
        """Connects (to the first server of the list that answers) and checks that the stream
        exists. Raises ConnectionError (no server answers), NatsError (the stream is missing)."""
        if not self._open_connection():
            raise ConnectionError(f"cannot connect to {self.url}: {self.last_error}")
        info = self._request(f"$JS.API.STREAM.INFO.{self.stream}", b"", self.ack_timeout)
        if info is None:
            raise NatsError(f"stream {self.stream}: no answer from JetStream on {self.url}")
        if "error" in info:
            raise NatsError(f"stream {self.stream}: {info['error'].get('description', info)}")

    def close(self) -> None:
        """Flushes (waiting for the acknowledgements), then closes the connection."""
        if self._conn is None and not self._entries:
            return
        try:
            self.flush()
        finally:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    # -- events ------------------------------------------------------------------------------

    def request(self, instance: str, model: str, **fields) -> bool:
        """Records a request outcome (the fields of ``Publisher.request``: e2e_ms, ttft_ms, ...,
        time_ms). False when a publish failed (see last_error)."""
        return self._add(instance, request_event(instance, model, **fields))

    def gauge(self, instance: str, model: str, name: str, value: float,
              time_ms: Optional[int] = None) -> bool:
        """Records a sampled value. False when a publish failed."""
        return self._add(instance, gauge_event(instance, model, name, value, time_ms))

    def publish_raw(self, partition: int, payload: bytes, msg_id: Optional[str] = None) -> bool:
        """Publishes one ready protocol-v1 payload to ``partition`` with ``msg_id`` as its
        Nats-Msg-Id (None: one of this publisher's own). Waits while max_in_flight messages are
        unacknowledged, the partition resends or the connection is down; False (the message not
        published, counted failed) when that lasts longer than resend_deadline_ms + 2 *
        ack_timeout_ms."""
        if not 0 <= partition < self.partitions:
            raise ValueError("partition out of range")
        if msg_id is None:
            self._token += 1
            msg_id = f"{self.publisher_id}:{self.incarnation}:r{self._token}"
        if msg_id in self._by_id:
            return True  # this very message is in flight: the stream gets it once
        part = self._parts[partition]
        limit = time.monotonic() + self.resend_deadline + 2 * self.ack_timeout
        self._pump(0)
        while self._entries >= self.max_in_flight or part.recovering or self._conn is None:
            if time.monotonic() >= limit:
                self.failed_messages += 1
                self.last_error = (f"publish to {part.subject}: not published: "
                                   + ("no connection" if self._conn is None else
                                      "earlier messages of the partition are still resent"
                                      if part.recovering else
                                      "max_in_flight messages unacknowledged"))
                return False
            self._pump(0.02)
        header = b"NATS/1.0\r\nNats-Msg-Id: " + msg_id.encode("utf-8") + b"\r\n\r\n"
        data = (f" {len(header)} {len(header) + len(payload)}\r\n".encode() + header
                + bytes(payload) + b"\r\n")
        m = _Message(partition, msg_id, data, time.monotonic())
        part.in_flight.append(m)
        self._entries += 1
        self._by_id[msg_id] = m
        self._send(m)
        self.messages_published += 1
        return True

    def flush(self) -> bool:
        """Publishes the pending batches and waits until every message is acknowledged or given
        up. False when any message was given up (or not published) since the last flush."""
        ok = True
        for p in range(self.partitions):
            ok = self._flush_partition(p) and ok
        limit = time.monotonic() + self.resend_deadline + 2 * self.ack_timeout + 1.0
        self._pump(0)
        while self._entries and time.monotonic() < limit:
            self._pump(0.02)
        if self._entries:
            self.last_error = f"{self._entries} messages still unacknowledged"
            ok = False
        if self.failed_messages != self._failed_reported:
            self.last_error = (f"{self.failed_messages - self._failed_reported} messages were not "
                               f"stored; last error: {self.last_error}")
            self._failed_reported = self.failed_messages
            ok = False
        return ok

    def poll(self, timeout_ms: int = 0) -> None:
        """Reads acknowledgements and resends what is due; for a publisher idle for a while."""
        self._pump(timeout_ms / 1000.0)

    @property
    def in_flight(self) -> int:
        """Messages published and not yet acknowledged (or given up)."""
        return self._entries

    # -- internals -----------------------------------------------------------------------------

    def _add(self, instance, event) -> bool:
        p = partition_of(instance, self.partitions)
        part = self._parts[p]
        part.events.append(event)
        if len(part.events) >= self.batch_size:
            return self._flush_partition(p)
        return True

    def _flush_partition(self, p) -> bool:
        part = self._parts[p]
        if not part.events:
            return True
        events, part.events = part.events, []
        seq = part.seq
        part.seq += 1
        payload = encode_payload(part.pub_id, seq, events)
        if not self.publish_raw(p, payload, f"{part.pub_id}:{self.incarnation}:{seq}"):
            return False
        self.events_published += len(events)
        return True

    def _open_connection(self) -> bool:
        for _ in range(len(self._servers)):
            host, port = self._servers[self._server_index % len(self._servers)]
            self._server_index += 1
            try:
                conn = _Connection(host, port, self.connect_timeout, self.name)
                conn.send(f"SUB {self._inbox}.* 1\r\n".encode())
            except (OSError, NatsError, ValueError) as e:
                self.last_error = f"connect to nats://{host}:{port}: {e}"
                continue
            if self._epoch > 0:
                self.reconnects += 1
            self._epoch += 1
            self._conn = conn
            return True
        return False

    def _lost(self, error) -> None:
        """The connection failed: everything in flight may be lost (acknowledgements included)."""
        self.last_error = f"connection to {self._conn.server if self._conn else self.url}: {error}"
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._attempts.clear()
        for part in self._parts:
            for m in part.in_flight:
                m.outstanding = 0
            if part.in_flight:
                self._start_recovery(part)
                part.next_attempt = 0.0  # resend as soon as connected again
        self._next_connect = time.monotonic()

    def _request(self, subject, payload, timeout_s):
        """A request/reply through the inbox (no other traffic yet): the JSON answer or None."""
        self._token += 1
        reply = f"{self._inbox}.q{self._token}"
        self._conn.send(f"PUB {subject} {reply} {len(payload)}\r\n".encode() + payload + b"\r\n")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for subject_in, _, status, data in self._conn.read(deadline - time.monotonic()):
                if subject_in != reply:
                    continue
                if status == "503":
                    return {"error": {"description": "no responders (is JetStream enabled?)"}}
                return json.loads(data)
        return None

    def _send(self, m: _Message) -> None:
        if self._conn is None:
            return  # resent once connected again (the partition is recovering)
        self._token += 1
        token = f"{self._inbox}.{self._token}"
        subject = self._parts[m.partition].subject
        try:
            self._conn.send(f"HPUB {subject} {token}".encode() + m.data)
        except OSError as e:
            self._lost(e)
            return
        m.outstanding += 1
        m.epoch = self._epoch
        self._attempts[token] = (m, time.monotonic() + self.ack_timeout)

    def _start_recovery(self, part: _Partition) -> None:
        if self.resend_deadline <= 0 or part.recovering:
            return
        part.recovering = True
        part.probing = True
        part.drained = False
        part.probe = None
        part.backoff = _FIRST_BACKOFF_S
        part.next_attempt = time.monotonic() + _FIRST_BACKOFF_S

    def _outcome(self, m: _Message, ok: bool, error: str, transient: bool = True) -> None:
        if m.outstanding > 0:
            m.outstanding -= 1
        if m.done:
            return
        if ok:
            m.done = m.acked = True
            self._by_id.pop(m.msg_id, None)
            return
        self.last_error = f"publish to {self._parts[m.partition].subject}: {error}"
        if self.resend_deadline <= 0 or not transient:
            m.done = True
            self.failed_messages += 1
            self._by_id.pop(m.msg_id, None)
            return
        part = self._parts[m.partition]
        if part.recovering and (not part.probing or part.probe is m):
            part.probing = True
            part.drained = False
            part.backoff = min(part.backoff * 2, _MAX_BACKOFF_S)
            part.next_attempt = time.monotonic() + part.backoff
        self._start_recovery(part)

    def _pump(self, wait_s: float) -> None:
        now = time.monotonic()
        if self._conn is None:
            if now >= self._next_connect:
                self._next_connect = now + _RECONNECT_WAIT_S
                self._open_connection()
            if self._conn is None:
                time.sleep(min(wait_s, max(self._next_connect - now, 0)))
        if self._conn is not None:
            try:
                received = self._conn.read(wait_s)
            except (OSError, NatsError) as e:
                self._lost(e)
                received = []
            for subject, _, status, data in received:
                attempt = self._attempts.pop(subject, None)  # the reply token of the publish
                if attempt is None:
                    continue
                m = attempt[0]
                if status == "503":
                    self._outcome(m, False, "no responders (no stream leader?)")
                    continue
                try:
                    answer = json.loads(data)
                except ValueError:
                    answer = {"error": {"description": f"unreadable answer {data[:80]!r}"}}
                if "error" in answer:
                    err = answer["error"]
                    # JetStream's refusals are final except those of a stream without leader.
                    self._outcome(m, False, f"{err.get('code', '')} {err.get('description', err)}",
                                  transient=err.get("err_code", 0) in _TRANSIENT_ERR_CODES)
                else:
                    self._outcome(m, True, "")
        now = time.monotonic()
        expired = [t for t, (_, expiry) in self._attempts.items() if expiry <= now]
        for token in expired:
            m, _ = self._attempts.pop(token)
            self._outcome(m, False, f"no acknowledgement within {self.ack_timeout:g} s")
        for part in self._parts:
            self._advance(part, now)

    def _advance(self, part: _Partition, now: float) -> None:
        # Done messages leave from the front; an unacknowledged one past its deadline (with no
        # publish of it outstanding, or long past it) is given up.
        while part.in_flight:
            m = part.in_flight[0]
            if (not m.done and self.resend_deadline > 0 and now - m.first >= self.resend_deadline
                    and (m.outstanding == 0
                         or now - m.first >= self.resend_deadline + 2 * self.ack_timeout)):
                m.done = True
                self.failed_messages += 1
                self._by_id.pop(m.msg_id, None)
            if not m.done:
                break
            if part.probe is m:
                part.probe = None
                if m.acked and part.probing:  # the stream took the probe: the rest follows
                    part.probing = False
                    part.drained = False
            part.in_flight.popleft()
            self._entries -= 1
        if not part.recovering:
            return
        if not part.in_flight:
            part.recovering = part.probing = part.drained = False
            part.probe = None
            return
        if self._conn is None or now < part.next_attempt:
            return
        if part.probing:
            oldest = part.in_flight[0]
            if now - oldest.first < self.resend_deadline and (
                    oldest.outstanding == 0 or oldest.epoch != self._epoch):
                self._send(oldest)
                self.resent_messages += 1
                part.probe = oldest
                part.next_attempt = now + part.backoff
            return
        if not part.drained:
            for m in list(part.in_flight):
                if m.done or now - m.first >= self.resend_deadline or m.outstanding >= 2:
                    continue
                self._send(m)
                self.resent_messages += 1
            part.drained = True
            part.next_attempt = now + part.backoff
