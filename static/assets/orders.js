// Staff dashboard: one row per order, updated in place as events arrive.
import { connect } from "/assets/foyer.js";
import { fromLink, renderOrder, showState } from "/assets/page.js";

const link = fromLink("open this page from the link scripts/dev prints");
document.getElementById("venue").textContent = link ? `· ${link.channel.split(":")[1]}` : "";
const rows = document.getElementById("orders");

const render = (e) => renderOrder(rows, document.getElementById("empty"), e);

if (link) {
  connect({ channel: link.channel, getToken: link.getToken, onEvent: render, onState: showState,
    onReset: () => { rows.replaceChildren(); } }); // a real dashboard reloads from its backend here
}
