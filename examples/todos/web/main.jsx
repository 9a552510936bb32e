// The todos page: lists and shares through @electric-sql/react's useShape, todos through
// a TanStack DB Electric collection whose optimistic writes go to the app's Writer
// endpoint; each handler returns the write's txid, so the optimistic row is replaced
// by the synced one once that transaction shows up in the shape.
import { useShape } from '@electric-sql/react'
import { createCollection, useLiveQuery } from '@tanstack/react-db'
import { electricCollectionOptions } from '@tanstack/electric-db-collection'
import { useEffect, useState } from 'react'
import { createRoot } from 'react-dom/client'

const origin = window.location.origin
const USERS = ['ann', 'bob', 'cat']
const relation = ['public', 'todos']

async function post(path, body, method = 'POST') {
  const response = await fetch(path, {
    method, headers: { 'content-type': 'application/json' }, body: body && JSON.stringify(body),
  })
  if (!response.ok) throw new Error(`${path}: ${response.status} ${await response.text()}`)
  return response.json()
}

// What the Writer reads: TanStack DB's mutations, each naming its table.
async function write({ transaction }) {
  const mutations = transaction.mutations.map((m) => ({
    type: m.type, modified: m.modified, original: m.original, changes: m.changes,
    syncMetadata: { relation },
  }))
  const { txid } = await post('/api/mutations', mutations)
  return { txid }
}

export const todos = createCollection(electricCollectionOptions({
  id: 'todos',
  shapeOptions: { url: `${origin}/shapes/todos` },
  getKey: (todo) => todo.id,
  onInsert: write,
  onUpdate: write,
  onDelete: write,
}))

// The browser test reads the fate of each optimistic transaction here.
const persisted = (window.__persisted = [])
function track(transaction, what) {
  const entry = { what, state: 'pending' }
  persisted.push(entry)
  transaction.isPersisted.promise.then(() => { entry.state = 'persisted' }, (error) => {
    entry.state = 'failed'
    entry.error = String(error)
  })
}

function TodoList({ list, items, shares, me }) {
  const [title, setTitle] = useState('')
  const mine = list.owner === me
  const sharedWith = shares.filter((s) => s.list_id === list.id).map((s) => s.user)
  const others = USERS.filter((u) => u !== me)
  return (
    <section data-list={list.name}>
      <h2>{list.name} <small>{mine ? 'yours' : `shared by ${list.owner}`}
        {sharedWith.length > 0 && ` · shared with ${sharedWith.join(', ')}`}</small></h2>
      <ul>
        {items.map((todo) => (
          <li key={todo.id} className={todo.done ? 'done' : ''} data-todo={todo.title}>
            <input type="checkbox" checked={todo.done} aria-label={`done ${todo.title}`}
              onChange={() => track(todos.update(todo.id, (draft) => { draft.done = !draft.done }), `toggle ${todo.title}`)} />
            <span className="title">{todo.title}</span>
            <button aria-label={`delete ${todo.title}`} onClick={() => track(todos.delete(todo.id), `delete ${todo.title}`)}>×</button>
          </li>
        ))}
      </ul>
      <form onSubmit={(event) => {
        event.preventDefault()
        if (!title.trim()) return
        track(todos.insert({ id: crypto.randomUUID(), list_id: list.id, title: title.trim(), done: false }), `add ${title.trim()}`)
        setTitle('')
      }}>
        <input value={title} onChange={(e) => setTitle(e.target.value)} placeholder="new todo" aria-label={`new todo in ${list.name}`} />
      </form>
      {mine && others.map((other) => sharedWith.includes(other)
        ? <button key={other} onClick={() => post(`/api/lists/${list.id}/shares/${other}`, null, 'DELETE')}>unshare {other}</button>
        : <button key={other} onClick={() => post(`/api/lists/${list.id}/shares/${other}`)}>share with {other}</button>)}
    </section>
  )
}

function App({ me }) {
  const { data: lists, isLoading } = useShape({ url: `${origin}/shapes/lists` })
  const { data: shares } = useShape({ url: `${origin}/shapes/shares` })
  const { data: items } = useLiveQuery((q) => q.from({ todo: todos }).orderBy(({ todo }) => todo.title))
  const [name, setName] = useState('')
  if (isLoading) return <p>syncing…</p>
  const sorted = [...lists].sort((a, b) => a.id - b.id)
  return (
    <>
      <header><h1>{me}'s todos</h1>{USERS.filter((u) => u !== me).map((u) => <a key={u} href={`/login?user=${u}`}>be {u}</a>)}</header>
      {sorted.map((list) => (
        <TodoList key={list.id} list={list} me={me} shares={shares}
          items={items.filter((todo) => todo.list_id === list.id)} />
      ))}
      <form onSubmit={(event) => {
        event.preventDefault()
        if (name.trim()) post('/api/lists', { name: name.trim() }).then(() => setName(''))
      }}>
        <input value={name} onChange={(e) => setName(e.target.value)} placeholder="new list" aria-label="new list" />
      </form>
      <p id="status" data-todos={items.length}>{items.length} todos synced</p>
    </>
  )
}

function SignIn() {
  return <p>Sign in as {USERS.map((u) => <a key={u} href={`/login?user=${u}`} style={{ marginRight: '1em' }}>{u}</a>)}</p>
}

function Root() {
  const [me, setMe] = useState(undefined)
  useEffect(() => {
    fetch('/api/me').then((r) => (r.ok ? r.json() : { user: null })).then((body) => setMe(body.user))
  }, [])
  if (me === undefined) return <p>…</p>
  return me ? <App me={me} /> : <SignIn />
}

createRoot(document.getElementById('root')).render(<Root />)
