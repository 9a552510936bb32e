// Subquery shapes (`IN (SELECT ...)`) with TanStack DB's Electric collection, for a
// users -> memberships -> projects -> todos chain: a membership added moves the todos of
// its project in, removed moves them out, a project archived moves its todos out; the
// collection's rows always come to equal the query. Also a raw ShapeStream that applies
// tags and move events itself, as Electric's Elixir client (TagTracker) does: the
// published `Shape` class ignores move events.
import assert from 'node:assert/strict'
import { after, test } from 'node:test'
import { createCollection } from '@tanstack/db'
import { electricCollectionOptions } from '@tanstack/electric-db-collection'
import { ShapeStream, isChangeMessage } from '@electric-sql/client'
import { SHAPE_URL, closeAll, sql, uniqueTable, waitFor, withSecret } from './lib.mjs'

after(closeAll)

async function chain() {
  const t = {
    projects: uniqueTable('projects'),
    memberships: uniqueTable('memberships'),
    todos: uniqueTable('todos'),
  }
  await sql(`CREATE TABLE ${t.projects} (id int PRIMARY KEY, name text NOT NULL, archived bool NOT NULL DEFAULT false)`)
  await sql(`CREATE TABLE ${t.memberships} (user_id int, project_id int, PRIMARY KEY (user_id, project_id))`)
  await sql(`CREATE TABLE ${t.todos} (id int PRIMARY KEY, project_id int NOT NULL, title text NOT NULL, done bool NOT NULL DEFAULT false)`)
  await sql(`INSERT INTO ${t.projects} SELECT g, 'project ' || g FROM generate_series(1, 5) g`)
  await sql(`INSERT INTO ${t.memberships} VALUES (1, 1), (1, 2), (2, 3)`)
  await sql(`INSERT INTO ${t.todos} SELECT g, 1 + g % 5, 'todo ' || g FROM generate_series(1, 40) g`)
  t.where = `project_id IN (SELECT id FROM ${t.projects} WHERE NOT archived AND id IN ` +
    `(SELECT project_id FROM ${t.memberships} WHERE user_id = $1))`
  return t
}

async function expectedIds(t, user) {
  const { rows } = await sql(`SELECT id FROM ${t.todos} WHERE ${t.where} ORDER BY id`, [user])
  return rows.map((r) => r.id)
}

const STEPS = (t) => [
  `INSERT INTO ${t.memberships} VALUES (1, 3)`, // project 3's todos move in
  `DELETE FROM ${t.memberships} WHERE user_id = 1 AND project_id = 1`, // project 1's move out
  `UPDATE ${t.projects} SET archived = true WHERE id = 2`, // out, through the inner subquery
  `INSERT INTO ${t.todos} VALUES (100, 3, 'new', false)`,
  `UPDATE ${t.todos} SET project_id = 4 WHERE id = 8`, // out of the shape
  `BEGIN; INSERT INTO ${t.memberships} VALUES (1, 4); UPDATE ${t.todos} SET title = 'same txn' WHERE project_id = 4; COMMIT`,
  `UPDATE ${t.projects} SET archived = false WHERE id = 2`, // back in
  `DELETE FROM ${t.memberships} WHERE user_id = 1`, // everything out
  `INSERT INTO ${t.memberships} VALUES (1, 1), (1, 5)`,
]

test('TanStack DB Electric collection on a subquery shape follows memberships', async () => {
  const t = await chain()
  const todos = createCollection(electricCollectionOptions({
    id: t.todos,
    shapeOptions: { url: SHAPE_URL, params: withSecret({ table: t.todos, where: t.where, params: ['1'] }) },
    getKey: (row) => row.id,
  }))
  try {
    await todos.preload()
    const ids = () => [...todos.state.values()].map((r) => r.id).sort((a, b) => a - b)
    const converge = async (what) => {
      const want = await expectedIds(t, 1)
      await waitFor(() => JSON.stringify(ids()) === JSON.stringify(want), {
        what: `${what}: collection ${JSON.stringify(ids())} vs query ${JSON.stringify(want)}`,
      })
    }
    await converge('initial rows')
    for (const step of STEPS(t)) {
      await sql(step)
      await converge(step)
    }
    const row = todos.state.get(5) // project 1: left and joined again
    assert.equal(row.title, 'todo 5')
    assert.equal(row.project_id, 1)
  } finally {
    await todos.cleanup()
  }
})

/** Rows of a raw ShapeStream, with tags and move events applied as TagTracker does. */
function tagTracker() {
  const rows = new Map()
  const entries = new Map() // key -> Set of "pos:hash"
  const active = new Map()
  const index = new Map() // "pos:hash" -> Set of keys
  let disjuncts = null
  const split = (tags) => (tags ?? []).flatMap((tag) => tag.split('/').map((v, i) => [i, v]).filter(([, v]) => v).map(([i, v]) => `${i}:${v}`))
  const forget = (key) => {
    for (const e of entries.get(key) ?? []) index.get(e)?.delete(key)
    entries.delete(key)
    active.delete(key)
  }
  const apply = (m) => {
    if (isChangeMessage(m)) {
      const { operation, tags, removed_tags: removed, active_conditions: ac } = m.headers
      if (operation === 'delete') {
        rows.delete(m.key)
        forget(m.key)
        return
      }
      rows.set(m.key, operation === 'insert' ? { ...m.value } : { ...rows.get(m.key), ...m.value })
      if (tags && disjuncts === null) disjuncts = tags.map((tag) => tag.split('/').flatMap((v, i) => (v ? [i] : [])))
      const current = entries.get(m.key) ?? new Set()
      const updated = new Set([...current].filter((e) => !split(removed).includes(e)))
      for (const e of split(tags)) updated.add(e)
      for (const e of current) if (!updated.has(e)) index.get(e)?.delete(m.key)
      for (const e of updated) {
        if (!index.has(e)) index.set(e, new Set())
        index.get(e).add(m.key)
      }
      entries.set(m.key, updated)
      if (ac?.length) active.set(m.key, [...ac])
    } else if (m.headers.event === 'move-out') {
      for (const { pos, value } of m.headers.patterns) {
        for (const key of [...(index.get(`${pos}:${value}`) ?? [])]) {
          const ac = active.get(key)
          ac[pos] = false
          if (!disjuncts.some((d) => d.every((p) => ac[p]))) {
            rows.delete(key)
            forget(key)
          }
        }
      }
    } else if (m.headers.event === 'move-in') {
      for (const { pos, value } of m.headers.patterns) {
        for (const key of index.get(`${pos}:${value}`) ?? []) active.get(key)[pos] = true
      }
    } else if (m.headers.control === 'must-refetch') {
      rows.clear()
      entries.clear()
      active.clear()
      index.clear()
    }
  }
  return { rows, apply }
}

test('raw ShapeStream with tags applied as TagTracker does equals the query', async () => {
  const t = await chain()
  const tracker = tagTracker()
  const events = []
  const controller = new AbortController()
  const stream = new ShapeStream({
    url: SHAPE_URL,
    params: withSecret({ table: t.todos, where: t.where, params: ['2'] }),
    signal: controller.signal,
  })
  let upToDate = false
  stream.subscribe((messages) => {
    for (const m of messages) {
      tracker.apply(m)
      if (m.headers.event) events.push(m.headers)
      if (m.headers.control === 'up-to-date') upToDate = true
    }
  })
  try {
    const ids = () => [...tracker.rows.values()].map((r) => r.id).sort((a, b) => a - b)
    const converge = async (what) => {
      const want = await expectedIds(t, 2)
      await waitFor(() => upToDate && JSON.stringify(ids()) === JSON.stringify(want), {
        what: `${what}: rows ${JSON.stringify(ids())} vs query ${JSON.stringify(want)}`,
      })
    }
    await converge('initial rows')
    for (const step of [
      `INSERT INTO ${t.memberships} VALUES (2, 1)`,
      `UPDATE ${t.projects} SET archived = true WHERE id = 3`,
      `DELETE FROM ${t.memberships} WHERE user_id = 2 AND project_id = 1`,
      `UPDATE ${t.projects} SET archived = false WHERE id = 3`,
    ]) {
      await sql(step)
      await converge(step)
    }
    assert.ok(events.some((e) => e.event === 'move-in') && events.some((e) => e.event === 'move-out'))
    assert.ok(events.every((e) => Array.isArray(e.txids) && e.patterns.length > 0))
  } finally {
    controller.abort()
  }
})

test('TanStack DB collection on a negation wrapping more than the subquery (exclude() on a nullable FK)', async () => {
  const t = { memberships: uniqueTable('memberships'), todos: uniqueTable('todos') }
  await sql(`CREATE TABLE ${t.memberships} (user_id int, project_id int, PRIMARY KEY (user_id, project_id))`)
  await sql(`CREATE TABLE ${t.todos} (id int PRIMARY KEY, project_id int, title text NOT NULL)`)
  await sql(`INSERT INTO ${t.memberships} VALUES (1, 1), (1, 2), (2, 3)`)
  await sql(`INSERT INTO ${t.todos} SELECT g, CASE WHEN g % 7 = 0 THEN NULL ELSE 1 + g % 5 END, 'todo ' || g FROM generate_series(1, 40) g`)
  const member = `project_id IN (SELECT project_id FROM ${t.memberships} WHERE user_id = $1)`
  for (const where of [`NOT ((${member}) AND (project_id IS NOT NULL))`, `NOT (id = 5 OR ${member})`]) {
    const todos = createCollection(electricCollectionOptions({
      id: `${t.todos}-${where.length}`,
      shapeOptions: { url: SHAPE_URL, params: withSecret({ table: t.todos, where, params: ['1'] }) },
      getKey: (row) => row.id,
    }))
    try {
      await todos.preload()
      const ids = () => [...todos.state.values()].map((r) => r.id).sort((a, b) => a - b)
      const converge = async (what) => {
        const { rows } = await sql(`SELECT id FROM ${t.todos} WHERE ${where} ORDER BY id`, [1])
        const want = rows.map((r) => r.id)
        await waitFor(() => JSON.stringify(ids()) === JSON.stringify(want), {
          what: `${where} ${what}: collection ${JSON.stringify(ids())} vs query ${JSON.stringify(want)}`,
        })
      }
      await converge('initial rows')
      for (const step of [
        `INSERT INTO ${t.memberships} VALUES (1, 3)`, // project 3's todos move out
        `DELETE FROM ${t.memberships} WHERE user_id = 1 AND project_id = 1`, // project 1's move in
        `DELETE FROM ${t.memberships} WHERE user_id = 1`, // every todo in
        `INSERT INTO ${t.memberships} VALUES (1, 1), (1, 4)`,
        `UPDATE ${t.todos} SET project_id = 4 WHERE id = 8`,
        `DELETE FROM ${t.memberships} WHERE user_id = 1 AND project_id = 4`,
      ]) {
        await sql(step)
        await converge(step)
      }
    } finally {
      await todos.cleanup()
    }
    await sql(`DELETE FROM ${t.memberships}`)
    await sql(`INSERT INTO ${t.memberships} VALUES (1, 1), (1, 2), (2, 3)`)
  }
})
