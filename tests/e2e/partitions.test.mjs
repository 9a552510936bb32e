// Partitioned tables: a ShapeStream on the partitioned table and one on a partition,
// rows moving between partitions, a partition created later, and a detach (409).
import assert from 'node:assert/strict'
import { after, test } from 'node:test'
import { closeAll, follow, sql, uniqueTable } from './lib.mjs'

after(closeAll)

const keyOf = (table, id, k) => `"public"."${table}"/"${id}"/"${k}"`

async function current(table) {
  const { rows } = await sql(`SELECT id, k, v FROM ${table} ORDER BY id, k`)
  return new Map(rows.map((r) => [`${r.id}/${r.k}`, { id: r.id, k: r.k, v: r.v }]))
}

function held(state) {
  return new Map([...state.rows.values()].map((r) => [`${r.id}/${r.k}`, r]))
}

test('a partitioned table and its partitions: keys, moves, new partitions, detach', async () => {
  const root = uniqueTable('parts')
  const p0 = `${root}_p0`
  const p1 = `${root}_p1`
  const p2 = `${root}_p2`
  await sql(`CREATE TABLE ${root} (id int, k int, v text, PRIMARY KEY (id, k)) PARTITION BY RANGE (k)`)
  await sql(`CREATE TABLE ${p0} PARTITION OF ${root} FOR VALUES FROM (0) TO (10)`)
  await sql(`CREATE TABLE ${p1} PARTITION OF ${root} FOR VALUES FROM (10) TO (20)`)
  await sql(`INSERT INTO ${root} VALUES (1, 1, 'a'), (2, 12, 'b')`)

  const all = follow({ table: root })
  const first = follow({ table: p0 })
  await all.until((s) => s.rows.size === 2, 'the snapshot of every partition')
  await first.until((s) => s.rows.size === 1, 'the snapshot of one partition')
  assert.deepEqual([...all.state.rows.keys()].sort(), [keyOf(root, 1, 1), keyOf(root, 2, 12)])
  assert.deepEqual([...first.state.rows.keys()], [keyOf(p0, 1, 1)])

  // A move: the key holds the partition key, so a key change (delete + insert).
  await sql(`UPDATE ${root} SET k = 15, v = 'moved' WHERE id = 1`)
  await all.until((s) => s.rows.has(keyOf(root, 1, 15)), 'the moved row')
  await first.until((s) => s.rows.size === 0, 'the row gone from its partition')
  const moved = all.changes().filter((m) => m.key === keyOf(root, 1, 1) || m.key === keyOf(root, 1, 15))
  assert.deepEqual(
    moved.slice(-2).map((m) => [m.headers.operation, m.key]),
    [['delete', keyOf(root, 1, 1)], ['insert', keyOf(root, 1, 15)]],
  )
  assert.deepEqual(held(all.state), await current(root))

  // A partition made later: its rows reach the partitioned table's shape.
  await sql(`CREATE TABLE ${p2} PARTITION OF ${root} FOR VALUES FROM (20) TO (30)`)
  await sql(`INSERT INTO ${root} VALUES (3, 25, 'c')`)
  await all.until((s) => s.rows.has(keyOf(root, 3, 25)), 'the new partition\'s row')
  assert.deepEqual(held(all.state), await current(root))
  assert.equal(all.state.refetches, 0)

  // A detach takes rows out without a delete: the shape on the root is invalidated,
  // the client refetches without them. (p0 has a shape: its next change tells.)
  await sql(`INSERT INTO ${root} VALUES (4, 4, 'd')`)
  await all.until((s) => s.rows.has(keyOf(root, 4, 4)), 'a row of p0')
  await sql(`ALTER TABLE ${root} DETACH PARTITION ${p0}`)
  await sql(`INSERT INTO ${p0} VALUES (5, 5, 'e')`)
  await all.until((s) => s.refetches >= 1 && !s.rows.has(keyOf(root, 4, 4)) && s.rows.size === 3, 'the refetch')
  assert.deepEqual(held(all.state), await current(root))
  await first.until((s) => s.rows.size === 2, 'the detached partition\'s own shape')
  assert.deepEqual(held(first.state), await current(p0))
  assert.equal(first.state.refetches, 0)
  assert.equal(all.state.errors.length, 0)
  all.close()
  first.close()
})
