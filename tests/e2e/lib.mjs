// Shared helpers of the end-to-end tests: a pg pool on DATABASE_URL, unique table
// names, ShapeStream followers that record what the client delivers, and polling.
import { randomBytes } from 'node:crypto'
import { ShapeStream, isChangeMessage, isControlMessage } from '@electric-sql/client'
import pg from 'pg'

const { PYSYNC_URL, DATABASE_URL } = process.env
if (!PYSYNC_URL || !DATABASE_URL) {
  throw new Error('set PYSYNC_URL (e.g. http://127.0.0.1:3000) and DATABASE_URL')
}

export const SHAPE_URL = `${PYSYNC_URL.replace(/\/$/, '')}/v1/shape`
/** The server's `--secret`, if it has one: every request then carries `secret`. */
export const SECRET = process.env.PYSYNC_SECRET || undefined

/** Shape params plus the secret (which the server must not take as part of the shape). */
export function withSecret(params) {
  return SECRET === undefined ? params : { ...params, secret: SECRET }
}

/** A `/v1/shape` URL with these query params (and the secret), for plain `fetch`. */
export function shapeUrl(query) {
  const url = new URL(SHAPE_URL)
  for (const [key, value] of Object.entries(withSecret(query))) url.searchParams.set(key, value)
  return url.toString()
}
export const pool = new pg.Pool({ connectionString: DATABASE_URL, max: 4 })

export const sql = (text, values) => pool.query(text, values)

/** A table name no other test (or earlier run against the same database) uses. */
export function uniqueTable(prefix) {
  return `${prefix}_${Date.now().toString(36)}_${randomBytes(3).toString('hex')}`
}

const closers = new Set()

/** Aborts every stream still open and closes the pool; call from `after()`. */
export async function closeAll() {
  for (const close of closers) close()
  closers.clear()
  await pool.end()
}

/** Polls `condition` (sync or async) every 10 ms until it is truthy; returns its value. */
export async function waitFor(condition, { timeout = 20_000, what = 'condition', state } = {}) {
  const deadline = Date.now() + timeout
  for (;;) {
    if (state?.errors.length) {
      throw new Error(`stream failed while waiting for ${what}: ${describeError(state.errors[0])}`)
    }
    const value = await condition()
    if (value) return value
    if (Date.now() > deadline) {
      const detail = state ? `; rows=${JSON.stringify(rowsOf(state), jsonSafe)}` : ''
      throw new Error(`timed out after ${timeout} ms waiting for ${what}${detail}`)
    }
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
}

export function describeError(error) {
  if (!error) return String(error)
  const parts = [error.name, error.message]
  if (error.status) parts.push(`status=${error.status}`)
  if (error.json) parts.push(JSON.stringify(error.json))
  else if (error.text) parts.push(error.text)
  return parts.join(' ')
}

/** JSON.stringify replacer that can print BigInt. */
export function jsonSafe(_key, value) {
  return typeof value === 'bigint' ? `${value}n` : value
}

/**
 * Starts a ShapeStream and records everything it delivers.
 *
 * `state.rows` is the materialised shape (key -> row, like the client's `Shape`:
 * inserts set, updates merge, deletes remove, must-refetch clears); `state.messages`
 * every message in order; `state.batches` the message batches; `state.upToDate` the
 * number of up-to-date messages; `state.errors` errors reported by the client.
 */
export function follow(params, options = {}) {
  const controller = new AbortController()
  const state = { messages: [], batches: [], rows: new Map(), upToDate: 0, refetches: 0, errors: [] }
  const stream = new ShapeStream({
    url: SHAPE_URL,
    params: withSecret(params),
    signal: controller.signal,
    onError: (error) => {
      state.errors.push(error)
    },
    ...options,
  })
  stream.subscribe(
    (messages) => {
      state.batches.push(messages)
      for (const message of messages) {
        state.messages.push(message)
        if (isChangeMessage(message)) {
          const { key, value } = message
          switch (message.headers.operation) {
            case 'insert':
              state.rows.set(key, { ...value })
              break
            case 'update':
              state.rows.set(key, { ...state.rows.get(key), ...value })
              break
            case 'delete':
              state.rows.delete(key)
              break
          }
        } else if (isControlMessage(message)) {
          if (message.headers.control === 'must-refetch') {
            state.rows.clear()
            state.refetches += 1
          } else if (message.headers.control === 'up-to-date') {
            state.upToDate += 1
          }
        }
      }
    },
    (error) => state.errors.push(error),
  )
  const close = () => controller.abort()
  closers.add(close)
  return {
    stream,
    state,
    close,
    /** Waits until `predicate(state)` holds right after an up-to-date. */
    until: (predicate, what, timeout) =>
      waitFor(() => stream.isUpToDate && predicate(state), { what, timeout, state }),
    changes: () => state.messages.filter(isChangeMessage),
  }
}

/** A `fetch` that records `{ url, status, contentType, hasData, cursor }` of every response into `log`. */
export function recordingFetch(log) {
  return async (input, init) => {
    const response = await fetch(input, init)
    log.push({
      url: new URL(input instanceof Request ? input.url : String(input)),
      status: response.status,
      contentType: response.headers.get('content-type'),
      hasData: response.headers.get('electric-has-data'),
      cursor: response.headers.get('electric-cursor'),
    })
    return response
  }
}

/** The materialised rows of a follower's state, sorted by `id`. */
export function rowsOf(state) {
  return sortById([...state.rows.values()])
}

export function sortById(rows) {
  return [...rows].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
}
