// WHERE clauses with positional params: initial filtering, and rows moving in and out.
import assert from 'node:assert/strict'
import { after, test } from 'node:test'
import { isChangeMessage } from '@electric-sql/client'
import { closeAll, follow, rowsOf, sql, uniqueTable } from './lib.mjs'

after(closeAll)

async function tasksTable() {
  const table = uniqueTable('tasks')
  await sql(`CREATE TABLE ${table} (id int PRIMARY KEY, status text NOT NULL, owner text, prio int NOT NULL DEFAULT 0)`)
  await sql(`INSERT INTO ${table} VALUES (1, 'open', 'ann', 1), (2, 'done', 'bob', 2), (3, 'open', 'bob', 3), (4, 'x''y', NULL, 4)`)
  return table
}

for (const [label, params] of [
  ['array params', ['open']],
  ['object params', { 1: 'open' }],
]) {
  test(`where with ${label}: initial rows, move-in, move-out, in-place update`, async () => {
    const table = await tasksTable()
    const f = follow({ table, where: 'status = $1', params })
    await f.until((s) => s.rows.size === 2, 'initial open rows')
    assert.deepEqual(rowsOf(f.state), [
      { id: 1, status: 'open', owner: 'ann', prio: 1 },
      { id: 3, status: 'open', owner: 'bob', prio: 3 },
    ])

    // move-in: an UPDATE makes a row match -> insert with the full row
    let mark = f.state.messages.length
    await sql(`UPDATE ${table} SET status = 'open' WHERE id = 2`)
    await f.until((s) => s.rows.size === 3, 'move-in')
    let news = f.state.messages.slice(mark).filter(isChangeMessage)
    assert.deepEqual(news.map((m) => [m.headers.operation, m.value]), [
      ['insert', { id: 2, status: 'open', owner: 'bob', prio: 2 }],
    ])

    // move-out: an UPDATE makes a row stop matching -> delete
    mark = f.state.messages.length
    await sql(`UPDATE ${table} SET status = 'done' WHERE id = 1`)
    await f.until((s) => !s.rows.has(`"public"."${table}"/"1"`), 'move-out')
    news = f.state.messages.slice(mark).filter(isChangeMessage)
    assert.deepEqual(news.map((m) => m.headers.operation), ['delete'])
    assert.equal(news[0].key, `"public"."${table}"/"1"`)

    // changes to non-matching rows are not sent; an update inside the shape is
    mark = f.state.messages.length
    await sql(`UPDATE ${table} SET owner = 'zed' WHERE id = 1`)
    await sql(`INSERT INTO ${table} VALUES (5, 'done', 'eve', 5)`)
    await sql(`UPDATE ${table} SET prio = 30 WHERE id = 3`)
    await f.until((s) => s.rows.get(`"public"."${table}"/"3"`)?.prio === 30, 'in-shape update')
    news = f.state.messages.slice(mark).filter(isChangeMessage)
    assert.deepEqual(news.map((m) => [m.headers.operation, m.value]), [['update', { id: 3, prio: 30 }]])

    // insert matching, delete matching
    await sql(`INSERT INTO ${table} VALUES (6, 'open', NULL, 6)`)
    await sql(`DELETE FROM ${table} WHERE id = 2`)
    await f.until((s) => s.rows.has(`"public"."${table}"/"6"`) && !s.rows.has(`"public"."${table}"/"2"`), 'insert + delete')

    const { rows } = await sql(`SELECT * FROM ${table} WHERE status = 'open' ORDER BY id`)
    assert.deepEqual(rowsOf(f.state), rows)
    assert.equal(f.state.errors.length, 0)
    f.close()
  })
}

test('where with several typed params and a quote in a param value', async () => {
  const table = await tasksTable()
  const f = follow({ table, where: '(prio > $1 AND prio <= $2) OR status = $3', params: ['1', '3', "x'y"] })
  await f.until((s) => s.rows.size === 3, 'initial rows')
  assert.deepEqual(rowsOf(f.state).map((r) => r.id), [2, 3, 4])

  await sql(`UPDATE ${table} SET prio = 10 WHERE id = 2`) // out
  await sql(`UPDATE ${table} SET prio = 2 WHERE id = 1`) // in
  await sql(`UPDATE ${table} SET status = 'y', prio = 99 WHERE id = 4`) // out
  await f.until((s) => s.rows.size === 2 && s.rows.has(`"public"."${table}"/"1"`), 'moves')
  assert.deepEqual(rowsOf(f.state).map((r) => r.id), [1, 3])

  const { rows } = await sql(`SELECT * FROM ${table} WHERE (prio > 1 AND prio <= 3) OR status = 'x''y' ORDER BY id`)
  assert.deepEqual(rowsOf(f.state), rows)
  f.close()
})

test('two shapes that differ only in params are different shapes', async () => {
  const table = await tasksTable()
  const open = follow({ table, where: 'status = $1', params: ['open'] })
  const done = follow({ table, where: 'status = $1', params: ['done'] })
  await open.until((s) => s.rows.size === 2, 'open rows')
  await done.until((s) => s.rows.size === 1, 'done rows')
  assert.notEqual(open.stream.shapeHandle, done.stream.shapeHandle)
  await sql(`UPDATE ${table} SET status = 'done' WHERE id = 3`)
  await open.until((s) => s.rows.size === 1, 'moved out of open')
  await done.until((s) => s.rows.size === 2, 'moved into done')
  assert.deepEqual(rowsOf(done.state).map((r) => r.id), [2, 3])
  open.close()
  done.close()
})
