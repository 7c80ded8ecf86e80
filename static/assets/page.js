// Shared page bits: the connection status light.
export function showState(state, reason = "") {
  const el = document.getElementById("status");
  el.dataset.state = state;
  el.textContent = reason && state !== "open" ? `${state}: ${reason}` : state;
}
