// A class starts: many students allocate at once, re-run their setup step (a replay),
// read their sandbox, then release it. Run against a deployment you own:
//   BASE_URL=http://127.0.0.1:8080 TRACK_TOKEN=… k6 run k6/class-start.js
import http from 'k6/http';
import { check, fail } from 'k6';

const base = __ENV.BASE_URL || 'http://127.0.0.1:8080';
const token = __ENV.TRACK_TOKEN || fail('set TRACK_TOKEN');

export const options = {
  scenarios: {
    class_start: { executor: 'per-vu-iterations', vus: Number(__ENV.STUDENTS || 300), iterations: 1, maxDuration: '2m' },
  },
  thresholds: { 'http_req_duration{step:allocate}': ['p(99)<100'], checks: ['rate>0.99'] },
};

export default function () {
  const student = `k6-${__VU}-${Date.now()}`;
  const headers = { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json', 'X-Instruqt-Sandbox-ID': student, 'X-Instruqt-Track-ID': 'k6-class' };
  const first = http.post(`${base}/v1/allocate`, null, { headers, tags: { step: 'allocate' } });
  if (first.status === 409) return; // pool exhausted: what a lab script does too
  check(first, { 'allocated 201': (r) => r.status === 201, 'expires_at is a number': (r) => typeof r.json('expires_at') === 'number' });
  const again = http.post(`${base}/v1/allocate`, null, { headers, tags: { step: 'replay' } });
  check(again, { 'replay 200 same sandbox': (r) => r.status === 200 && r.json('sandbox_id') === first.json('sandbox_id') });
  const id = first.json('sandbox_id');
  check(http.get(`${base}/v1/sandboxes/${id}`, { headers, tags: { step: 'get' } }), { 'own sandbox 200': (r) => r.status === 200 });
  check(http.post(`${base}/v1/sandboxes/${id}/mark-for-deletion`, null, { headers, tags: { step: 'release' } }), { 'released 200': (r) => r.status === 200 });
}
