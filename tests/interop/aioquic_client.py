#!/usr/bin/env python3
"""SocketChat over WebTransport from an independent HTTP/3 stack (aioquic, PyPI).

Opens a WebTransport session on the server's `/wt` endpoint, opens one bidirectional stream,
and speaks protocol v1 on it (protocol/PROTOCOL.md, frames length-prefixed as in section 1.3):
Hello, Join{room, after_seq: None}, Send{room, client_msg_id, text: 'from aioquic'}; then
waits for the Ack and for the Message carrying that client_msg_id.

    python3 tests/interop/aioquic_client.py --url https://127.0.0.1:4433/wt \
        (--cookie token=JWT | --ticket HEX) --ca-cert wt-cert.pem --room general

Prints exactly one JSON line on stdout:
    {"ok": true, "seq": N, "message_id": M}          exit status 0
    {"ok": false, "error": "..."}                    exit status 1
The whole run is bounded by --timeout seconds (default 20).

The frame encoding is written here by hand from the spec (postcard: LEB128 varints,
length-prefixed strings, Option tag bytes), not generated from the server's code.
Requires: pip install -r tests/interop/requirements.txt
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import socket
import sys
from urllib.parse import quote, urlsplit

try:
    from aioquic.asyncio.protocol import QuicConnectionProtocol
    from aioquic.h3.connection import H3_ALPN, ErrorCode, FrameType, H3Connection
    from aioquic.h3.events import HeadersReceived, WebTransportStreamDataReceived
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.events import ConnectionTerminated, StreamReset
except ImportError as exc:  # pragma: no cover - reported as a JSON failure below
    AIOQUIC_IMPORT_ERROR: Exception | None = exc
else:
    AIOQUIC_IMPORT_ERROR = None

PROTOCOL_VERSION = 3
CLIENT_NAME = "aioquic-interop/1.0"
TEXT = "from aioquic"
MAX_SERVER_FRAME = 1024 * 1024


class Failure(Exception):
    """A failure to report as {"ok": false, "error": ...}."""


# ---------------------------------------------------------------------------------------------
# Protocol v3 encoding (PROTOCOL.md section 2)
# ---------------------------------------------------------------------------------------------


def varint(value: int) -> bytes:
    if value < 0:
        raise ValueError("negative varint")
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def string(text: str) -> bytes:
    data = text.encode("utf-8")
    return varint(len(data)) + data


def option_u64(value: int | None) -> bytes:
    return b"\x00" if value is None else b"\x01" + varint(value)


def hello(client: str = CLIENT_NAME) -> bytes:
    return varint(0) + varint(PROTOCOL_VERSION) + string(client)


def join(room: str, after_seq: int | None) -> bytes:
    return varint(1) + string(room) + option_u64(after_seq)


def send(room: str, client_msg_id: bytes, text: str, attachments: list[int] = ()) -> bytes:
    assert len(client_msg_id) == 16
    files = varint(len(attachments)) + b"".join(varint(a) for a in attachments)
    return varint(4) + string(room) + client_msg_id + string(text) + files


def stream_frame(frame: bytes) -> bytes:
    """Section 1.3: the frame's length as a varint, then the frame."""
    return varint(len(frame)) + frame


class Reader:
    """Decodes the parts of a server frame this client looks at."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise Failure("truncated frame from server")
        b = self.data[self.pos]
        self.pos += 1
        return b

    def varint(self, max_bytes: int = 10) -> int:
        value = 0
        for i in range(max_bytes):
            b = self.byte()
            value |= (b & 0x7F) << (7 * i)
            if not b & 0x80:
                return value
        raise Failure("varint too long in server frame")

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise Failure("truncated frame from server")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def string(self) -> str:
        try:
            return self.take(self.varint()).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise Failure("invalid UTF-8 in server frame") from exc

    def option(self, read):
        tag = self.byte()
        if tag == 0:
            return None
        if tag == 1:
            return read()
        raise Failure(f"invalid option tag {tag} in server frame")

    def user(self) -> dict:
        return {"id": self.varint(), "username": self.string()}

    def end(self, what: str) -> None:
        if self.pos != len(self.data):
            raise Failure(f"{len(self.data) - self.pos} trailing bytes after {what}")


SERVER_FRAME_NAMES = [
    "Welcome", "retired#1", "Joined", "Left", "Ack", "Message",
    "History", "Typing", "retired#8", "Pong", "Error", "GoAway", "RoomPresence",
    "ReadState", "RoomAdded",
]  # fmt: skip
MESSAGE_KINDS = ["Post", "Edit", "Delete"]


def decode_server_frame(data: bytes) -> dict:
    """Fully decodes the frames this client acts on; others are returned by name only."""
    r = Reader(data)
    index = r.varint(5)
    if index >= len(SERVER_FRAME_NAMES):
        return {"type": f"unknown#{index}"}
    kind = SERVER_FRAME_NAMES[index]
    frame: dict = {"type": kind}
    if kind == "Welcome":
        frame["version"] = r.varint(5)
        frame["user"] = r.user()
        # connection_id, heartbeat_ms and Limits are not needed here.
        return frame
    if kind == "Joined":
        frame.update(room=r.string(), head_seq=r.varint(), replay_from=r.varint())
        r.end(kind)
    elif kind == "Ack":
        frame.update(room=r.string(), client_msg_id=r.take(16), seq=r.varint(), message_id=r.varint(), sent_at_ms=r.varint())
        r.end(kind)
    elif kind == "Message":
        frame.update(room=r.string(), seq=r.varint(), message_id=r.varint(), sender=r.user())
        frame.update(client_msg_id=r.take(16), sent_at_ms=r.varint(), text=r.string())
        kind_index = r.varint(5)
        if kind_index >= len(MESSAGE_KINDS):
            raise Failure(f"unknown message kind {kind_index}")
        frame["kind"] = MESSAGE_KINDS[kind_index]
        frame["target_seq"] = r.option(r.varint)
        frame["edited_at_ms"] = r.option(r.varint)
        deleted = r.byte()
        if deleted > 1:
            raise Failure(f"bool byte {deleted}")
        frame["deleted"] = deleted == 1
        frame["attachments"] = [
            {"id": r.varint(), "name": r.string(), "content_type": r.string(), "size": r.varint()}
            for _ in range(r.varint())
        ]
        r.end(kind)
    elif kind == "Error":
        frame.update(code=r.varint(3), message=r.string())
        frame["room"] = r.option(r.string)
        frame["client_msg_id"] = r.option(lambda: r.take(16))
        frame["request_id"] = r.option(lambda: r.varint(5))
        frame["retry_after_ms"] = r.option(lambda: r.varint(5))
        r.end(kind)
    elif kind == "GoAway":
        frame.update(code=r.varint(3), reason=r.string())
        r.end(kind)
    elif kind == "RoomPresence":
        frame.update(room=r.string(), online=r.varint(5))
        frame["users"] = [r.user() for _ in range(r.varint())]
        r.end(kind)
    return frame


class StreamFrames:
    """Reassembles length-prefixed frames from stream chunks."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def push(self, chunk: bytes) -> list[bytes]:
        self.buf += chunk
        frames = []
        while True:
            length = 0
            for i in range(5):
                if i >= len(self.buf):
                    return frames
                b = self.buf[i]
                length |= (b & 0x7F) << (7 * i)
                if not b & 0x80:
                    break
            else:
                raise Failure("stream length prefix longer than 5 bytes")
            if length > MAX_SERVER_FRAME:
                raise Failure(f"stream frame of {length} bytes exceeds {MAX_SERVER_FRAME}")
            start = i + 1
            if len(self.buf) < start + length:
                return frames
            frames.append(bytes(self.buf[start : start + length]))
            del self.buf[: start + length]


def self_test() -> dict:
    """Checks the hand-written codec against protocol/vectors/frames.jsonl."""
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "protocol" / "vectors" / "frames.jsonl"
    vectors = {v["name"]: v for v in map(json.loads, path.read_text().splitlines()) if v}
    checked = 0

    def expect(name: str, got: bytes) -> None:
        nonlocal checked
        want = bytes.fromhex(vectors[name]["hex"])
        if got != want:
            raise Failure(f"vector {name}: encoded {got.hex()}, spec says {want.hex()}")
        checked += 1

    v = vectors["hello"]["frame"]["Hello"]
    expect("hello", varint(0) + varint(v["version"]) + string(v["client"]))
    for name in ("join_live", "join_resume"):
        v = vectors[name]["frame"]["Join"]
        expect(name, join(v["room"], v["after_seq"]))
    for name in ("send", "send_with_attachments"):
        v = vectors[name]["frame"]["Send"]
        expect(name, send(v["room"], bytes(v["client_msg_id"]), v["text"], v["attachments"]))
    messages = ("message", "message_with_attachment_edited", "message_deleted", "message_edit_event", "message_delete_event")
    for name in ("ack", *messages, "error", "goaway", "joined", "room_presence", "room_presence_empty"):
        vector = vectors[name]
        (kind, fields), = vector["frame"].items()
        frame = decode_server_frame(bytes.fromhex(vector["hex"]))
        for key, value in fields.items():
            got = frame.get(key)
            if isinstance(got, bytes):
                got = list(got)
            if got != value:
                raise Failure(f"vector {name}: decoded {key}={got!r}, spec says {value!r}")
        checked += 1
    data = stream_frame(bytes.fromhex(vectors["ping"]["hex"]))
    frames = StreamFrames().push(data[:1]) + StreamFrames().push(data)
    if frames != [bytes.fromhex(vectors["ping"]["hex"])]:
        raise Failure("stream framing")
    return {"ok": True, "vectors_checked": checked}


# ---------------------------------------------------------------------------------------------
# WebTransport session over aioquic
# ---------------------------------------------------------------------------------------------


class WebTransportClient(QuicConnectionProtocol if AIOQUIC_IMPORT_ERROR is None else object):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.h3 = H3Connection(self._quic, enable_webtransport=True)
        self.session_id: int | None = None
        self.stream_id: int | None = None
        self.response: asyncio.Future = asyncio.get_running_loop().create_future()
        self.frames: asyncio.Queue = asyncio.Queue()
        self.framer = StreamFrames()
        self.terminated: asyncio.Future = asyncio.get_running_loop().create_future()
        self.settings_event = asyncio.Event()

    # -- events ------------------------------------------------------------------------------

    def quic_event_received(self, event) -> None:
        if isinstance(event, ConnectionTerminated):
            # Also raised when aioquic itself closes (an HTTP/3 error it detected).
            reason = f"QUIC connection closed: error code {event.error_code:#x}"
            if event.reason_phrase:
                reason += f", reason {event.reason_phrase!r}"
            self._fail(reason)
            return
        if isinstance(event, StreamReset) and event.stream_id in (self.session_id, self.stream_id):
            self._fail(f"stream {event.stream_id} reset by the server (error code {event.error_code:#x})")
            return
        try:
            h3_events = self.h3.handle_event(event)
        except Exception as exc:  # an HTTP/3 protocol error in the server's data
            self._fail(f"HTTP/3 error: {type(exc).__name__}: {exc}")
            return
        if self.h3.received_settings is not None:
            self.settings_event.set()
        for h3_event in h3_events:
            self._h3_event(h3_event)

    def _h3_event(self, event) -> None:
        if isinstance(event, HeadersReceived) and event.stream_id == self.session_id:
            if not self.response.done():
                self.response.set_result(dict(event.headers))
            if event.stream_ended:
                self._fail("the server ended the session's CONNECT stream")
        elif isinstance(event, WebTransportStreamDataReceived) and event.stream_id == self.stream_id:
            try:
                for frame in self.framer.push(event.data):
                    self.frames.put_nowait(frame)
            except Failure as exc:
                self._fail(str(exc))
                return
            if event.stream_ended:
                self._fail("the server ended the bidirectional stream")

    def _fail(self, reason: str) -> None:
        if not self.terminated.done():
            self.terminated.set_result(reason)
        if not self.response.done():
            self.response.set_exception(Failure(reason))
            self.response.exception()  # retrieved: no "never retrieved" warning if unused

    async def until(self, awaitable, what: str):
        """Awaits `awaitable` unless the connection ends first (then Failure)."""
        task = asyncio.ensure_future(awaitable)
        try:
            done, _ = await asyncio.wait({task, self.terminated}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not task.done():
                task.cancel()
        if task in done and task.exception() is None:
            return task.result()
        if not task.cancelled() and task.done():
            error = task.exception()
            if not self.terminated.done():
                raise Failure(f"{what}: {type(error).__name__}: {error}")
        # A close event carries the reason (e.g. the TLS alert for a certificate mismatch).
        await asyncio.sleep(0)
        raise Failure(f"{what}: {self.terminated.result()}")

    # -- actions -----------------------------------------------------------------------------

    def open_session(self, authority: str, path: str, cookie: str | None, origin: str | None) -> None:
        self.session_id = self._quic.get_next_available_stream_id()
        headers = [
            (b":method", b"CONNECT"),
            (b":protocol", b"webtransport"),
            (b":scheme", b"https"),
            (b":authority", authority.encode()),
            (b":path", path.encode()),
            (b"sec-webtransport-http3-draft02", b"1"),
            (b"user-agent", CLIENT_NAME.encode()),
        ]
        if origin:
            headers.append((b"origin", origin.encode()))
        if cookie:
            headers.append((b"cookie", cookie.encode()))
        self.h3.send_headers(stream_id=self.session_id, headers=headers, end_stream=False)
        self.transmit()

    def open_stream(self) -> None:
        self.stream_id = self.h3.create_webtransport_stream(self.session_id, is_unidirectional=False)
        # aioquic 1.7.2 does not mark a stream it created as a WebTransport stream on its
        # receive side, so the server's bytes would be parsed as HTTP/3 frames: mark it.
        # (`_get_or_create_stream` is a context manager in aioquic 1.7.)
        with self.h3._get_or_create_stream(self.stream_id) as stream:
            stream.frame_type = FrameType.WEBTRANSPORT_STREAM
            stream.session_id = self.session_id
        self.transmit()

    def send_frames(self, *frames: bytes) -> None:
        data = b"".join(stream_frame(f) for f in frames)
        self._quic.send_stream_data(self.stream_id, data, end_stream=False)
        self.transmit()

    async def next_frame(self, what: str) -> bytes:
        return await self.until(self.frames.get(), what)


STAGE = {"now": "starting"}


async def run(args) -> dict:
    url = urlsplit(args.url)
    if url.scheme != "https" or not url.hostname:
        raise Failure(f"--url must be https://host:port/path, got {args.url!r}")
    host = url.hostname
    port = url.port or 443
    path = url.path or "/"
    query = url.query
    if args.ticket:
        query = (query + "&" if query else "") + "ticket=" + quote(args.ticket, safe="")
    if query:
        path += "?" + query
    authority = url.netloc.rsplit("@", 1)[-1]

    configuration = QuicConfiguration(
        is_client=True,
        alpn_protocols=H3_ALPN,
        max_datagram_frame_size=65536,
        server_name=host,
    )
    if args.ca_cert:
        try:
            with open(args.ca_cert, "rb") as f:
                pem = f.read()
        except OSError as exc:
            raise Failure(f"cannot read --ca-cert: {exc}") from exc
        from cryptography import x509

        try:
            if not x509.load_pem_x509_certificates(pem):
                raise ValueError("no certificate")
        except ValueError as exc:
            raise Failure(f"--ca-cert {args.ca_cert} holds no PEM certificate ({exc})") from exc
        configuration.load_verify_locations(cadata=pem)
    elif args.insecure:
        import ssl

        configuration.verify_mode = ssl.CERT_NONE

    loop = asyncio.get_running_loop()
    try:
        is_v6 = isinstance(ipaddress.ip_address(host), ipaddress.IPv6Address)
        addr = (host, port)
    except ValueError:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        family, _, _, _, addr = infos[0]
        is_v6 = family == socket.AF_INET6
    sock = socket.socket(socket.AF_INET6 if is_v6 else socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("::" if is_v6 else "0.0.0.0", 0))

    from aioquic.quic.connection import QuicConnection

    quic = QuicConnection(configuration=configuration)
    transport, protocol = await loop.create_datagram_endpoint(lambda: WebTransportClient(quic), sock=sock)
    try:
        STAGE["now"] = "the QUIC handshake"
        protocol.connect(addr)
        await protocol.until(protocol.wait_connected(), "QUIC handshake failed")

        # Extended CONNECT needs the server's SETTINGS (ENABLE_CONNECT_PROTOCOL, WebTransport).
        STAGE["now"] = "the server's HTTP/3 SETTINGS"
        await protocol.until(protocol.settings_event.wait(), "no HTTP/3 SETTINGS from the server")
        received = protocol.h3.received_settings or {}
        if received.get(0x08) != 1:  # SETTINGS_ENABLE_CONNECT_PROTOCOL
            raise Failure(f"server SETTINGS lack ENABLE_CONNECT_PROTOCOL: {received}")

        STAGE["now"] = "the answer to CONNECT"
        protocol.open_session(authority, path, args.cookie, args.origin)
        try:
            headers = await protocol.response
        except Failure as exc:
            raise Failure(f"no answer to CONNECT: {exc}") from None
        status = headers.get(b":status", b"").decode()
        if status != "200":
            raise Failure(f"CONNECT {path.split('?')[0]} answered {status or 'no status'}")

        STAGE["now"] = "Welcome, RoomPresence, Ack and Message"
        protocol.open_stream()
        client_msg_id = os.urandom(16)
        # Frames sent right after Hello are processed in order (section 1.2).
        protocol.send_frames(hello(), join(args.room, None), send(args.room, client_msg_id, TEXT))

        ack = None
        message = None
        presence = None
        while ack is None or message is None or presence is None:
            frame = decode_server_frame(await protocol.next_frame("session ended before Ack and Message"))
            kind = frame["type"]
            if kind == "Ack" and frame["client_msg_id"] == client_msg_id:
                ack = frame
            elif kind == "Message" and frame["client_msg_id"] == client_msg_id:
                if frame["text"] != TEXT:
                    raise Failure(f"own message came back with text {frame['text']!r}")
                message = frame
            elif kind == "RoomPresence" and frame["room"] == args.room:
                presence = frame
            elif kind == "Error":
                raise Failure(f"Error {frame['code']}: {frame['message']}")
            elif kind == "GoAway":
                raise Failure(f"GoAway {frame['code']}: {frame['reason']}")
            elif kind == "Welcome" and frame["version"] != PROTOCOL_VERSION:
                raise Failure(f"server speaks version {frame['version']}")
        if (ack["seq"], ack["message_id"]) != (message["seq"], message["message_id"]):
            raise Failure(f"Ack (seq {ack['seq']}, id {ack['message_id']}) and Message (seq {message['seq']}, id {message['message_id']}) disagree")
        # Who is online in the room: this client itself at least (section 6.8).
        if presence["online"] < 1 or len(presence["users"]) > 50 or len(presence["users"]) > presence["online"]:
            raise Failure(f"RoomPresence out of bounds: {presence}")
        return {"ok": True, "seq": ack["seq"], "message_id": ack["message_id"], "room_online": presence["online"]}
    finally:
        try:
            protocol._quic.close(error_code=ErrorCode.H3_NO_ERROR, reason_phrase="done")
            protocol.transmit()
            await asyncio.wait_for(protocol.wait_closed(), 0.5)
        except Exception:
            pass
        transport.close()


def main() -> int:
    if sys.argv[1:] == ["--self-test"]:
        try:
            result = self_test()
        except Failure as exc:
            result = {"ok": False, "error": str(exc)}
        print(json.dumps(result), flush=True)
        return 0 if result["ok"] else 1

    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="--self-test alone checks the frame codec against protocol/vectors and exits.",
    )
    parser.add_argument("--url", required=True, help="https://host:port/wt")
    auth = parser.add_mutually_exclusive_group(required=True)
    auth.add_argument("--cookie", help="Cookie header value, e.g. token=<JWT> (native-client path)")
    auth.add_argument("--ticket", help="a ticket from POST /api/auth/ticket, sent as ?ticket=")
    parser.add_argument("--ca-cert", help="PEM certificate to verify the server against")
    parser.add_argument("--insecure", action="store_true", help="skip certificate verification (debugging only)")
    parser.add_argument("--origin", help="Origin header to send (default: none, like a native client)")
    parser.add_argument("--room", default="general")
    parser.add_argument("--timeout", type=float, default=20.0, help="overall limit in seconds (20)")
    args = parser.parse_args()

    if AIOQUIC_IMPORT_ERROR is not None:
        result = {"ok": False, "error": f"aioquic is not installed ({AIOQUIC_IMPORT_ERROR}); pip install -r tests/interop/requirements.txt"}
    else:
        try:
            result = asyncio.run(asyncio.wait_for(run(args), args.timeout))
        except (asyncio.TimeoutError, TimeoutError):
            result = {"ok": False, "error": f"timeout after {args.timeout:g} s waiting for {STAGE['now']}"}
        except Failure as exc:
            result = {"ok": False, "error": str(exc)}
        except Exception as exc:  # anything unexpected still yields one JSON line
            result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(result), flush=True)
    return 0 if result.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
