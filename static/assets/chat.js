// Chat widget: history (last 50 on connect), presence, and a send box. The author shown is
// the one the server stamped from the token, never what the page claims.
import { connect, fragment } from "/assets/foyer.js";
import { showState } from "/assets/page.js";

const { channel, getToken } = fragment();
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

const live = channel && connect({
  channel, getToken, onState: showState,
  onEvent: (e) => {
    if (e.event !== "chat.message") return;
    const a = e.data?.author ?? {};
    line("msg", [["who", `${a.name ?? a.sub ?? "?"}${a.role ? ` (${a.role})` : ""}: `], ["text", e.data?.text ?? ""]]);
  },
  onPresence: (p) => {
    line("note", [["note", `${p.name ?? p.sub} ${p.action}`]]);
    document.getElementById("online").textContent = `· ${p.count} online`;
  },
  onError: (e) => line("note", [["note", `not sent: ${e.message}`]]),
});
if (!channel) showState("closed", "open this page from your chat link");

document.getElementById("form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const input = document.getElementById("text");
  if (live && input.value.trim() && live.send(input.value)) input.value = "";
});
