// Staff dashboard: one row per order, updated in place as events arrive.
import { connect } from "/assets/foyer.js";
import { fromLink, showState } from "/assets/page.js";

const link = fromLink("open this page from the link scripts/dev prints");
document.getElementById("venue").textContent = link ? `· ${link.channel.split(":")[1]}` : "";
const rows = document.getElementById("orders");

function render(e) {
  const d = e.data ?? {};
  if (!d.order) return;
  let row = document.getElementById(`order-${d.order}`);
  if (!row) {
    row = document.createElement("tr");
    row.id = `order-${d.order}`;
    row.innerHTML = "<td></td><td></td><td></td><td><span class=badge></span></td>";
    rows.prepend(row);
    document.getElementById("empty").hidden = true;
  }
  const [order, seat, items, status] = row.children;
  order.textContent = d.order;
  if (d.seat) seat.textContent = d.seat;
  if (d.items) items.textContent = d.items.join(", ");
  const s = d.status ?? e.event.split(".").pop();
  status.firstChild.textContent = s;
  status.firstChild.className = `badge ${s}`;
}

if (link) {
  connect({ channel: link.channel, getToken: link.getToken, onEvent: render, onState: showState,
    onReset: () => { rows.replaceChildren(); } }); // a real dashboard reloads from its backend here
}
