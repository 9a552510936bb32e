// Resuming a shape from a saved offset + handle.
import assert from 'node:assert/strict'
import { after, test } from 'node:test'
import { closeAll, follow, rowsOf, sql, uniqueTable, waitFor } from './lib.mjs'

after(closeAll)

async function notesTable() {
  const table = uniqueTable('notes')
  await sql(`CREATE TABLE ${table} (id int PRIMARY KEY, body text NOT NULL)`)
  await sql(`INSERT INTO ${table} SELECT g, 'note ' || g FROM generate_series(1, 5) g`)
  return table
}

test('a new ShapeStream with a saved offset and handle gets only later changes', async () => {
  const table = await notesTable()
  const first = follow({ table })
  await first.until((s) => s.rows.size === 5, 'initial rows')
  await sql(`INSERT INTO ${table} VALUES (6, 'note 6')`)
  await first.until((s) => s.rows.size === 6, 'live insert')
  const handle = first.stream.shapeHandle
  const offset = first.stream.lastOffset
  assert.match(offset, /^\d+_\d+$/, 'a real log offset after a live change')
  first.close()

  // Changes made while nobody is connected.
  await sql(`INSERT INTO ${table} VALUES (7, 'note 7')`)
  await sql(`UPDATE ${table} SET body = 'edited' WHERE id = 1`)
  await sql(`DELETE FROM ${table} WHERE id = 2`)

  const resumed = follow({ table }, { offset, handle })
  await resumed.until((s) => s.messages.some((m) => m.headers.operation === 'delete'), 'catch-up')
  assert.deepEqual(resumed.changes().map((m) => [m.headers.operation, m.value]), [
    ['insert', { id: 7, body: 'note 7' }],
    ['update', { id: 1, body: 'edited' }],
    ['delete', { id: 2 }],
  ])
  assert.equal(resumed.state.refetches, 0, 'no refetch for a valid handle')
  assert.equal(resumed.stream.shapeHandle, handle)

  // ... and it keeps following live.
  await sql(`INSERT INTO ${table} VALUES (8, 'note 8')`)
  await resumed.until((s) => s.rows.has(`"public"."${table}"/"8"`), 'live after resume')
  assert.equal(resumed.changes().length, 4)
  resumed.close()
})

test('resuming from the end of the snapshot (0_inf) gets every change after it', async () => {
  const table = await notesTable()
  const first = follow({ table }, { subscribe: false })
  await first.until((s) => s.rows.size === 5, 'initial rows')
  const handle = first.stream.shapeHandle
  const offset = first.stream.lastOffset
  assert.equal(offset, '0_inf', 'a caught-up fresh shape ends at 0_inf')
  first.close()

  await sql(`INSERT INTO ${table} VALUES (6, 'six')`)
  const resumed = follow({ table }, { offset, handle })
  await resumed.until((s) => s.rows.size === 1, 'one change after the snapshot')
  assert.deepEqual(rowsOf(resumed.state), [{ id: 6, body: 'six' }])
  resumed.close()
})

test('resuming with a stale handle gets a must-refetch and then the whole table', async () => {
  const table = await notesTable()
  const first = follow({ table })
  await first.until((s) => s.rows.size === 5, 'initial rows')
  const offset = first.stream.lastOffset
  first.close()

  const resumed = follow({ table }, { offset, handle: '12345-67890' })
  await waitFor(() => resumed.stream.isUpToDate && resumed.state.rows.size === 5, { what: 'refetched rows', state: resumed.state })
  assert.equal(resumed.state.refetches, 1)
  assert.notEqual(resumed.stream.shapeHandle, '12345-67890')
  assert.equal(resumed.stream.shapeHandle, first.stream.shapeHandle, 'the existing shape is adopted')
  resumed.close()
})
