// Values of every supported type, parsed by the client's default parser, equal what
// `pg` reads from the same row -- for snapshot rows and for live-inserted rows.
//
// The pytest harness gives the database unusual display defaults (TimeZone, IntervalStyle,
// extra_float_digits, bytea_output), so this also checks that pysync formats values in its
// own fixed session settings, as Electric does, whatever the database's defaults are.
import assert from 'node:assert/strict'
import { after, test } from 'node:test'
import { jsonSafe, closeAll, follow, pool, sql, uniqueTable } from './lib.mjs'

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
  c_timetz: 'timetz',
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
  c_int_matrix: 'int4[][]',
  c_enum: 'MOOD',
  c_enum_arr: 'MOOD[]',
}

// Rows as SQL literals (column -> literal); absent columns are NULL.
const TYPICAL = {
  c_int2: '32767', c_int4: '-2147483648', c_int8: '9223372036854775807',
  c_float4: '3.14', c_float8: '0.1', c_numeric: '12345678.1234',
  c_numeric_free: "'-0.000000000000000000001234567890123456789'",
  c_bool: 'true', c_text: `E'h\\u00e9llo "quoted" \\\\ back\\nslash / and 🎉'`,
  c_varchar: "'abc'", c_char: "'ab'", c_uuid: "'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11'",
  c_date: "'2024-02-29'", c_time: "'13:45:06.789'", c_timetz: "'13:45:06+02'",
  c_timestamp: "'2024-01-31 13:45:00.123456'", c_timestamptz: "'2024-01-31 13:45:00.123456+02'",
  c_interval: "'1 year 2 months 3 days 04:05:06.5'",
  c_json: `'{"b": 1,  "a": [1, 2.5, {"c": null}], "s": "x\\"y"}'`,
  c_jsonb: `'{"b": 1, "a": [1, 2.5, {"c": null}], "u": "\\u00e9"}'`,
  c_bytea: "'\\x00ff48656c6c6f'::bytea",
  c_int_arr: "'{1,2,NULL,-3}'", c_int8_arr: "'{9223372036854775807,-1,NULL}'",
  c_text_arr: `ARRAY['a b', NULL, 'with "quotes"', 'back\\slash', 'NULL', '', '{brace}', 'comma,', 'é']`,
  c_bool_arr: "'{t,f,NULL}'", c_float_arr: "'{1.5,NaN,-Infinity,1e+300}'",
  c_int_matrix: "'{{1,2},{3,NULL}}'", c_enum: "'happy'", c_enum_arr: `'{sad,"so-so",NULL}'`,
}
const SPECIAL = {
  c_int2: '-32768', c_int4: '0', c_int8: '-9223372036854775808',
  c_float4: "'NaN'", c_float8: "'Infinity'", c_numeric: "'NaN'", c_numeric_free: '0',
  c_bool: 'false', c_text: "''", c_varchar: "''", c_char: "'abcde'",
  c_uuid: "'00000000-0000-0000-0000-000000000000'", c_date: "'0001-01-01'",
  c_time: "'24:00:00'", c_timetz: "'00:00:00-05:30'",
  c_timestamp: "'1999-12-31 23:59:59'", c_timestamptz: "'2000-01-01 00:00:00.5+05:30'",
  c_interval: "'-1 day -00:00:01'", c_json: "'null'", c_jsonb: `'"just a string"'`,
  c_bytea: "''::bytea", c_int_arr: "'{}'", c_int8_arr: "'{}'", c_text_arr: "'{}'",
  c_bool_arr: "'{}'", c_float_arr: "'{Infinity}'", c_int_matrix: "'{}'", c_enum: "'so-so'",
  c_enum_arr: "'{}'",
}
const MORE_SPECIAL = {
  c_float4: "'-Infinity'", c_float8: "'NaN'", c_float_arr: "'{0.30000000000000004,-0}'",
  c_float4_note: null,
  c_timestamp: "'infinity'", c_timestamptz: "'-infinity'", c_date: "'infinity'",
  c_interval: "'PT0S'", c_json: `'[1, "two", [3]]'`, c_jsonb: "'{}'",
  c_text: "'NULL'", c_text_arr: `'{"",NULL,"NULL"}'`,
}
delete MORE_SPECIAL.c_float4_note
const ALL_NULL = {}

// Reads rows with pg: typed with pg's default parsers, and as text in Electric's display
// settings, on a dedicated connection (the database's defaults are deliberately odd).
async function pgRows(table) {
  const client = await pool.connect()
  try {
    await client.query(`SET TimeZone = 'UTC'; SET DateStyle = 'ISO, DMY'; SET IntervalStyle = 'iso_8601'; SET extra_float_digits = 1; SET bytea_output = 'hex'`)
    const typed = (await client.query(`SELECT * FROM ${table} ORDER BY id`)).rows
    const texts = (await client.query(`SELECT id, ${Object.keys(COLUMNS).map((c) => `${c}::text`).join(', ')} FROM ${table} ORDER BY id`)).rows
    return new Map(typed.map((row, i) => [row.id, { typed: row, text: texts[i] }]))
  } finally {
    await client.query('RESET ALL')
    client.release()
  }
}

const toIso = (text) => text.replace(' ', 'T').replace(/([+-]\d\d)$/, '$1:00').replace(/([+-]\d\d):?(\d\d)$/, '$1:$2')

// Element comparison of a client value with pg's typed value, by column type.
function expectedScalar(base, pgValue) {
  if (pgValue === null) return null
  switch (base) {
    case 'int8':
      return BigInt(pgValue)
    case 'bytea':
      return `\\x${pgValue.toString('hex')}`
    default:
      return pgValue
  }
}

function mapArray(value, fn) {
  return Array.isArray(value) ? value.map((v) => mapArray(v, fn)) : fn(value)
}

function checkRow(clientRow, { typed, text }, where) {
  assert.deepEqual(Object.keys(clientRow).sort(), ['id', ...Object.keys(COLUMNS)].sort(), `${where}: columns`)
  assert.equal(clientRow.id, typed.id)
  for (const [column, type] of Object.entries(COLUMNS)) {
    const got = clientRow[column]
    const pgValue = typed[column]
    const label = `${where} ${column} (${type}): client ${JSON.stringify(got, jsonSafe)}, pg ${JSON.stringify(pgValue, jsonSafe)} / text ${JSON.stringify(text[column])}`
    if (pgValue === null) {
      assert.equal(got, null, label)
      continue
    }
    const base = type.replace(/\(.*\)/, '').replace(/(\[\])+$/, '').toLowerCase()
    if (type.endsWith('[]')) {
      assert.ok(Array.isArray(got), label)
      if (base === 'mood') {
        // pg does not know the enum array's type oid and gives the literal text
        assert.equal(typeof pgValue, 'string', label)
        assert.deepEqual(got, pgValue === '{}' ? [] : pgValue.slice(1, -1).split(',').map((e) => (e === 'NULL' ? null : e.replace(/^"(.*)"$/, '$1'))), label)
      } else if (base === 'float8') {
        assert.deepEqual(got.map((v) => (Object.is(v, -0) ? 'neg0' : v)), pgValue.map((v) => (Object.is(v, -0) ? 'neg0' : v)), label)
      } else {
        assert.deepEqual(got, mapArray(pgValue, (v) => expectedScalar(base, v)), label)
      }
      continue
    }
    switch (base) {
      case 'int2':
      case 'int4':
        assert.equal(typeof got, 'number', label)
        assert.equal(got, pgValue, label)
        break
      case 'int8':
        assert.equal(typeof got, 'bigint', label)
        assert.equal(got, BigInt(pgValue), label)
        break
      case 'float4':
      case 'float8':
        assert.equal(typeof got, 'number', label)
        assert.ok(Object.is(got, pgValue), label)
        break
      case 'bool':
        assert.equal(got, pgValue, label)
        break
      case 'json':
      case 'jsonb':
        assert.deepEqual(got, pgValue, label)
        break
      case 'bytea':
        assert.equal(got, expectedScalar('bytea', pgValue), label)
        break
      case 'timestamptz':
        assert.equal(got, text[column], label)
        if (pgValue instanceof Date && Number.isFinite(pgValue.getTime())) {
          assert.ok(Math.abs(Date.parse(toIso(got)) - pgValue.getTime()) < 1, label)
        }
        break
      case 'date':
      case 'timestamp':
      case 'interval':
        // pg parses these into Date/interval objects in its own way: compare the text form.
        assert.equal(got, text[column], label)
        break
      default:
        // numeric, text, varchar, char(n) (space padded), uuid, time, timetz, enum: strings
        assert.equal(typeof got, 'string', label)
        assert.equal(got, pgValue, label)
        // (char(n)::text drops the padding, the column's own output keeps it)
        if (base !== 'char') assert.equal(got, text[column], label)
    }
  }
}

function insertSql(table, id, literals) {
  const columns = Object.keys(literals)
  return `INSERT INTO ${table} (id${columns.map((c) => `, ${c}`).join('')}) VALUES (${id}${columns.map((c) => `, ${literals[c]}`).join('')})`
}

test('values of every supported type: snapshot rows and live rows parse as pg reads them', async () => {
  const table = uniqueTable('types')
  const mood = `${table}_mood`
  await sql(`CREATE TYPE ${mood} AS ENUM ('sad', 'so-so', 'happy')`)
  const ddl = Object.entries(COLUMNS).map(([c, t]) => `${c} ${t.replace('MOOD', mood)}`).join(', ')
  await sql(`CREATE TABLE ${table} (id int PRIMARY KEY, ${ddl})`)
  const rows = [TYPICAL, SPECIAL, MORE_SPECIAL, ALL_NULL]
  for (const [i, literals] of rows.entries()) await sql(insertSql(table, i + 1, literals))

  const f = follow({ table })
  await f.until((s) => s.rows.size === 4, 'snapshot rows')
  const snapshotValues = await pgRows(table)
  for (const message of f.changes()) {
    checkRow(message.value, snapshotValues.get(message.value.id), `snapshot row ${message.value.id}`)
  }
  assert.equal(f.changes().length, 4)

  // The same rows again, inserted live (replication path), and one updated live.
  for (const [i, literals] of rows.entries()) await sql(insertSql(table, i + 11, literals))
  await sql(`UPDATE ${table} SET ${Object.entries(TYPICAL).map(([c, v]) => `${c} = ${v}`).join(', ')} WHERE id = 4`)
  await f.until((s) => s.rows.size === 8 && s.rows.get(`"public"."${table}"/"4"`)?.c_int2 === 32767, 'live rows')
  const liveValues = await pgRows(table)
  const live = f.changes().slice(4)
  assert.deepEqual(live.map((m) => m.headers.operation), ['insert', 'insert', 'insert', 'insert', 'update'])
  for (const message of live.slice(0, 4)) {
    checkRow(message.value, liveValues.get(message.value.id), `live row ${message.value.id}`)
  }
  // The materialised updated row (snapshot NULLs + live update) equals the pg row.
  checkRow(f.state.rows.get(`"public"."${table}"/"4"`), liveValues.get(4), 'updated row 4')
  f.close()
})

test("replica 'full' update of every type: value and old_value parse as pg reads them", async () => {
  const table = uniqueTable('types_full')
  const mood = `${table}_mood`
  await sql(`CREATE TYPE ${mood} AS ENUM ('sad', 'so-so', 'happy')`)
  const ddl = Object.entries(COLUMNS).map(([c, t]) => `${c} ${t.replace('MOOD', mood)}`).join(', ')
  await sql(`CREATE TABLE ${table} (id int PRIMARY KEY, ${ddl})`)
  await sql(insertSql(table, 1, SPECIAL))
  const before = await pgRows(table)

  const f = follow({ table, replica: 'full' })
  await f.until((s) => s.rows.size === 1, 'snapshot row')
  await sql(`UPDATE ${table} SET ${Object.entries(TYPICAL).map(([c, v]) => `${c} = ${v}`).join(', ')} WHERE id = 1`)
  await f.until((s) => s.rows.get(`"public"."${table}"/"1"`)?.c_int2 === 32767, 'live update')
  const after = await pgRows(table)
  const update = f.changes().at(-1)
  assert.equal(update.headers.operation, 'update')
  checkRow(update.value, after.get(1), 'full update value')
  // old_value holds the old values of the changed columns: complete it from the new row to check it.
  const changed = Object.keys(update.old_value)
  assert.ok(changed.length > 20, `most columns changed: ${changed}`)
  checkRow({ ...update.value, ...update.old_value }, {
    typed: { ...after.get(1).typed, ...Object.fromEntries(changed.map((c) => [c, before.get(1).typed[c]])) },
    text: { ...after.get(1).text, ...Object.fromEntries(changed.map((c) => [c, before.get(1).text[c]])) },
  }, 'full update old_value')
  f.close()
})
