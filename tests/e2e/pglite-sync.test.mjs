// @electric-sql/pglite-sync's syncShapeToTable against pysync: the PGlite table ends
// equal to a SELECT of the upstream table (or of the shape's WHERE and columns) after
// the initial sync and after each batch of upstream inserts, updates and deletes.
import assert from 'node:assert/strict'
import { after, test } from 'node:test'
import { closeAll, sql, uniqueTable, waitFor } from './lib.mjs'
import { converge, newPGlite, shapeOptions, syncTable } from './pglite.mjs'

after(closeAll)

const ITEMS = 'id int PRIMARY KEY, name text NOT NULL, score int NOT NULL, category text'

async function itemsTable() {
  const table = uniqueTable('items')
  await sql(`CREATE TABLE ${table} (${ITEMS})`)
  await sql(`INSERT INTO ${table}
             SELECT g, 'item ' || g, g * 10, CASE WHEN g % 3 = 0 THEN NULL WHEN g % 2 = 0 THEN 'a' ELSE 'b' END
             FROM generate_series(1, 20) g`)
  return table
}

test('a whole table: initial rows, then inserts, updates and deletes', async () => {
  const table = await itemsTable()
  const db = await newPGlite()
  try {
    await db.exec(`CREATE TABLE local_items (${ITEMS})`)
    const { sync, state } = await syncTable(db, { shape: shapeOptions({ table }), table: 'local_items' })
    const model = { upstream: `SELECT * FROM ${table}`, local: 'SELECT * FROM local_items', state }

    const initial = await converge(db, { ...model, what: 'initial sync' })
    assert.equal(initial.length, 20)
    await waitFor(() => sync.isUpToDate && state.initialSyncs === 1, { what: 'onInitialSync' })

    await sql(`INSERT INTO ${table} VALUES (21, 'twenty-one', 210, 'a')`)
    await converge(db, { ...model, what: 'one insert' })

    // One transaction with every kind of change, several to the same row.
    await sql(`BEGIN;
      INSERT INTO ${table} SELECT g, 'bulk ' || g, g, 'b' FROM generate_series(22, 60) g;
      UPDATE ${table} SET name = 'renamed' WHERE id = 1;
      UPDATE ${table} SET score = score + 1, category = NULL WHERE id BETWEEN 5 AND 9;
      DELETE FROM ${table} WHERE id IN (2, 3);
      UPDATE ${table} SET name = 'twice', score = -1 WHERE id = 22;
      UPDATE ${table} SET name = 'thrice' WHERE id = 22;
      INSERT INTO ${table} VALUES (2, 'back again', 2, 'c');
      COMMIT`)
    await converge(db, { ...model, what: 'a mixed transaction' })

    // A primary key change, and a row deleted right after its insert.
    await sql(`UPDATE ${table} SET id = 1000 WHERE id = 4`)
    await sql(`BEGIN; INSERT INTO ${table} VALUES (500, 'ephemeral', 0, NULL); DELETE FROM ${table} WHERE id = 500; COMMIT`)
    await sql(`DELETE FROM ${table} WHERE id BETWEEN 41 AND 999`)
    const end = await converge(db, { ...model, what: 'key change and deletes' })
    assert.ok(end.some((row) => JSON.parse(row).id === 1000))
    assert.ok(!end.some((row) => JSON.parse(row).id === 4))
    assert.equal(state.initialSyncs, 1)
    sync.unsubscribe()
  } finally {
    await db.close()
  }
})

test('a WHERE shape with params and a columns subset: rows move in and out', async () => {
  const table = await itemsTable()
  const db = await newPGlite()
  try {
    await db.exec('CREATE TABLE picked (id int PRIMARY KEY, name text NOT NULL, score int NOT NULL)')
    const where = 'category = $1 AND score >= $2'
    const values = ['a', '60']
    const { sync, state } = await syncTable(db, {
      shape: shapeOptions({ table, where, params: values, columns: ['id', 'name', 'score'] }),
      table: 'picked',
    })
    const model = {
      upstream: `SELECT id, name, score FROM ${table} WHERE ${where}`,
      local: 'SELECT * FROM picked',
      values,
      localValues: [],
      state,
    }
    const initial = await converge(db, { ...model, what: 'initial sync' })
    assert.ok(initial.length > 0 && initial.length < 20, `a proper subset: ${initial.length} rows`)

    await sql(`INSERT INTO ${table} VALUES (100, 'in', 100, 'a'), (101, 'out: category', 100, 'b'), (102, 'out: score', 1, 'a')`)
    await converge(db, { ...model, what: 'inserts in and out of the shape' })

    await sql(`UPDATE ${table} SET score = 500 WHERE id = 102`) // moves in
    await sql(`UPDATE ${table} SET category = 'a' WHERE id = 101`) // moves in (a column not synced)
    await sql(`UPDATE ${table} SET score = 0 WHERE id = 100`) // moves out
    await sql(`UPDATE ${table} SET name = 'renamed in shape' WHERE id = 102`)
    await sql(`UPDATE ${table} SET name = 'renamed outside' WHERE id = 100`)
    await sql(`UPDATE ${table} SET category = NULL WHERE id = 8`) // out by NULL
    await converge(db, { ...model, what: 'updates moving rows in and out' })

    await sql(`BEGIN;
      UPDATE ${table} SET score = score + 1000 WHERE category = 'b';
      UPDATE ${table} SET category = 'a' WHERE category = 'b';
      DELETE FROM ${table} WHERE id = 102;
      COMMIT`)
    const end = await converge(db, { ...model, what: 'a transaction moving many rows' })
    assert.ok(end.length > initial.length)
    sync.unsubscribe()
  } finally {
    await db.close()
  }
})

test('two tables synced into one PGlite database keep apart (one of them replica full)', async () => {
  const first = await itemsTable()
  const second = await itemsTable()
  const db = await newPGlite()
  try {
    await db.exec(`CREATE TABLE one (${ITEMS}); CREATE TABLE two (${ITEMS})`)
    const a = await syncTable(db, { shape: shapeOptions({ table: first }), table: 'one' })
    const b = await syncTable(db, { shape: shapeOptions({ table: second, where: 'category IS NULL', replica: 'full' }), table: 'two' })
    await sql(`UPDATE ${first} SET name = 'first only' WHERE id = 3`)
    await sql(`INSERT INTO ${second} VALUES (99, 'second only', 0, NULL)`)
    await sql(`UPDATE ${second} SET score = -score WHERE category IS NULL`)
    await sql(`UPDATE ${second} SET category = 'gone' WHERE id = 6`)
    await converge(db, { upstream: `SELECT * FROM ${first}`, local: 'SELECT * FROM one', what: 'first', state: a.state })
    await converge(db, {
      upstream: `SELECT * FROM ${second} WHERE category IS NULL`, local: 'SELECT * FROM two', what: 'second', state: b.state,
    })
    a.sync.unsubscribe()
    b.sync.unsubscribe()
  } finally {
    await db.close()
  }
})

test('a larger initial sync through initialInsertMethod json, then live changes', async () => {
  const table = uniqueTable('many')
  await sql(`CREATE TABLE ${table} (${ITEMS})`)
  await sql(`INSERT INTO ${table} SELECT g, repeat('x', g % 200), g, CASE WHEN g % 7 = 0 THEN NULL ELSE 'c' || (g % 5) END
             FROM generate_series(1, 3000) g`)
  const db = await newPGlite()
  try {
    await db.exec(`CREATE TABLE many (${ITEMS})`)
    const { sync, state } = await syncTable(db, {
      shape: shapeOptions({ table }), table: 'many', initialInsertMethod: 'json',
    })
    const model = { upstream: `SELECT * FROM ${table}`, local: 'SELECT * FROM many', state }
    assert.equal((await converge(db, { ...model, what: 'initial sync' })).length, 3000)
    await sql(`UPDATE ${table} SET name = 'every tenth' WHERE id % 10 = 0`)
    await sql(`DELETE FROM ${table} WHERE id > 2500`)
    await converge(db, { ...model, what: 'bulk changes' })
    sync.unsubscribe()
  } finally {
    await db.close()
  }
})

test('a mixed-case table in another schema with a composite primary key, into a PGlite schema', async () => {
  const schema = uniqueTable('Sch')
  const table = uniqueTable('Things')
  const upstream = `"${schema}"."${table}"`
  const columns = 'org text, "Id" int, "Value" text, "When" timestamptz, PRIMARY KEY (org, "Id")'
  await sql(`CREATE SCHEMA "${schema}"`)
  await sql(`CREATE TABLE ${upstream} (${columns})`)
  await sql(`INSERT INTO ${upstream} VALUES ('acme', 1, 'x', now()), ('a/b', 2, 'y', NULL), ('acme', 2, 'z', '2000-01-01Z')`)
  const db = await newPGlite()
  try {
    await db.exec(`CREATE SCHEMA "Local"; CREATE TABLE "Local"."Things" (${columns})`)
    const { sync, state } = await syncTable(db, {
      shape: shapeOptions({ table: upstream }), table: 'Things', schema: 'Local', primaryKey: ['org', 'Id'],
    })
    const model = { upstream: `SELECT * FROM ${upstream}`, local: 'SELECT * FROM "Local"."Things"', state }
    await converge(db, { ...model, what: 'initial sync' })
    await sql(`UPDATE ${upstream} SET "Value" = 'Y', "When" = '2024-06-01 12:00+05:30' WHERE org = 'a/b'`)
    await sql(`UPDATE ${upstream} SET "Id" = 3 WHERE org = 'acme' AND "Id" = 2`)
    await sql(`DELETE FROM ${upstream} WHERE org = 'acme' AND "Id" = 1`)
    await sql(`INSERT INTO ${upstream} VALUES ('acme', 1, 'again', NULL)`)
    await converge(db, { ...model, what: 'changes by composite key' })
    sync.unsubscribe()
  } finally {
    await db.close()
  }
})
