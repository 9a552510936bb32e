// A server started with --secret: the client must send `params: { secret }`.
import assert from 'node:assert/strict'
import { after, test } from 'node:test'
import { FetchError, ShapeStream } from '@electric-sql/client'
import { SECRET, SHAPE_URL, closeAll, follow, shapeUrl, sql, uniqueTable, waitFor } from './lib.mjs'

after(closeAll)

const noSecret = SECRET === undefined && 'the server under test has no --secret (set PYSYNC_SECRET)'

/** Runs a ShapeStream with these params until it reports an error. */
async function firstError(params) {
  const controller = new AbortController()
  const errors = []
  const stream = new ShapeStream({ url: SHAPE_URL, params, signal: controller.signal, onError: (e) => { errors.push(e) } })
  const batches = []
  stream.subscribe((messages) => batches.push(messages), (e) => errors.push(e))
  try {
    await waitFor(() => errors.length > 0, { what: 'an error from the client' })
    return { error: errors[0], batches }
  } finally {
    controller.abort()
  }
}

test('--secret: requests without or with a wrong secret get 401; with it the shape syncs', { skip: noSecret }, async () => {
  const table = uniqueTable('guarded')
  await sql(`CREATE TABLE ${table} (id int PRIMARY KEY, v text)`)
  await sql(`INSERT INTO ${table} VALUES (1, 'x')`)

  for (const params of [{ table }, { table, secret: `${SECRET}-wrong` }, { table, secret: '' }]) {
    const { error, batches } = await firstError(params)
    assert.ok(error instanceof FetchError, `FetchError, got ${error}`)
    assert.equal(error.status, 401)
    assert.equal(batches.length, 0, 'no data without the secret')
  }

  // The deprecated api_secret alias is accepted too.
  const alias = await fetch(`${SHAPE_URL}?table=${table}&offset=-1&api_secret=${encodeURIComponent(SECRET)}`)
  assert.equal(alias.status, 200)
  // DELETE is guarded too.
  const del = await fetch(`${SHAPE_URL}?table=${table}`, { method: 'DELETE' })
  assert.equal(del.status, 401)

  const f = follow({ table }) // follow() adds the secret
  await f.until((s) => s.rows.size === 1, 'rows with the secret')
  await sql(`INSERT INTO ${table} VALUES (2, 'y')`)
  await f.until((s) => s.rows.size === 2, 'live rows with the secret')
  // The secret is not part of the shape: a plain request for the definition finds the same shape.
  const plain = await fetch(shapeUrl({ table, offset: '-1' }))
  assert.equal(plain.headers.get('electric-handle'), f.stream.shapeHandle)
  f.close()
})
