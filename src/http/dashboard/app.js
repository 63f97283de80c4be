// The operators' dashboard. It reads only the admin API, with the admin token the operator
// types once (kept in sessionStorage: this tab only, gone when it closes). Everything from
// the API is rendered as text nodes or SVG attributes, never as HTML, because sandbox
// names and student keys come from outside. Charts are plain SVG: no library, no build.
'use strict';

const apiBase = document.body.dataset.apiBase;
const tokenKey = 'sandbox-broker-admin-token';
const columnsKey = 'sandbox-broker-columns';
const PAGE_SIZE = 50;
const STATUSES = ['available', 'allocated', 'pending_deletion', 'stale', 'deletion_failed', 'deleted', 'quarantined', 'reserved'];
const STATUS_COLORS = {
  available: '#2e7d32', allocated: '#1565c0', pending_deletion: '#ef6c00',
  stale: '#8d6e63', deletion_failed: '#c62828', deleted: '#9e9e9e', quarantined: '#6a1b9a', reserved: '#00838f',
};
// [field, heading, shown by default, kind]
const COLUMNS = [
  ['sandbox_id', 'id', true], ['name', 'name', true], ['status', 'status', true],
  ['allocated_to_track', 'student', true], ['track_name', 'lab', true],
  ['allocated_at', 'allocated', true, 'time'], ['expires_at', 'lab ends', true, 'time'],
  ['external_id', 'external id', false], ['sfdc_account_id', 'SFDC id', false],
  ['deletion_requested_at', 'released', false, 'time'], ['created_at', 'created', false, 'time'],
  ['updated_at', 'updated', false, 'time'], ['last_synced', 'last synced', false, 'time'],
  ['deleted_at', 'deleted', false, 'time'], ['idempotency_key', 'idempotency key', false],
  ['deletion_retry_count', 'deletion retries', false], ['last_deletion_error', 'last deletion error', false],
  ['niosxaas_cleaned_at', 'NIOSXaaS cleaned', false, 'time'], ['niosxaas_cleanup_skipped', 'NIOSXaaS skipped', false],
  ['niosxaas_services_matched', 'NIOSXaaS services', false],
  ['niosxaas_cleanup_failed_reason', 'NIOSXaaS failure', false],
];
const SVG_NS = 'http://www.w3.org/2000/svg';

const $ = (id) => document.getElementById(id);
const state = {
  filter: {}, // the filter applied, not what is typed but not yet submitted
  cursors: [null], // cursors[i] opens page i
  page: 0,
  holdersCursor: null,
  timer: null,
  refreshing: false,
};

// ---- formatting -------------------------------------------------------------------

function time(epoch) {
  if (!epoch) return '';
  const d = new Date(epoch * 1000);
  const two = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${two(d.getMonth() + 1)}-${two(d.getDate())} ${two(d.getHours())}:${two(d.getMinutes())}`;
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return '';
  if (seconds < 60) return `${seconds} s`;
  const minutes = Math.round(seconds / 60);
  if (minutes < 60) return `${minutes} min`;
  const hours = Math.floor(minutes / 60);
  return minutes % 60 ? `${hours} h ${minutes % 60} min` : `${hours} h`;
}

function text(value) {
  return value === null || value === undefined ? '' : String(value);
}

function share(part, total) {
  return total ? `${((100 * part) / total).toFixed(1)} %` : '–';
}

// ---- DOM helpers --------------------------------------------------------------------

function element(tag, attrs, content) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) el.setAttribute(name, value);
  if (content !== undefined) el.textContent = text(content);
  return el;
}

function svg(tag, attrs, content) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs || {})) el.setAttribute(name, String(value));
  if (content !== undefined) el.textContent = text(content);
  return el;
}

function fillRows(table, rows) {
  const body = table.tBodies[0];
  body.replaceChildren();
  for (const values of rows) {
    const row = body.insertRow();
    for (const value of values) row.insertCell().textContent = text(value);
  }
}

function card(label, value, detail, attrs) {
  const box = element('div', Object.assign({ class: 'card' }, attrs));
  box.append(element('span', { class: 'label' }, label), element('span', { class: 'value' }, value));
  if (detail !== undefined) box.append(element('span', { class: 'detail' }, detail));
  return box;
}

// ---- the API ------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function admin(path, method, payload) {
  const headers = { Authorization: 'Bearer ' + sessionStorage.getItem(tokenKey) };
  if (payload !== undefined) headers['Content-Type'] = 'application/json';
  const response = await fetch(apiBase + path, {
    method: method || 'GET',
    headers,
    body: payload === undefined ? undefined : JSON.stringify(payload),
    cache: 'no-store',
  });
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    const message = body && body.detail && body.detail.message ? body.detail.message : response.statusText;
    throw new ApiError(response.status, message);
  }
  return body;
}

function listQuery(filter, limit, cursor) {
  const query = new URLSearchParams({ limit: String(limit) });
  for (const [name, value] of Object.entries(filter)) if (value) query.set(name, value);
  if (cursor) query.set('cursor', cursor);
  return '/admin/sandboxes?' + query.toString();
}

// ---- charts -------------------------------------------------------------------------

function niceMax(value) {
  if (value <= 5) return 5;
  const step = 10 ** Math.floor(Math.log10(value));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * step >= value) return m * step;
  return 10 * step;
}

// A horizontal bar split by status, 100 % wide.
function drawStatusChart(stats) {
  const width = 1000;
  const chart = svg('svg', { viewBox: `0 0 ${width} 36`, role: 'img', 'aria-label': 'Pool by status' });
  let x = 0;
  for (const status of STATUSES) {
    const w = stats.total ? (width * stats[status]) / stats.total : 0;
    if (w <= 0) continue;
    const bar = svg('rect', { x, y: 0, width: w, height: 36, fill: STATUS_COLORS[status], 'data-status': status });
    bar.append(svg('title', {}, `${status}: ${stats[status]} (${share(stats[status], stats.total)})`));
    chart.append(bar);
    x += w;
  }
  if (!stats.total) chart.append(svg('rect', { x: 0, y: 0, width, height: 36, fill: '#eceff1' }));
  const legend = element('ul', { class: 'legend' });
  for (const status of STATUSES) {
    const item = element('li');
    const swatch = element('span', { class: 'swatch' });
    swatch.style.background = STATUS_COLORS[status];
    item.append(swatch, document.createTextNode(`${status.replace('_', ' ')} ${stats[status]}`));
    legend.append(item);
  }
  $('status-chart').replaceChildren(chart, legend);
}

// Grouped bars: allocated and released per bucket.
function drawUsageChart(usage) {
  const width = 960, height = 220, left = 44, bottom = 28, top = 10;
  const buckets = usage.buckets;
  const max = niceMax(Math.max(1, ...buckets.map((b) => Math.max(b.allocated, b.released))));
  // The right margin leaves room for the last time label, centred under its bar.
  const plotW = width - left - 36, plotH = height - top - bottom;
  const slot = plotW / Math.max(1, buckets.length);
  const barW = Math.max(1, slot * 0.4);
  const y = (v) => top + plotH - (plotH * v) / max;
  const chart = svg('svg', { viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': 'Allocations and releases over time' });
  for (const tick of [0, max / 2, max]) {
    chart.append(svg('line', { x1: left, x2: left + plotW, y1: y(tick), y2: y(tick), class: 'grid' }));
    chart.append(svg('text', { x: left - 6, y: y(tick) + 4, 'text-anchor': 'end', class: 'axis' }, tick));
  }
  const labelEvery = Math.ceil(buckets.length / 8);
  buckets.forEach((bucket, i) => {
    const x = left + i * slot;
    for (const [kind, offset, color] of [['allocated', 0, '#1565c0'], ['released', barW, '#ef6c00']]) {
      const v = bucket[kind];
      const bar = svg('rect', {
        x: x + slot * 0.1 + offset, y: y(v), width: barW, height: top + plotH - y(v), fill: color,
        'data-kind': kind, 'data-start': bucket.start, 'data-value': v,
      });
      bar.append(svg('title', {}, `${time(bucket.start)}: ${v} ${kind}`));
      chart.append(bar);
    }
    if (i % labelEvery === 0) {
      const label = usage.bucket_seconds >= 86400 ? time(bucket.start).slice(0, 10) : time(bucket.start).slice(5);
      chart.append(svg('text', { x: x + slot / 2, y: height - 8, 'text-anchor': 'middle', class: 'axis' }, label));
    }
  });
  const legend = element('ul', { class: 'legend' });
  for (const [label, color, total] of [['allocated', '#1565c0', usage.allocated], ['released', '#ef6c00', usage.released]]) {
    const item = element('li');
    const swatch = element('span', { class: 'swatch' });
    swatch.style.background = color;
    item.append(swatch, document.createTextNode(`${label} ${total}`));
    legend.append(item);
  }
  $('usage-chart').replaceChildren(chart, legend);
}

// Horizontal bars per lab: held now and released.
function drawLabsChart(tracks) {
  const shown = [...tracks].sort((a, b) => b.total - a.total).slice(0, 15);
  if (!shown.length) {
    $('labs-chart').replaceChildren(element('p', { class: 'muted' }, 'No lab has been allocated a sandbox yet.'));
    return;
  }
  const row = 26, left = 180, width = 960;
  const max = niceMax(Math.max(1, ...shown.map((t) => Math.max(t.allocated, t.released))));
  const scale = (v) => ((width - left - 60) * v) / max;
  const chart = svg('svg', { viewBox: `0 0 ${width} ${row * shown.length + 8}`, role: 'img', 'aria-label': 'Usage per lab' });
  shown.forEach((track, i) => {
    const y = 4 + i * row;
    chart.append(svg('text', { x: left - 8, y: y + 16, 'text-anchor': 'end', class: 'axis' }, track.track_name));
    const held = svg('rect', { x: left, y, width: scale(track.allocated), height: 10, fill: '#1565c0', 'data-lab': track.track_name, 'data-kind': 'allocated' });
    held.append(svg('title', {}, `${track.track_name}: ${track.allocated} allocated now`));
    const released = svg('rect', { x: left, y: y + 11, width: scale(track.released), height: 10, fill: '#ef6c00', 'data-lab': track.track_name, 'data-kind': 'released' });
    released.append(svg('title', {}, `${track.track_name}: ${track.released} released`));
    chart.append(held, released);
    chart.append(svg('text', { x: left + Math.max(scale(track.allocated), scale(track.released)) + 6, y: y + 16, class: 'axis' }, `${track.allocated} / ${track.released}`));
  });
  $('labs-chart').replaceChildren(chart);
}

// ---- sections -----------------------------------------------------------------------

async function loadPool() {
  const stats = await admin('/admin/stats');
  const cards = [card('total', stats.total, '100 %', { 'data-stat': 'total' })];
  for (const status of STATUSES) {
    cards.push(card(status.replace('_', ' '), stats[status], share(stats[status], stats.total), { 'data-stat': status }));
  }
  $('pool-cards').replaceChildren(...cards);
  drawStatusChart(stats);
  $('holders-count').textContent = `(${stats.allocated} allocated)`;
}

async function loadUsage() {
  const [hours, minutes] = $('usage-window').value.split(':');
  const usage = await admin(`/admin/usage?hours=${hours}&bucket_minutes=${minutes}`);
  drawUsageChart(usage);
  const d = usage.lab_duration;
  $('lab-duration').replaceChildren(
    card('held now', usage.held_now, undefined, { 'data-duration': 'held_now' }),
    card('labs ended in window', d.count, undefined, { 'data-duration': 'count' }),
    ...[['mean', 'mean_seconds'], ['median', 'p50_seconds'], ['90th percentile', 'p90_seconds'], ['longest', 'max_seconds']]
      .map(([label, field]) => card(`${label} lab`, d.count ? duration(d[field]) : '–', undefined, { 'data-duration': field, 'data-seconds': d[field] })),
  );
}

async function loadLabs() {
  const { tracks } = await admin('/admin/tracks');
  fillRows($('tracks'), tracks.map((t) => [
    t.track_name, t.allocated, t.released, t.pending_deletion, t.deleted, t.total, duration(t.mean_held_seconds),
  ]));
  drawLabsChart(tracks);
  // The lab filter offers every known lab, keeping the operator's choice.
  const select = $('track_name');
  const chosen = select.value;
  select.replaceChildren(element('option', { value: '' }, 'any lab'));
  for (const t of tracks) select.append(element('option', { value: t.track_name }, t.track_name));
  if (chosen && !tracks.some((t) => t.track_name === chosen)) select.append(element('option', { value: chosen }, chosen));
  select.value = chosen;
}

function holderRow(s) {
  return [s.allocated_to_track, s.track_name, s.sandbox_id, s.name, time(s.allocated_at), time(s.expires_at)];
}

async function loadHolders(append) {
  const page = await admin(listQuery({ status: 'allocated' }, 100, append ? state.holdersCursor : null));
  const table = $('holders-table');
  if (append) {
    for (const s of page.sandboxes) {
      const row = table.tBodies[0].insertRow();
      for (const value of holderRow(s)) row.insertCell().textContent = text(value);
    }
  } else {
    fillRows(table, page.sandboxes.map(holderRow));
  }
  state.holdersCursor = page.cursor;
  $('holders-more').hidden = !page.cursor;
}

async function loadJobs() {
  const jobs = await admin('/admin/jobs');
  fillRows($('jobs-table'), jobs.jobs.map((j) => [
    j.job, j.enabled ? 'yes' : 'no', time(j.last_started_at), time(j.last_finished_at), j.last_outcome || 'never ran',
    time(j.next_run_at), j.lease_holder || '', Object.entries(j.last_counts || {}).map(([k, v]) => `${k} ${v}`).join(', '),
  ]));
  $('breakers').replaceChildren(...Object.entries(jobs.breakers).map(([name, value]) => {
    const box = card(`${name} breaker`, value ? value.replace('_', '-') : 'not configured', undefined, { 'data-breaker': name });
    box.classList.add(value ? `breaker-${value}` : 'muted');
    return box;
  }));
}

const AUDIT_CHECKS = ['key_holds_several', 'allocated_missing_at_provider', 'deletion_overdue', 'deletion_failed', 'deleted_still_listed'];

async function loadAudit() {
  let report;
  try {
    report = await admin('/admin/audit');
  } catch (error) {
    if (!(error instanceof ApiError && error.status === 404)) throw error;
    report = null; // no audit has run yet
  }
  $('audit-checked').textContent = report ? `(checked ${time(report.checked_at)}, repairs nothing)` : '(no audit has run yet)';
  $('audit-counts').replaceChildren(...AUDIT_CHECKS.map((check) => {
    const count = report ? report.counts[check] : 0;
    const box = card(check.replaceAll('_', ' '), count, undefined, { 'data-check': check });
    if (count > 0) box.classList.add('alert');
    return box;
  }));
  fillRows($('audit-violations'), (report ? report.violations : []).map((v) => [v.check, v.sandbox_id, v.student, v.detail]));
}

function commaList(value) {
  return value.split(',').map((part) => part.trim()).filter(Boolean);
}

// The reservations on a timeline from an hour ago to the last end (a day at least, a week
// at most), with each forecast row's run to empty beside them: where a bar of the pool
// ends before a class starts, that class's sandboxes are at risk.
function drawReservationTimeline(listed) {
  const now = listed.now;
  const ends = listed.reservations.map((r) => r.ends_at);
  const from = now - 3600;
  const to = Math.min(now + 7 * 86400, Math.max(now + 86400, ...ends));
  const rows = listed.reservations.length + listed.forecast.length;
  const row = 24, left = 220, width = 960, top = 22;
  const x = (t) => left + ((width - left - 20) * (Math.min(Math.max(t, from), to) - from)) / (to - from);
  const chart = svg('svg', { viewBox: `0 0 ${width} ${top + row * rows + 6}`, role: 'img', 'aria-label': 'Reservations and forecast' });
  const step = (to - from) > 2 * 86400 ? 86400 : 6 * 3600;
  for (let t = Math.ceil(from / step) * step; t <= to; t += step) {
    chart.append(svg('line', { x1: x(t), x2: x(t), y1: top - 4, y2: top + row * rows, class: 'grid' }));
    chart.append(svg('text', { x: x(t), y: 12, 'text-anchor': 'middle', class: 'axis' }, time(t).slice(5)));
  }
  chart.append(svg('line', { x1: x(now), x2: x(now), y1: top - 8, y2: top + row * rows, stroke: '#c62828', 'data-now': now }));
  listed.forecast.forEach((f, i) => {
    const y = top + i * row;
    const name = f.name_prefix === null ? 'whole pool' : `${f.name_prefix}…`;
    const end = f.empty_at === null ? to : f.empty_at;
    chart.append(svg('text', { x: left - 8, y: y + 14, 'text-anchor': 'end', class: 'axis' }, `${name}: ${f.available} free`));
    const bar = svg('rect', {
      x: x(now), y: y + 4, width: Math.max(1, x(end) - x(now)), height: 12,
      fill: f.below_watermark ? '#c62828' : '#2e7d32', opacity: 0.5, 'data-forecast': f.name_prefix === null ? '' : f.name_prefix,
    });
    const lasts = f.time_to_empty_seconds === null ? 'not emptying' : `empty in ${duration(Math.round(f.time_to_empty_seconds))}`;
    bar.append(svg('title', {}, `${name}: ${f.available} available, ${f.allocations_per_minute.toFixed(1)}/min, ${lasts}`));
    chart.append(bar);
    if (f.empty_at !== null && f.empty_at <= to) {
      chart.append(svg('text', { x: x(end) + 4, y: y + 14, class: 'axis' }, `empty ${time(f.empty_at).slice(11)}`));
    }
  });
  listed.reservations.forEach((r, i) => {
    const y = top + (listed.forecast.length + i) * row;
    chart.append(svg('text', { x: left - 8, y: y + 14, 'text-anchor': 'end', class: 'axis' }, `${r.track_name}: ${r.used} / ${r.count}`));
    const lead = svg('rect', { x: x(r.holds_from), y: y + 4, width: Math.max(1, x(r.starts_at) - x(r.holds_from)), height: 12, fill: '#00838f', opacity: 0.35 });
    const held = svg('rect', {
      x: x(r.starts_at), y: y + 4, width: Math.max(1, x(r.ends_at) - x(r.starts_at)), height: 12,
      fill: r.short ? '#ef6c00' : '#00838f', 'data-reservation': r.id,
    });
    held.append(svg('title', {}, `${r.track_name}: ${r.count} reserved, ${r.held} held, ${r.used} used, ${r.short} short (${r.status})`));
    chart.append(lead, held);
  });
  $('reservation-timeline').replaceChildren(chart);
}

async function loadReservations() {
  const listed = await admin('/admin/reservations');
  drawReservationTimeline(listed);
  const tbody = $('reservations-table').tBodies[0];
  tbody.replaceChildren(...listed.reservations.map((r) => {
    const tr = element('tr', { 'data-reservation': r.id });
    const cells = [
      r.track_name, r.id, r.name_prefix || 'any', r.count, r.held, r.used, r.short,
      time(r.holds_from), time(r.starts_at), time(r.ends_at), r.status,
    ];
    for (const value of cells) tr.append(element('td', {}, value));
    const remove = element('button', { type: 'button', 'data-delete': r.id }, 'Delete');
    remove.addEventListener('click', () => deleteReservation(r).catch(showError));
    const action = element('td');
    action.append(remove);
    tr.append(action);
    return tr;
  }));
}

function epochOf(input) {
  return Math.floor(new Date($(input).value).getTime() / 1000);
}

async function reserveSandboxes() {
  const body = {
    track_name: $('reservation-lab').value.trim(),
    count: Number($('reservation-count').value),
    starts_at: epochOf('reservation-starts'),
    ends_at: epochOf('reservation-ends'),
  };
  const prefix = $('reservation-prefix').value.trim();
  if (prefix) body.name_prefix = prefix;
  try {
    await admin('/admin/reservations', 'POST', body);
    $('reservation-error').textContent = '';
    $('reservation-form').reset();
  } catch (error) {
    if (!(error instanceof ApiError) || error.status === 401 || error.status === 403) throw error;
    $('reservation-error').textContent = error.message;
    return;
  }
  await loadReservations();
}

async function deleteReservation(reservation) {
  if (!window.confirm(`Delete the reservation of ${reservation.count} for ${reservation.track_name}? What it holds returns to the pool.`)) return;
  await admin(`/admin/reservations/${encodeURIComponent(reservation.id)}`, 'DELETE');
  await loadReservations();
}

async function loadWebhooks() {
  const listed = await admin('/admin/webhooks');
  const tbody = $('webhooks-table').tBodies[0];
  tbody.replaceChildren(...listed.webhooks.map((w) => {
    const row = element('tr', { 'data-webhook': w.id });
    const failure = w.last_failure_at
      ? `${time(w.last_failure_at)} ${w.last_failure_status || ''} ${w.last_failure_error || ''}`.trim()
      : '';
    const cells = [w.url, w.id, w.events.join(', '), w.pending, w.failed, time(w.last_success_at), failure, w.consecutive_failures];
    for (const value of cells) row.append(element('td', {}, value));
    const action = element('td');
    for (const [verb, label] of [['test', 'Test'], ['rotate', 'Rotate'], ['delete', 'Delete']]) {
      const button = element('button', { type: 'button', [`data-${verb}`]: w.id }, label);
      button.addEventListener('click', () => webhookAction(w, verb).catch(showError));
      action.append(button);
    }
    row.append(action);
    return row;
  }));
}

async function addWebhook() {
  const body = { url: $('webhook-url').value.trim(), events: commaList($('webhook-events').value) };
  const description = $('webhook-description').value.trim();
  if (description) body.description = description;
  try {
    const made = await admin('/admin/webhooks', 'POST', body);
    $('webhook-secret').textContent = made.secret;
    $('webhook-secret-shown').hidden = false;
    $('webhook-error').textContent = '';
    $('webhook-form').reset();
  } catch (error) {
    if (!(error instanceof ApiError) || error.status === 401 || error.status === 403) throw error;
    $('webhook-error').textContent = error.message;
    return;
  }
  await loadWebhooks();
}

async function webhookAction(webhook, verb) {
  const path = `/admin/webhooks/${encodeURIComponent(webhook.id)}`;
  if (verb === 'delete') {
    if (!window.confirm(`Delete the webhook to ${webhook.url}? Its pending deliveries go with it.`)) return;
    await admin(path, 'DELETE');
  } else if (verb === 'rotate') {
    if (!window.confirm('Issue a new secret? The old one keeps signing for 24 h.')) return;
    const rotated = await admin(`${path}/rotate`, 'POST');
    $('webhook-secret').textContent = rotated.secret;
    $('webhook-secret-shown').hidden = false;
  } else {
    const tested = await admin(`${path}/test`, 'POST');
    $('webhook-error').textContent = tested.delivered ? '' : `Test delivery failed: ${tested.error || tested.status}`;
  }
  await loadWebhooks();
}

async function loadTokens() {
  const listed = await admin('/admin/tokens');
  const tbody = $('tokens-table').tBodies[0];
  tbody.replaceChildren(...listed.tokens.map((t) => {
    const row = element('tr', { 'data-token': t.id });
    const cells = [
      t.name, t.id, t.track_names.join(', ') || 'any', t.name_prefixes.join(', ') || 'any',
      `${t.held} / ${t.max_active === null ? '∞' : t.max_active}`, t.per_minute === null ? '' : t.per_minute,
      time(t.last_used_at), time(t.expires_at), t.status,
    ];
    for (const value of cells) row.append(element('td', {}, value));
    const revoke = element('button', { type: 'button', 'data-revoke': t.id }, 'Revoke');
    revoke.disabled = t.status !== 'active';
    revoke.addEventListener('click', () => revokeToken(t).catch(showError));
    const action = element('td');
    action.append(revoke);
    row.append(action);
    return row;
  }));
}

async function mintToken() {
  const body = { name: $('token-name').value.trim() };
  const labs = commaList($('token-labs').value);
  const prefixes = commaList($('token-prefixes').value);
  if (labs.length) body.track_names = labs;
  if (prefixes.length) body.name_prefixes = prefixes;
  for (const [field, id] of [['max_active', 'token-max-active'], ['per_minute', 'token-per-minute']]) {
    if ($(id).value) body[field] = Number($(id).value);
  }
  try {
    const minted = await admin('/admin/tokens', 'POST', body);
    $('token-secret').textContent = minted.token;
    $('token-minted').hidden = false;
    $('token-error').textContent = '';
    $('token-form').reset();
  } catch (error) {
    if (!(error instanceof ApiError) || error.status === 401 || error.status === 403) throw error;
    $('token-error').textContent = error.message;
    return;
  }
  await loadTokens();
}

async function revokeToken(token) {
  if (!window.confirm(`Revoke ${token.name}? Labs using it stop allocating within 5 s.`)) return;
  await admin(`/admin/tokens/${encodeURIComponent(token.id)}`, 'DELETE');
  await loadTokens();
}

async function loadActions() {
  const log = await admin('/admin/actions?limit=20');
  fillRows($('actions-table'), log.actions.map((a) => [time(a.at), a.actor, a.action, a.target, a.reason, a.detail]));
}

async function loadNiosxaas() {
  const overview = await admin('/admin/niosxaas');
  const mode = !overview.enabled ? 'disabled' : overview.shadow_mode ? 'shadow mode: lists and counts, deletes nothing' : 'enforce mode';
  $('niosxaas-mode').textContent = `(${mode}${overview.breaker ? `, breaker ${overview.breaker.replace('_', '-')}` : ''})`;
  $('niosxaas-counts').replaceChildren(...['cleaned', 'skipped', 'failed', 'pending']
    .map((name) => card(name, overview.counts[name], undefined, { 'data-count': name })));
  fillRows($('niosxaas-records'), overview.records.map((r) => [
    r.sandbox_id, r.sandbox_name, r.track_name, r.allocated_to_track,
    r.niosxaas_cleanup_failed_reason ? 'failed' : (r.niosxaas_cleanup_skipped || !r.niosxaas_cleaned_at) ? 'skipped' : 'cleaned',
    r.niosxaas_services_matched, time(r.niosxaas_cleaned_at), time(r.deleted_at), r.niosxaas_cleanup_failed_reason,
  ]));
}

// ---- the sandbox table --------------------------------------------------------------

function shownColumns() {
  const saved = JSON.parse(localStorage.getItem(columnsKey) || 'null');
  return COLUMNS.filter(([field, , byDefault]) => (saved ? saved.includes(field) : byDefault));
}

function cellValue(sandbox, [field, , , kind]) {
  return kind === 'time' ? time(sandbox[field]) : text(sandbox[field]);
}

async function loadSandboxes() {
  const page = await admin(listQuery(state.filter, PAGE_SIZE, state.cursors[state.page]));
  const columns = shownColumns();
  const head = $('sandbox-table').tHead.rows[0];
  head.replaceChildren(...columns.map(([, heading]) => element('th', {}, heading)));
  fillRows($('sandbox-table'), page.sandboxes.map((s) => columns.map((c) => cellValue(s, c))));
  state.cursors.length = state.page + 1;
  if (page.cursor) state.cursors.push(page.cursor);
  $('prev').disabled = state.page === 0;
  $('next').disabled = !page.cursor;
  $('page-info').textContent = `page ${state.page + 1}: ${page.count ? `${page.count} rows` : 'no rows'}`;
}

function buildColumnPicker() {
  const shown = new Set(shownColumns().map(([field]) => field));
  $('columns').replaceChildren(...COLUMNS.map(([field, heading]) => {
    const label = element('label');
    const box = element('input', { type: 'checkbox', value: field });
    box.checked = shown.has(field);
    box.addEventListener('change', () => {
      const chosen = [...$('columns').querySelectorAll('input:checked')].map((b) => b.value);
      localStorage.setItem(columnsKey, JSON.stringify(chosen));
      loadSandboxes().catch(showError);
    });
    label.append(box, document.createTextNode(' ' + heading));
    return label;
  }));
}

function csvField(value) {
  let field = text(value);
  // A cell that starts like a formula is read as text by spreadsheets (names come from outside).
  if (/^[=+\-@\t\r]/.test(field)) field = "'" + field;
  return /[",\r\n]/.test(field) ? `"${field.replace(/"/g, '""')}"` : field;
}

async function downloadCsv() {
  const button = $('csv');
  button.disabled = true;
  try {
    const columns = shownColumns();
    const lines = [columns.map(([field]) => csvField(field)).join(',')];
    let cursor = null;
    do {
      const page = await admin(listQuery(state.filter, 100, cursor));
      for (const s of page.sandboxes) {
        lines.push(columns.map(([field, , , kind]) => csvField(kind === 'time' && s[field] ? new Date(s[field] * 1000).toISOString() : s[field])).join(','));
      }
      cursor = page.cursor;
    } while (cursor);
    const blob = new Blob([lines.join('\r\n') + '\r\n'], { type: 'text/csv' });
    const link = element('a', { download: `sandboxes-${new Date().toISOString().slice(0, 19).replace(/:/g, '')}.csv` });
    link.href = URL.createObjectURL(blob);
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 60000);
    button.textContent = `Download CSV (${lines.length - 1} rows)`;
  } finally {
    button.disabled = false;
  }
}

function applyFilter() {
  state.filter = {};
  for (const name of ['q', 'status', 'track_name', 'name_prefix']) {
    const value = $(name).value.trim();
    if (value) state.filter[name] = value;
  }
  state.cursors = [null];
  state.page = 0;
  $('csv').textContent = 'Download CSV';
  return loadSandboxes();
}

// ---- refresh, sign-in and sign-out ----------------------------------------------------

function showError(error) {
  if (error instanceof ApiError && (error.status === 401 || error.status === 403)) {
    signOut('That token is not an admin token.');
    return;
  }
  $('board-error').textContent = error.message;
}

async function refresh() {
  if (state.refreshing) return;
  state.refreshing = true;
  try {
    const results = await Promise.allSettled([
      loadPool(), loadUsage(), loadLabs(), loadHolders(false), loadJobs(), loadAudit(), loadReservations(), loadWebhooks(), loadTokens(), loadActions(), loadNiosxaas(), loadSandboxes(),
    ]);
    const failed = results.find((r) => r.status === 'rejected');
    $('board-error').textContent = '';
    if (failed) showError(failed.reason);
    else $('updated').textContent = `updated ${new Date().toLocaleTimeString()}`;
  } finally {
    state.refreshing = false;
  }
}

function schedule() {
  clearInterval(state.timer);
  state.timer = null;
  if (!sessionStorage.getItem(tokenKey)) return; // signed out meanwhile: nothing to refresh
  const seconds = Number($('refresh-every').value);
  state.timer = seconds ? setInterval(refresh, seconds * 1000) : null;
}

function signOut(message) {
  sessionStorage.removeItem(tokenKey);
  clearInterval(state.timer);
  $('board').hidden = true;
  $('controls').hidden = true;
  $('sign-in').hidden = false;
  $('sign-in-error').textContent = message || '';
  // Nothing read with the old token stays on the page.
  for (const id of ['pool-cards', 'status-chart', 'usage-chart', 'lab-duration', 'labs-chart', 'breakers', 'audit-counts', 'niosxaas-counts', 'reservation-timeline']) $(id).replaceChildren();
  for (const id of ['tracks', 'holders-table', 'jobs-table', 'audit-violations', 'reservations-table', 'webhooks-table', 'tokens-table', 'actions-table', 'niosxaas-records', 'sandbox-table']) $(id).tBodies[0].replaceChildren();
  $('token-secret').textContent = '';
  $('token-minted').hidden = true;
  $('webhook-secret').textContent = '';
  $('webhook-secret-shown').hidden = true;
}

async function signIn(token) {
  sessionStorage.setItem(tokenKey, token);
  try {
    await admin('/admin/stats'); // proves the token before anything is shown
  } catch (error) {
    sessionStorage.removeItem(tokenKey);
    const refused = error instanceof ApiError && (error.status === 401 || error.status === 403);
    $('sign-in-error').textContent = refused ? 'That token is not an admin token.' : `The service did not answer: ${error.message}`;
    return;
  }
  $('sign-in-error').textContent = '';
  $('sign-in').hidden = true;
  $('board').hidden = false;
  $('controls').hidden = false;
  await refresh();
  schedule();
}

function init() {
  const statusSelect = $('status');
  for (const status of STATUSES) statusSelect.append(element('option', { value: status }, status));
  buildColumnPicker();
  $('sign-in').addEventListener('submit', (event) => {
    event.preventDefault();
    const token = $('token').value.trim();
    $('token').value = '';
    signIn(token);
  });
  $('sign-out').addEventListener('click', () => signOut());
  $('refresh').addEventListener('click', refresh);
  $('refresh-every').addEventListener('change', schedule);
  $('usage-window').addEventListener('change', () => loadUsage().catch(showError));
  $('filters').addEventListener('submit', (event) => {
    event.preventDefault();
    applyFilter().catch(showError);
  });
  $('clear').addEventListener('click', () => {
    for (const name of ['q', 'status', 'track_name', 'name_prefix']) $(name).value = '';
    applyFilter().catch(showError);
  });
  $('prev').addEventListener('click', () => {
    state.page = Math.max(0, state.page - 1);
    loadSandboxes().catch(showError);
  });
  $('next').addEventListener('click', () => {
    if (state.cursors.length > state.page + 1) state.page += 1;
    loadSandboxes().catch(showError);
  });
  $('holders-more').addEventListener('click', () => loadHolders(true).catch(showError));
  $('csv').addEventListener('click', () => downloadCsv().catch(showError));
  $('token-form').addEventListener('submit', (event) => {
    event.preventDefault();
    mintToken().catch(showError);
  });
  $('reservation-form').addEventListener('submit', (event) => {
    event.preventDefault();
    reserveSandboxes().catch(showError);
  });
  $('webhook-form').addEventListener('submit', (event) => {
    event.preventDefault();
    addWebhook().catch(showError);
  });
  const saved = sessionStorage.getItem(tokenKey);
  if (saved) signIn(saved);
}

init();
