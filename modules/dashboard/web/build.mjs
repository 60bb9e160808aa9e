// Bundles src/ into dist/: assets/app-<hash>.js and .css (fingerprinted: served with a
// year-long Cache-Control), and index.html naming them (served with no-cache).
// `make dashboard` runs it after `npm ci`. No source maps: nothing else is served.
import * as esbuild from "esbuild";
import { readFile, rm, mkdir, writeFile } from "node:fs/promises";
import path from "node:path";

const here = path.dirname(new URL(import.meta.url).pathname);
const dist = path.join(here, "dist");

await rm(dist, { recursive: true, force: true });
await mkdir(path.join(dist, "assets"), { recursive: true });

const result = await esbuild.build({
  entryPoints: { app: path.join(here, "src/main.js") },
  bundle: true,
  minify: true,
  format: "esm",
  target: ["es2020"],
  outdir: path.join(dist, "assets"),
  entryNames: "[name]-[hash]",
  assetNames: "[name]-[hash]",
  metafile: true,
  legalComments: "none",
  logLevel: "warning",
});

const outputs = Object.keys(result.metafile.outputs).map((p) => path.basename(p));
const js = outputs.find((n) => n.endsWith(".js"));
const css = outputs.find((n) => n.endsWith(".css"));
if (!js || !css) throw new Error(`build: expected a .js and a .css output, got ${outputs}`);

const template = await readFile(path.join(here, "src/index.html"), "utf8");
const html = template.replaceAll("{{js}}", `assets/${js}`).replaceAll("{{css}}", `assets/${css}`);
await writeFile(path.join(dist, "index.html"), html);
console.log(`dashboard: dist/index.html, dist/assets/${js}, dist/assets/${css}`);
