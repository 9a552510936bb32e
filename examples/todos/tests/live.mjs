// The live page (/live: htmx + its SSE extension on sync.live_html) in headless Chromium,
// two browsers signed in as ann: a todo added, ticked and deleted in one shows in the other
// within 1 s (the ticked row's element swapped, the deleted one removed). Then the server
// restarts (this script prints "restart-server"; the test restarts the process on the same
// port and storage, then writes "server-restarted" to stdin) and each page carries on by
// itself: the stream reconnects and resumes from its Last-Event-ID (no list sent again), a
// todo added after shows within 1 s, the page was not reloaded, and no row shows twice.
// Sharing ann's list with bob shows it on bob's open page (the write calls sync.interrupt:
// his stream's shape function runs again and its new rows replace his list).
// Env: BASE_URL (the app), ARTIFACTS (screenshots go here), CHROMIUM.
import assert from 'node:assert/strict'
import { mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { closeAll, launch } from './chromium.mjs'

const { BASE_URL, ARTIFACTS } = process.env
assert(BASE_URL && ARTIFACTS, 'set BASE_URL and ARTIFACTS')
const SWAPPED = 1_000 // a write in one browser shows in the other within this (ms)
const input = createInterface({ input: process.stdin })
const stdin = input[Symbol.asyncIterator]()

// Before the page's own scripts: what each page's stream delivered, its (re)opens, and an
// id that a reload would change.
function watchStream() {
  window.__pageId = Math.random()
  window.__events = []
  window.__opens = 0
  document.addEventListener('htmx:sseMessage', (e) => window.__events.push({ id: e.detail.lastEventId, data: e.detail.data }))
  document.addEventListener('htmx:sseOpen', () => { window.__opens += 1 })
}

async function browser(name, user = 'ann') {
  const { context, page } = await launch(`live-${name}`, { width: 700, height: 600 })
  await context.addInitScript(watchStream)
  await page.goto(`${BASE_URL}/login?user=${user}`)
  await page.goto(`${BASE_URL}/live`)
  await page.locator('h1', { hasText: `${user}'s todos, live` }).waitFor()
  // The stream's first event: the rows (they replace the server-rendered ones).
  await page.waitForFunction(() => window.__events.length > 0, null, { timeout: 10_000 })
  return page
}

const row = (page, title) => page.locator(`tr[data-todo="${title}"]`)

async function add(page, title) {
  await page.fill('input[name="title"]', title)
  await page.click('form[action="/live/todos"] button')
}

async function shown(page) {
  const rows = await page.locator('#todos tr').evaluateAll((trs) => trs.map((tr) => [tr.id, tr.dataset.todo]))
  assert.equal(new Set(rows.map(([id]) => id)).size, rows.length, `a row twice: ${JSON.stringify(rows)}`)
  return rows.map(([, title]) => title).sort()
}

async function step(name, fn) {
  const started = Date.now()
  await fn()
  console.log(`ok ${name} (${Date.now() - started} ms)`)
}

try {
  const one = await browser('one')
  const two = await browser('two')
  const pages = [one, two]
  const pageIds = await Promise.all(pages.map((p) => p.evaluate(() => window.__pageId)))

  await step('both pages list the todos of ann', async () => {
    for (const page of pages) assert.deepEqual(await shown(page), ['bread', 'milk'])
  })

  await step('a todo added in one shows in the other within 1 s', async () => {
    await add(one, 'call mum')
    await row(two, 'call mum').waitFor({ timeout: SWAPPED })
    await row(one, 'call mum').waitFor({ timeout: SWAPPED })
    assert.equal(await one.inputValue('input[name="title"]'), '', 'the form was reset')
  })

  await step('ticking it swaps its element in the other', async () => {
    const before = await row(one, 'call mum').elementHandle()
    await row(two, 'call mum').locator('button[name="toggle"]').click()
    await one.locator('tr.done[data-todo="call mum"]').waitFor({ timeout: SWAPPED })
    assert.equal(await before.evaluate((tr) => tr.isConnected), false, 'the row element was replaced')
    assert.equal(await row(one, 'call mum').locator('button[name="toggle"]').textContent(), '☑')
  })

  await step('deleting it removes it from the other', async () => {
    await row(one, 'call mum').locator('button[name="delete"]').click()
    await row(two, 'call mum').waitFor({ state: 'detached', timeout: SWAPPED })
    await row(one, 'call mum').waitFor({ state: 'detached', timeout: SWAPPED })
  })

  await step("sharing ann's list shows it on bob's open page (sync.interrupt)", async () => {
    const bob = await browser('bob', 'bob')
    assert.deepEqual(await shown(bob), ['dishes', 'laundry'])
    const list = await one.inputValue('select[name="list_id"]')
    const shared = await one.evaluate((id) => fetch(`/api/lists/${id}/shares/bob`, { method: 'POST' }).then((r) => r.status), list)
    assert.equal(shared, 200)
    await row(bob, 'milk').waitFor({ timeout: 5_000 })
    assert.deepEqual(await shown(bob), ['bread', 'dishes', 'laundry', 'milk'])
  })

  const seen = await Promise.all(pages.map((p) => p.evaluate(() => [window.__events.length, window.__opens])))
  await step('the server restarts and each page reconnects by itself', async () => {
    console.log('restart-server')
    const answer = await stdin.next()
    assert.equal(answer.value, 'server-restarted')
    for (const [i, page] of pages.entries()) {
      await page.waitForFunction((opens) => window.__opens > opens, seen[i][1], { timeout: 30_000 })
    }
  })

  await step('a todo added after the restart shows in the other within 1 s', async () => {
    await add(two, 'after restart')
    await row(one, 'after restart').waitFor({ timeout: SWAPPED })
    await row(two, 'after restart').waitFor({ timeout: SWAPPED })
  })

  await step('no reload, no row twice, resumed from Last-Event-ID', async () => {
    for (const [i, page] of pages.entries()) {
      assert.equal(await page.evaluate(() => window.__pageId), pageIds[i], 'the page was reloaded')
      assert.deepEqual(await shown(page), ['after restart', 'bread', 'milk'])
      const events = await page.evaluate(() => window.__events)
      const handle = (event) => event.id.split('|')[0]
      const after = events.slice(seen[i][0])
      assert(after.length > 0, 'no event after the restart')
      // The list was not sent again: only the changes since the last event seen.
      for (const event of after) {
        assert(!event.data.includes('innerHTML:#todos'), `the list was sent again: ${event.data}`)
        assert.equal(handle(event), handle(events[0]), 'the same shape, resumed')
      }
    }
  })

  mkdirSync(ARTIFACTS, { recursive: true })
  await one.screenshot({ path: join(ARTIFACTS, 'live-one.png') })
  await two.screenshot({ path: join(ARTIFACTS, 'live-two.png') })
} finally {
  input.close() // else stdin keeps node running
  await closeAll()
}
