// Static asset build: the cure for stale JavaScript after deploys.
//
// Every file under static/ except HTML is published under a name that contains a hash of
// its content (`foyer.js` -> `foyer.3f9a0c1b2d.js`) and references to it in other files are
// rewritten, so a changed byte is a new URL and an unchanged file keeps its URL across
// builds. HTML keeps its name and is served `no-cache`; hashed files are `immutable`. The
// rules go into dist/static/_headers, which Workers static assets applies at the edge.
//
// The browser client's one source is client/foyer.js (also the @foyer/client package); it is
// published as /assets/foyer.js like any asset. Pages on other origins load the current
// client from the stable URL /client/foyer.js: a short-lived (max-age=60) 302 to the hashed,
// immutable file, written to dist/static/_redirects. Hashed assets carry
// `Access-Control-Allow-Origin: *` (public, credential-free code) so `import()` works from
// any origin.
// The build id (a hash of the assets and the Worker's sources) is stamped into the pages
// (`%FOYER_BUILD%`) and written to dist/build-id for the Worker's compile.
import { createHash } from "node:crypto";
import { mkdirSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { dirname, join, relative, sep } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const src = join(root, "static");
const out = join(root, "dist", "static");
const TEXT = /\.(html|js|mjs|css|json|svg|txt|webmanifest)$/;
const hash = (data) => createHash("sha256").update(data).digest("hex");

function walk(dir) {
  return readdirSync(dir).sort().flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? walk(path) : [path];
  });
}

// Sources outside static/: the client package's module, served as an asset.
const EXTRA = [[join(root, "client", "foyer.js"), "/assets/foyer.js"]];
// Stable URLs for other origins: path -> the asset it redirects to.
const STABLE = [["/client/foyer.js", "/assets/foyer.js"]];
const file = (path, url) => ({ path, url, html: path.endsWith(".html"), text: TEXT.test(path), data: readFileSync(path) });
const files = [
  ...walk(src).map((path) => file(path, "/" + relative(src, path).split(sep).join("/"))),
  ...EXTRA.map(([path, url]) => file(path, url)),
];
for (const [path, url] of EXTRA) {
  if (files.filter((f) => f.url === url).length > 1) throw new Error(`${url} comes from ${relative(root, path)} only; remove the copy under static/`);
}
const assets = files.filter((f) => !f.html);

// Hash leaves first: a file's hash covers the hashed names of what it references.
const hashedUrl = new Map();
const refsOf = (f) => (f.text ? assets.filter((a) => a !== f && f.data.includes(a.url)) : []);
const rewrite = (f) => {
  let text = f.data.toString("utf8");
  for (const a of refsOf(f)) text = text.split(a.url).join(hashedUrl.get(a.url));
  return text;
};
let pending = assets.slice();
while (pending.length) {
  const ready = pending.filter((f) => refsOf(f).every((a) => hashedUrl.has(a.url)));
  if (!ready.length) throw new Error("asset reference cycle: " + pending.map((f) => f.url).join(", "));
  for (const f of ready) {
    if (f.text) f.data = Buffer.from(rewrite(f));
    const dot = f.url.lastIndexOf(".");
    hashedUrl.set(f.url, `${f.url.slice(0, dot)}.${hash(f.data).slice(0, 10)}${f.url.slice(dot)}`);
  }
  pending = pending.filter((f) => !ready.includes(f));
}

// The build id covers what a client can see and the Worker that serves it.
const buildHash = createHash("sha256");
for (const [url, hashed] of [...hashedUrl].sort()) buildHash.update(url + "=" + hashed + "\n");
for (const f of files.filter((f) => f.html)) buildHash.update(f.url + "\n").update(f.data);
for (const path of [...walk(join(root, "src")), join(root, "Cargo.toml"), join(root, "Cargo.lock")]) {
  buildHash.update(relative(root, path) + "\n").update(readFileSync(path));
}
const buildId = buildHash.digest("hex").slice(0, 12);

rmSync(out, { recursive: true, force: true });
const headers = ["/*", "  X-Content-Type-Options: nosniff", ""];
for (const f of files) {
  const url = f.html ? f.url : hashedUrl.get(f.url);
  const data = f.html ? Buffer.from(rewrite(f).split("%FOYER_BUILD%").join(buildId)) : f.data;
  mkdirSync(dirname(join(out, url)), { recursive: true });
  writeFileSync(join(out, url), data);
  if (f.html) {
    // Every URL that serves this page: /x/index.html, /x/ and /x.
    const routes = [f.url];
    if (f.url.endsWith("/index.html")) {
      const dir = f.url.slice(0, -"index.html".length);
      routes.push(dir);
      if (dir !== "/") routes.push(dir.slice(0, -1));
    } else routes.push(f.url.slice(0, -".html".length));
    for (const r of routes) headers.push(r, "  Cache-Control: no-cache", "");
  } else {
    headers.push(url, "  Cache-Control: public, max-age=31536000, immutable", "  Access-Control-Allow-Origin: *", "");
  }
}
const redirects = [];
for (const [stable, asset] of STABLE) {
  redirects.push(`${stable} ${hashedUrl.get(asset)} 302`);
  headers.push(stable, "  Cache-Control: public, max-age=60", "  Access-Control-Allow-Origin: *", "");
}
writeFileSync(join(out, "_headers"), headers.join("\n"));
writeFileSync(join(out, "_redirects"), redirects.join("\n") + "\n");
writeFileSync(join(root, "dist", "build-id"), buildId);
writeFileSync(join(root, "dist", "manifest.json"), JSON.stringify(Object.fromEntries(hashedUrl), null, 2));
console.log(`[assets] ${assets.length} hashed, ${files.length - assets.length} pages, build ${buildId}`);
