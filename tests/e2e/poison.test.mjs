// Changes a shape cannot process without guessing (a table set back from REPLICA
// IDENTITY FULL) and key changes under a DEFERRABLE key, through the official client.
import assert from 'node:assert/strict'
import { after, test } from 'node:test'
import { closeAll, follow, rowsOf, sql, uniqueTable, waitFor } from './lib.mjs'

after(closeAll)

// Out-of-line TOAST: > 2 kB even compressed.
const BIG = "(SELECT string_agg(md5(random()::text || g), '') FROM generate_series(1, 300) g)"

test('REPLICA IDENTITY DEFAULT: shapes needing the missing values refetch, never get null', async () => {
  const table = uniqueTable('docs')
  const other = uniqueTable('notes')
  await sql(`CREATE TABLE ${table} (id int PRIMARY KEY, small int NOT NULL, big text NOT NULL)`)
  await sql(`CREATE TABLE ${other} (id int PRIMARY KEY, v int NOT NULL)`)
  await sql(`INSERT INTO ${table} SELECT g, g, chr(64 + g) || ${BIG} FROM generate_series(1, 3) g`)
  await sql(`INSERT INTO ${other} VALUES (1, 1)`)
  const full = follow({ table, replica: 'full' })
  const moving = follow({ table, where: 'small > 3' })
  const like = follow({ table, where: "big LIKE 'A%'" })
  const notes = follow({ table: other })
  await full.until((s) => s.rows.size === 3, 'replica=full rows')
  await moving.until((s) => s.rows.size === 0, 'small > 3')
  await like.until((s) => s.rows.size === 1, "big LIKE 'A%'")
  await notes.until((s) => s.rows.size === 1, 'notes')

  await sql(`ALTER TABLE ${table} REPLICA IDENTITY DEFAULT`)
  await sql(`UPDATE ${table} SET small = small + 10`) // big unchanged: not sent
  await sql(`UPDATE ${other} SET v = 2`)
  const current = async (where = 'true') =>
    (await sql(`SELECT id, small, big FROM ${table} WHERE ${where} ORDER BY id`)).rows
  await notes.until((s) => s.rows.get(`"public"."${other}"/"1"`)?.v === 2, 'notes go on')
  await full.until((s) => s.refetches >= 1 && s.rows.size === 3, 'replica=full refetched')
  assert.deepEqual(rowsOf(full.state), await current())
  await moving.until((s) => s.refetches >= 1 && s.rows.size === 3, 'small > 3 refetched')
  assert.deepEqual(rowsOf(moving.state), await current('small > 3'))
  await like.until((s) => s.refetches >= 1 && s.rows.size === 1, 'LIKE refetched')
  assert.deepEqual(rowsOf(like.state), await current("big LIKE 'A%'"))
  // pysync set FULL again: later changes carry everything.
  await waitFor(
    async () =>
      (await sql(`SELECT relreplident FROM pg_class WHERE relname = $1`, [table])).rows[0]
        .relreplident === 'f',
    { what: 'REPLICA IDENTITY FULL restored' },
  )
  await sql(`UPDATE ${table} SET small = 1 WHERE id = 1`)
  await sql(`UPDATE ${table} SET small = 20 WHERE id = 1`)
  await moving.until((s) => s.rows.get(`"public"."${table}"/"1"`)?.small === 20, 'moved back in')
  assert.deepEqual(rowsOf(moving.state), await current('small > 3'))
  for (const f of [full, moving, like, notes]) assert.equal(f.state.errors.length, 0)
})

test('keys rotated under a DEFERRABLE primary key: the client ends equal to Postgres', async () => {
  const table = uniqueTable('rotated')
  await sql(
    `CREATE TABLE ${table} (id int, v text NOT NULL, ` +
      `CONSTRAINT ${table}_pkey PRIMARY KEY (id) DEFERRABLE INITIALLY DEFERRED)`,
  )
  await sql(`INSERT INTO ${table} VALUES (1, 'a'), (2, 'b'), (3, 'c')`)
  const f = follow({ table })
  await f.until((s) => s.rows.size === 3, 'initial rows')
  await sql(`UPDATE ${table} SET id = id + 1`)
  await sql(`BEGIN; UPDATE ${table} SET id = 5 - id; UPDATE ${table} SET v = v || '!' WHERE id = 2; COMMIT`)
  const expected = (await sql(`SELECT id, v FROM ${table} ORDER BY id`)).rows
  await waitFor(() => f.stream.isUpToDate && JSON.stringify(rowsOf(f.state)) === JSON.stringify(expected), {
    what: 'rows equal to Postgres',
    state: f.state,
  })
  assert.equal(f.state.errors.length, 0)
})
