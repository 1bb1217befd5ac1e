"""A raw HTTP/2 gRPC client (h2 over a socket) that sends what grpcio's own client refuses to:
metadata values with invalid UTF-8 and arbitrary request bytes. For tests of hostile input."""

from __future__ import annotations

import dataclasses
import socket
import struct
import urllib.parse

import h2.config
import h2.connection
import h2.events


@dataclasses.dataclass
class RawReply:
    status: int | None  # grpc-status (None when the server sent none)
    message: str
    headers: dict[bytes, bytes]
    body: bytes


def call(
    host: str,
    port: int,
    path: str,
    body: bytes,
    metadata: list[tuple[bytes, bytes]] = (),  # type: ignore[assignment]
    *,
    frame: bool = True,
    timeout: float = 20.0,
) -> RawReply:
    """One unary call. `body` is the serialized request (length-prefixed unless frame=False)."""
    config = h2.config.H2Configuration(
        client_side=True, header_encoding=None, validate_outbound_headers=False
    )
    conn = h2.connection.H2Connection(config=config)
    with socket.create_connection((host, port), timeout=timeout) as sock:
        conn.initiate_connection()
        sock.sendall(conn.data_to_send())
        stream = conn.get_next_available_stream_id()
        headers = [
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", path.encode()),
            (b":authority", f"{host}:{port}".encode()),
            (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
            *metadata,
        ]
        conn.send_headers(stream, headers)
        data = struct.pack(">?I", False, len(body)) + body if frame else body
        conn.send_data(stream, data, end_stream=True)
        sock.sendall(conn.data_to_send())
        received: dict[bytes, bytes] = {}
        payload = b""
        done = False
        while not done:
            chunk = sock.recv(65536)
            if not chunk:
                break
            for event in conn.receive_data(chunk):
                if isinstance(event, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
                    received.update(dict(event.headers))
                    if isinstance(event, h2.events.TrailersReceived) or event.stream_ended is not None:
                        done = isinstance(event, h2.events.TrailersReceived) or b"grpc-status" in received
                elif isinstance(event, h2.events.DataReceived):
                    payload += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
                    done = True
            sock.sendall(conn.data_to_send())
    status = received.get(b"grpc-status")
    message = urllib.parse.unquote(received.get(b"grpc-message", b"").decode("latin-1"))
    return RawReply(int(status) if status is not None else None, message, received, payload)
