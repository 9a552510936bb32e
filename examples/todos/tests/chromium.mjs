// Headless Chromium for the example's browser tests (browser.mjs, live.mjs): each browser
// a fresh profile, closed and removed by closeAll(). Env: CHROMIUM (the binary).
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { chromium } from 'playwright-core'

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium'
const FLAGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
]
const profiles = []
const contexts = []

// A browser (a persistent context) named `name` and its first page, page errors logged.
export async function launch(name, viewport) {
  const profile = mkdtempSync(join(tmpdir(), `todos-${name}-`))
  profiles.push(profile)
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM, headless: true, args: FLAGS, viewport,
  })
  contexts.push(context)
  const page = context.pages()[0] ?? (await context.newPage())
  page.on('pageerror', (error) => console.error(`[${name}] page error: ${error}`))
  return { context, page }
}

export async function closeAll() {
  for (const context of contexts) await context.close().catch(() => {})
  for (const profile of profiles) rmSync(profile, { recursive: true, force: true })
}
