// h2_loadgen: WebSocket echo load over HTTP/2 (RFC 8441 extended CONNECT)
// or over HTTP/1.1 upgrades on TLS, for scripts/bench-h2. Every socket
// keeps <inflight> 128-byte (--size) masked binary messages in flight and
// sends the next one when an echo comes back; prints one JSON line with the
// messages echoed during the measured window.
//   node h2_loadgen.js --port P [--mode h2|h1] [--connections C] [--streams S]
//        [--inflight K] [--size N] [--warmup SEC] [--duration SEC]
// h2: C connections with S WebSocket streams each; h1: C*S TLS connections.
"use strict";

const http2 = require("http2");
const tls = require("tls");
const crypto = require("crypto");

const args = { port: 0, mode: "h2", connections: 4, streams: 16, inflight: 16, size: 128, warmup: 1, duration: 5 };
for (let i = 2; i < process.argv.length; i += 2) {
  const key = process.argv[i].replace(/^--/, "");
  args[key] = key === "mode" ? process.argv[i + 1] : Number(process.argv[i + 1]);
}

let measuring = false;
let echoed = 0;
let errors = 0;

function frame(size) {
  // FIN + binary, masked (RFC 6455 §5.2); the mask is zero, so the payload
  // is sent as is, as a client may.
  const header = size < 126 ? Buffer.from([0x82, 0x80 | size, 0, 0, 0, 0])
                            : Buffer.from([0x82, 0x80 | 126, size >> 8, size & 255, 0, 0, 0, 0]);
  return Buffer.concat([header, Buffer.alloc(size, 0x61)]);
}
const MESSAGE = frame(args.size);

// Counts whole server frames in a byte stream.
function counter(onFrame) {
  let buffered = Buffer.alloc(0);
  return (chunk) => {
    buffered = buffered.length ? Buffer.concat([buffered, chunk]) : chunk;
    let pos = 0;
    for (;;) {
      if (buffered.length - pos < 2) break;
      let len = buffered[pos + 1] & 0x7f;
      let head = 2;
      if (len === 126) {
        if (buffered.length - pos < 4) break;
        len = buffered.readUInt16BE(pos + 2);
        head = 4;
      } else if (len === 127) {
        if (buffered.length - pos < 10) break;
        len = Number(buffered.readBigUInt64BE(pos + 2));
        head = 10;
      }
      if (buffered.length - pos < head + len) break;
      pos += head + len;
      onFrame();
    }
    buffered = buffered.subarray(pos);
  };
}

function drive(write) {
  for (let i = 0; i < args.inflight; ++i) write(MESSAGE);
  return counter(() => {
    if (measuring) ++echoed;
    write(MESSAGE);
  });
}

function h2_connection() {
  return new Promise((resolve, reject) => {
    const session = http2.connect(`https://127.0.0.1:${args.port}`, { rejectUnauthorized: false,
      settings: { initialWindowSize: 1 << 20 } });
    session.on("error", reject);
    session.once("remoteSettings", (settings) => {
      if (!settings.enableConnectProtocol) return reject(new Error("no SETTINGS_ENABLE_CONNECT_PROTOCOL"));
      let open = 0;
      for (let s = 0; s < args.streams; ++s) {
        const req = session.request({ ":method": "CONNECT", ":protocol": "websocket", ":path": "/bench",
                                      ":scheme": "https", ":authority": "localhost", "sec-websocket-version": "13" });
        req.on("response", (headers) => {
          if (headers[":status"] !== 200) return reject(new Error(`status ${headers[":status"]}`));
          req.on("data", drive((b) => req.write(b)));
          if (++open === args.streams) resolve(session);
        });
        req.on("error", () => ++errors);
      }
    });
  });
}

function h1_connection() {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ port: args.port, host: "127.0.0.1", rejectUnauthorized: false, ALPNProtocols: ["http/1.1"],
                                 servername: "localhost" }, () => {
      socket.setNoDelay(true);
      const key = crypto.randomBytes(16).toString("base64");
      socket.write(`GET /bench HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
                   `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`);
    });
    let head = Buffer.alloc(0);
    let onData = null;
    socket.on("data", (chunk) => {
      if (onData) return onData(chunk);
      head = Buffer.concat([head, chunk]);
      const end = head.indexOf("\r\n\r\n");
      if (end < 0) return;
      if (!head.subarray(0, 12).toString().includes("101")) return reject(new Error(head.toString()));
      onData = drive((b) => socket.write(b));
      if (head.length > end + 4) onData(head.subarray(end + 4));
      resolve(socket);
    });
    socket.on("error", reject);
  });
}

async function main() {
  const opened = [];
  if (args.mode === "h2") {
    for (let c = 0; c < args.connections; ++c) opened.push(h2_connection());
  } else {
    for (let c = 0; c < args.connections * args.streams; ++c) opened.push(h1_connection());
  }
  await Promise.all(opened);
  await new Promise((r) => setTimeout(r, args.warmup * 1000));
  measuring = true;
  const started = process.hrtime.bigint();
  await new Promise((r) => setTimeout(r, args.duration * 1000));
  measuring = false;
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  console.log(JSON.stringify({ mode: args.mode, echoed, seconds, rate: echoed / seconds, errors }));
  process.exit(0);
}

main().catch((error) => {
  console.log(JSON.stringify({ error: String(error.message || error) }));
  process.exit(1);
});
