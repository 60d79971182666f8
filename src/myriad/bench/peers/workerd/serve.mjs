// Serve worker.js with workerd through miniflare, fully local.
//   node serve.mjs <port> <persist-dir>
// Prints "ready <url>" once workerd accepts connections; stops on SIGTERM/SIGINT.
import { build } from "esbuild";
import { Miniflare } from "miniflare";
import { fileURLToPath } from "node:url";
import path from "node:path";

const here = path.dirname(fileURLToPath(import.meta.url));
const [port, persist] = process.argv.slice(2);

const bundle = await build({
  entryPoints: [path.join(here, "worker.js")],
  nodePaths: [path.join(process.cwd(), "node_modules")],
  bundle: true,
  write: false,
  format: "esm",
  platform: "neutral",
  target: "es2022",
  conditions: ["workerd", "worker", "browser"],
  mainFields: ["module", "main"],
  external: ["cloudflare:*", "node:*", "path"],
  // one CommonJS dependency (mime-types) calls require("path"); workerd has no require
  banner: { js: 'import __path from "node:path"; const require = (m) => { if (m === "path") return __path; throw new Error(`require(${m})`); };' },
  logLevel: "error",
});

const mf = new Miniflare({
  modules: true,
  script: bundle.outputFiles[0].text,
  compatibilityDate: "2026-04-01",
  compatibilityFlags: ["nodejs_compat"],
  // new_sqlite_classes: SQLite-backed Durable Objects, one per agent
  durableObjects: { Counter: { className: "Counter", useSQLite: true } },
  durableObjectsPersist: persist,
  host: "127.0.0.1",
  port: Number(port),
});
const url = await mf.ready;
console.log(`ready ${url}`);

const stop = async () => {
  await mf.dispose();
  process.exit(0);
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
