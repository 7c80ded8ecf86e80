// Shared page bits: the connection status light, and reading the page's link.
import { fragment } from "/assets/foyer.js";

const LABELS = { connecting: "connecting", open: "live", reconnecting: "reconnecting", offline: "offline", closed: "closed", failed: "stopped" };

export function showState(state, reason = "", detail = {}) {
  const el = document.getElementById("status");
  el.dataset.state = state;
  let text = LABELS[state] ?? state;
  if (state === "reconnecting" && detail.retryInMs > 1500) text += ` in ${Math.round(detail.retryInMs / 1000)} s`;
  el.textContent = reason && state !== "open" ? `${text}: ${reason}` : text;
  el.title = reason;
}

// The page's channel and token source from its link, trusting nothing else in it: the token
// leaves the address bar at once, `token_url` must be this origin (or one listed in
// <meta name="foyer-token-origins">). Returns null, with the reason shown, when the page
// cannot connect.
export function fromLink(missing) {
  const link = fragment();
  if (link.error) {
    showState("failed", link.error);
    return null;
  }
  if (!link.channel) {
    showState("closed", missing);
    return null;
  }
  return link;
}

// One row per order in `rows` (a <tbody>), created on its first event and updated in place;
// `empty` is hidden once there is one. The staff dashboard and the staff inbox share it.
export function renderOrder(rows, empty, e) {
  const d = e.data ?? {};
  if (!d.order) return;
  let row = document.getElementById(`order-${d.order}`);
  if (!row) {
    row = document.createElement("tr");
    row.id = `order-${d.order}`;
    row.innerHTML = "<td></td><td></td><td></td><td><span class=badge></span></td>";
    rows.prepend(row);
    empty.hidden = true;
  }
  const [order, seat, items, status] = row.children;
  order.textContent = d.order;
  if (d.seat) seat.textContent = d.seat;
  if (d.items) items.textContent = d.items.join(", ");
  const s = d.status ?? e.event.split(".").pop();
  status.firstChild.textContent = s;
  status.firstChild.className = `badge ${s}`;
}
