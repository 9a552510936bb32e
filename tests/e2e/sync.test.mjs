// Initial sync and live insert/update/delete, through ShapeStream and through Shape.
import assert from 'node:assert/strict'
import { after, test } from 'node:test'
import { Shape, ShapeStream, isChangeMessage } from '@electric-sql/client'
import { SHAPE_URL, closeAll, follow, rowsOf, sortById, sql, uniqueTable, waitFor, withSecret } from './lib.mjs'

after(closeAll)

async function itemsTable() {
  const table = uniqueTable('items')
  await sql(`CREATE TABLE ${table} (id int PRIMARY KEY, title text NOT NULL, done boolean NOT NULL DEFAULT false, n int8)`)
  await sql(`INSERT INTO ${table} (id, title, n) VALUES (1, 'one', 10), (2, 'two', NULL), (3, 'three', 9007199254740993)`)
  return table
}

test('ShapeStream: initial sync, then live insert, update and delete', async () => {
  const table = await itemsTable()
  const f = follow({ table })
  await f.until((s) => s.rows.size === 3, 'initial rows')
  assert.deepEqual(rowsOf(f.state), [
    { id: 1, title: 'one', done: false, n: 10n },
    { id: 2, title: 'two', done: false, n: null },
    { id: 3, title: 'three', done: false, n: 9007199254740993n },
  ])
  const initial = f.changes()
  assert.equal(initial.length, 3)
  for (const m of initial) {
    assert.equal(m.headers.operation, 'insert')
    assert.deepEqual(m.headers.relation, ['public', table])
    assert.equal(m.key, `"public"."${table}"/"${m.value.id}"`)
  }
  assert.ok(f.stream.shapeHandle, 'the stream knows its handle')
  assert.equal(f.state.errors.length, 0)

  // live insert
  const before = f.state.messages.length
  const { rows: [{ xid }] } = await sql(`WITH i AS (INSERT INTO ${table} (id, title) VALUES (4, 'four') RETURNING 1) SELECT pg_current_xact_id()::xid::text AS xid FROM i`)
  await f.until((s) => s.rows.has(`"public"."${table}"/"4"`), 'live insert')
  const inserted = f.state.messages.slice(before).filter(isChangeMessage)
  assert.equal(inserted.length, 1)
  assert.equal(inserted[0].headers.operation, 'insert')
  assert.deepEqual(inserted[0].value, { id: 4, title: 'four', done: false, n: null })
  assert.deepEqual(inserted[0].headers.txids, [Number(xid)], 'txids carry the writing transaction id')
  assert.match(inserted[0].headers.lsn, /^\d+$/)
  assert.equal(inserted[0].headers.last, true)

  // live update: default replica sends the primary key and the changed columns
  const beforeUpdate = f.state.messages.length
  await sql(`UPDATE ${table} SET done = true WHERE id = 2`)
  await f.until((s) => s.rows.get(`"public"."${table}"/"2"`)?.done === true, 'live update')
  const updated = f.state.messages.slice(beforeUpdate).filter(isChangeMessage)
  assert.equal(updated.length, 1)
  assert.equal(updated[0].headers.operation, 'update')
  assert.deepEqual(updated[0].value, { id: 2, done: true })

  // live delete
  const beforeDelete = f.state.messages.length
  await sql(`DELETE FROM ${table} WHERE id = 1`)
  await f.until((s) => !s.rows.has(`"public"."${table}"/"1"`), 'live delete')
  const deleted = f.state.messages.slice(beforeDelete).filter(isChangeMessage)
  assert.equal(deleted.length, 1)
  assert.equal(deleted[0].headers.operation, 'delete')
  assert.deepEqual(deleted[0].value, { id: 1 })

  // a transaction with several changes arrives in one batch, in order
  const beforeTxn = f.state.batches.length
  await sql(`BEGIN; INSERT INTO ${table} (id, title) VALUES (5, 'five'); UPDATE ${table} SET title = 'FOUR' WHERE id = 4; DELETE FROM ${table} WHERE id = 3; COMMIT`)
  await f.until((s) => s.rows.size === 3 && s.rows.get(`"public"."${table}"/"4"`)?.title === 'FOUR', 'multi-change txn')
  const txnChanges = f.state.batches.slice(beforeTxn).flat().filter(isChangeMessage)
  assert.deepEqual(txnChanges.map((m) => m.headers.operation), ['insert', 'update', 'delete'])
  assert.equal(new Set(txnChanges.map((m) => m.headers.lsn)).size, 1, 'one transaction, one lsn')
  assert.deepEqual(txnChanges.map((m) => m.headers.last === true), [false, false, true])
  const positions = txnChanges.map((m) => m.headers.op_position)
  assert.deepEqual([...positions].sort((a, b) => a - b), positions, 'op positions increase')

  const { rows } = await sql(`SELECT id, title, done, n FROM ${table} ORDER BY id`)
  assert.deepEqual(rowsOf(f.state), rows.map((r) => ({ ...r, n: r.n === null ? null : BigInt(r.n) })))
  assert.equal(f.state.errors.length, 0)
  assert.equal(f.state.refetches, 0)
  f.close()
})

test('Shape: rows and subscribe reflect initial data and every live change', async () => {
  const table = await itemsTable()
  const controller = new AbortController()
  const stream = new ShapeStream({ url: SHAPE_URL, params: withSecret({ table, columns: ['id', 'title', 'done'] }), signal: controller.signal })
  const shape = new Shape(stream)
  try {
    const rows = await shape.rows
    assert.deepEqual(sortById(rows), [
      { id: 1, title: 'one', done: false },
      { id: 2, title: 'two', done: false },
      { id: 3, title: 'three', done: false },
    ])
    assert.equal(shape.isUpToDate, true)

    const notified = []
    shape.subscribe(({ rows }) => notified.push(sortById(rows)))
    const latest = () => notified[notified.length - 1]

    await sql(`INSERT INTO ${table} (id, title) VALUES (4, 'four')`)
    await waitFor(() => latest()?.length === 4, { what: 'insert notification' })
    assert.deepEqual(latest()[3], { id: 4, title: 'four', done: false })

    await sql(`UPDATE ${table} SET title = 'TWO', done = true WHERE id = 2`)
    await waitFor(() => latest()?.[1].title === 'TWO', { what: 'update notification' })
    assert.deepEqual(latest()[1], { id: 2, title: 'TWO', done: true }, 'update merged into the full row')

    await sql(`DELETE FROM ${table} WHERE id IN (1, 3)`)
    await waitFor(() => latest()?.length === 2, { what: 'delete notification' })
    assert.deepEqual(latest(), [
      { id: 2, title: 'TWO', done: true },
      { id: 4, title: 'four', done: false },
    ])
    assert.deepEqual(sortById(shape.currentRows), latest())
    // Subscribers are never shown partial transactions.
    for (const snapshot of notified) assert.ok(snapshot.length >= 2 && snapshot.length <= 4)
    assert.equal(shape.error, false)
  } finally {
    shape.unsubscribeAll()
    controller.abort()
  }
})

test('a Shape created after writes sees the current table; an empty table syncs to no rows', async () => {
  const table = uniqueTable('empty')
  await sql(`CREATE TABLE ${table} (id int PRIMARY KEY, v text)`)
  const controller = new AbortController()
  const shape = new Shape(new ShapeStream({ url: SHAPE_URL, params: withSecret({ table }), signal: controller.signal }))
  try {
    assert.deepEqual(await shape.rows, [])
    await sql(`INSERT INTO ${table} SELECT g, 'v' || g FROM generate_series(1, 500) g`)
    await waitFor(() => shape.currentRows.length === 500, { what: '500 rows' })
    const ids = shape.currentRows.map((r) => r.id).sort((a, b) => a - b)
    assert.deepEqual(ids, Array.from({ length: 500 }, (_, i) => i + 1))
  } finally {
    controller.abort()
  }
})
