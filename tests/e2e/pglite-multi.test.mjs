// pglite-sync's syncShapesToTables: several shapes applied to PGlite together, one
// PGlite transaction per upstream transaction boundary (by the changes' `lsn` and `last`
// headers and the up-to-date `global_last_seen_lsn`). Upstream transactions move money
// between a row of one table and the row of the same id in the other; every state of
// PGlite that a reader sees keeps each pair's sum, and the end state equals upstream.
import assert from 'node:assert/strict'
import { after, test } from 'node:test'
import { closeAll, sql, uniqueTable, waitFor } from './lib.mjs'
import { converge, newPGlite, shapeOptions } from './pglite.mjs'

after(closeAll)

const PAIR_SUM = 1000

async function ledgers() {
  const left = uniqueTable('left')
  const right = uniqueTable('right')
  for (const table of [left, right]) {
    await sql(`CREATE TABLE ${table} (id int PRIMARY KEY, balance int NOT NULL, note text)`)
    await sql(`INSERT INTO ${table} SELECT g, ${PAIR_SUM / 2}, NULL FROM generate_series(1, 10) g`)
  }
  return { left, right }
}

async function multiSync(db, { left, right }, key, requests) {
  const errors = []
  const sync = await db.sync.syncShapesToTables({
    key,
    shapes: {
      left: { shape: shapeOptions({ table: left }, { requests }), table: 'l', primaryKey: ['id'] },
      right: { shape: shapeOptions({ table: right }, { requests }), table: 'r', primaryKey: ['id'] },
    },
    onError: (error) => errors.push(error),
  })
  return { sync, state: { errors } }
}

/** Pairs whose sum is off in PGlite right now (read in one query, so one state). */
async function brokenPairs(db) {
  const result = await db.query(`
    SELECT coalesce(l.id, r.id) AS id, l.balance AS l, r.balance AS r
    FROM l FULL JOIN r USING (id)
    WHERE l.balance + r.balance IS DISTINCT FROM ${PAIR_SUM}`)
  return result.rows
}

/** Reads PGlite over and over until `stop()`; returns every broken state seen. */
function watch(db) {
  let running = true
  const seen = { states: 0, broken: [] }
  const done = (async () => {
    while (running) {
      const broken = await brokenPairs(db)
      seen.states += 1
      if (broken.length) seen.broken.push(broken)
      await new Promise((resolve) => setTimeout(resolve, 2))
    }
  })()
  return {
    seen,
    stop: async () => {
      running = false
      await done
      return seen
    },
  }
}

async function transfers(left, right, count, from = 0) {
  for (let i = from; i < from + count; i++) {
    const id = (i % 10) + 1
    const amount = (i % 7) + 1
    if (i % 5 === 4) {
      // a new pair, in one transaction
      await sql(`BEGIN; INSERT INTO ${left} VALUES (${100 + i}, ${amount}, 'new');
                 INSERT INTO ${right} VALUES (${100 + i}, ${PAIR_SUM - amount}, 'new'); COMMIT`)
    } else {
      await sql(`BEGIN; UPDATE ${left} SET balance = balance - ${amount} WHERE id = ${id};
                 UPDATE ${right} SET balance = balance + ${amount}, note = 'moved ${i}' WHERE id = ${id}; COMMIT`)
    }
  }
}

test('transactions spanning two shapes land in PGlite together', async () => {
  const tables = await ledgers()
  const db = await newPGlite()
  try {
    await db.exec('CREATE TABLE l (id int PRIMARY KEY, balance int NOT NULL, note text); CREATE TABLE r (LIKE l)')
    const { sync, state } = await multiSync(db, tables, null)
    const models = [
      { upstream: `SELECT * FROM ${tables.left}`, local: 'SELECT * FROM l', state },
      { upstream: `SELECT * FROM ${tables.right}`, local: 'SELECT * FROM r', state },
    ]
    for (const model of models) await converge(db, { ...model, what: 'initial sync' })
    await waitFor(() => sync.isUpToDate, { what: 'up to date' })

    const watcher = watch(db)
    await transfers(tables.left, tables.right, 40)
    for (const model of models) await converge(db, { ...model, what: 'after the transfers' })
    const seen = await watcher.stop()
    assert.deepEqual(seen.broken, [], `no partial transaction in any of ${seen.states} states read`)
    assert.ok(seen.states > 1)

    // A transaction touching one shape only is applied too (the other shape is asked
    // for an up-to-date).
    await sql(`UPDATE ${tables.right} SET note = 'right only' WHERE id = 3`)
    await converge(db, { ...models[1], what: 'a change to one shape' })
    await converge(db, { ...models[0], what: 'the other shape unchanged' })
    sync.unsubscribe()
  } finally {
    await db.close()
  }
})

test('a keyed multi-shape subscription resumes both shapes', async () => {
  const tables = await ledgers()
  const db = await newPGlite()
  try {
    await db.exec('CREATE TABLE l (id int NOT NULL, balance int NOT NULL, note text); CREATE TABLE r (LIKE l)')
    const models = (state) => [
      { upstream: `SELECT * FROM ${tables.left}`, local: 'SELECT * FROM l', state },
      { upstream: `SELECT * FROM ${tables.right}`, local: 'SELECT * FROM r', state },
    ]
    let { sync, state } = await multiSync(db, tables, 'ledgers')
    await transfers(tables.left, tables.right, 5)
    for (const model of models(state)) await converge(db, { ...model, what: 'first subscription' })
    sync.unsubscribe()

    await transfers(tables.left, tables.right, 12, 5)
    const requests = []
    ;({ sync, state } = await multiSync(db, tables, 'ledgers', requests))
    const watcher = watch(db)
    for (const model of models(state)) await converge(db, { ...model, what: 'resumed' })
    const seen = await watcher.stop()
    assert.deepEqual(seen.broken, [], `no partial transaction in any of ${seen.states} states read`)
    assert.ok(requests.every((url) => url.searchParams.get('offset') !== '-1'), 'both shapes resumed')
    assert.ok(requests.length >= 2)
    sync.unsubscribe()
  } finally {
    await db.close()
  }
})

test('two WHERE shapes of one table: a row moving between them is never in both or neither', async () => {
  const table = uniqueTable('tasks')
  await sql(`CREATE TABLE ${table} (id int PRIMARY KEY, status text NOT NULL, title text)`)
  await sql(`INSERT INTO ${table} SELECT g, 'open', 'task ' || g FROM generate_series(1, 12) g`)
  const db = await newPGlite()
  try {
    await db.exec('CREATE TABLE open_tasks (id int PRIMARY KEY, status text NOT NULL, title text); CREATE TABLE done_tasks (LIKE open_tasks)')
    const errors = []
    const shape = (status, local) => ({
      shape: shapeOptions({ table, where: 'status = $1', params: [status] }), table: local, primaryKey: ['id'],
    })
    const sync = await db.sync.syncShapesToTables({
      key: null,
      shapes: { open: shape('open', 'open_tasks'), done: shape('done', 'done_tasks') },
      onError: (error) => errors.push(error),
    })
    const state = { errors }
    const models = [
      { upstream: `SELECT * FROM ${table} WHERE status = 'open'`, local: 'SELECT * FROM open_tasks', state },
      { upstream: `SELECT * FROM ${table} WHERE status = 'done'`, local: 'SELECT * FROM done_tasks', state },
    ]
    for (const model of models) await converge(db, { ...model, what: 'initial sync' })

    let running = true
    const broken = []
    let states = 0
    const watcher = (async () => {
      while (running) {
        const { rows } = await db.query(`
          SELECT (SELECT count(*) FROM open_tasks) + (SELECT count(*) FROM done_tasks) AS total,
                 (SELECT count(*) FROM open_tasks JOIN done_tasks USING (id)) AS both_sides`)
        states += 1
        if (Number(rows[0].total) !== 12 || Number(rows[0].both_sides) !== 0) broken.push(rows[0])
        await new Promise((resolve) => setTimeout(resolve, 2))
      }
    })()
    for (let i = 0; i < 24; i++) {
      const id = (i % 12) + 1
      await sql(`UPDATE ${table} SET status = CASE status WHEN 'open' THEN 'done' ELSE 'open' END, title = 'moved ${i}' WHERE id = ${id}`)
    }
    await sql(`BEGIN; UPDATE ${table} SET status = 'done' WHERE id <= 6; UPDATE ${table} SET status = 'open' WHERE id > 6; COMMIT`)
    for (const model of models) await converge(db, { ...model, what: 'after the moves' })
    running = false
    await watcher
    assert.deepEqual(broken, [], `every one of ${states} states read has each task on one side`)
    sync.unsubscribe()
  } finally {
    await db.close()
  }
})

test('TRUNCATE of one table of a multi-shape subscription refetches that shape', async () => {
  const tables = await ledgers()
  const db = await newPGlite()
  try {
    await db.exec('CREATE TABLE l (id int PRIMARY KEY, balance int NOT NULL, note text); CREATE TABLE r (LIKE l)')
    const { sync, state } = await multiSync(db, tables, 'truncated')
    const models = [
      { upstream: `SELECT * FROM ${tables.left}`, local: 'SELECT * FROM l', state },
      { upstream: `SELECT * FROM ${tables.right}`, local: 'SELECT * FROM r', state },
    ]
    for (const model of models) await converge(db, { ...model, what: 'initial sync' })
    await sql(`BEGIN; TRUNCATE ${tables.left}; INSERT INTO ${tables.left} VALUES (1, 1, 'after truncate');
               UPDATE ${tables.right} SET note = 'same transaction' WHERE id = 1; COMMIT`)
    for (const model of models) await converge(db, { ...model, what: 'after the TRUNCATE' })
    await transfers(tables.left, tables.right, 3)
    for (const model of models) await converge(db, { ...model, what: 'live after the refetch' })
    sync.unsubscribe()
  } finally {
    await db.close()
  }
})
