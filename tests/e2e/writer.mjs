// Worker thread: runs SQL statements from `workerData.statements` on `workerData.connections`
// connections as fast as Postgres takes them. Used for write bursts, so that the writes are
// not paced by the main thread's event loop (busy with many ShapeStreams).
import { parentPort, workerData } from 'node:worker_threads'
import pg from 'pg'

const { databaseUrl, statements, connections } = workerData
const pool = new pg.Pool({ connectionString: databaseUrl, max: connections })
let next = 0
try {
  await Promise.all(
    Array.from({ length: connections }, async () => {
      while (next < statements.length) await pool.query(statements[next++])
    }),
  )
  parentPort.postMessage({ ok: true })
} catch (error) {
  parentPort.postMessage({ ok: false, error: String(error) })
} finally {
  await pool.end()
}
