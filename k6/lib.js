// What every scenario shares: where the broker is, its tokens, and one student's calls.
// Everything comes from the environment, so the same scripts run against a laptop, a
// staging fleet or production:
//   BASE_URL      one instance (default http://127.0.0.1:8080)
//   BASE_URLS     several, comma-separated (fleet.js spreads students over them)
//   TRACK_TOKEN   a BROKER_API_TOKEN value (required)
//   ADMIN_TOKEN   a BROKER_ADMIN_TOKEN value (optional: the end-of-run invariant checks)
//   NAME_PREFIX   allocate only sandboxes whose name starts with it (optional)
import http from 'k6/http';
import { check, fail } from 'k6';

/** The instances under test, in order. */
export const bases = (__ENV.BASE_URLS || __ENV.BASE_URL || 'http://127.0.0.1:8080')
  .split(',')
  .map((url) => url.trim().replace(/\/+$/, ''))
  .filter((url) => url.length > 0);

/** The first instance. */
export const base = bases[0];

const trackToken = __ENV.TRACK_TOKEN || fail('set TRACK_TOKEN to a BROKER_API_TOKEN value');
const adminToken = __ENV.ADMIN_TOKEN || '';

/** The headers of `student`'s calls, in lab `track`, with an optional idempotency key. */
export function studentHeaders(student, track, idempotencyKey) {
  const headers = {
    Authorization: `Bearer ${trackToken}`,
    'X-Instruqt-Sandbox-ID': student,
    'X-Instruqt-Track-ID': track,
  };
  if (idempotencyKey) headers['Idempotency-Key'] = idempotencyKey;
  if (__ENV.NAME_PREFIX) headers['X-Sandbox-Name-Prefix'] = __ENV.NAME_PREFIX;
  return headers;
}

/** A student name unique to this run, VU and iteration. */
export function studentName(scenario) {
  return `k6-${scenario}-${__ENV.RUN_ID || runId}-${__VU}-${__ITER}`;
}
const runId = Date.now().toString(36);

/** `POST /v1/allocate` on `url`. */
export function allocate(url, headers) {
  return http.post(`${url}/v1/allocate`, null, { headers, tags: { step: 'allocate' } });
}

/** `GET /v1/sandboxes/{id}`. */
export function getSandbox(url, headers, id) {
  return http.get(`${url}/v1/sandboxes/${id}`, { headers, tags: { step: 'get' } });
}

/** `POST /v1/sandboxes/{id}/mark-for-deletion`. */
export function release(url, headers, id) {
  return http.post(`${url}/v1/sandboxes/${id}/mark-for-deletion`, null, {
    headers,
    tags: { step: 'release' },
  });
}

/** The checks every allocation answer must pass: 201 new or 200 replay, the documented body (docs/api.md). */
export function checkAllocation(response) {
  return check(response, {
    'allocate: 201 or 200': (r) => r.status === 201 || r.status === 200,
    'allocate: integer expires_at': (r) => Number.isInteger(r.json('expires_at')),
    'allocate: sfdc_account_id is a string': (r) => typeof r.json('sfdc_account_id') === 'string',
  });
}

/** An exhausted pool's answer: 409 NO_SANDBOXES_AVAILABLE with a Retry-After. */
export function checkExhausted(response) {
  return check(response, {
    'exhausted: 409 NO_SANDBOXES_AVAILABLE': (r) =>
      r.status === 409 && r.json('detail.code') === 'NO_SANDBOXES_AVAILABLE',
    'exhausted: Retry-After': (r) => Number(r.headers['Retry-After']) > 0,
  });
}

/**
 * End of run, with ADMIN_TOKEN: every student of this run whose sandbox is still
 * allocated holds exactly one, and no sandbox is held by two. Reads the admin list
 * through its cursor, so it works for any pool size.
 */
export function checkOneSandboxPerStudent(prefix) {
  if (!adminToken) {
    console.warn('ADMIN_TOKEN not set: skipping the one-sandbox-per-student check');
    return;
  }
  const headers = { Authorization: `Bearer ${adminToken}` };
  const holders = new Map();
  let cursor = null;
  do {
    const query = `status=allocated&limit=100${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`;
    const page = http.get(`${base}/v1/admin/sandboxes?${query}`, { headers, tags: { step: 'admin' } });
    if (!check(page, { 'admin list 200': (r) => r.status === 200 })) return;
    for (const row of page.json('sandboxes')) {
      if (!String(row.allocated_to_track).startsWith(prefix)) continue;
      holders.set(row.allocated_to_track, (holders.get(row.allocated_to_track) || 0) + 1);
    }
    cursor = page.json('cursor');
  } while (cursor);
  const twice = [...holders.values()].filter((count) => count > 1).length;
  check(twice, { 'no student of this run holds two sandboxes': (n) => n === 0 });
}
