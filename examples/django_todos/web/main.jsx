// The Django todos page: lists and memberships through @electric-sql/react's useShape,
// todos through a TanStack DB Electric collection whose optimistic writes go to the
// Django Writer view; each handler returns the write's txid, so the optimistic row is
// replaced by the synced one once that transaction shows up in the shape.
import { useShape } from '@electric-sql/react'
import { createCollection, useLiveQuery } from '@tanstack/react-db'
import { electricCollectionOptions } from '@tanstack/electric-db-collection'
import { useState } from 'react'
import { createRoot } from 'react-dom/client'

const origin = window.location.origin
// The signed-in user and the others, rendered by the Django view (json_script).
const { me, users } = JSON.parse(document.getElementById('page').textContent)
const relation = ['public', 'todos_todo']

// Django's CSRF check: the csrftoken cookie's value in the X-CSRFToken header (the page
// view sets the cookie with ensure_csrf_cookie).
function csrfToken() {
  const cookie = document.cookie.split('; ').find((c) => c.startsWith('csrftoken='))
  return cookie ? decodeURIComponent(cookie.slice('csrftoken='.length)) : ''
}

async function send(path, body, method = 'POST') {
  const response = await fetch(path, {
    method,
    headers: { 'content-type': 'application/json', 'x-csrftoken': csrfToken() },
    body: body && JSON.stringify(body),
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
  const { txid } = await send('/api/mutations/', mutations)
  return { txid }
}

export const todos = createCollection(electricCollectionOptions({
  id: 'todos',
  shapeOptions: { url: `${origin}/shapes/todos/` },
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

const nameOf = (id) => (id === me.id ? me.username : users.find((u) => u.id === id)?.username ?? `user ${id}`)

function TodoList({ list, items, members }) {
  const [title, setTitle] = useState('')
  const mine = list.owner_id === me.id
  const sharedWith = members.filter((m) => m.list_id === list.id && m.user_id !== list.owner_id).map((m) => m.user_id)
  return (
    <section data-list={list.name}>
      <h2>{list.name} <small>{mine ? 'yours' : `shared by ${nameOf(list.owner_id)}`}
        {sharedWith.length > 0 && ` · shared with ${sharedWith.map(nameOf).join(', ')}`}</small></h2>
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
      {mine && users.map((other) => sharedWith.includes(other.id)
        ? <button key={other.id} onClick={() => send(`/api/lists/${list.id}/members/${other.id}/`, null, 'DELETE')}>unshare {other.username}</button>
        : <button key={other.id} onClick={() => send(`/api/lists/${list.id}/members/`, { user: other.username })}>share with {other.username}</button>)}
    </section>
  )
}

function App() {
  const { data: lists, isLoading } = useShape({ url: `${origin}/shapes/lists/` })
  const { data: members } = useShape({ url: `${origin}/shapes/memberships/` })
  const { data: items } = useLiveQuery((q) => q.from({ todo: todos }).orderBy(({ todo }) => todo.title))
  const [name, setName] = useState('')
  if (isLoading) return <p>syncing…</p>
  const sorted = [...lists].sort((a, b) => a.id - b.id)
  return (
    <>
      {sorted.map((list) => (
        <TodoList key={list.id} list={list} members={members}
          items={items.filter((todo) => todo.list_id === list.id)} />
      ))}
      <form onSubmit={(event) => {
        event.preventDefault()
        if (name.trim()) send('/api/lists/', { name: name.trim() }).then(() => setName(''))
      }}>
        <input value={name} onChange={(e) => setName(e.target.value)} placeholder="new list" aria-label="new list" />
      </form>
      <p id="status" data-todos={items.length}>{items.length} todos synced</p>
    </>
  )
}

createRoot(document.getElementById('root')).render(<App />)
