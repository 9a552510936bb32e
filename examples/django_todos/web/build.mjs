// Bundles the page into static/app.js (checked in, so the example runs without Node);
// `node web/build.mjs OUT` writes elsewhere (the tests rebuild and compare).
import { build } from 'esbuild'
import { fileURLToPath } from 'node:url'

const outfile = process.argv[2] ?? fileURLToPath(new URL('../static/app.js', import.meta.url))
await build({
  entryPoints: [fileURLToPath(new URL('main.jsx', import.meta.url))],
  bundle: true, minify: true, format: 'esm', target: 'es2022', jsx: 'automatic',
  legalComments: 'none', define: { 'process.env.NODE_ENV': '"production"' }, outfile, logLevel: 'warning',
})
