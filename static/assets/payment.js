// Customer payment page: payment channels replay their history on connect, so the current
// status shows at once even if it was paid before the page opened.
import { connect } from "/assets/foyer.js";
import { fromLink, showState } from "/assets/page.js";

const link = fromLink("open this page from your order link");
document.getElementById("order").textContent = link ? link.channel.split(":")[1] : "";
const labels = { pending: "Payment pending…", paid: "Paid ✓ Thank you!", failed: "Payment failed", refunded: "Refunded" };

function render(e) {
  const status = e.data?.status ?? e.event.split(".").pop();
  const el = document.getElementById("payment");
  el.dataset.status = status;
  el.textContent = labels[status] ?? status;
  const li = document.createElement("li");
  li.textContent = `${new Date(e.ts).toLocaleTimeString()}: ${status}`;
  document.getElementById("history").append(li);
}

if (link) connect({ channel: link.channel, getToken: link.getToken, onEvent: render, onState: showState });
