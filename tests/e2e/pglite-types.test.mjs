// Values of many types synced into PGlite by pglite-sync equal the upstream values: the
// initial rows, then live inserts and updates (also to and from NULL). Both sides are
// compared as `to_jsonb(row)` read in the same display settings.
import { after, test } from 'node:test'
import { closeAll, sql, uniqueTable } from './lib.mjs'
import { converge, newPGlite, shapeOptions, syncTable } from './pglite.mjs'

after(closeAll)

const COLUMNS = {
  c_int2: 'int2',
  c_int4: 'int4',
  c_int8: 'int8',
  c_float4: 'float4',
  c_float8: 'float8',
  c_numeric: 'numeric(14,4)',
  c_numeric_free: 'numeric',
  c_bool: 'bool',
  c_text: 'text',
  c_varchar: 'varchar(20)',
  c_char: 'char(5)',
  c_uuid: 'uuid',
  c_date: 'date',
  c_time: 'time',
  c_timestamp: 'timestamp',
  c_timestamptz: 'timestamptz',
  c_interval: 'interval',
  c_json: 'json',
  c_jsonb: 'jsonb',
  c_bytea: 'bytea',
  c_int_arr: 'int4[]',
  c_int8_arr: 'int8[]',
  c_text_arr: 'text[]',
  c_bool_arr: 'bool[]',
  c_float_arr: 'float8[]',
  c_numeric_arr: 'numeric[]',
  c_timestamptz_arr: 'timestamptz[]',
  c_int_matrix: 'int4[][]',
  c_mood: 'mood',
}

const DDL = Object.entries(COLUMNS).map(([name, type]) => `${name} ${type}`).join(', ')

// Rows as SQL literals (column -> literal); absent columns are NULL.
const TYPICAL = {
  c_int2: '32767', c_int4: '-2147483648', c_int8: '9223372036854775807',
  c_float4: '3.14', c_float8: '0.1', c_numeric: '12345678.1234',
  c_numeric_free: "'-0.000000000000000000001234567890123456789'",
  c_bool: 'true', c_text: `E'h\\u00e9llo "quoted" \\\\ back\\nslash, {brace} and 🎉'`,
  c_varchar: "'abc'", c_char: "'ab'", c_uuid: "'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11'",
  c_date: "'2024-02-29'", c_time: "'13:45:06.789'",
  c_timestamp: "'2024-01-31 13:45:00.123456'", c_timestamptz: "'2024-01-31 13:45:00.123456+02'",
  c_interval: "'1 year 2 months 3 days 04:05:06.5'",
  c_json: `'{"b": 1,  "a": [1, 2.5, {"c": null}], "s": "x\\"y"}'`,
  c_jsonb: `'{"b": 1, "a": [1, 2.5, {"c": null}], "u": "\\u00e9"}'`,
  c_bytea: "'\\x00ff48656c6c6f'::bytea",
  c_int_arr: "'{1,2,NULL,-3}'", c_int8_arr: "'{9223372036854775807,-1,NULL}'",
  // NULL first: pglite-sync 0.6.1's batch-size estimate takes `.length` of every element
  // of an array whose first element is a string, and throws on a NULL after one.
  c_text_arr: `ARRAY[NULL, 'a b', 'with "quotes"', 'back\\slash', 'NULL', '', '{brace}', 'comma,', 'é']`,
  c_bool_arr: "'{t,f,NULL}'", c_float_arr: "'{1.5,-0.25,1e+300}'",
  c_numeric_arr: "'{NULL,1.50,-2,0.0001}'",
  c_timestamptz_arr: "ARRAY['2024-01-01 00:00:00+00', '1999-12-31 23:59:59.5-08']::timestamptz[]",
  c_int_matrix: "'{{1,2},{3,4}}'", c_mood: "'happy'",
}

const EDGES = {
  c_int2: '-32768', c_int4: '0', c_int8: '-9223372036854775808',
  c_float4: "'-Infinity'", c_float8: "'NaN'", c_numeric: '-0.0001', c_numeric_free: "'NaN'",
  c_bool: 'false', c_text: "''", c_varchar: "' x '", c_char: "'abcde'",
  c_uuid: "'00000000-0000-0000-0000-000000000000'",
  c_date: "'0044-03-15 BC'", c_time: "'00:00:00'",
  c_timestamp: "'infinity'", c_timestamptz: "'-infinity'", c_interval: "'-1 days 00:00:00.000001'",
  // Not a top-level JSON string or null: the client parses `"s"` to the string s, which
  // PGlite then takes as JSON text (and `null` to SQL NULL) -- so with Electric too.
  c_json: "'[]'", c_jsonb: `'[1, "two", null, true, {"x": []}, -0.5e-10]'`, c_bytea: "''::bytea",
  c_int_arr: "'{}'", c_text_arr: "ARRAY[NULL]::text[]", c_float_arr: "'{NaN,Infinity,-Infinity}'",
  c_mood: "'sad'",
}

const insert = (table, id, literals) => {
  const columns = Object.keys(literals)
  return sql(`INSERT INTO ${table} (id, ${columns.join(', ')}) VALUES (${id}, ${columns.map((c) => literals[c]).join(', ')})`)
}

test('values of many types land in PGlite as they are upstream', async () => {
  const mood = uniqueTable('mood')
  const table = uniqueTable('typed')
  const ddl = DDL.replace(' mood', ` ${mood}`)
  await sql(`CREATE TYPE ${mood} AS ENUM ('sad', 'ok', 'happy')`)
  await sql(`CREATE TABLE ${table} (id int PRIMARY KEY, ${ddl})`)
  await insert(table, 1, TYPICAL)
  await insert(table, 2, EDGES)
  await sql(`INSERT INTO ${table} (id) VALUES (3)`) // every column NULL

  const db = await newPGlite()
  try {
    await db.exec(`CREATE TYPE ${mood} AS ENUM ('sad', 'ok', 'happy'); CREATE TABLE typed (id int PRIMARY KEY, ${ddl})`)
    // PGlite takes a bytea parameter as bytes only; the client leaves bytea as its text
    // form (`\\x` and hex), so the shape's parser decodes it.
    const parser = { bytea: (text) => Uint8Array.from(Buffer.from(text.slice(2), 'hex')) }
    const { sync, state } = await syncTable(db, { shape: shapeOptions({ table }, { parser }), table: 'typed' })
    const model = { upstream: `SELECT * FROM ${table}`, local: 'SELECT * FROM typed', state }
    await converge(db, { ...model, what: 'snapshot rows' })

    await insert(table, 11, TYPICAL)
    await insert(table, 12, EDGES)
    await sql(`INSERT INTO ${table} (id) VALUES (13)`)
    await converge(db, { ...model, what: 'live inserts' })

    // Updates: NULL to values, values to NULL, values to other values.
    const assign = (literals) => Object.entries(literals).map(([c, v]) => `${c} = ${v}`).join(', ')
    await sql(`UPDATE ${table} SET ${assign(TYPICAL)} WHERE id IN (3, 13)`)
    await sql(`UPDATE ${table} SET ${Object.keys(COLUMNS).map((c) => `${c} = NULL`).join(', ')} WHERE id = 11`)
    await sql(`UPDATE ${table} SET ${assign(EDGES)} WHERE id = 1`)
    await converge(db, { ...model, what: 'live updates' })
    sync.unsubscribe()
  } finally {
    await db.close()
  }
})
