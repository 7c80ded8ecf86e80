// The module wrangler runs: worker-build's output (the Worker and the Durable Object classes
// compiled from Rust), with each class wrapped in a `DurableObject` subclass so it can be
// called over RPC: a room's `publish` and `forward`, a directory shard's `joined`. Each is a
// method call with the request's JSON text and the reply's JSON text: no Request, Response or
// body stream on either side (bench/README.md, "Single-event publishes"). Everything else
// still arrives through `fetch`.
import { DurableObject } from "cloudflare:workers";
import worker, * as built from "../../build/index.js";

/** A `DurableObject` holding an instance of the compiled class `Inner`. */
function wrapping(Inner) {
  return class extends DurableObject {
    constructor(ctx, env) {
      super(ctx, env);
      this.inner = new Inner(ctx, env);
    }
    fetch(request) {
      return this.inner.fetch(request);
    }
    alarm() {
      return this.inner.alarm();
    }
  };
}

function room(Inner) {
  return class extends wrapping(Inner) {
    /** The Worker's `/publish` share for this room (JSON text); its reply (JSON text). */
    publish(body) {
      return this.inner.publish(body);
    }
    /** On an inbox: copies forwarded by a linked channel (JSON text); the reply (JSON text). */
    forward(body) {
      return this.inner.forward(body);
    }
    webSocketMessage(ws, message) {
      return this.inner.webSocketMessage(ws, message);
    }
    // A departure: the close frame back first, here, with a literal reason (the runtime does
    // not answer a hibernatable socket's close itself, compatibility flag
    // `web_socket_auto_reply_to_close` notwithstanding, and the client would wait, then see
    // 1006: tests/gateway.rs); then the room, with the code alone. `close` throws only if
    // the socket is already closed, which is the goal anyway.
    webSocketClose(ws, code) {
      try { ws.close(1000, "closed"); } catch {}
      return this.inner.webSocketClose(ws, code);
    }
    webSocketError(ws) {
      try { ws.close(1000, "closed"); } catch {}
      return this.inner.webSocketError(ws);
    }
  };
}

// One compiled class (the kinds differ by policy, which comes from the channel) under the
// four names wrangler.toml binds.
export const OrdersRoom = room(built.RoomClass);
export const PaymentRoom = room(built.RoomClass);
export const ChatRoom = room(built.RoomClass);
export const InboxRoom = room(built.RoomClass);

export class RevocationDirectory extends wrapping(built.RevocationDirectory) {
  /** A room's record of users it does not know, before their welcome (JSON text in and out). */
  joined(body) {
    return this.inner.joined(body);
  }
}

export default worker;
