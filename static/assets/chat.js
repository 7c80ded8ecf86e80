// Chat widget: history (last 50 on connect), who is here (from `welcome`, then presence
// frames), and a send box. The author shown is the one the server stamped from the token,
// never what the page claims.
import { connect } from "/assets/foyer.js";
import { fromLink, showState } from "/assets/page.js";

const link = fromLink("open this page from your chat link");
const log = document.getElementById("log");

function line(cls, parts) {
  const li = document.createElement("li");
  li.className = cls;
  for (const [c, text] of parts) {
    const span = document.createElement("span");
    span.className = c;
    span.textContent = text;
    li.append(span);
  }
  log.append(li);
  log.scrollTop = log.scrollHeight;
}

const label = (m) => `${m.name ?? m.sub}${m.role ? ` (${m.role})` : ""}`;

function showPresence(presence) {
  if (!presence) return;
  document.getElementById("online").textContent = `· ${presence.count} online`;
  const people = document.getElementById("people");
  people.replaceChildren(...presence.members.map((m) => {
    const li = document.createElement("li");
    li.dataset.sub = m.sub;
    li.textContent = label(m);
    return li;
  }));
  const more = presence.count - presence.members.length;
  if (more > 0 && presence.members.length) people.append(Object.assign(document.createElement("li"), { textContent: `and ${more} more` }));
}

const live = link && connect({
  channel: link.channel, getToken: link.getToken, onState: showState,
  onEvent: (e) => {
    if (e.event !== "chat.message") return;
    const a = e.data?.author ?? {};
    line("msg", [["who", `${label({ sub: a.sub ?? "?", name: a.name, role: a.role })}: `], ["text", e.data?.text ?? ""]]);
  },
  onPresence: (change, presence) => {
    if (change.action !== "sync") line("note", [["note", `${change.name ?? change.sub} ${change.action}`]]);
    showPresence(presence);
  },
  onReset: () => line("note", [["note", "some earlier messages are no longer available"]]),
  onError: (e) => line("note", [["note", `not sent: ${e.message}`]]),
});

document.getElementById("form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const input = document.getElementById("text");
  if (live && input.value.trim() && live.send(input.value)) input.value = "";
});
