// Helpers of the PGlite tests: a PGlite database with the published sync plugin
// (@electric-sql/pglite-sync), and the model check -- the rows of a PGlite table compared
// with a SELECT of the upstream table, both read in the same fixed display settings.
import assert from 'node:assert/strict'
import { PGlite } from '@electric-sql/pglite'
import { electricSync } from '@electric-sql/pglite-sync'
import { SHAPE_URL, pool, withSecret } from './lib.mjs'

/** A PGlite database (in memory, or persisted to `dataDir`) with `db.sync`. */
export function newPGlite(dataDir) {
  return PGlite.create({ dataDir, extensions: { sync: electricSync() } })
}

/**
 * ShapeStreamOptions for pglite-sync: `params` are the shape's (table, where, params,
 * columns, replica), plus the secret. `requests`, if given, records every request URL.
 */
export function shapeOptions(params, { requests, ...options } = {}) {
  const shape = { url: SHAPE_URL, params: withSecret(params), ...options }
  if (requests) {
    shape.fetchClient = (input, init) => {
      requests.push(new URL(input instanceof Request ? input.url : String(input)))
      return fetch(input, init)
    }
  }
  return shape
}

/**
 * Starts `db.sync.syncShapeToTable` and records what it reports: `errors` (onError),
 * `initialSyncs` (onInitialSync calls).
 */
export async function syncTable(db, { shape, table, primaryKey = ['id'], shapeKey = null, ...options }) {
  const state = { errors: [], initialSyncs: 0 }
  const sync = await db.sync.syncShapeToTable({
    shape,
    table,
    primaryKey,
    shapeKey,
    onInitialSync: () => {
      state.initialSyncs += 1
    },
    onError: (error) => {
      state.errors.push(error)
    },
    ...options,
  })
  return { sync, state }
}

// Both sides render values in the same settings, whatever the upstream database's
// defaults are (the harness gives it unusual ones).
const SETTINGS = [
  "SET LOCAL TimeZone = 'UTC'",
  'SET LOCAL extra_float_digits = 1',
  "SET LOCAL IntervalStyle = 'postgres'",
  "SET LOCAL DateStyle = 'ISO, MDY'",
  "SET LOCAL bytea_output = 'hex'",
]

const asJsonRows = (query) => `SELECT to_jsonb(t)::text AS row FROM (${query}) t`

/** The rows of `query` upstream, each as its jsonb text, sorted. */
export async function upstreamRows(query, values = []) {
  const client = await pool.connect()
  try {
    await client.query('BEGIN')
    for (const setting of SETTINGS) await client.query(setting)
    const result = await client.query(asJsonRows(query), values)
    await client.query('COMMIT')
    return result.rows.map((r) => r.row).sort()
  } finally {
    client.release()
  }
}

/** The rows of `query` in PGlite, each as its jsonb text, sorted. */
export async function localRows(db, query, values = []) {
  return db.transaction(async (tx) => {
    await tx.exec(SETTINGS.join(';\n'))
    const result = await tx.query(asJsonRows(query), values)
    return result.rows.map((r) => r.row).sort()
  })
}

/**
 * Waits until PGlite's rows of `localQuery` equal upstream's rows of `upstreamQuery`
 * (read once: nothing changes upstream while we wait), then asserts they do.
 */
export async function converge(db, { upstream, local, values = [], localValues = values, what, state, timeout = 30_000 }) {
  const expected = await upstreamRows(upstream, values)
  const deadline = Date.now() + timeout
  let actual
  for (;;) {
    if (state?.errors.length) {
      throw new Error(`pglite-sync reported an error while waiting for ${what}: ${state.errors[0]?.stack ?? state.errors[0]}`)
    }
    actual = await localRows(db, local ?? upstream, localValues)
    if (JSON.stringify(actual) === JSON.stringify(expected)) break
    if (Date.now() > deadline) break
    await new Promise((resolve) => setTimeout(resolve, 25))
  }
  assert.deepEqual(actual, expected, `PGlite equals upstream (${what})`)
  return expected
}
