// Drives /dashboard in headless Chromium the way an operator does, and prints what the
// page showed as one JSON object on stdout. tests/api/dashboard_browser.rs starts the
// service, runs this, and compares every number with the API's own answers.
//
// Environment: BASE_URL, ADMIN_TOKEN, TRACK_TOKEN, CHROMIUM (the browser binary),
// PLAYWRIGHT_CORE (path of playwright-core's index.mjs), OUT_DIR (screenshots, CSV).
import { writeFileSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const base = env('BASE_URL');
const outDir = env('OUT_DIR');
const { chromium } = await import(pathToFileURL(env('PLAYWRIGHT_CORE')).href);

const browser = await chromium.launch({
  executablePath: env('CHROMIUM'),
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
});
const seen = { requests: [], consoleErrors: [], pageErrors: [] };
let phase = 'start';
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, acceptDownloads: true });
  const page = await context.newPage();
  page.on('request', (request) => seen.requests.push(request.url()));
  page.on('console', (message) => {
    if (message.type() === 'error') seen.consoleErrors.push({ phase, text: message.text() });
  });
  page.on('pageerror', (error) => seen.pageErrors.push({ phase, text: String(error) }));
  // Fake timers, so the test can move time past the auto-refresh period at once.
  await page.clock.install();
  const result = {};

  const text = (selector) => page.locator(selector).innerText();
  const cells = (selector) => page.$$eval(`${selector} tbody tr`, (rows) => rows.map((r) => [...r.cells].map((c) => c.textContent)));
  const cards = (selector, attribute) => page.$$eval(`${selector} [${attribute}]`, (boxes, attribute) =>
    Object.fromEntries(boxes.map((b) => [b.getAttribute(attribute), b.querySelector('.value').textContent])), attribute);
  const waitText = (selector, expected) => page.waitForFunction(([s, e]) => {
    const el = document.querySelector(s);
    return el && el.textContent.includes(e);
  }, [selector, expected]);
  const sandboxIds = () => page.$$eval('#sandbox-table tbody tr', (rows) => rows.map((r) => r.cells[0].textContent));

  // 1. A wrong token: an error, and no data anywhere.
  phase = 'wrong-token';
  await page.goto(`${base}/dashboard`);
  await page.fill('#token', 'not-the-admin-token-at-all');
  await page.click('#sign-in button[type=submit]');
  await waitText('#sign-in-error', 'not an admin token');
  result.wrongToken = {
    error: await text('#sign-in-error'),
    boardHidden: await page.locator('#board').isHidden(),
    cardsShown: await page.locator('.card').count(),
    rowsShown: await page.locator('tbody tr').count(),
  };
  await page.screenshot({ path: join(outDir, 'wrong-token.png') });

  // 2. The admin token: the whole board.
  phase = 'board';
  const started = Date.now();
  await page.fill('#token', env('ADMIN_TOKEN'));
  await page.click('#sign-in button[type=submit]');
  await page.waitForSelector('#sandbox-table tbody tr');
  await waitText('#updated', 'updated');
  result.firstDataMs = Date.now() - started;
  result.before = {
    pool: await cards('#pool-cards', 'data-stat'),
    statusBars: await page.$$eval('#status-chart rect[data-status]', (bars) => bars.map((b) => b.getAttribute('data-status'))),
    usageBars: await page.$$eval('#usage-chart rect[data-kind]', (bars) => bars.map((b) => [b.getAttribute('data-kind'), Number(b.getAttribute('data-start')), Number(b.getAttribute('data-value'))])),
    labDuration: await page.$$eval('#lab-duration [data-duration]', (boxes) => Object.fromEntries(boxes.map((b) => [b.getAttribute('data-duration'), b.hasAttribute('data-seconds') ? Number(b.getAttribute('data-seconds')) : Number(b.querySelector('.value').textContent)]))),
    tracks: await cells('#tracks'),
    labBars: await page.locator('#labs-chart rect').count(),
    holders: await cells('#holders-table'),
    jobs: await cells('#jobs-table'),
    breakers: await cards('#breakers', 'data-breaker'),
    auditCounts: await cards('#audit-counts', 'data-check'),
    auditViolations: await cells('#audit-violations'),
    actions: await cells('#actions-table'),
    niosxaasCounts: await cards('#niosxaas-counts', 'data-count'),
    niosxaasRecords: await cells('#niosxaas-records'),
    firstPage: await sandboxIds(),
    headings: await page.$$eval('#sandbox-table thead th', (ths) => ths.map((t) => t.textContent)),
  };
  await page.screenshot({ path: join(outDir, 'dashboard.png'), fullPage: true });

  // 3. Paging with the cursor: forward twice, back once.
  phase = 'paging';
  await page.click('#next');
  await waitText('#page-info', 'page 2');
  const second = await sandboxIds();
  await page.click('#next');
  await waitText('#page-info', 'page 3');
  const third = await sandboxIds();
  await page.click('#prev');
  await waitText('#page-info', 'page 2');
  result.paging = { second, third, back: await sandboxIds(), nextDisabledOnLast: await page.locator('#next').isDisabled() };

  // 4. Free-text search, then filters.
  phase = 'search';
  await page.fill('#q', process.env.SEARCH_TEXT || 'stu-3');
  await page.click('#filters button[type=submit]');
  await waitText('#page-info', 'page 1');
  await page.waitForFunction(() => document.querySelectorAll('#sandbox-table tbody tr').length < 50);
  result.search = await cells('#sandbox-table');
  await page.click('#clear');
  await page.selectOption('#status', 'allocated');
  await page.selectOption('#track_name', process.env.FILTER_LAB || 'dns');
  await page.click('#filters button[type=submit]');
  // The search's one row is allocated too: wait until the table is no longer it.
  const searched = JSON.stringify(result.search.map((row) => row[0]));
  await page.waitForFunction((before) => {
    const rows = [...document.querySelectorAll('#sandbox-table tbody tr')];
    return rows.every((r) => r.cells[2].textContent === 'allocated')
      && JSON.stringify(rows.map((r) => r.cells[0].textContent)) !== before;
  }, searched);
  result.filtered = await cells('#sandbox-table');

  // 5. The column picker adds columns (and remembers them).
  phase = 'columns';
  await page.click('#column-picker summary');
  await page.check('#columns input[value=external_id]');
  await page.check('#columns input[value=idempotency_key]');
  await page.waitForFunction(() => [...document.querySelectorAll('#sandbox-table thead th')].some((t) => t.textContent === 'idempotency key'));
  result.columns = {
    headings: await page.$$eval('#sandbox-table thead th', (ths) => ths.map((t) => t.textContent)),
    rows: await cells('#sandbox-table'),
  };
  await page.click('#column-picker summary');
  await page.screenshot({ path: join(outDir, 'filtered.png'), fullPage: true });

  // 6. CSV of everything the filter selects (here: every row with a name prefix).
  phase = 'csv';
  await page.click('#clear');
  await page.fill('#name_prefix', process.env.CSV_PREFIX || 'lab-');
  await page.click('#filters button[type=submit]');
  await waitText('#page-info', 'page 1');
  const [download] = await Promise.all([page.waitForEvent('download'), page.click('#csv')]);
  const csvPath = join(outDir, 'sandboxes.csv');
  await download.saveAs(csvPath);
  result.csv = readFileSync(csvPath, 'utf8');

  // 7. Auto-refresh keeps the filter and the page: go to page 2 of the filter, have a
  //    student allocate, move time past 30 s, and the pool count moves while the table
  //    still shows page 2 of the same filter.
  phase = 'auto-refresh';
  await page.click('#next');
  await waitText('#page-info', 'page 2');
  const pageTwo = await sandboxIds();
  const allocated = await fetch(`${base}/v1/allocate`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${env('TRACK_TOKEN')}`, 'X-Instruqt-Sandbox-ID': 'stu-refresh', 'X-Instruqt-Track-ID': 'dns' },
  });
  result.refreshAllocation = allocated.status;
  const allocatedBefore = result.before.pool.allocated;
  await page.clock.fastForward(31_000);
  await page.waitForFunction((before) => {
    const value = document.querySelector('[data-stat=allocated] .value');
    return value && Number(value.textContent) === Number(before) + 1;
  }, allocatedBefore);
  result.afterRefresh = {
    pool: await cards('#pool-cards', 'data-stat'),
    pageInfo: await text('#page-info'),
    namePrefix: await page.inputValue('#name_prefix'),
    sameRows: JSON.stringify(await sandboxIds()) === JSON.stringify(pageTwo),
  };

  // 8. Lab tokens: mint one in the panel (its secret shown once), see it listed, allocate
  //    with it, revoke it from its row (confirming), and it stops working.
  phase = 'lab-tokens';
  await page.fill('#token-name', 'browser-class');
  await page.fill('#token-prefixes', 'lab-');
  await page.fill('#token-max-active', '3');
  await page.click('#token-form button[type=submit]');
  await page.waitForSelector('#token-minted', { state: 'visible' });
  const secret = await text('#token-secret');
  await page.waitForSelector('#tokens-table tbody tr');
  const listed = await cells('#tokens-table');
  const withToken = await fetch(`${base}/v1/allocate`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${secret}`, 'X-Instruqt-Sandbox-ID': 'stu-token' },
  });
  page.once('dialog', (dialog) => dialog.accept());
  await page.click('#tokens-table [data-revoke]');
  await page.waitForFunction(() => {
    const row = document.querySelector('#tokens-table tbody tr');
    return row && row.cells[8].textContent === 'revoked';
  });
  const afterRevoke = await fetch(`${base}/v1/allocate`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${secret}`, 'X-Instruqt-Sandbox-ID': 'stu-token-2' },
  });
  result.labTokens = {
    secretShape: /^sbx_lab_[A-Za-z0-9_-]{43}$/.test(secret),
    listed: listed.map((row) => row.slice(0, 5).concat([row[8]])),
    secretListed: JSON.stringify(await cells('#tokens-table')).includes(secret),
    allocated: withToken.status,
    afterRevoke: afterRevoke.status,
    revokedRow: (await cells('#tokens-table'))[0][8],
  };

  // 8b. Reservations: one that does not fit is refused with its shortfall; one that fits
  //     shows in the table and on the timeline beside the pool's forecast, and is deleted
  //     from its row (confirming).
  phase = 'reservations';
  const local = await page.evaluate(() => {
    const field = (ms) => {
      const d = new Date(ms);
      return new Date(d.getTime() - d.getTimezoneOffset() * 60000).toISOString().slice(0, 16);
    };
    return { starts: field(Date.now() + 10 * 60000), ends: field(Date.now() + 2 * 3600000) };
  });
  const reserveVia = async (count) => {
    await page.fill('#reservation-lab', 'browser-class');
    await page.fill('#reservation-count', String(count));
    await page.fill('#reservation-starts', local.starts);
    await page.fill('#reservation-ends', local.ends);
    await page.click('#reservation-form button[type=submit]');
  };
  await reserveVia(100000);
  await waitText('#reservation-error', 'short');
  const refused = await text('#reservation-error');
  await reserveVia(2);
  await page.waitForSelector('#reservations-table tbody tr');
  await page.waitForSelector('#reservation-timeline rect[data-reservation]');
  const reservedRows = await cells('#reservations-table');
  const timeline = {
    reservations: await page.locator('#reservation-timeline rect[data-reservation]').count(),
    wholePool: await page.locator('#reservation-timeline rect[data-forecast=""]').count(),
    now: await page.locator('#reservation-timeline line[data-now]').count(),
  };
  await page.locator('#reservations').screenshot({ path: join(outDir, 'reservations.png') });
  page.once('dialog', (dialog) => dialog.accept());
  await page.click('#reservations-table [data-delete]');
  await page.waitForFunction(() => document.querySelectorAll('#reservations-table tbody tr').length === 0);
  result.reservations = {
    refused,
    listed: reservedRows.map((row) => [row[0], row[2], row[3], row[10]]),
    timeline,
    afterDelete: await page.locator('#reservations-table tbody tr').count(),
    errorCleared: await text('#reservation-error'),
  };

  // 8c. Webhooks: an unknown event type is refused, naming the types; then an endpoint at
  //     a closed loopback port (this app allows loopback) is added, its secret shown once,
  //     tested (the failure shown), and deleted.
  phase = 'webhooks';
  // An endpoint receives the events from the second it is registered on (docs/webhooks.md):
  // let the earlier panels' events (the token's allocation) fall in an earlier second.
  await page.waitForTimeout(1100);
  await page.fill('#webhook-url', env('WEBHOOK_URL'));
  await page.fill('#webhook-events', 'sandbox.stolen');
  await page.click('#webhook-form button[type=submit]');
  await waitText('#webhook-error', 'must be one of');
  const webhookRefused = await text('#webhook-error');
  await page.fill('#webhook-url', env('WEBHOOK_URL'));
  await page.fill('#webhook-events', 'sandbox.allocated, pool.low');
  await page.click('#webhook-form button[type=submit]');
  await page.waitForSelector('#webhook-secret-shown', { state: 'visible' });
  const webhookSecret = await text('#webhook-secret');
  await page.waitForSelector('#webhooks-table tbody tr');
  await page.click('#webhooks-table [data-test]');
  await waitText('#webhook-error', 'Test delivery failed');
  await page.waitForFunction(() => {
    const row = document.querySelector('#webhooks-table tbody tr');
    return row && row.cells[7].textContent === '1';
  });
  const webhookRows = await cells('#webhooks-table');
  page.once('dialog', (dialog) => dialog.accept());
  await page.click('#webhooks-table [data-delete]');
  await page.waitForFunction(() => document.querySelectorAll('#webhooks-table tbody tr').length === 0);
  result.webhooks = {
    refused: webhookRefused,
    secretShape: /^whsec_[A-Za-z0-9+/=]+$/.test(webhookSecret),
    secretListed: JSON.stringify(webhookRows).includes(webhookSecret),
    listed: webhookRows.map((row) => [row[2], row[3], row[4], row[7]]),
  };

  // 9. A token that stops working (rotated away) sends the page back to the prompt and
  //    clears everything it showed.
  phase = 'revoked';
  await page.evaluate(() => sessionStorage.setItem('sandbox-broker-admin-token', 'a-token-rotated-away-long-ago'));
  await page.click('#refresh');
  await waitText('#sign-in-error', 'not an admin token');
  result.revoked = {
    boardHidden: await page.locator('#board').isHidden(),
    promptShown: await page.locator('#sign-in').isVisible(),
    cardsLeft: await page.locator('.card').count(),
    rowsLeft: await page.locator('tbody tr').count(),
    tokenKept: await page.evaluate(() => sessionStorage.getItem('sandbox-broker-admin-token')),
  };

  phase = 'done';
  result.requests = seen.requests;
  result.consoleErrors = seen.consoleErrors;
  result.pageErrors = seen.pageErrors;
  process.stdout.write(JSON.stringify(result));
} catch (error) {
  process.stderr.write(`dashboard drive failed in phase ${phase}: ${error.stack || error}\n${JSON.stringify(seen)}\n`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
