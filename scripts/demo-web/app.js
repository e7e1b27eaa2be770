// wsgate demo chat. The gateway address comes from the page's query string
// (?ws=HOST:PORT), defaulting to this page's host name on port 8080; the user
// name may be preset with ?user=NAME. The WebSocket URL carries the user name
// in its query (/chat?user=NAME), which is what wsgate hashes on.
"use strict";

const params = new URLSearchParams(location.search);
const $ = (id) => document.getElementById(id);
const gateway = $("gateway");
const user = $("user");
const connectButton = $("connect");
const text = $("text");
const sendButton = $("send");
const log = $("log");
const backend = $("backend");
const state = $("state");

gateway.value = params.get("ws") || `${location.hostname || "127.0.0.1"}:8080`;
user.value = params.get("user") || "";

let socket = null;

function setState(name, label) {
  state.className = `state ${name}`;
  state.textContent = label;
  const open = name === "open";
  text.disabled = !open;
  sendButton.disabled = !open;
  connectButton.textContent = name === "closed" ? "Connect" : "Disconnect";
  gateway.disabled = user.disabled = name !== "closed";
}

// Appends one line; <parts> are [className, text] pairs, rendered as text
// (never as HTML: chat text comes from other users).
function append(kind, parts, data = {}) {
  const item = document.createElement("li");
  item.className = kind;
  Object.assign(item.dataset, data);
  for (const [className, content] of parts) {
    const span = document.createElement("span");
    if (className) span.className = className;
    span.textContent = content;
    item.append(span);
  }
  log.append(item);
  log.scrollTop = log.scrollHeight;
}

function system(message, kind = "system") {
  append(kind, [["", message]]);
}

function onMessage(event) {
  let message;
  try {
    message = JSON.parse(event.data);
  } catch {
    system(`echo: ${event.data}`);
    return;
  }
  if (message.type === "hello") {
    backend.textContent = message.backend;
    system(`connected; pinned to back end ${message.backend}`);
    socket.send(JSON.stringify({ type: "join", user: user.value }));
  } else if (message.type === "chat") {
    append("chat", [["user", `${message.user}: `], ["text", message.text], ["via", `  (via ${message.backend})`]],
           { user: message.user, backend: message.backend });
  } else {
    system(`echo: ${event.data}`);
  }
}

function connect() {
  const name = user.value.trim();
  if (!name) {
    user.focus();
    return;
  }
  user.value = name;
  // wss:// from a page served over https (mixed content is blocked); over
  // HTTP/2 the browser may then open the socket inside the page's connection.
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const url = `${scheme}://${gateway.value.trim()}/chat?user=${encodeURIComponent(name)}`;
  system(`connecting to ${url}`);
  setState("connecting", "connecting");
  socket = new WebSocket(url);
  socket.addEventListener("open", () => setState("open", "connected"));
  socket.addEventListener("message", onMessage);
  socket.addEventListener("close", (event) => {
    const reason = event.reason ? ` ${event.reason}` : "";
    system(`closed (code ${event.code}${reason})`, event.wasClean ? "system" : "error");
    backend.textContent = "\u2014";
    socket = null;
    setState("closed", "disconnected");
  });
}

$("connect-form").addEventListener("submit", (event) => {
  event.preventDefault();
  if (socket) {
    socket.close(1000, "bye");
  } else {
    connect();
  }
});

$("send-form").addEventListener("submit", (event) => {
  event.preventDefault();
  if (!socket || socket.readyState !== WebSocket.OPEN || !text.value) return;
  socket.send(JSON.stringify({ type: "chat", text: text.value }));
  text.value = "";
  text.focus();
});

setState("closed", "disconnected");
