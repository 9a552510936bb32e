// The todos page in headless Chromium, as two users at once (two browsers, each with a
// fresh profile): each sees only their todos; a row inserted in Postgres shows within 2 s;
// sharing a list, moving a todo out of view and unsharing show and hide rows; TanStack DB's
// optimistic insert/update/delete each resolve isPersisted (the Writer's txid synced back).
// Env: BASE_URL (the app), DATABASE_URL (its database), ARTIFACTS (screenshots go here).
import assert from 'node:assert/strict'
import { mkdirSync } from 'node:fs'
import { join } from 'node:path'
import pg from 'pg'
import { closeAll, launch } from './chromium.mjs'

const { BASE_URL, DATABASE_URL, ARTIFACTS } = process.env
assert(BASE_URL && DATABASE_URL && ARTIFACTS, 'set BASE_URL, DATABASE_URL and ARTIFACTS')
const db = new pg.Client({ connectionString: DATABASE_URL })

async function browserFor(user) {
  const { page } = await launch(user, { width: 900, height: 900 })
  page.on('console', (message) => {
    // A 409 is the protocol's must-refetch (after an interrupt), not a failure.
    if (message.type() === 'error' && !message.text().includes('status of 409')) console.error(`[${user}] ${message.text()}`)
  })
  await page.goto(`${BASE_URL}/login?user=${user}`)
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

try {
  await db.connect()
  const ann = await browserFor('ann')
  const bob = await browserFor('bob')
  const listOf = async (owner) => (await db.query('SELECT id FROM lists WHERE owner = $1 ORDER BY id LIMIT 1', [owner])).rows[0].id
  const annList = await listOf('ann')
  const bobList = await listOf('bob')

  await step('each user sees only their todos', async () => {
    await visible(ann, ['milk', 'bread'])
    await visible(bob, ['dishes', 'laundry'])
    assert.deepEqual(await shownTitles(ann), ['bread', 'milk'])
    assert.deepEqual(await shownTitles(bob), ['dishes', 'laundry'])
  })

  await step('a row inserted in Postgres appears within 2 s', async () => {
    const started = Date.now()
    await db.query("INSERT INTO todos (id, list_id, title, done) VALUES (gen_random_uuid(), $1, 'from postgres', false)", [annList])
    await visible(ann, ['from postgres'], 2_000)
    console.log(`  shown after ${Date.now() - started} ms`)
    assert.equal(await todo(bob, 'from postgres').count(), 0)
  })

  await step('a list shared with bob appears on his page', async () => {
    await ann.getByRole('button', { name: 'share with bob' }).click()
    await visible(bob, ['milk', 'bread', 'from postgres'])
    await bob.locator('section', { hasText: 'shared by ann' }).waitFor()
  })

  await step('a todo moved out of ann\'s view disappears for her, appears for bob', async () => {
    await db.query("UPDATE todos SET list_id = $1 WHERE title = 'dishes'", [annList])
    await db.query("UPDATE todos SET list_id = $1 WHERE title = 'from postgres'", [bobList])
    await absent(ann, ['from postgres'])
    await visible(ann, ['dishes'])
    assert.deepEqual(await shownTitles(ann), ['bread', 'dishes', 'milk'])
  })

  await step('unsharing takes ann\'s list away from bob', async () => {
    await ann.getByRole('button', { name: 'unshare bob' }).click()
    await absent(bob, ['milk', 'bread', 'dishes'])
    assert.deepEqual(await shownTitles(bob), ['from postgres', 'laundry'])
  })

  await step('optimistic insert, update and delete are persisted through the Writer', async () => {
    const input = bob.getByLabel("new todo in Bob's chores")
    await input.fill('buy stamps')
    await input.press('Enter')
    await visible(bob, ['buy stamps'], 2_000)
    await persisted(bob, 'add buy stamps')
    assert.equal(await todo(bob, 'buy stamps').count(), 1, 'the synced row replaced the optimistic one')
    const row = await db.query("SELECT list_id, done FROM todos WHERE title = 'buy stamps'")
    assert.deepEqual(row.rows, [{ list_id: bobList, done: false }])

    await bob.getByLabel('done buy stamps').check()
    await persisted(bob, 'toggle buy stamps')
    assert.equal((await db.query("SELECT done FROM todos WHERE title = 'buy stamps'")).rows[0].done, true)
    await bob.locator('li.done[data-todo="buy stamps"]').waitFor()

    await bob.getByLabel('delete laundry').click()
    await persisted(bob, 'delete laundry')
    await absent(bob, ['laundry'])
    assert.equal((await db.query("SELECT count(*)::int AS n FROM todos WHERE title = 'laundry'")).rows[0].n, 0)
  })

  mkdirSync(ARTIFACTS, { recursive: true })
  await ann.screenshot({ path: join(ARTIFACTS, 'todos-ann.png'), fullPage: true })
  await bob.screenshot({ path: join(ARTIFACTS, 'todos-bob.png'), fullPage: true })
  console.log(`screenshots in ${ARTIFACTS}`)
} finally {
  await closeAll()
  await db.end().catch(() => {})
}
