// The module wrangler runs: worker-build's output (the Worker and the Durable Object classes
// compiled from Rust), with each room class wrapped in a `DurableObject` subclass so the
// Worker can call it over RPC. A publish, and a batch of copies forwarded to an inbox, is a
// method call with the request's JSON text and the reply's JSON text: no Request, Response or
// body stream on either side (bench/README.md, "Single-event publishes"). Everything else
// still arrives through `fetch`.
import { DurableObject } from "cloudflare:workers";
import worker, * as built from "../../build/index.js";

function room(Inner) {
  return class extends DurableObject {
    constructor(ctx, env) {
      super(ctx, env);
      this.inner = new Inner(ctx, env);
    }
    fetch(request) {
      return this.inner.fetch(request);
    }
    /** The Worker's `/publish` share for this room (JSON text); its reply (JSON text). */
    publish(body) {
      return this.inner.publish(body);
    }
    /** On an inbox: copies forwarded by a linked channel (JSON text); the reply (JSON text). */
    forward(body) {
      return this.inner.forward(body);
    }
    alarm() {
      return this.inner.alarm();
    }
    webSocketMessage(ws, message) {
      return this.inner.webSocketMessage(ws, message);
    }
    webSocketClose(ws, code, reason, clean) {
      return this.inner.webSocketClose(ws, code, reason, clean);
    }
    webSocketError(ws, error) {
      return this.inner.webSocketError(ws, error);
    }
  };
}

export const OrdersRoom = room(built.OrdersRoom);
export const PaymentRoom = room(built.PaymentRoom);
export const ChatRoom = room(built.ChatRoom);
export const InboxRoom = room(built.InboxRoom);
export const RevocationDirectory = built.RevocationDirectory;
export default worker;
