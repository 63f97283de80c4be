// A steady lab day: students arrive at a constant rate, allocate, look at their sandbox
// a few times while they work, and release it. Latency and errors must stay flat.
//   BASE_URL=http://127.0.0.1:8080 TRACK_TOKEN=… [RATE=5] [DURATION=10m] k6 run k6/lab-day.js
import { check, sleep } from 'k6';
import {
  base, studentHeaders, studentName, allocate, getSandbox, release,
  checkAllocation, checkExhausted,
} from './lib.js';

export const options = {
  scenarios: {
    lab_day: {
      executor: 'constant-arrival-rate',
      rate: Number(__ENV.RATE || 5),
      timeUnit: '1s',
      duration: __ENV.DURATION || '10m',
      preAllocatedVUs: 50,
      maxVUs: 500,
    },
  },
  thresholds: {
    'http_req_duration{step:allocate}': ['p(99)<250'],
    'http_req_duration{step:get}': ['p(99)<100'],
    'http_req_duration{step:release}': ['p(99)<250'],
    // 409s are counted separately; anything else that fails is an error.
    'http_req_failed{step:get}': ['rate<0.001'],
    'http_req_failed{step:release}': ['rate<0.001'],
    checks: ['rate>0.999'],
  },
};

export default function () {
  const headers = studentHeaders(studentName('day'), 'k6-lab-day');
  const allocated = allocate(base, headers);
  if (allocated.status === 409) {
    checkExhausted(allocated);
    return;
  }
  checkAllocation(allocated);
  const id = allocated.json('sandbox_id');
  for (let look = 0; look < 3; look += 1) {
    sleep(Number(__ENV.THINK_SECONDS || 1));
    check(getSandbox(base, headers, id), { 'get: 200': (r) => r.status === 200 });
  }
  check(release(base, headers, id), { 'release: 200': (r) => r.status === 200 });
}
