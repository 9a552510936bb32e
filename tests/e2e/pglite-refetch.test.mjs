// pglite-sync after a 409 must-refetch (upstream TRUNCATE, DELETE /v1/shape): the plugin
// empties the PGlite table, loads the new shape, and ends equal to upstream again.
import assert from 'node:assert/strict'
import { after, test } from 'node:test'
import { closeAll, shapeUrl, sql, uniqueTable, waitFor } from './lib.mjs'
import { converge, newPGlite, shapeOptions, syncTable } from './pglite.mjs'

after(closeAll)

async function thingsTable() {
  const table = uniqueTable('things')
  await sql(`CREATE TABLE ${table} (id int PRIMARY KEY, name text NOT NULL, tag text)`)
  await sql(`INSERT INTO ${table} SELECT g, 'old ' || g, CASE WHEN g % 2 = 0 THEN 'even' END FROM generate_series(1, 10) g`)
  return table
}

async function synced(table, params = {}, local = 'SELECT * FROM things') {
  const db = await newPGlite()
  await db.exec('CREATE TABLE things (id int PRIMARY KEY, name text NOT NULL, tag text)')
  const requests = []
  const { sync, state } = await syncTable(db, { shape: shapeOptions({ table, ...params }, { requests }), table: 'things' })
  const model = { upstream: `SELECT * FROM ${table}${params.where ? ` WHERE ${params.where}` : ''}`, local, state }
  await converge(db, { ...model, what: 'initial sync' })
  return { db, sync, state, model, requests }
}

const refetched = (requests) => requests.filter((url) => url.searchParams.get('offset') === '-1').length

test('TRUNCATE upstream: PGlite drops the old rows and loads the new content', async () => {
  const table = await thingsTable()
  const { db, sync, model, requests } = await synced(table)
  try {
    const handle = sync.stream.shapeHandle
    await sql(`TRUNCATE ${table}`)
    await sql(`INSERT INTO ${table} VALUES (100, 'new 100', NULL), (2, 'new 2', 'even')`)
    const rows = await converge(db, { ...model, what: 'after TRUNCATE' })
    assert.equal(rows.length, 2)
    assert.equal(refetched(requests), 2, 'the initial sync and one refetch')
    await waitFor(() => sync.stream.shapeHandle && sync.stream.shapeHandle !== handle, { what: 'a new handle' })

    // The new shape is live.
    await sql(`UPDATE ${table} SET name = 'renamed' WHERE id = 100`)
    await sql(`INSERT INTO ${table} VALUES (3, 'three', NULL)`)
    await converge(db, { ...model, what: 'live after the refetch' })
    sync.unsubscribe()
  } finally {
    await db.close()
  }
})

test('TRUNCATE and INSERT in one transaction, on a WHERE shape', async () => {
  const table = await thingsTable()
  const where = "tag = 'even'"
  const { db, sync, model } = await synced(table, { where })
  try {
    await sql(`BEGIN; TRUNCATE ${table};
      INSERT INTO ${table} VALUES (1, 'fresh', 'even'), (7, 'odd', NULL), (8, 'eight', 'even'); COMMIT`)
    const rows = await converge(db, { ...model, what: 'after TRUNCATE + INSERT' })
    assert.equal(rows.length, 2)
    sync.unsubscribe()
  } finally {
    await db.close()
  }
})

test('DELETE /v1/shape: PGlite refetches into the new shape', async () => {
  const table = await thingsTable()
  const { db, sync, model, requests } = await synced(table)
  try {
    const handle = sync.stream.shapeHandle
    await sql(`UPDATE ${table} SET name = 'before delete' WHERE id = 1`)
    await converge(db, { ...model, what: 'a change before the delete' })

    const response = await fetch(shapeUrl({ handle }), { method: 'DELETE' })
    assert.equal(response.status, 202, await response.text())
    await sql(`INSERT INTO ${table} VALUES (11, 'after delete', NULL)`)
    await sql(`DELETE FROM ${table} WHERE id = 5`)
    await converge(db, { ...model, what: 'after DELETE /v1/shape' })
    await waitFor(() => refetched(requests) === 2, { what: 'one refetch' })
    assert.notEqual(sync.stream.shapeHandle, handle)

    await sql(`UPDATE ${table} SET tag = 'late' WHERE id = 11`)
    await converge(db, { ...model, what: 'live after the refetch' })
    sync.unsubscribe()
  } finally {
    await db.close()
  }
})
