// The Django todos page in headless Chromium, as Ann and Bob in two browser contexts:
// each signs in with Django's login form and sees only their todos; Ann shares her list
// and Bob sees it; a write of one shows in the other's page within a second; TanStack
// DB's optimistic insert/update/delete each resolve isPersisted (the Writer's txid came
// back in the shape); unsharing takes the list off Bob's page.
// Env: BASE_URL (the app), DATABASE_URL (its database), ARTIFACTS (screenshots), PASSWORD.
import assert from 'node:assert/strict'
import { mkdirSync } from 'node:fs'
import { join } from 'node:path'
import pg from 'pg'
import { chromium } from 'playwright-core'

const { BASE_URL, DATABASE_URL, ARTIFACTS, PASSWORD } = process.env
assert(BASE_URL && DATABASE_URL && ARTIFACTS && PASSWORD, 'set BASE_URL, DATABASE_URL, ARTIFACTS and PASSWORD')
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium'
const FLAGS = [
  '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
]
const SECOND = 1_000
const db = new pg.Client({ connectionString: DATABASE_URL })
let browser

async function signIn(user) {
  const context = await browser.newContext({ viewport: { width: 900, height: 900 } })
  const page = await context.newPage()
  page.on('pageerror', (error) => console.error(`[${user}] page error: ${error}`))
  page.on('console', (message) => {
    // A 409 is the protocol's must-refetch (after an interrupt), not a failure.
    if (message.type() === 'error' && !message.text().includes('status of 409')) console.error(`[${user}] ${message.text()}`)
  })
  await page.goto(`${BASE_URL}/`)  // redirected to Django's login form
  await page.getByLabel('User name').fill(user)
  await page.getByLabel('Password').fill(PASSWORD)
  await page.getByRole('button', { name: 'Sign in' }).click()
  await page.locator('h1', { hasText: `${user}'s todos` }).waitFor()
  return page
}

const todo = (page, title) => page.locator(`li[data-todo="${title}"]`)

async function visible(page, titles, timeout = 10_000) {
  for (const title of titles) await todo(page, title).waitFor({ state: 'visible', timeout })
}

async function absent(page, titles, timeout = 10_000) {
  for (const title of titles) await todo(page, title).waitFor({ state: 'detached', timeout })
}

async function shownTitles(page) {
  return (await page.locator('li[data-todo]').evaluateAll((items) => items.map((li) => li.dataset.todo))).sort()
}

async function persisted(page, what) {
  await page.waitForFunction((w) => window.__persisted.some((e) => e.what === w && e.state !== 'pending'), what, { timeout: 15_000 })
  const entry = await page.evaluate((w) => window.__persisted.find((e) => e.what === w), what)
  assert.equal(entry.state, 'persisted', `${what}: ${entry.error}`)
}

async function step(name, fn) {
  const started = Date.now()
  await fn()
  console.log(`ok ${name} (${Date.now() - started} ms)`)
}

// How long until `check` passes after `act` (at most `timeout`).
async function within(timeout, act, check) {
  const started = Date.now()
  await act()
  await check(timeout)
  return Date.now() - started
}

try {
  await db.connect()
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: FLAGS })
  const ann = await signIn('ann')
  const bob = await signIn('bob')

  await step('each user sees only their todos', async () => {
    await visible(ann, ['milk', 'bread'])
    await visible(bob, ['dishes', 'laundry'])
    assert.deepEqual(await shownTitles(ann), ['bread', 'milk'])
    assert.deepEqual(await shownTitles(bob), ['dishes', 'laundry'])
  })

  await step('a list shared with bob appears on his page', async () => {
    const ms = await within(5 * SECOND, () => ann.getByRole('button', { name: 'share with bob' }).click(), async (timeout) => {
      await bob.locator('section', { hasText: 'shared by ann' }).waitFor({ timeout })
      await visible(bob, ['milk', 'bread'], timeout)
    })
    console.log(`  shown to bob after ${ms} ms`)
    await ann.getByRole('button', { name: 'unshare bob' }).waitFor()
  })

  await step("a todo ann adds shows on bob's page within a second", async () => {
    const input = ann.getByLabel("new todo in Ann's groceries")
    await input.fill('eggs')
    const ms = await within(SECOND, () => input.press('Enter'), (timeout) => visible(bob, ['eggs'], timeout))
    console.log(`  shown to bob after ${ms} ms`)
    await persisted(ann, 'add eggs')
    assert.equal(await todo(ann, 'eggs').count(), 1, 'the synced row replaced the optimistic one')
  })

  await step("bob ticks ann's todo: done on her page within a second", async () => {
    const ms = await within(SECOND, () => bob.getByLabel('done milk').check(),
      (timeout) => ann.locator('li.done[data-todo="milk"]').waitFor({ timeout }))
    console.log(`  shown to ann after ${ms} ms`)
    await persisted(bob, 'toggle milk')
    assert.equal((await db.query("SELECT done FROM todos_todo WHERE title = 'milk'")).rows[0].done, true)
  })

  await step('optimistic insert, update and delete are confirmed by their txid', async () => {
    const input = bob.getByLabel("new todo in Bob's chores")
    await input.fill('buy stamps')
    await input.press('Enter')
    await visible(bob, ['buy stamps'], SECOND)
    await persisted(bob, 'add buy stamps')
    const row = await db.query("SELECT t.done, l.name FROM todos_todo t JOIN todos_todolist l ON l.id = t.list_id WHERE t.title = 'buy stamps'")
    assert.deepEqual(row.rows, [{ done: false, name: "Bob's chores" }])

    await bob.getByLabel('done buy stamps').check()
    await persisted(bob, 'toggle buy stamps')
    await bob.locator('li.done[data-todo="buy stamps"]').waitFor()
    assert.equal((await db.query("SELECT done FROM todos_todo WHERE title = 'buy stamps'")).rows[0].done, true)

    await bob.getByLabel('delete laundry').click()
    await persisted(bob, 'delete laundry')
    await absent(bob, ['laundry'])
    assert.equal((await db.query("SELECT count(*)::int AS n FROM todos_todo WHERE title = 'laundry'")).rows[0].n, 0)
  })

  await step("unsharing takes ann's list off bob's page", async () => {
    await ann.getByRole('button', { name: 'unshare bob' }).click()
    await absent(bob, ['milk', 'bread', 'eggs'])
    await bob.locator('section', { hasText: 'shared by ann' }).waitFor({ state: 'detached' })
    assert.deepEqual(await shownTitles(bob), ['buy stamps', 'dishes'])
    assert.deepEqual(await shownTitles(ann), ['bread', 'eggs', 'milk'])
  })

  mkdirSync(ARTIFACTS, { recursive: true })
  await ann.screenshot({ path: join(ARTIFACTS, 'todos-ann.png'), fullPage: true })
  await bob.screenshot({ path: join(ARTIFACTS, 'todos-bob.png'), fullPage: true })
  console.log(`screenshots in ${ARTIFACTS}`)
} finally {
  await browser?.close().catch(() => {})
  await db.end().catch(() => {})
}
