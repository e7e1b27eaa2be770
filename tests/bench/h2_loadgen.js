// h2_loadgen: WebSocket echo load over HTTP/2 (RFC 8441 extended CONNECT)
// or over HTTP/1.1 upgrades on TLS, for scenario h of scripts/bench. Every
// socket keeps <inflight> masked binary messages of --size bytes in flight
// and sends the next one when an echo comes back; every echo must be the
// same frame unmasked (a difference counts as a mismatch). Prints one JSON
// line in the shape of build/ws_loadgen's: messages echoed in the measured
// window, their round-trip percentiles, what TLS and ALPN negotiated, and
// with --cpu-pid the CPU of those processes over the window (the sum over
// /proc/P/task/*/schedstat, as ws_loadgen measures it).
//   node h2_loadgen.js --port P [--mode h2|h1] [--connections C] [--streams S]
//        [--inflight K] [--size N] [--warmup SEC] [--duration SEC] [--cpu-pid P[,P..]]
// h2: C connections with S WebSocket streams each (a connection whose server
// does not send SETTINGS_ENABLE_CONNECT_PROTOCOL fails the run); h1: C*S TLS
// connections offering ALPN http/1.1 only, one WebSocket each.
// Exit status 1 on errors or mismatches; {"error": ...} when the sockets
// could not all be opened within 10 s.
"use strict";

const fs = require("fs");
const http2 = require("http2");
const tls = require("tls");
const crypto = require("crypto");

const args = { port: 0, mode: "h2", connections: 4, streams: 16, inflight: 4, size: 128, warmup: 1, duration: 5,
               "cpu-pid": "" };
for (let i = 2; i < process.argv.length; i += 2) {
  const key = process.argv[i].replace(/^--/, "");
  if (!(key in args)) {
    console.error(`h2_loadgen: unknown option --${key}`);
    process.exit(2);
  }
  args[key] = typeof args[key] === "number" ? Number(process.argv[i + 1]) : process.argv[i + 1];
}
const cpuPids = args["cpu-pid"].split(",").filter((p) => p !== "");

// One message, sent as is by every socket: FIN + binary, masked (RFC 6455
// §5.2) with a random key; <ECHO> is what the back end sends back through
// the proxy (the same payload unmasked, no mask bit).
function frames(size) {
  const payload = crypto.randomBytes(size);
  const mask = crypto.randomBytes(4);
  const length = size < 126 ? [size] : [126, size >> 8, size & 255];
  const masked = Buffer.from(payload.map((b, i) => b ^ mask[i % 4]));
  return { message: Buffer.concat([Buffer.from([0x82, 0x80 | length[0], ...length.slice(1)]), mask, masked]),
           echo: Buffer.concat([Buffer.from([0x82, ...length]), payload]) };
}
const { message: MESSAGE, echo: ECHO } = frames(args.size);

let measuring = false;
let finished = false;  // the report is out: closing sockets are no errors then
let echoed = 0;
let mismatches = 0;
let errors = 0;
let firstError = "";
let latencies = new Float64Array(1 << 16);  // ms, measured window only
let samples = 0;
const negotiated = { tls_version: "", tls_cipher: "", alpn: "" };

function error(what) {
  ++errors;
  if (!firstError) firstError = String(what);
}

function record(ms) {
  if (samples === latencies.length) {
    const grown = new Float64Array(latencies.length * 2);
    grown.set(latencies);
    latencies = grown;
  }
  latencies[samples++] = ms;
}

function note(tlsSocket, alpn) {
  if (negotiated.tls_version) return;
  negotiated.tls_version = tlsSocket.getProtocol() || "";
  negotiated.tls_cipher = (tlsSocket.getCipher() || {}).name || "";
  negotiated.alpn = alpn || "none";
}

// Sends <inflight> messages and returns the reader of the server's bytes:
// each whole frame is checked against ECHO, timed against the oldest send
// still unanswered (the echo is in order), and answered with the next send.
function drive(write) {
  const sentAt = [];
  let buffered = Buffer.alloc(0);
  const send = () => {
    sentAt.push(performance.now());
    write(MESSAGE);
  };
  for (let i = 0; i < args.inflight; ++i) send();
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
      const frame = buffered.subarray(pos, pos + head + len);
      pos += head + len;
      const started = sentAt.shift();
      if (measuring) {
        ++echoed;
        if (frame.equals(ECHO)) {
          record(performance.now() - started);
        } else {
          ++mismatches;
          if (!firstError) firstError = "echo mismatch";
        }
      }
      send();
    }
    buffered = buffered.subarray(pos);
  };
}

function h2Connection() {
  return new Promise((resolve, reject) => {
    const session = http2.connect(`https://127.0.0.1:${args.port}`, {
      rejectUnauthorized: false, servername: "localhost", settings: { initialWindowSize: 1 << 20 } });
    session.on("error", (e) => (measuring ? error(e.message) : reject(e)));
    session.once("remoteSettings", (settings) => {
      if (!settings.enableConnectProtocol) return reject(new Error("no SETTINGS_ENABLE_CONNECT_PROTOCOL from the server"));
      note(session.socket, session.alpnProtocol);
      let open = 0;
      for (let s = 0; s < args.streams; ++s) {
        const req = session.request({ ":method": "CONNECT", ":protocol": "websocket", ":path": "/bench",
                                      ":scheme": "https", ":authority": "localhost", "sec-websocket-version": "13" });
        req.on("response", (headers) => {
          if (headers[":status"] !== 200) return reject(new Error(`extended CONNECT answered ${headers[":status"]}`));
          req.on("data", drive((b) => req.write(b)));
          if (++open === args.streams) resolve(session);
        });
        req.on("error", (e) => error(e.message));
        req.on("close", () => finished || error(`stream closed (code ${req.rstCode})`));
      }
    });
  });
}

function h1Connection() {
  return new Promise((resolve, reject) => {
    const key = crypto.randomBytes(16).toString("base64");
    const accept = crypto.createHash("sha1").update(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest("base64");
    const socket = tls.connect({ port: args.port, host: "127.0.0.1", rejectUnauthorized: false,
                                 ALPNProtocols: ["http/1.1"], servername: "localhost" }, () => {
      socket.setNoDelay(true);
      note(socket, socket.alpnProtocol);
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
      const text = head.subarray(0, end).toString();
      if (!text.startsWith("HTTP/1.1 101 ")) return reject(new Error(text.split("\r\n")[0]));
      if (!new RegExp(`^sec-websocket-accept:\\s*${accept.replace(/[+/=]/g, "\\$&")}\\s*$`, "im").test(text)) {
        return reject(new Error("bad Sec-WebSocket-Accept"));
      }
      onData = drive((b) => socket.write(b));
      if (head.length > end + 4) onData(head.subarray(end + 4));
      resolve(socket);
    });
    socket.on("error", (e) => (onData ? error(e.message) : reject(e)));
    socket.on("close", () => finished || error("connection closed by the server"));
  });
}

function cpuNs() {
  let sum = 0;
  for (const pid of cpuPids) {
    let tasks = [];
    try {
      tasks = fs.readdirSync(`/proc/${pid}/task`);
    } catch {
      continue;
    }
    for (const task of tasks) {
      try {
        sum += Number(fs.readFileSync(`/proc/${pid}/task/${task}/schedstat`, "utf8").split(" ")[0]);
      } catch {
        // The thread ended between the listing and the read.
      }
    }
  }
  return sum;
}

function quantile(sorted, q) {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
}

async function main() {
  const opening = [];
  if (args.mode === "h2") {
    for (let c = 0; c < args.connections; ++c) opening.push(h2Connection());
  } else if (args.mode === "h1") {
    for (let c = 0; c < args.connections * args.streams; ++c) opening.push(h1Connection());
  } else {
    throw new Error(`unknown mode ${args.mode}`);
  }
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error("the sockets did not all open within 10 s")), 10000);
  });
  await Promise.race([Promise.all(opening), timeout]);
  clearTimeout(timer);
  await new Promise((r) => setTimeout(r, args.warmup * 1000));
  measuring = true;
  const cpuStart = cpuNs();
  const started = performance.now();
  await new Promise((r) => setTimeout(r, args.duration * 1000));
  measuring = false;
  finished = true;
  const cpu = cpuNs() - cpuStart;
  const seconds = (performance.now() - started) / 1000;
  const sorted = latencies.subarray(0, samples).sort();
  const report = {
    mode: args.mode, connections: args.connections, streams: args.streams, inflight: args.inflight, size: args.size,
    elapsed_s: seconds, messages: echoed, bytes: echoed * args.size, mismatches, errors, first_error: firstError,
    msgs_per_s: echoed / seconds, mb_per_s: echoed * args.size / seconds / 1e6,
    p50_us: quantile(sorted, 0.5) * 1000, p99_us: quantile(sorted, 0.99) * 1000,
    p999_us: quantile(sorted, 0.999) * 1000, ...negotiated,
  };
  if (cpuPids.length) {
    report.cpu_ns = cpu;
    if (echoed) report.cpu_us_per_op = cpu / 1000 / echoed;
  }
  console.log(JSON.stringify(report));
  process.exit(errors || mismatches ? 1 : 0);
}

main().catch((e) => {
  console.log(JSON.stringify({ error: String(e.message || e) }));
  process.exit(1);
});
