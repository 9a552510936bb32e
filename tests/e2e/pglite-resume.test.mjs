// Resuming with pglite-sync's `shapeKey`: the plugin stores the shape's handle and offset
// in PGlite (electric.subscriptions_metadata) with each commit; a later subscription with
// the same key -- in a PGlite reopened from its directory, or the same database after an
// unsubscribe -- continues from there and picks up what changed meanwhile.
//
// The PGlite tables have no primary key constraint, so a change applied twice (an insert
// replayed on resume) would leave a duplicate row that the model check sees.
import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, test } from 'node:test'
import { closeAll, shapeUrl, sql, uniqueTable } from './lib.mjs'
import { converge, newPGlite, shapeOptions, syncTable } from './pglite.mjs'

after(closeAll)

const LOCAL = 'CREATE TABLE notes (id int NOT NULL, body text NOT NULL, rev int NOT NULL)'

async function notesTable() {
  const table = uniqueTable('notes')
  await sql(`CREATE TABLE ${table} (id int PRIMARY KEY, body text NOT NULL, rev int NOT NULL DEFAULT 0)`)
  await sql(`INSERT INTO ${table} SELECT g, 'note ' || g, 0 FROM generate_series(1, 8) g`)
  return table
}

async function subscription(db, key) {
  const result = await db.query('SELECT shape_metadata, last_lsn FROM electric.subscriptions_metadata WHERE key = $1', [key])
  assert.equal(result.rows.length, 1, `a stored subscription ${key}`)
  return { ...result.rows[0].shape_metadata.shape, lastLsn: BigInt(result.rows[0].last_lsn) }
}

/** Changes made while nobody syncs: every kind, several transactions. */
async function changesWhileAway(table, base) {
  await sql(`INSERT INTO ${table} VALUES (${base}, 'away insert', 1)`)
  await sql(`UPDATE ${table} SET body = 'away update', rev = rev + 1 WHERE id = 1`)
  await sql(`DELETE FROM ${table} WHERE id = 2`)
  await sql(`BEGIN; INSERT INTO ${table} VALUES (${base + 1}, 'away tx', 1); UPDATE ${table} SET rev = 7 WHERE id = ${base}; COMMIT`)
}

/** The stored subscription is resumed: the first request carries its handle and offset. */
function assertResumed(requests, stored) {
  assert.ok(requests.length > 0)
  assert.equal(requests[0].searchParams.get('handle'), stored.handle)
  assert.equal(requests[0].searchParams.get('offset'), stored.offset)
  assert.ok(requests.every((url) => url.searchParams.get('offset') !== '-1'), 'no initial sync again')
}

test('a PGlite persisted to a directory resumes after a reopen', async () => {
  const table = await notesTable()
  const dir = await mkdtemp(join(tmpdir(), 'pglite-resume-'))
  const model = { upstream: `SELECT * FROM ${table}`, local: 'SELECT * FROM notes' }
  try {
    let db = await newPGlite(dir)
    await db.exec(LOCAL)
    let { sync, state } = await syncTable(db, { shape: shapeOptions({ table }), table: 'notes', shapeKey: 'notes' })
    await converge(db, { ...model, state, what: 'initial sync' })
    await sql(`UPDATE ${table} SET rev = 1 WHERE id = 3`)
    await converge(db, { ...model, state, what: 'a live change' })
    sync.unsubscribe()
    const stored = await subscription(db, 'notes')
    assert.match(stored.offset, /^\d+_\d+$/)
    await db.close()

    await changesWhileAway(table, 100)

    db = await newPGlite(dir)
    try {
      assert.deepEqual(await subscription(db, 'notes'), stored, 'the subscription survives the reopen')
      const requests = []
      ;({ sync, state } = await syncTable(db, {
        shape: shapeOptions({ table }, { requests }), table: 'notes', shapeKey: 'notes',
      }))
      await converge(db, { ...model, state, what: 'changes made while closed' })
      assertResumed(requests, stored)

      await sql(`INSERT INTO ${table} VALUES (200, 'live again', 0)`)
      await converge(db, { ...model, state, what: 'live after the resume' })
      const now = await subscription(db, 'notes')
      assert.equal(now.handle, stored.handle)
      assert.ok(now.lastLsn > stored.lastLsn, 'the stored position moved on')
      sync.unsubscribe()
    } finally {
      await db.close()
    }
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
})

test('the same in-memory PGlite re-subscribes with its shapeKey', async () => {
  const table = await notesTable()
  const where = 'id <= 4 OR id >= 100'
  const model = { upstream: `SELECT * FROM ${table} WHERE ${where}`, local: 'SELECT * FROM notes' }
  const db = await newPGlite()
  try {
    await db.exec(LOCAL)
    const options = (requests) => ({
      shape: shapeOptions({ table, where }, { requests }), table: 'notes', shapeKey: 'some-notes',
    })
    for (let round = 0; round < 3; round++) {
      const requests = []
      const stored = round === 0 ? null : await subscription(db, 'some-notes')
      const { sync, state } = await syncTable(db, options(requests))
      await converge(db, { ...model, state, what: `round ${round}` })
      if (stored) assertResumed(requests, stored)
      sync.unsubscribe()
      await changesWhileAway(table, 100 + 10 * round)
      await sql(`UPDATE ${table} SET rev = rev + 1 WHERE id = 1`)
    }
    const { sync, state } = await syncTable(db, options())
    await converge(db, { ...model, state, what: 'the last round' })
    sync.unsubscribe()
  } finally {
    await db.close()
  }
})

test('a resumed subscription whose shape was deleted meanwhile refetches', async () => {
  const table = await notesTable()
  const model = { upstream: `SELECT * FROM ${table}`, local: 'SELECT * FROM notes' }
  const db = await newPGlite()
  try {
    await db.exec(LOCAL)
    let { sync, state } = await syncTable(db, { shape: shapeOptions({ table }), table: 'notes', shapeKey: 'gone' })
    await converge(db, { ...model, state, what: 'initial sync' })
    sync.unsubscribe()
    const stored = await subscription(db, 'gone')

    const response = await fetch(shapeUrl({ handle: stored.handle }), { method: 'DELETE' })
    assert.equal(response.status, 202, await response.text())
    await changesWhileAway(table, 100)

    const requests = []
    ;({ sync, state } = await syncTable(db, {
      shape: shapeOptions({ table }, { requests }), table: 'notes', shapeKey: 'gone',
    }))
    await converge(db, { ...model, state, what: 'after the refetch' })
    assert.equal(requests[0].searchParams.get('handle'), stored.handle)
    assert.ok(requests.some((url) => url.searchParams.get('offset') === '-1'), 'a refetch from the start')
    assert.notEqual(sync.stream.shapeHandle, stored.handle)

    // The new handle is what is stored now, and what the next subscription resumes.
    sync.unsubscribe()
    const renewed = await subscription(db, 'gone')
    assert.equal(renewed.handle, sync.stream.shapeHandle)
    await changesWhileAway(table, 200)
    const again = []
    ;({ sync, state } = await syncTable(db, {
      shape: shapeOptions({ table }, { requests: again }), table: 'notes', shapeKey: 'gone',
    }))
    await converge(db, { ...model, state, what: 'resumed after the refetch' })
    assertResumed(again, renewed)
    sync.unsubscribe()
  } finally {
    await db.close()
  }
})
