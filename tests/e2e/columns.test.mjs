// Column subsets and replica=full.
import assert from 'node:assert/strict'
import { after, test } from 'node:test'
import { isChangeMessage } from '@electric-sql/client'
import { closeAll, follow, rowsOf, sql, uniqueTable } from './lib.mjs'

after(closeAll)

async function postsTable() {
  const table = uniqueTable('posts')
  await sql(`CREATE TABLE ${table} (id int PRIMARY KEY, title text, body text, secret text, votes int NOT NULL DEFAULT 0)`)
  await sql(`INSERT INTO ${table} VALUES (1, 'a', 'body a', 's1', 0), (2, 'b', 'body b', 's2', 5)`)
  return table
}

test('columns subset: every message value has only the selected keys', async () => {
  const table = await postsTable()
  const f = follow({ table, columns: ['id', 'title'] })
  await f.until((s) => s.rows.size === 2, 'initial rows')
  assert.deepEqual(rowsOf(f.state), [{ id: 1, title: 'a' }, { id: 2, title: 'b' }])

  await sql(`INSERT INTO ${table} VALUES (3, 'c', 'body c', 's3', 1)`)
  await sql(`UPDATE ${table} SET title = 'A', secret = 'changed' WHERE id = 1`)
  // An update of unselected columns only is not sent at all.
  await sql(`UPDATE ${table} SET secret = 'hidden', votes = 100 WHERE id = 2`)
  await sql(`DELETE FROM ${table} WHERE id = 2`)
  await f.until((s) => s.rows.size === 2 && s.rows.get(`"public"."${table}"/"1"`)?.title === 'A', 'live changes')

  const changes = f.changes()
  for (const m of changes) {
    for (const key of Object.keys(m.value)) assert.ok(['id', 'title'].includes(key), `unexpected column ${key} in ${m.headers.operation}`)
  }
  const live = changes.slice(2).map((m) => [m.headers.operation, m.value])
  assert.deepEqual(live, [
    ['insert', { id: 3, title: 'c' }],
    ['update', { id: 1, title: 'A' }],
    ['delete', { id: 2 }],
  ])
  assert.deepEqual(rowsOf(f.state), [{ id: 1, title: 'A' }, { id: 3, title: 'c' }])
  f.close()
})

test('columns subset combined with a where on an unselected column', async () => {
  const table = await postsTable()
  const f = follow({ table, columns: ['id', 'title'], where: 'votes > $1', params: ['1'] })
  await f.until((s) => s.rows.size === 1, 'initial rows')
  assert.deepEqual(rowsOf(f.state), [{ id: 2, title: 'b' }])
  await sql(`UPDATE ${table} SET votes = 2 WHERE id = 1`)
  await f.until((s) => s.rows.size === 2, 'move-in by an unselected column')
  assert.deepEqual(rowsOf(f.state), [{ id: 1, title: 'a' }, { id: 2, title: 'b' }])
  f.close()
})

test("replica 'full': updates carry the full row and old_value, deletes the full old row", async () => {
  const table = await postsTable()
  const f = follow({ table, replica: 'full' })
  await f.until((s) => s.rows.size === 2, 'initial rows')

  await sql(`UPDATE ${table} SET title = 'B', votes = 6 WHERE id = 2`)
  await f.until((s) => s.rows.get(`"public"."${table}"/"2"`)?.title === 'B', 'update')
  let update = f.changes().filter((m) => m.headers.operation === 'update').at(-1)
  assert.deepEqual(update.value, { id: 2, title: 'B', body: 'body b', secret: 's2', votes: 6 })
  assert.deepEqual(update.old_value, { title: 'b', votes: 5 })

  await sql(`UPDATE ${table} SET body = NULL WHERE id = 1`)
  await f.until((s) => s.rows.get(`"public"."${table}"/"1"`)?.body === null, 'update to null')
  update = f.changes().filter((m) => m.headers.operation === 'update').at(-1)
  assert.deepEqual(update.value, { id: 1, title: 'a', body: null, secret: 's1', votes: 0 })
  assert.deepEqual(update.old_value, { body: 'body a' })

  await sql(`DELETE FROM ${table} WHERE id = 2`)
  await f.until((s) => s.rows.size === 1, 'delete')
  const del = f.changes().at(-1)
  assert.equal(del.headers.operation, 'delete')
  assert.deepEqual(del.value, { id: 2, title: 'B', body: 'body b', secret: 's2', votes: 6 })
  f.close()
})

test("replica 'full' with a column subset keeps to the subset", async () => {
  const table = await postsTable()
  const f = follow({ table, replica: 'full', columns: ['id', 'title', 'votes'] })
  await f.until((s) => s.rows.size === 2, 'initial rows')
  await sql(`UPDATE ${table} SET votes = 7, secret = 'x' WHERE id = 1`)
  await f.until((s) => s.rows.get(`"public"."${table}"/"1"`)?.votes === 7, 'update')
  const update = f.changes().filter(isChangeMessage).at(-1)
  assert.deepEqual(update.value, { id: 1, title: 'a', votes: 7 })
  assert.deepEqual(update.old_value, { votes: 0 })
  f.close()
})
