//! Memory keyed by caller input is bounded: the candidate queues a DynamoDB store keeps
//! per `X-Sandbox-Name-Prefix` stay within `DDB_CANDIDATE_PREFIXES` however many prefixes
//! callers invent, and the real prefixes are served throughout. End to end on DynamoDB
//! Local with 2,000 invented prefixes (each costs the emulator an index read, ~2 ms on
//! 2 cores); the pool's own unit test (`store/dynamo/candidates.rs`) sends 50,000 through
//! the same code against an in-memory index.

use std::sync::Arc;

use futures::stream::{self, StreamExt};
use sandbox_broker::domain::time::EpochSecs;
use sandbox_broker::domain::{HolderKey, NamePrefix};
use sandbox_broker::store::dynamo::{self, DynamoStore};
use sandbox_broker::store::{
    AdminStore, AllocationKey, AllocationRequest, AllocationStore, Refusal,
};

use crate::helpers::sandboxes;
use crate::local;

const BOUND: usize = 16;
const INVENTED: usize = 2_000;

fn request(holder: &str, prefix: &str) -> AllocationRequest {
    AllocationRequest {
        key: AllocationKey {
            holder: HolderKey::parse("s", holder).unwrap(),
            idempotency_key: None,
        },
        lab: None,
        name_prefix: Some(NamePrefix::parse("p", prefix).unwrap()),
        lab_duration_hours: 4,
        now: EpochSecs::new(1_800_000_000),
        token: None,
        reservation: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_invented_prefixes_keep_the_candidate_queues_bounded_and_real_ones_served() {
    let emulator = local::shared();
    let table = local::table_name();
    let settings = dynamo::DynamoSettings {
        candidate_prefixes: BOUND,
        ..local::settings(&emulator.endpoint, &table)
    };
    let client = dynamo::client(&settings).await;
    dynamo::schema::ensure_table(&client, &table).await.unwrap();
    let store = Arc::new(
        DynamoStore::new(&client, &settings)
            .await
            .expect("the store opens"),
    );
    let mut pool = sandboxes("lab-a-", 0, 25);
    pool.extend(sandboxes("lab-b-", 100, 25));
    store
        .import(pool, EpochSecs::new(1_800_000_000))
        .await
        .unwrap();

    // Every 100th request is a real student of lab a or b; the rest invent a prefix.
    let outcomes: Vec<(usize, sandbox_broker::store::Outcome<String>)> = stream::iter(0..=INVENTED)
        .map(|n| {
            let store = Arc::clone(&store);
            async move {
                let real = n % 100 == 0;
                let prefix = match (real, n % 200 == 0) {
                    (true, true) => "lab-a-".to_owned(),
                    (true, false) => "lab-b-".to_owned(),
                    (false, _) => format!("invented-{n}-"),
                };
                let got = store.allocate(request(&format!("stu-{n}"), &prefix)).await;
                assert!(store.candidate_prefixes() <= BOUND);
                (
                    n,
                    got.map(|got| got.map(|allocation| allocation.sandbox.name)),
                )
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;

    let mut served = 0;
    for (n, outcome) in outcomes {
        if n % 100 == 0 {
            let name = match outcome {
                Ok(Ok(name)) => name,
                other => panic!("real student {n}: {other:?}"),
            };
            let expected = if n % 200 == 0 { "lab-a-" } else { "lab-b-" };
            assert!(name.starts_with(expected), "{n}: {name}");
            served += 1;
        } else {
            assert!(
                matches!(outcome, Ok(Err(Refusal::NoneAvailable))),
                "{n}: {outcome:?}"
            );
        }
    }
    assert_eq!(served, 21, "every real student got a sandbox");
    assert!(store.candidate_prefixes() <= BOUND);
}
