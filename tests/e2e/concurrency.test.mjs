// Many concurrent live streams converge to the final table state after a burst of writes.
import assert from 'node:assert/strict'
import { after, test } from 'node:test'
import { Worker } from 'node:worker_threads'
import { closeAll, follow, jsonSafe, rowsOf, sql, uniqueTable, waitFor } from './lib.mjs'

after(closeAll)

const STREAMS = 100

/** Runs `statements` from a worker thread (see writer.mjs) and waits for them all. */
function runInWorker(statements, connections) {
  return new Promise((resolve, reject) => {
    const worker = new Worker(new URL('./writer.mjs', import.meta.url), {
      workerData: { databaseUrl: process.env.DATABASE_URL, statements, connections },
    })
    worker.once('message', (result) => (result.ok ? resolve() : reject(new Error(result.error))))
    worker.once('error', reject)
    worker.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`writer exited with ${code}`))))
  })
}

test(`${STREAMS} concurrent live streams on one shape and on three where-shapes converge after a write burst`, async () => {
  const table = uniqueTable('burst')
  await sql(`CREATE TABLE ${table} (id int PRIMARY KEY, grp text NOT NULL, counter int NOT NULL, note text)`)
  await sql(`INSERT INTO ${table} SELECT g, 'g' || (g % 3), 0, NULL FROM generate_series(1, 60) g`)

  // 70 streams on the whole table, 10 on each of three groups.
  const followers = []
  for (let i = 0; i < STREAMS; i++) {
    const group = i < 70 ? null : `g${i % 3}`
    const params = group === null ? { table } : { table, where: 'grp = $1', params: [group] }
    followers.push({ group, f: follow(params) })
  }
  const expected = async () => {
    const { rows } = await sql(`SELECT * FROM ${table} ORDER BY id`)
    return {
      all: JSON.stringify(rows, jsonSafe),
      g0: JSON.stringify(rows.filter((r) => r.grp === 'g0')),
      g1: JSON.stringify(rows.filter((r) => r.grp === 'g1')),
      g2: JSON.stringify(rows.filter((r) => r.grp === 'g2')),
    }
  }
  const converged = (want) =>
    followers.every(({ group, f }) => f.stream.isUpToDate && JSON.stringify(rowsOf(f.state), jsonSafe) === want[group ?? 'all'])
  const describe = (want) => {
    const behind = followers.filter(({ group, f }) => JSON.stringify(rowsOf(f.state), jsonSafe) !== want[group ?? 'all'])
    return `${behind.length} streams not converged; errors: ${followers.flatMap(({ f }) => f.state.errors.map(String)).slice(0, 3)}`
  }

  let want = await expected()
  await waitFor(() => converged(want), { what: 'initial sync of all streams', timeout: 30_000 }).catch((e) => {
    throw new Error(`${e.message}: ${describe(want)}`)
  })
  const handles = new Set(followers.filter(({ group }) => group === null).map(({ f }) => f.stream.shapeHandle))
  assert.equal(handles.size, 1, 'all streams of one definition share one shape')

  // The burst: 120 transactions from 4 connections, mixing inserts, updates (some moving
  // rows between groups), deletes and multi-statement transactions.
  const writes = []
  for (let i = 0; i < 120; i++) {
    const id = (i % 60) + 1
    switch (i % 6) {
      case 0:
        writes.push(`INSERT INTO ${table} VALUES (${1000 + i}, 'g${i % 3}', ${i}, 'burst')`)
        break
      case 1:
        writes.push(`UPDATE ${table} SET counter = counter + 1 WHERE id = ${id}`)
        break
      case 2:
        writes.push(`UPDATE ${table} SET grp = 'g${(i + 1) % 3}', note = 'moved ${i}' WHERE id = ${id}`)
        break
      case 3:
        writes.push(`DELETE FROM ${table} WHERE id = ${id}`)
        break
      case 4:
        writes.push(`BEGIN; UPDATE ${table} SET counter = counter + 10 WHERE grp = 'g${i % 3}'; INSERT INTO ${table} VALUES (${2000 + i}, 'g${(i + 2) % 3}', 0, 'txn') ; COMMIT`)
        break
      case 5:
        writes.push(`INSERT INTO ${table} VALUES (${id}, 'g0', -1, 'reinserted') ON CONFLICT (id) DO UPDATE SET note = 'upserted ${i}'`)
        break
    }
  }
  await runInWorker(writes, 4)

  want = await expected()
  await waitFor(() => converged(want), { what: 'convergence after the burst', timeout: 30_000 }).catch((e) => {
    throw new Error(`${e.message}: ${describe(want)}`)
  })
  for (const { f } of followers) {
    assert.equal(f.state.errors.length, 0, String(f.state.errors))
    assert.equal(f.state.refetches, 0)
  }
  for (const { f } of followers) f.close()
})
