// The pool runs out: more students than sandboxes. Those who get one must get it fast;
// the rest must get a clean 409 NO_SANDBOXES_AVAILABLE with Retry-After, never a 5xx
// and never a sandbox someone else holds. Size STUDENTS above the pool (see
// GET /v1/admin/stats); nothing is released, so re-run only against a pool you refill.
//   BASE_URL=… TRACK_TOKEN=… [ADMIN_TOKEN=…] STUDENTS=600 k6 run k6/pool-exhaustion.js
import { check } from 'k6';
import { Counter } from 'k6/metrics';
import {
  base, studentHeaders, studentName, allocate, checkAllocation, checkExhausted,
  checkOneSandboxPerStudent,
} from './lib.js';

const won = new Counter('sandboxes_allocated');
const refused = new Counter('sandboxes_refused');

export const options = {
  scenarios: {
    exhaustion: {
      executor: 'per-vu-iterations',
      vus: Number(__ENV.STUDENTS || 600),
      iterations: 1,
      maxDuration: '2m',
    },
  },
  thresholds: {
    // 409 is the expected answer for the students beyond the pool, not a failure…
    'http_req_duration{step:allocate}': ['p(99)<500'],
    // …but a 5xx never is.
    'http_reqs{status:500}': ['count==0'],
    'http_reqs{status:503}': ['count==0'],
    checks: ['rate>0.99'],
  },
};

export default function () {
  const response = allocate(base, studentHeaders(studentName('exhaust'), 'k6-exhaust'));
  if (response.status === 409) {
    refused.add(1);
    checkExhausted(response);
    return;
  }
  won.add(1);
  checkAllocation(response);
  check(response, { 'allocate: 201 new': (r) => r.status === 201 });
}

export function teardown() {
  checkOneSandboxPerStudent('k6-exhaust-');
}
