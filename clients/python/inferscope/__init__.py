"""inferscope's Python client: publish request outcomes and gauges to an inferscope engine
(wire protocol v1, docs/PROTOCOL.md) and subscribe to its summary and alert streams.

    import inferscope
    with inferscope.Publisher("tcp://127.0.0.1:5555", "gateway-1") as pub:
        pub.request("vllm-0", "llama-3-70b", e2e_ms=812.0, ttft_ms=95.0)

    pub = inferscope.AckedPublisher("tcp://127.0.0.1:5558", "gateway-1")  # acknowledged mode
    pub = inferscope.JetStreamPublisher("nats://127.0.0.1:4222", "INFERSCOPE", "gateway-1")
    with inferscope.Subscriber.alerts("tcp://127.0.0.1:5557", severity="critical") as sub:
        message = sub.recv(timeout_ms=1000)  # a StreamMessage, or None

Depends on pyzmq and msgpack (Debian: python3-zmq, python3-msgpack).
"""

from inferscope.client import (
    MAX_EVENTS_PER_MESSAGE,
    MAX_MESSAGE_BYTES,
    PROTOCOL_VERSION,
    AckedPublisher,
    CurveKeys,
    Publisher,
    Rejection,
    alert_topic_prefix,
    encode_payload,
    escape_topic_name,
    gauge_event,
    load_key_file,
    parse_topic,
    request_event,
    summary_topic_prefix,
    unescape_topic_name,
)
from inferscope.jetstream import JetStreamPublisher, NatsError
from inferscope.subscriber import StreamMessage, Subscriber, decode_stream_payload

# The project version (CMakeLists.txt `project(inferscope VERSION ...)`; a test keeps them equal).
__version__ = "0.1.0"

__all__ = [
    "__version__",
    "Publisher",
    "AckedPublisher",
    "JetStreamPublisher",
    "NatsError",
    "Rejection",
    "CurveKeys",
    "load_key_file",
    "Subscriber",
    "StreamMessage",
    "decode_stream_payload",
    "encode_payload",
    "request_event",
    "gauge_event",
    "PROTOCOL_VERSION",
    "MAX_EVENTS_PER_MESSAGE",
    "MAX_MESSAGE_BYTES",
    "escape_topic_name",
    "unescape_topic_name",
    "summary_topic_prefix",
    "alert_topic_prefix",
    "parse_topic",
]
