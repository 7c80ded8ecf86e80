// Staff inbox: one socket to `inbox:{venue}` follows the venue's live orders and every chat
// linked into it (protocol v1.2). Each event says where it comes from (`source`): orders go
// to the table, chat messages to their conversation, with unread counts; a reply names its
// chat and goes over the same socket. Reconnects resume with `since`, like every page.
import { connect } from "/assets/foyer.js";
import { fromLink, renderOrder, showState } from "/assets/page.js";

const link = fromLink("open this page from the link scripts/dev prints");
document.getElementById("venue").textContent = link ? `· ${link.channel.split(":")[1]}` : "";
const rows = document.getElementById("orders");
const list = document.getElementById("chats");
const log = document.getElementById("log");
const chats = new Map(); // chat channel → { messages, unread, item }
let open = null;

const order = (e) => renderOrder(rows, document.getElementById("no-orders"), e);

const label = (a) => `${a.name ?? a.sub ?? "?"}${a.role ? ` (${a.role})` : ""}`;

function entry(channel, message) {
  const li = document.createElement("li");
  li.className = "msg";
  const who = Object.assign(document.createElement("span"), { className: "who", textContent: `${label(message.author ?? {})}: ` });
  li.append(who, Object.assign(document.createElement("span"), { className: "text", textContent: message.text ?? "" }));
  return li;
}

function chat(channel, e) {
  let c = chats.get(channel);
  if (!c) {
    const item = document.createElement("li");
    const button = Object.assign(document.createElement("button"), { type: "button" });
    button.dataset.chat = channel;
    button.addEventListener("click", () => show(channel));
    item.append(button);
    list.prepend(item);
    c = { messages: [], unread: 0, item, button };
    chats.set(channel, c);
    document.getElementById("no-chats").hidden = true;
  }
  c.messages.push(e.data ?? {});
  if (open === channel) log.append(entry(channel, e.data ?? {}));
  else c.unread += 1;
  list.prepend(c.item); // the latest conversation first
  paint(channel);
  log.scrollTop = log.scrollHeight;
}

function paint(channel) {
  const c = chats.get(channel);
  const last = c.messages.at(-1) ?? {};
  c.button.textContent = `${channel.split(":")[1]} · ${label(last.author ?? {})}: ${last.text ?? ""}`;
  c.button.dataset.unread = c.unread;
  c.item.classList.toggle("unread", c.unread > 0);
  c.item.classList.toggle("open", open === channel);
  if (c.unread > 0) c.button.append(Object.assign(document.createElement("span"), { className: "count", textContent: String(c.unread) }));
}

function show(channel) {
  open = channel;
  const c = chats.get(channel);
  c.unread = 0;
  log.replaceChildren(...c.messages.map((m) => entry(channel, m)));
  document.getElementById("chat-title").textContent = channel;
  document.getElementById("conversation").hidden = false;
  for (const name of chats.keys()) paint(name);
  document.getElementById("text").focus();
}

const live = link && connect({
  channel: link.channel, getToken: link.getToken, onState: showState,
  onEvent: (e) => {
    const from = e.source?.channel ?? "";
    if (from.startsWith("chat:") && e.event === "chat.message") chat(from, e);
    else order(e);
  },
  onReset: () => { rows.replaceChildren(); }, // a real inbox reloads from its backend here
  onError: (e) => {
    const note = Object.assign(document.createElement("li"), { className: "note", textContent: `not sent: ${e.message}` });
    log.append(note);
  },
});

document.getElementById("form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const input = document.getElementById("text");
  if (live && open && input.value.trim() && live.send(input.value, { channel: open })) input.value = "";
});
