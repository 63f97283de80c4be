// The operators' dashboard: reads the admin API with the admin token the operator types
// once (kept in sessionStorage for this tab only). Everything is rendered as text nodes,
// never as HTML, because sandbox names and student keys come from outside.
'use strict';

const apiBase = document.body.dataset.apiBase;
const tokenKey = 'sandbox-broker-admin-token';
let cursor = null;

const $ = (id) => document.getElementById(id);

function cell(row, value) {
  const td = document.createElement('td');
  td.textContent = value === null || value === undefined ? '' : String(value);
  row.appendChild(td);
}

function time(epoch) {
  return epoch ? new Date(epoch * 1000).toISOString().replace('T', ' ').slice(0, 16) : '';
}

async function admin(path) {
  const response = await fetch(apiBase + path, {
    headers: { Authorization: 'Bearer ' + sessionStorage.getItem(tokenKey) },
  });
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    const message = body && body.detail ? body.detail.message : response.statusText;
    const error = new Error(message);
    error.status = response.status;
    throw error;
  }
  return body;
}

async function loadStats() {
  const stats = await admin('/admin/stats');
  const head = $('stats').tHead.rows[0];
  const values = $('stats').tBodies[0].rows[0];
  head.replaceChildren();
  values.replaceChildren();
  for (const [name, value] of Object.entries(stats)) {
    const th = document.createElement('th');
    th.textContent = name.replace('_', ' ');
    head.appendChild(th);
    cell(values, value);
  }
}

async function loadTracks() {
  const { tracks } = await admin('/admin/tracks');
  const body = $('tracks').tBodies[0];
  body.replaceChildren();
  for (const t of tracks) {
    const row = body.insertRow();
    [t.track_name, t.allocated, t.pending_deletion, t.deleted, t.total].forEach((v) => cell(row, v));
  }
}

function filterQuery() {
  const query = new URLSearchParams({ limit: '50' });
  for (const name of ['status', 'name_prefix', 'student', 'track_name']) {
    const value = $(name).value.trim();
    if (value) query.set(name, value);
  }
  if (cursor) query.set('cursor', cursor);
  return query.toString();
}

async function loadSandboxes(append) {
  if (!append) cursor = null;
  const page = await admin('/admin/sandboxes?' + filterQuery());
  const body = $('sandboxes').tBodies[0];
  if (!append) body.replaceChildren();
  for (const s of page.sandboxes) {
    const row = body.insertRow();
    [s.sandbox_id, s.name, s.status, s.allocated_to_track, s.track_name, time(s.allocated_at), time(s.expires_at)]
      .forEach((v) => cell(row, v));
  }
  cursor = page.cursor;
  $('more').hidden = !cursor;
}

async function refresh() {
  $('board-error').textContent = '';
  try {
    await Promise.all([loadStats(), loadTracks(), loadSandboxes(false)]);
  } catch (error) {
    if (error.status === 401 || error.status === 403) return signOut('That token is not an admin token.');
    $('board-error').textContent = error.message;
  }
}

function signOut(message) {
  sessionStorage.removeItem(tokenKey);
  $('board').hidden = true;
  $('sign-out').hidden = true;
  $('sign-in').hidden = false;
  $('sign-in-error').textContent = message || '';
}

function signedIn() {
  $('sign-in').hidden = true;
  $('board').hidden = false;
  $('sign-out').hidden = false;
  refresh();
}

$('sign-in').addEventListener('submit', (event) => {
  event.preventDefault();
  sessionStorage.setItem(tokenKey, $('token').value.trim());
  $('token').value = '';
  signedIn();
});
$('sign-out').addEventListener('click', () => signOut());
$('filters').addEventListener('submit', (event) => {
  event.preventDefault();
  loadSandboxes(false).catch((error) => { $('board-error').textContent = error.message; });
});
$('more').addEventListener('click', () => {
  loadSandboxes(true).catch((error) => { $('board-error').textContent = error.message; });
});

if (sessionStorage.getItem(tokenKey)) signedIn();
