// Follows shapes with @electric-sql/client through a rolling deploy (driven by
// tests/test_rolling.py): `node rolling-follower.mjs <table> ...` prints `ready` once
// every stream is up to date; each `report` line on stdin prints one JSON line (rows by
// table, response statuses, when each successful response came, in ms since the epoch); `exit` ends.
import readline from 'node:readline'
import { closeAll, follow, rowsOf } from './lib.mjs'

const tables = process.argv.slice(2)
const record = { statuses: {}, failures: 0, times: [] }

async function timedFetch(input, init) {
  let response
  try {
    response = await fetch(input, init)
  } catch (error) {
    record.failures += 1
    throw error
  }
  record.statuses[response.status] = (record.statuses[response.status] || 0) + 1
  if (response.ok) record.times.push(Date.now())
  return response
}

const followers = tables.map((table) => follow({ table }, { fetchClient: timedFetch }))
await Promise.all(followers.map((f, i) => f.until(() => true, `${tables[i]} up to date`, 60_000)))
console.log('ready')

for await (const line of readline.createInterface({ input: process.stdin })) {
  if (line === 'report') {
    const rows = Object.fromEntries(tables.map((t, i) => [t, rowsOf(followers[i].state)]))
    const upToDate = followers.every((f) => f.stream.isUpToDate)
    const refetches = followers.reduce((n, f) => n + f.state.refetches, 0)
    const errors = followers.flatMap((f) => f.state.errors.map(String))
    console.log(JSON.stringify({ rows, upToDate, refetches, errors, ...record }))
  } else if (line === 'exit') {
    break
  }
}
for (const f of followers) f.close()
await closeAll()
