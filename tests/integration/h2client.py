"""A small blocking HTTP/2 client for the integration tests, on Debian's
python3-h2 (sans-I/O): plain requests, RFC 8441 WebSockets (extended
CONNECT) with frames from harness.encode_frame/decode_frame, and raw frame
writing for the attack tests. One instance = one TCP (or TLS) connection."""

import socket
import ssl
import time

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.errors
import h2.settings

from harness import HOST, HarnessError, decode_frame, encode_frame

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


class GracefulConnection(h2.connection.H2Connection):
    """python-h2 closes its side on any GOAWAY; RFC 9113 §6.8 lets the
    streams up to the GOAWAY's last stream id finish, as browsers do. This
    one reports the GOAWAY and keeps processing those streams."""

    def _receive_goaway_frame(self, frame):
        event = h2.events.ConnectionTerminated()
        event.error_code = h2.errors._error_code_from_int(frame.error_code)
        event.last_stream_id = frame.last_stream_id
        event.additional_data = frame.additional_data or None
        return [], [event]


class Stream:
    def __init__(self, sid):
        self.id = sid
        self.headers = None      # response headers, dict of str -> str
        self.data = bytearray()  # DATA received and not yet taken
        self.ended = False       # END_STREAM received
        self.reset = None        # RST_STREAM error code


class H2Client:
    def __init__(self, port, tls_ca=None, server_hostname="localhost", timeout=10.0):
        self.timeout = timeout
        raw = socket.create_connection((HOST, port), timeout=timeout)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.tls = tls_ca is not None
        if self.tls:
            ctx = ssl.create_default_context(cafile=tls_ca)
            ctx.set_alpn_protocols(["h2", "http/1.1"])
            self.sock = ctx.wrap_socket(raw, server_hostname=server_hostname)
            self.alpn = self.sock.selected_alpn_protocol()
        else:
            self.sock = raw
            self.alpn = None
        self.conn = GracefulConnection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.conn.initiate_connection()
        self.conn.increment_flow_control_window(16 * 1024 * 1024)
        self.streams = {}
        self.goaway = None        # the error code of a GOAWAY received
        self.closed = False
        self.protocol_error = None  # what python-h2 objected to in the server's frames
        self.remote_settings_seen = False
        self._flush()

    # ---- I/O -------------------------------------------------------------
    def _flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def pump(self, timeout=None):
        """Reads once (up to <timeout> s) and processes the events. False
        when the connection is closed."""
        if self.closed:
            return False
        self.sock.settimeout(timeout if timeout is not None else self.timeout)
        try:
            data = self.sock.recv(65536)
        except (socket.timeout, BlockingIOError, ssl.SSLWantReadError):
            return True
        except (ConnectionResetError, ssl.SSLError, OSError):
            data = b""
        if not data:
            self.closed = True
            return False
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError as e:
            self.protocol_error = e
            self.closed = True
            return False
        for ev in events:
            self._event(ev)
        self._flush()
        return True

    def _event(self, ev):
        if isinstance(ev, h2.events.RemoteSettingsChanged):
            self.remote_settings_seen = True
        elif isinstance(ev, h2.events.ResponseReceived):
            self.streams[ev.stream_id].headers = dict(ev.headers)
        elif isinstance(ev, h2.events.DataReceived):
            s = self.streams.get(ev.stream_id)
            if s is not None:
                s.data += ev.data
            # The test reads at its own pace; the window goes back at once.
            self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        elif isinstance(ev, h2.events.StreamEnded):
            self.streams[ev.stream_id].ended = True
        elif isinstance(ev, h2.events.StreamReset):
            if ev.stream_id in self.streams:
                self.streams[ev.stream_id].reset = ev.error_code
        elif isinstance(ev, h2.events.ConnectionTerminated):
            self.goaway = ev.error_code

    def wait(self, predicate, timeout=None, what="condition"):
        deadline = time.monotonic() + (timeout or self.timeout)
        while not predicate():
            left = deadline - time.monotonic()
            if left <= 0:
                raise HarnessError(f"h2: timed out waiting for {what}")
            if not self.pump(min(left, 0.5)) and not predicate():
                raise HarnessError(f"h2: connection closed while waiting for {what}")
        return True

    def close(self):
        try:
            self.conn.close_connection()
            self._flush()
        except Exception:
            pass
        self.sock.close()

    # ---- requests --------------------------------------------------------
    def request(self, method, path, body=None, headers=(), authority="localhost", end=True):
        sid = self.conn.get_next_available_stream_id()
        hdrs = [(":method", method), (":scheme", "https" if self.tls else "http"),
                (":path", path), (":authority", authority)] + list(headers)
        self.streams[sid] = Stream(sid)
        self.conn.send_headers(sid, hdrs, end_stream=end and not body)
        self._flush()
        if body:
            self.send_data(sid, body, end=end)
        return sid

    def response(self, sid, timeout=None):
        s = self.streams[sid]
        self.wait(lambda: s.ended or s.reset is not None or self.closed, timeout, f"stream {sid} to end")
        return s

    def send_data(self, sid, data, end=False):
        """Sends <data> on <sid>, as the stream's window allows."""
        view = memoryview(data)
        while len(view) > 0:
            window = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
            if window <= 0:
                self.wait(lambda: self.conn.local_flow_control_window(sid) > 0 or self.streams[sid].reset is not None,
                          what=f"window on stream {sid}")
                if self.streams[sid].reset is not None:
                    raise HarnessError(f"h2: stream {sid} reset while sending")
                continue
            chunk = view[:window]
            self.conn.send_data(sid, bytes(chunk))
            self._flush()
            view = view[window:]
        if end:
            self.conn.end_stream(sid)
            self._flush()

    # ---- WebSockets over HTTP/2 (RFC 8441) -------------------------------
    def websocket(self, path="/", protocols=None, headers=(), authority="localhost", wait=True):
        """Opens an extended CONNECT stream; with <wait>, waits for its
        response headers. Returns the stream id."""
        if not self.remote_settings_seen:
            self.wait(lambda: self.remote_settings_seen, what="the server's SETTINGS")
        sid = self.conn.get_next_available_stream_id()
        hdrs = [(":method", "CONNECT"), (":protocol", "websocket"),
                (":scheme", "https" if self.tls else "http"), (":path", path),
                (":authority", authority), ("sec-websocket-version", "13")]
        if protocols:
            hdrs.append(("sec-websocket-protocol", ", ".join(protocols)))
        hdrs += list(headers)
        self.streams[sid] = Stream(sid)
        self.conn.send_headers(sid, hdrs, end_stream=False)
        self._flush()
        if wait:
            s = self.streams[sid]
            self.wait(lambda: s.headers is not None or s.reset is not None, what=f"response on stream {sid}")
        return sid

    def send_frame(self, sid, opcode, payload=b"", fin=True):
        self.send_data(sid, encode_frame(opcode, payload, fin=fin, mask=True))

    def recv_frame(self, sid, timeout=None):
        s = self.streams[sid]
        frame = []

        def ready():
            if s.data:
                f, used = decode_frame(bytes(s.data))
                if f is not None:
                    del s.data[:used]
                    frame.append(f)
                    return True
            return s.ended or s.reset is not None or self.closed

        self.wait(ready, timeout, f"a frame on stream {sid}")
        if not frame:
            raise HarnessError(f"h2: stream {sid} ended (reset={s.reset}) before a frame")
        return frame[0]
