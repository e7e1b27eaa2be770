// A Socket.IO back end for 91_socketio.py: `node server.js ID PORT EVENTS_FILE`.
// Echoes every "event" as an "echo" naming this back end, and appends one JSON
// line per HTTP request and upgrade it sees (with the engine.io session id and
// transport), per engine.io session opened, and per connection error (such as
// "Session ID unknown") to EVENTS_FILE. Prints "listening PORT" when bound and
// exits when its parent goes away.
"use strict";
const fs = require("fs");
const http = require("http");
const { Server } = require("socket.io");

const [id, port, eventsFile] = process.argv.slice(2);
const out = fs.openSync(eventsFile, "a");
const log = (record) => fs.writeSync(out, JSON.stringify({ backend: id, ...record }) + "\n");

const httpServer = http.createServer();
const io = new Server(httpServer, { cors: { origin: true, credentials: true } });

const query = (url) => new URL(url, "http://x").searchParams;
// Added after the engine attached itself, so it sees the engine's requests too.
httpServer.on("request", (req) => {
  const q = query(req.url);
  log({ kind: "http", method: req.method, sid: q.get("sid"), transport: q.get("transport"),
        cookie: req.headers.cookie || "", xff: req.headers["x-forwarded-for"] || "" });
});
httpServer.on("upgrade", (req) => {
  const q = query(req.url);
  log({ kind: "upgrade", sid: q.get("sid"), transport: q.get("transport"), cookie: req.headers.cookie || "",
        xff: req.headers["x-forwarded-for"] || "" });
});
io.engine.on("connection", (socket) => log({ kind: "open", sid: socket.id }));
io.engine.on("connection_error", (err) => log({ kind: "error", code: err.code, message: err.message }));

io.on("connection", (socket) => {
  socket.on("event", (data) => socket.emit("echo", { ...data, server: id }));
});

httpServer.listen(Number(port), "127.0.0.1", () => {
  process.stdout.write(`listening ${httpServer.address().port}\n`);
});
// The test harness kills us by PID; this covers a parent that died first.
setInterval(() => {
  if (process.ppid === 1) process.exit(0);
}, 500);
