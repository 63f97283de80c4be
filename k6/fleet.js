// A fleet: several instances behind one table (DynamoDB store). Each student's twin
// requests go to two different instances at once, as a load balancer may send a retry;
// both must answer with the same sandbox, and each student holds one.
//   BASE_URLS=http://10.0.0.1:8080,http://10.0.0.2:8080 TRACK_TOKEN=… [ADMIN_TOKEN=…] \
//     [STUDENTS=300] k6 run k6/fleet.js
import http from 'k6/http';
import { check, fail } from 'k6';
import {
  bases, studentHeaders, studentName, getSandbox, release, checkAllocation, checkExhausted,
  checkOneSandboxPerStudent,
} from './lib.js';

if (bases.length < 2) fail('set BASE_URLS to at least two instances, comma-separated');

export const options = {
  scenarios: {
    fleet: {
      executor: 'per-vu-iterations',
      vus: Number(__ENV.STUDENTS || 300),
      iterations: 1,
      maxDuration: '2m',
    },
  },
  thresholds: {
    'http_req_duration{step:allocate}': ['p(99)<500'],
    'http_reqs{status:500}': ['count==0'],
    checks: ['rate>0.99'],
  },
};

export default function () {
  const headers = studentHeaders(studentName('fleet'), 'k6-fleet');
  const one = bases[__VU % bases.length];
  const other = bases[(__VU + 1) % bases.length];
  const twins = http.batch([
    ['POST', `${one}/v1/allocate`, null, { headers, tags: { step: 'allocate' } }],
    ['POST', `${other}/v1/allocate`, null, { headers, tags: { step: 'allocate' } }],
  ]);
  if (twins.some((r) => r.status === 409)) {
    checkExhausted(twins.find((r) => r.status === 409));
    return;
  }
  twins.forEach(checkAllocation);
  check(twins, {
    'fleet twins: one 201 and one 200': (rs) => rs.map((r) => r.status).sort().join(',') === '200,201',
    'fleet twins: the same sandbox': (rs) => rs[0].json('sandbox_id') === rs[1].json('sandbox_id'),
  });
  const id = twins[0].json('sandbox_id');
  // Read and release on the instance that did not answer first: the table is the truth.
  check(getSandbox(other, headers, id), { 'get on the other instance: 200': (r) => r.status === 200 });
  if (__ENV.KEEP !== 'true') {
    check(release(one, headers, id), { 'release: 200': (r) => r.status === 200 });
  }
}

export function teardown() {
  checkOneSandboxPerStudent('k6-fleet-');
}
