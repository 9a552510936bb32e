// SSE live mode, primary-key changes, quoted/schema-qualified tables with composite keys,
// offset 'now', and an initial snapshot larger than one log chunk.
import assert from 'node:assert/strict'
import { after, test } from 'node:test'
import { closeAll, follow, jsonSafe, recordingFetch, rowsOf, sql, uniqueTable, waitFor } from './lib.mjs'

after(closeAll)

test('SSE live mode: inserts, updates and deletes arrive and the shape converges', async () => {
  const table = uniqueTable('sse')
  await sql(`CREATE TABLE ${table} (id int PRIMARY KEY, v text NOT NULL)`)
  await sql(`INSERT INTO ${table} VALUES (1, 'a'), (2, 'b')`)
  const requests = []
  const f = follow({ table }, { liveSse: true, fetchClient: recordingFetch(requests) })
  await f.until((s) => s.rows.size === 2, 'initial rows')
  await sql(`INSERT INTO ${table} VALUES (100, 'first live')`)
  await f.until((s) => s.rows.size === 3, 'first live insert')
  for (let i = 3; i <= 12; i++) {
    await sql(`INSERT INTO ${table} VALUES (${i}, 'v${i}')`)
    if (i % 3 === 0) await sql(`UPDATE ${table} SET v = 'u${i}' WHERE id = ${i - 1}`)
    if (i % 4 === 0) await sql(`DELETE FROM ${table} WHERE id = ${i - 2}`)
  }
  const { rows } = await sql(`SELECT * FROM ${table} ORDER BY id`)
  await f.until((s) => JSON.stringify(rowsOf(s)) === JSON.stringify(rows), 'convergence over SSE')
  const sse = requests.filter((r) => r.url.searchParams.get('live_sse') === 'true')
  assert.ok(sse.length > 0, 'the client used SSE')
  assert.ok(sse.every((r) => r.status === 200 && r.contentType.startsWith('text/event-stream')), JSON.stringify(sse))
  assert.equal(f.state.errors.length, 0)
  assert.equal(f.state.refetches, 0)
  f.close()
})

test('an UPDATE of the primary key is a delete of the old key and an insert of the new one', async () => {
  const table = uniqueTable('pkchange')
  await sql(`CREATE TABLE ${table} (id int PRIMARY KEY, v text NOT NULL)`)
  await sql(`INSERT INTO ${table} VALUES (1, 'a'), (2, 'b')`)
  const f = follow({ table })
  await f.until((s) => s.rows.size === 2, 'initial rows')
  await sql(`UPDATE ${table} SET id = 10, v = 'moved' WHERE id = 1`)
  await f.until((s) => s.rows.has(`"public"."${table}"/"10"`), 'new key')
  const [del, ins] = f.changes().slice(2)
  assert.equal(del.headers.operation, 'delete')
  assert.equal(del.key, `"public"."${table}"/"1"`)
  assert.equal(del.headers.key_change_to, `"public"."${table}"/"10"`)
  assert.equal(ins.headers.operation, 'insert')
  assert.equal(ins.headers.key_change_from, `"public"."${table}"/"1"`)
  assert.deepEqual(ins.value, { id: 10, v: 'moved' })
  assert.deepEqual(rowsOf(f.state), [{ id: 2, v: 'b' }, { id: 10, v: 'moved' }])
  f.close()
})

test('quoted mixed-case table in another schema with a composite primary key', async () => {
  const schema = uniqueTable('Sch')
  const table = 'Mixed Case/Table'
  await sql(`CREATE SCHEMA "${schema}"`)
  await sql(`CREATE TABLE "${schema}"."${table}" (org text, "Id" int, "Value" text, PRIMARY KEY (org, "Id"))`)
  await sql(`INSERT INTO "${schema}"."${table}" VALUES ('acme', 1, 'x'), ('a/b', 2, 'y')`)
  const f = follow({ table: `"${schema}"."${table}"`, columns: ['org', 'Id', 'Value'] })
  await f.until((s) => s.rows.size === 2, 'initial rows')
  await sql(`INSERT INTO "${schema}"."${table}" VALUES ('acme', 2, 'z')`)
  await sql(`UPDATE "${schema}"."${table}" SET "Value" = 'Y' WHERE org = 'a/b'`)
  await f.until((s) => s.rows.size === 3 && [...s.rows.values()].some((r) => r.Value === 'Y'), 'live changes')
  const keys = [...f.state.rows.keys()].sort()
  // Snapshot rows and replicated rows must use the same key for the same row.
  assert.equal(new Set(f.changes().map((m) => m.key)).size, 3, JSON.stringify(f.changes().map((m) => m.key)))
  assert.equal(keys.length, 3)
  for (const m of f.changes()) assert.deepEqual(m.headers.relation, [schema, table])
  const { rows } = await sql(`SELECT * FROM "${schema}"."${table}" ORDER BY org, "Id"`)
  const mine = [...f.state.rows.values()].sort((a, b) => (a.org + a.Id < b.org + b.Id ? -1 : 1))
  assert.deepEqual(mine, rows)
  f.close()
})

test("offset 'now' skips the history and follows later changes", async () => {
  const table = uniqueTable('now')
  await sql(`CREATE TABLE ${table} (id int PRIMARY KEY, v text NOT NULL)`)
  await sql(`INSERT INTO ${table} VALUES (1, 'old'), (2, 'old')`)
  const f = follow({ table }, { offset: 'now' })
  await f.until((s) => s.upToDate >= 1, 'up-to-date')
  assert.equal(f.changes().length, 0, 'no history')
  await sql(`INSERT INTO ${table} VALUES (3, 'new')`)
  await f.until((s) => s.rows.size === 1, 'the later insert')
  assert.deepEqual(rowsOf(f.state), [{ id: 3, v: 'new' }])
  f.close()
})

test('an initial snapshot of several log chunks (~25 MB) syncs completely, then live', async () => {
  const table = uniqueTable('big')
  await sql(`CREATE TABLE ${table} (id int PRIMARY KEY, pad text NOT NULL)`)
  const count = 25_000
  await sql(`INSERT INTO ${table} SELECT g, repeat(md5(g::text), 30) FROM generate_series(1, ${count}) g`)
  const requests = []
  const f = follow({ table }, { fetchClient: recordingFetch(requests) })
  await f.until((s) => s.rows.size === count, 'all rows', 60_000)
  const offsets = requests.map((r) => r.url.searchParams.get('offset'))
  assert.ok(offsets.includes('0_1'), `the snapshot spans several chunks: requested offsets ${offsets}`)
  const ids = [...f.state.rows.values()].map((r) => r.id).sort((a, b) => a - b)
  assert.equal(ids[0], 1)
  assert.equal(ids[count - 1], count)
  assert.equal(new Set(ids).size, count)
  assert.equal(f.changes().length, count, 'every row exactly once')
  assert.ok(f.state.batches.length >= 1)
  await sql(`UPDATE ${table} SET pad = 'short' WHERE id = ${count}`)
  await f.until((s) => s.rows.get(`"public"."${table}"/"${count}"`)?.pad === 'short', 'live update after a big snapshot')
  assert.equal(f.state.errors.length, 0, JSON.stringify(f.state.errors, jsonSafe))
  f.close()
})

test('an idle live request times out with up-to-date; the client re-polls and still gets later changes', async () => {
  const table = uniqueTable('idle')
  await sql(`CREATE TABLE ${table} (id int PRIMARY KEY, v text NOT NULL)`)
  const requests = []
  const f = follow({ table }, { fetchClient: recordingFetch(requests) })
  await f.until(() => true, 'up-to-date')
  // Wait (by polling the request log) until a live long-poll has ended without data.
  const timedOut = () => requests.filter((r) => r.url.searchParams.get('live') === 'true' && r.status === 200 && r.hasData === 'false')
  await waitFor(() => timedOut().length >= 1, { what: 'a long-poll timeout (server --long-poll-timeout)', timeout: 30_000, state: f.state })
  const [first] = timedOut()
  assert.match(first.cursor, /^\d+$/)
  assert.equal(f.changes().length, 0)
  await sql(`INSERT INTO ${table} VALUES (1, 'after the timeout')`)
  await f.until((s) => s.rows.size === 1, 'insert after a timed-out poll')
  // The next live request echoed the cursor the server gave.
  const later = requests.filter((r) => r.url.searchParams.get('live') === 'true' && requests.indexOf(r) > requests.indexOf(first))
  assert.ok(later.length >= 1)
  assert.equal(later[0].url.searchParams.get('cursor'), first.cursor)
  f.close()
})

test('ALTER TABLE ADD COLUMN: the client refetches and gets the new column', async () => {
  const table = uniqueTable('alter')
  await sql(`CREATE TABLE ${table} (id int PRIMARY KEY, v text NOT NULL)`)
  await sql(`INSERT INTO ${table} VALUES (1, 'a')`)
  const f = follow({ table })
  await f.until((s) => s.rows.size === 1, 'initial row')
  await sql(`ALTER TABLE ${table} ADD COLUMN extra int8 DEFAULT 7`)
  await sql(`INSERT INTO ${table} VALUES (2, 'b', 8)`)
  await f.until((s) => s.rows.size === 2 && s.rows.get(`"public"."${table}"/"1"`)?.extra === 7n, 'refetch with the new column')
  assert.ok(f.state.refetches >= 1)
  assert.deepEqual(rowsOf(f.state), [{ id: 1, v: 'a', extra: 7n }, { id: 2, v: 'b', extra: 8n }])
  assert.equal(f.state.errors.length, 0)
  f.close()
})

test('forceDisconnectAndRefresh: a non-live catch-up request, then live again', async () => {
  const table = uniqueTable('refresh')
  await sql(`CREATE TABLE ${table} (id int PRIMARY KEY, v text NOT NULL)`)
  await sql(`INSERT INTO ${table} VALUES (1, 'a')`)
  const f = follow({ table })
  await f.until((s) => s.rows.size === 1, 'initial row')
  await sql(`INSERT INTO ${table} VALUES (2, 'b')`)
  await f.stream.forceDisconnectAndRefresh()
  await f.until((s) => s.rows.size === 2, 'catch-up after refresh')
  await sql(`INSERT INTO ${table} VALUES (3, 'c')`)
  await f.until((s) => s.rows.size === 3, 'live after refresh')
  assert.equal(f.state.refetches, 0)
  assert.equal(f.state.errors.length, 0)
  f.close()
})
