// A class starts: hundreds of students allocate at once. A share of them retry the same
// request while the first is still in flight (a lab script's retry, a double click);
// every student re-runs the setup step (a replay), reads the sandbox and, at the end of
// the lab, releases it. Each student must get one sandbox, the same one every time.
//   BASE_URL=http://127.0.0.1:8080 TRACK_TOKEN=… [ADMIN_TOKEN=…] [STUDENTS=300] \
//     k6 run k6/class-start.js
import http from 'k6/http';
import { check } from 'k6';
import {
  base, studentHeaders, studentName, allocate, getSandbox, release,
  checkAllocation, checkExhausted, checkOneSandboxPerStudent,
} from './lib.js';

const students = Number(__ENV.STUDENTS || 300);
// Every RETRY_EVERY-th student sends its allocation twice at once.
const retryEvery = Number(__ENV.RETRY_EVERY || 5);

export const options = {
  scenarios: {
    class_start: {
      executor: 'per-vu-iterations',
      vus: students,
      iterations: 1,
      maxDuration: '2m',
    },
  },
  thresholds: {
    'http_req_duration{step:allocate}': ['p(95)<250', 'p(99)<500'],
    'http_req_failed{step:get}': ['rate<0.01'],
    checks: ['rate>0.99'],
  },
};

export default function () {
  const student = studentName('class');
  const headers = studentHeaders(student, 'k6-class');
  let first;
  if (__VU % retryEvery === 0) {
    const url = `${base}/v1/allocate`;
    const twins = http.batch([
      ['POST', url, null, { headers, tags: { step: 'allocate' } }],
      ['POST', url, null, { headers, tags: { step: 'allocate' } }],
    ]);
    if (twins.some((r) => r.status === 409)) {
      checkExhausted(twins.find((r) => r.status === 409));
      return;
    }
    twins.forEach(checkAllocation);
    check(twins, {
      'twins: one 201 and one 200': (rs) =>
        rs.map((r) => r.status).sort().join(',') === '200,201',
      'twins: the same sandbox': (rs) => rs[0].json('sandbox_id') === rs[1].json('sandbox_id'),
    });
    first = twins.find((r) => r.status === 201) || twins[0];
  } else {
    first = allocate(base, headers);
    if (first.status === 409) {
      checkExhausted(first); // the pool ran out: what a lab script sees too
      return;
    }
    checkAllocation(first);
    check(first, { 'allocate: 201 new': (r) => r.status === 201 });
  }
  const id = first.json('sandbox_id');
  const again = allocate(base, headers);
  check(again, {
    'replay: 200 and the same sandbox': (r) => r.status === 200 && r.json('sandbox_id') === id,
  });
  check(getSandbox(base, headers, id), {
    'get: own sandbox 200 allocated': (r) => r.status === 200 && r.json('status') === 'allocated',
  });
  if (__ENV.KEEP !== 'true') {
    check(release(base, headers, id), {
      'release: 200 pending_deletion': (r) =>
        r.status === 200 && r.json('status') === 'pending_deletion',
    });
  }
}

export function teardown() {
  checkOneSandboxPerStudent('k6-class-');
}
