// Socket.IO clients for 91_socketio.py, with the default transports (HTTP
// long-polling first, then the upgrade to WebSocket):
//   node client.js URL CLIENTS EVENTS [SOURCE_ADDRESSES] [--cookies] [--timeout=MS]
// SOURCE_ADDRESSES is a comma-separated list of local addresses to bind, one
// per client in turn; --cookies keeps cookies per client (withCredentials),
// as Socket.IO documents for cookie-based sticky sessions. Each client sends
// half its events while polling, waits for the upgrade, sends the rest, and
// expects one "echo" per event, within MS milliseconds (default 30000).
// Prints one JSON summary on stdout.
"use strict";
const http = require("http");
const { io } = require("socket.io-client");

const args = process.argv.slice(2);
const cookies = args.includes("--cookies");
const timeoutArg = args.find((a) => a.startsWith("--timeout="));
const positional = args.filter((a) => !a.startsWith("--"));
const [url, clientCount, eventCount] = [positional[0], Number(positional[1]), Number(positional[2])];
const sources = positional[3] ? positional[3].split(",") : [];
const TIMEOUT_MS = timeoutArg ? Number(timeoutArg.split("=")[1]) : 30000;

function runClient(index) {
  return new Promise((resolve) => {
    const localAddress = sources.length ? sources[index % sources.length] : undefined;
    const agent = new http.Agent({ keepAlive: true, localAddress });
    const result = { index, localAddress: localAddress || "", sid: "", servers: [], received: 0,
                     upgraded: false, ok: false, errors: [] };
    const socket = io(url, { agent, localAddress, withCredentials: cookies, reconnection: false,
                             forceNew: true, timeout: 10000 });
    let sent = 0;
    let finished = false;
    const send = (n) => {
      for (let k = 0; k < n && sent < eventCount; k++) socket.emit("event", { client: index, n: sent++ });
    };
    const done = (why) => {
      if (finished) return;
      finished = true;
      if (why) result.errors.push(why);
      clearTimeout(timer);
      result.ok = !why && result.received === eventCount && result.upgraded && new Set(result.servers).size === 1;
      socket.close();
      agent.destroy();
      resolve(result);
    };
    const timer = setTimeout(() => done(`timeout: ${result.received}/${eventCount} echoes, upgraded=${result.upgraded}`),
                             TIMEOUT_MS);
    const maybeDone = () => {
      if (result.received === eventCount && result.upgraded) done();
    };
    const upgraded = () => {
      result.upgraded = true;
      send(eventCount);
      maybeDone();
    };
    socket.on("connect", () => {
      result.sid = socket.io.engine.id;
      send(Math.floor(eventCount / 2));
      // The upgrade may complete before the namespace is connected.
      if (socket.io.engine.transport.name === "websocket") {
        upgraded();
      } else {
        socket.io.engine.on("upgrade", (transport) => {
          if (transport.name === "websocket") upgraded();
        });
      }
    });
    socket.on("echo", (data) => {
      result.received += 1;
      result.servers.push(data.server);
      maybeDone();
    });
    socket.on("connect_error", (err) => done(`connect_error: ${err.message}`));
    socket.on("disconnect", (reason) => done(`disconnect: ${reason}`));
  });
}

(async () => {
  const results = await Promise.all(Array.from({ length: clientCount }, (_, i) => runClient(i)));
  process.stdout.write(JSON.stringify({ results }) + "\n");
  process.exit(0);
})();
