// What the first storm of a fresh gateway pays the runtime for each Durable Object it wakes
// for the first time: Foyer's first batch reaches its room and 16 directory shards, the
// baseline's its room alone. GET / answers, in ms (median of 7 trials, each on objects never
// used before), the wall time of calls made in parallel to 16 objects, as the first batch
// makes them:
// - `fresh`: each object's first call, which creates one table and writes one row (the least
//   a directory shard does on its first record);
// - `warm`: the same 16 objects again, writing one row each;
// - `fresh_no_sql`: objects of the same class called for the first time, touching no storage.
// Under `wrangler dev` every object shares one thread, so the wall time is that thread's work.
import { DurableObject } from "cloudflare:workers";

export class Shard extends DurableObject {
  record(sub) {
    const sql = this.ctx.storage.sql;
    sql.exec("CREATE TABLE IF NOT EXISTS joined (sub TEXT PRIMARY KEY, at INTEGER NOT NULL)");
    sql.exec("INSERT OR REPLACE INTO joined (sub, at) VALUES (?, ?)", sub, Date.now());
    return 1;
  }
  ping() {
    return 1;
  }
}

const N = 16;

async function timed(env, tag, method) {
  const start = Date.now();
  await Promise.all(Array.from({ length: N }, (_, i) => env.SHARD.get(env.SHARD.idFromName(`${tag}/${i}`))[method](`u${i}`)));
  return Date.now() - start;
}

const median = (xs) => [...xs].sort((a, b) => a - b)[xs.length >> 1];

export default {
  async fetch(request, env) {
    if (new URL(request.url).pathname === "/healthz") return new Response("ok");
    const fresh = [];
    const warm = [];
    const bare = [];
    for (let trial = 0; trial < 7; trial++) {
      const tag = crypto.randomUUID();
      fresh.push(await timed(env, tag, "record"));
      warm.push(await timed(env, tag, "record"));
      bare.push(await timed(env, `${tag}-bare`, "ping"));
    }
    return Response.json({ objects: N, fresh: median(fresh), warm: median(warm), fresh_no_sql: median(bare), trials: { fresh, warm, bare } });
  },
};
