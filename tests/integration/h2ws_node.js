// h2ws_node: WebSockets over HTTP/2 (RFC 8441 extended CONNECT) with
// Node's built-in http2 client, for tests/integration/63_http2_node.py.
// No npm packages: node >= 18.
//
//   node h2ws_node.js '<spec JSON>' | SPEC_FILE
//
// Opens one HTTP/2 connection (h2 over TLS with ALPN for an https:// url,
// h2c with prior knowledge for http://), waits for the server's SETTINGS,
// then opens every stream of the spec by extended CONNECT and runs its
// steps. Prints one JSON object on stdout and exits 0, also when a stream
// fails or the time runs out (the object says what happened); exits 2 on a
// bad spec.
//
// Spec: {url, ca?, servername?, authority?, timeout_ms?, streams: [stream]}
//   stream: {name, path, protocols?: [..], headers?: {..}, open_after?: signal,
//            steps: [step]}
//   step:   {send: "text"|"binary"|"cont"|"ping"|"pong"|"close", fin?: bool,
//            text?: s | hex?: s | file?: path, code?: n, reason?: s}
//           {recv: n}         until n data messages have arrived in all
//           {recv_close: true} until the server's close frame arrived
//           {signal: name} / {wait: name}   order streams between each other
//           {end: true}       end our side (END_STREAM), wait for the stream to close
// A stream's steps run once its response is :status 200; any other status
// is a refusal whose body is collected. A finished stream fires the signal
// "<name>:done"; a stream with open_after is opened when that signal fires.
//
// Result: {alpn, connect_protocol, local_port, goaway, session_error,
//          timed_out, streams: [{name, status, headers, body_b64, messages:
//          [{op, len, frames, sha256, data_b64 (up to 4 KiB)}], close: {code,
//          reason}, pings, steps_done, server_ended, closed, rst_code,
//          protocol_errors, error}]}
"use strict";

const crypto = require("crypto");
const fs = require("fs");
const http2 = require("http2");

const OPCODES = { cont: 0x0, text: 0x1, binary: 0x2, close: 0x8, ping: 0x9, pong: 0xa };
const KEEP_DATA_BYTES = 4096;

// ---- RFC 6455 framing ------------------------------------------------------------

// One client frame: masked with a fresh random key, as RFC 6455 §5.3
// requires of every frame a client sends.
function encode_frame(opcode, payload, fin) {
  const n = payload.length;
  let head;
  if (n < 126) {
    head = Buffer.from([(fin ? 0x80 : 0) | opcode, 0x80 | n]);
  } else if (n < 65536) {
    head = Buffer.alloc(4);
    head[0] = (fin ? 0x80 : 0) | opcode;
    head[1] = 0x80 | 126;
    head.writeUInt16BE(n, 2);
  } else {
    head = Buffer.alloc(10);
    head[0] = (fin ? 0x80 : 0) | opcode;
    head[1] = 0x80 | 127;
    head.writeBigUInt64BE(BigInt(n), 2);
  }
  const key = crypto.randomBytes(4);
  const masked = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; ++i) masked[i] = payload[i] ^ key[i & 3];
  return Buffer.concat([head, key, masked]);
}

// A function to feed a stream's bytes to: it cuts them into frames (RFC 6455
// §5.2), calls on_frame(frame) for every whole one, and keeps a partial
// frame for the next chunk. Unmasks a masked frame so that the caller can
// report it as the protocol error it is for a server.
function frame_decoder(on_frame) {
  let buffered = Buffer.alloc(0);
  return (chunk) => {
    buffered = buffered.length ? Buffer.concat([buffered, chunk]) : chunk;
    let pos = 0;
    for (;;) {
      const left = buffered.length - pos;
      if (left < 2) break;
      const b0 = buffered[pos];
      const b1 = buffered[pos + 1];
      let len = b1 & 0x7f;
      let head = 2;
      if (len === 126) {
        if (left < 4) break;
        len = buffered.readUInt16BE(pos + 2);
        head = 4;
      } else if (len === 127) {
        if (left < 10) break;
        len = Number(buffered.readBigUInt64BE(pos + 2));
        head = 10;
      }
      const masked = (b1 & 0x80) !== 0;
      if (masked) head += 4;
      if (left < head + len) break;
      let payload = buffered.subarray(pos + head, pos + head + len);
      if (masked) {
        const key = buffered.subarray(pos + head - 4, pos + head);
        payload = Buffer.from(payload.map((byte, i) => byte ^ key[i & 3]));
      }
      on_frame({ fin: (b0 & 0x80) !== 0, rsv: (b0 >> 4) & 7, opcode: b0 & 0x0f, masked, payload });
      pos += head + len;
    }
    buffered = buffered.subarray(pos);
  };
}

// ---- one WebSocket on one stream -------------------------------------------------

class WsStream {
  constructor(run, spec) {
    this.run = run;
    this.spec = spec;
    this.result = {
      name: spec.name, status: null, headers: null, body_b64: null, messages: [], close: null, pings: [],
      steps_done: 0, server_ended: false, closed: false, rst_code: null, protocol_errors: [], error: null,
    };
    this.watchers = new Set();
    this.fragments = null;  // {op, parts, frames} while a fragmented message is open
    this.body = [];
  }

  // Resolves when <predicate> holds; rejects as soon as it cannot any more:
  // the stream closed, or (unless <until_closed>) wsgate ended its side or
  // sent its close frame, after which no data message may come.
  until(predicate, what, until_closed = false) {
    return new Promise((resolve, reject) => {
      const watcher = () => {
        const r = this.result;
        let hopeless = r.closed ? "stream closed" : null;
        if (!hopeless && !until_closed && r.server_ended) hopeless = "stream ended by wsgate";
        if (!hopeless && !until_closed && r.close !== null) hopeless = `close frame ${JSON.stringify(r.close)}`;
        if (predicate()) {
          this.watchers.delete(watcher);
          resolve();
        } else if (hopeless) {
          this.watchers.delete(watcher);
          reject(new Error(`waiting for ${what}: ${hopeless}`));
        }
      };
      this.watchers.add(watcher);
      watcher();
    });
  }

  changed() {
    for (const watcher of [...this.watchers]) watcher();
  }

  open() {
    const spec = this.spec;
    const headers = {
      ":method": "CONNECT", ":protocol": "websocket", ":scheme": this.run.scheme, ":path": spec.path,
      ":authority": this.run.authority, "sec-websocket-version": "13", ...(spec.headers || {}),
    };
    if (spec.protocols && spec.protocols.length) headers["sec-websocket-protocol"] = spec.protocols.join(", ");
    const req = this.run.session.request(headers, { endStream: false });
    this.req = req;
    const decode = frame_decoder((frame) => this.on_frame(frame));
    req.on("response", (response) => {
      this.result.status = response[":status"];
      this.result.headers = Object.fromEntries(Object.entries(response).map(([k, v]) => [k, String(v)]));
      if (this.result.status === 200) {
        req.on("data", decode);
        this.steps().then(() => this.run.finished(this), (error) => this.fail(error));
      } else {
        // A refusal is a whole response: end our side too, so the stream closes.
        req.on("data", (chunk) => this.body.push(chunk));
        req.end();
      }
      this.changed();
    });
    req.on("end", () => {
      this.result.server_ended = true;
      this.changed();
    });
    req.on("error", (error) => {
      if (!this.result.error) this.result.error = String(error.message || error);
    });
    req.on("close", () => {
      this.result.closed = true;
      this.result.rst_code = req.rstCode === undefined ? null : req.rstCode;
      if (this.body.length || (this.result.status !== null && this.result.status !== 200)) {
        this.result.body_b64 = Buffer.concat(this.body).toString("base64");
      }
      this.changed();
      this.run.finished(this);
    });
  }

  protocol_error(text) {
    this.result.protocol_errors.push(text);
  }

  on_frame(frame) {
    if (frame.masked) this.protocol_error("masked server frame");
    if (frame.rsv) this.protocol_error(`RSV bits ${frame.rsv} without an extension`);
    if (this.result.close) this.protocol_error(`frame opcode ${frame.opcode} after the close frame`);
    if (frame.opcode >= 0x8) {
      if (!frame.fin || frame.payload.length > 125) this.protocol_error("fragmented or long control frame");
      if (frame.opcode === OPCODES.ping) {
        this.result.pings.push(frame.payload.toString("base64"));
        this.req.write(encode_frame(OPCODES.pong, frame.payload, true));
      } else if (frame.opcode === OPCODES.close) {
        const p = frame.payload;
        this.result.close = p.length >= 2 ? { code: p.readUInt16BE(0), reason: p.subarray(2).toString("utf8") }
                                          : { code: null, reason: "" };
      }
    } else if (frame.opcode === OPCODES.cont) {
      if (!this.fragments) {
        this.protocol_error("continuation frame without a message");
      } else {
        this.fragments.parts.push(frame.payload);
        this.fragments.frames += 1;
        if (frame.fin) this.message(this.fragments);
      }
    } else if (frame.opcode === OPCODES.text || frame.opcode === OPCODES.binary) {
      if (this.fragments) this.protocol_error("new data frame inside a fragmented message");
      this.fragments = { op: frame.opcode, parts: [frame.payload], frames: 1 };
      if (frame.fin) this.message(this.fragments);
    } else {
      this.protocol_error(`reserved opcode ${frame.opcode}`);
    }
    this.changed();
  }

  message(whole) {
    const data = Buffer.concat(whole.parts);
    this.fragments = null;
    const record = { op: whole.op, len: data.length, frames: whole.frames,
                     sha256: crypto.createHash("sha256").update(data).digest("hex") };
    if (data.length <= KEEP_DATA_BYTES) record.data_b64 = data.toString("base64");
    this.result.messages.push(record);
  }

  async steps() {
    for (const step of this.spec.steps || []) {
      await this.step(step);
      this.result.steps_done += 1;
    }
  }

  async step(step) {
    if (step.send !== undefined) {
      const opcode = OPCODES[step.send];
      if (opcode === undefined) throw new Error(`unknown opcode ${step.send}`);
      let payload;
      if (step.send === "close") {
        const reason = Buffer.from(step.reason || "", "utf8");
        payload = Buffer.alloc(2 + reason.length);
        payload.writeUInt16BE(step.code, 0);
        reason.copy(payload, 2);
      } else if (step.file !== undefined) {
        payload = fs.readFileSync(step.file);
      } else if (step.hex !== undefined) {
        payload = Buffer.from(step.hex, "hex");
      } else {
        payload = Buffer.from(step.text || "", "utf8");
      }
      this.req.write(encode_frame(opcode, payload, step.fin !== false));
    } else if (step.recv !== undefined) {
      await this.until(() => this.result.messages.length >= step.recv, `${step.recv} messages`);
    } else if (step.recv_close) {
      await this.until(() => this.result.close !== null, "the close frame", true);
    } else if (step.signal !== undefined) {
      this.run.fire(step.signal);
    } else if (step.wait !== undefined) {
      await this.run.signal(step.wait);
    } else if (step.end) {
      this.req.end();
      await this.until(() => this.result.closed, "the stream to close", true);
    } else {
      throw new Error(`unknown step ${JSON.stringify(step)}`);
    }
  }

  fail(error) {
    if (!this.result.error) this.result.error = String(error.message || error);
    this.run.finished(this);
  }
}

// ---- the connection and its streams ----------------------------------------------

class Run {
  constructor(spec) {
    this.spec = spec;
    const url = new URL(spec.url);
    this.scheme = url.protocol === "https:" ? "https" : "http";
    this.authority = spec.authority || url.host;
    this.streams = spec.streams.map((s) => new WsStream(this, s));
    this.done = new Set();
    this.signals = new Map();  // name -> {fired, waiters}
    this.result = { alpn: null, connect_protocol: null, local_port: null, goaway: null, session_error: null,
                    timed_out: false };
  }

  signal(name) {
    const entry = this.entry(name);
    return entry.fired ? Promise.resolve() : new Promise((resolve) => entry.waiters.push(resolve));
  }

  fire(name) {
    const entry = this.entry(name);
    entry.fired = true;
    for (const resolve of entry.waiters.splice(0)) resolve();
  }

  entry(name) {
    if (!this.signals.has(name)) this.signals.set(name, { fired: false, waiters: [] });
    return this.signals.get(name);
  }

  start() {
    const options = { settings: { enablePush: false } };
    if (this.scheme === "https") {
      if (this.spec.ca) options.ca = fs.readFileSync(this.spec.ca);
      if (this.spec.servername) options.servername = this.spec.servername;
    }
    const session = http2.connect(this.spec.url, options);
    this.session = session;
    session.on("connect", () => {
      this.result.alpn = session.alpnProtocol || null;
    });
    session.on("error", (error) => {
      this.result.session_error = String(error.message || error);
      this.report();
    });
    session.on("goaway", (code, last_stream_id) => {
      this.result.goaway = { code, last_stream_id };
    });
    session.on("close", () => setImmediate(() => this.report_when_stuck()));
    session.once("remoteSettings", (settings) => {
      this.result.connect_protocol = Boolean(settings.enableConnectProtocol);
      this.result.local_port = session.socket ? session.socket.localPort : null;
      if (!settings.enableConnectProtocol) {
        this.result.session_error = "the server's SETTINGS lack SETTINGS_ENABLE_CONNECT_PROTOCOL";
        return this.report();
      }
      for (const stream of this.streams) {
        if (stream.spec.open_after) this.signal(stream.spec.open_after).then(() => stream.open());
        else stream.open();
      }
    });
    setTimeout(() => {
      this.result.timed_out = true;
      this.report();
    }, this.spec.timeout_ms || 15000).unref();
  }

  finished(stream) {
    if (this.done.has(stream)) return;
    const steps = (stream.spec.steps || []).length;
    const complete = stream.result.error || stream.result.closed ||
                     (stream.result.status === 200 && stream.result.steps_done === steps);
    if (!complete && stream.req) return;
    this.done.add(stream);
    this.fire(`${stream.spec.name}:done`);
    // Streams opened by that signal open in a microtask: look after them.
    setImmediate(() => this.report_when_stuck());
  }

  // Reports once every opened stream is done: a stream still waiting for a
  // signal then waits for one that nothing can fire any more.
  report_when_stuck() {
    if (this.streams.some((s) => s.req && !this.done.has(s))) return;
    for (const s of this.streams) {
      if (!s.req) s.result.error = `never opened: signal ${s.spec.open_after} did not fire`;
    }
    this.report();
  }

  // Reports on the next turn of the loop, so that the steps a stream's end
  // just failed have recorded why.
  report() {
    if (this.reported) return;
    this.reported = true;
    setImmediate(() => {
      const out = { ...this.result, streams: this.streams.map((s) => s.result) };
      process.stdout.write(JSON.stringify(out) + "\n", () => process.exit(0));
    });
  }
}

function main() {
  let spec;
  try {
    const arg = process.argv[2] || "";
    // A spec of many streams passes the 128 KiB limit of one argument: a file then.
    spec = JSON.parse(arg.startsWith("{") ? arg : fs.readFileSync(arg, "utf8"));
    if (!spec.url || !Array.isArray(spec.streams)) throw new Error("spec needs url and streams");
  } catch (error) {
    process.stderr.write(`h2ws_node: bad spec: ${error.message}\n`);
    process.exit(2);
  }
  const run = new Run(spec);
  process.on("uncaughtException", (error) => {
    run.result.session_error = `uncaught: ${error.stack || error}`;
    run.report();
  });
  run.start();
}

main();
