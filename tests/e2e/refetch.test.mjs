// Recovery from 409 must-refetch: TRUNCATE of the table and DELETE /v1/shape.
import assert from 'node:assert/strict'
import { after, test } from 'node:test'
import { Shape, ShapeStream } from '@electric-sql/client'
import { SHAPE_URL, closeAll, follow, rowsOf, shapeUrl, sortById, sql, uniqueTable, waitFor, withSecret } from './lib.mjs'

after(closeAll)

async function thingsTable() {
  const table = uniqueTable('things')
  await sql(`CREATE TABLE ${table} (id int PRIMARY KEY, name text NOT NULL)`)
  await sql(`INSERT INTO ${table} SELECT g, 'old ' || g FROM generate_series(1, 5) g`)
  return table
}

const current = async (table) => (await sql(`SELECT id, name FROM ${table} ORDER BY id`)).rows

test('TRUNCATE: ShapeStream gets must-refetch and converges to the new table content', async () => {
  const table = await thingsTable()
  const f = follow({ table })
  await f.until((s) => s.rows.size === 5, 'initial rows')
  const oldHandle = f.stream.shapeHandle

  await sql(`TRUNCATE ${table}`)
  await sql(`INSERT INTO ${table} VALUES (10, 'new 10'), (11, 'new 11')`)
  await f.until((s) => s.refetches >= 1 && s.rows.size === 2, 'refetched content')
  assert.deepEqual(rowsOf(f.state), await current(table))
  assert.notEqual(f.stream.shapeHandle, oldHandle, 'a new shape handle after the refetch')
  const refetch = f.state.messages.findIndex((m) => m.headers.control === 'must-refetch')
  assert.ok(refetch > 0)
  assert.ok(
    f.state.messages.slice(refetch).every((m) => !m.key || !m.key.endsWith('/"1"')),
    'no old rows after the must-refetch',
  )

  // The new shape is live too.
  await sql(`UPDATE ${table} SET name = 'renamed' WHERE id = 10`)
  await f.until((s) => s.rows.get(`"public"."${table}"/"10"`)?.name === 'renamed', 'live after refetch')
  assert.deepEqual(rowsOf(f.state), await current(table))
  assert.equal(f.state.errors.length, 0)
  f.close()
})

test('TRUNCATE and INSERT in one transaction: Shape converges', async () => {
  const table = await thingsTable()
  const controller = new AbortController()
  const shape = new Shape(new ShapeStream({ url: SHAPE_URL, params: withSecret({ table }), signal: controller.signal }))
  try {
    assert.equal((await shape.rows).length, 5)
    await sql(`BEGIN; TRUNCATE ${table}; INSERT INTO ${table} VALUES (1, 'fresh'), (42, 'answer'); COMMIT`)
    const expected = await current(table)
    await waitFor(
      () => shape.isUpToDate && JSON.stringify(sortById(shape.currentRows)) === JSON.stringify(expected),
      { what: 'Shape converges after truncate' },
    )
    assert.equal(shape.error, false)
  } finally {
    controller.abort()
  }
})

test('DELETE /v1/shape by handle: clients refetch into a new shape', async () => {
  const table = await thingsTable()
  const a = follow({ table })
  const b = follow({ table, columns: ['id'] })
  await a.until((s) => s.rows.size === 5, 'initial rows')
  await b.until((s) => s.rows.size === 5, 'initial rows (columns)')
  const handle = a.stream.shapeHandle
  const otherHandle = b.stream.shapeHandle

  // Unknown handle: 404.
  const missing = await fetch(shapeUrl({ handle: '0-0' }), { method: 'DELETE' })
  assert.equal(missing.status, 404)

  const response = await fetch(shapeUrl({ handle }), { method: 'DELETE' })
  assert.equal(response.status, 202, await response.text())
  assert.equal(response.headers.get('electric-handle'), handle)

  await sql(`INSERT INTO ${table} VALUES (6, 'after delete')`)
  await a.until((s) => s.refetches === 1 && s.rows.size === 6, 'refetched rows')
  assert.notEqual(a.stream.shapeHandle, handle)
  assert.deepEqual(rowsOf(a.state), await current(table))

  // The other shape of the same table was not deleted: no refetch, just the live insert.
  await b.until((s) => s.rows.size === 6, 'live insert on the other shape')
  assert.equal(b.state.refetches, 0)
  assert.equal(b.stream.shapeHandle, otherHandle)

  // The deleted handle is gone for good: deleting it again is a 404.
  const again = await fetch(shapeUrl({ handle }), { method: 'DELETE' })
  assert.equal(again.status, 404)

  await sql(`DELETE FROM ${table} WHERE id = 1`)
  await a.until((s) => s.rows.size === 5, 'live delete on the new shape')
  assert.deepEqual(rowsOf(a.state), await current(table))
  a.close()
  b.close()
})

test('DELETE /v1/shape by definition: a Shape converges after its shape is deleted twice', async () => {
  const table = await thingsTable()
  const controller = new AbortController()
  const stream = new ShapeStream({ url: SHAPE_URL, params: withSecret({ table }), signal: controller.signal })
  const shape = new Shape(stream)
  try {
    assert.equal((await shape.rows).length, 5)
    for (let round = 0; round < 2; round++) {
      const before = stream.shapeHandle
      const response = await fetch(shapeUrl({ table }), { method: 'DELETE' })
      assert.equal(response.status, 202, await response.text())
      await sql(`INSERT INTO ${table} VALUES (${100 + round}, 'round ${round}')`)
      const expected = await current(table)
      await waitFor(
        () => stream.shapeHandle !== before && shape.isUpToDate &&
          JSON.stringify(sortById(shape.currentRows)) === JSON.stringify(expected),
        { what: `convergence after delete ${round}` },
      )
    }
    assert.equal(shape.error, false)
  } finally {
    controller.abort()
  }
})

for (const liveSse of [false, true]) {
  test(`a shape deleted between two requests: the next one is a 409, then the new shape syncs (liveSse=${liveSse})`, async () => {
    // As Electric's "should detect shape deprecation and restart syncing": with HTTP
    // workers the DELETE and the next request may meet different workers.
    const table = await thingsTable()
    const statuses = []
    let requests = 0
    let deletedHandle
    const controller = new AbortController()
    const fetchClient = async (...args) => {
      if (requests === 2) {
        deletedHandle = stream.shapeHandle
        await sql(`INSERT INTO ${table} VALUES (6, 'after delete')`)
        const response = await fetch(shapeUrl({ table, handle: deletedHandle }), { method: 'DELETE' })
        assert.equal(response.status, 202, await response.text())
      }
      requests++
      const response = await fetch(...args)
      if (response.status < 500) statuses.push(response.status)
      return response
    }
    const stream = new ShapeStream({
      url: SHAPE_URL,
      params: withSecret({ table }),
      signal: controller.signal,
      fetchClient,
      liveSse,
    })
    const shape = new Shape(stream)
    try {
      assert.equal((await shape.rows).length, 5)
      await waitFor(
        async () => deletedHandle !== undefined && stream.shapeHandle !== deletedHandle &&
          shape.isUpToDate &&
          JSON.stringify(sortById(shape.currentRows)) === JSON.stringify(await current(table)),
        { what: 'the new shape' },
      )
      assert.equal(shape.currentRows.length, 6)
      assert.deepEqual(statuses.slice(0, 4), [200, 200, 409, 200])
    } finally {
      controller.abort()
    }
  })
}
