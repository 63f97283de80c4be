//! Backups through the binary on the embedded store: an online export taken under load,
//! `restore` into a store that is not empty (refused, then `--merge`), bad files refused
//! before anything is written, and a restore killed halfway and run again.

use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use sandbox_broker::domain::SandboxStatus;
use sandbox_broker::store::backup::{BackupItem, Consistency, check_export};
use serde_json::Value;

use crate::helpers::process::{
    Exited, export_items, import_over_http, kill_after_first_progress, on_embedded, run_to_end,
    start_until_listening,
};
use crate::helpers::{ADMIN_TOKEN, LAB_TOKEN};

async fn allocate(address: &str, holder: &str) -> Value {
    let response = reqwest::Client::new()
        .post(format!("{address}/v1/allocate"))
        .bearer_auth(LAB_TOKEN)
        .header("X-Instruqt-Sandbox-ID", holder)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    response.json().await.unwrap()
}

/// A store in `dir` holding `ids` as imported rows, `holders` each with an allocation.
async fn populated(dir: &Path, ids: std::ops::Range<u64>, holders: &[&str]) {
    let server = start_until_listening(on_embedded(&["serve"], dir), "sandbox-broker listening");
    import_over_http(&server.address, ids).await;
    for holder in holders {
        allocate(&server.address, holder).await;
    }
}

fn export(dir: &Path, to: &Path) -> Exited {
    let exited = run_to_end(on_embedded(&["export", "--to", &to.to_string_lossy()], dir));
    assert_eq!(exited.code, Some(0), "{}", exited.stderr);
    exited
}

fn restore(dir: &Path, from: &Path, extra: &[&str]) -> Exited {
    let mut args = vec!["restore", "--from"];
    let from = from.to_string_lossy().into_owned();
    args.push(&from);
    args.extend(extra);
    run_to_end(on_embedded(&args, dir))
}

fn digest_of(path: &Path) -> String {
    let file = std::fs::File::open(path).unwrap();
    check_export(BufReader::new(file)).unwrap().trailer.digest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_online_export_holds_every_allocation_acknowledged_before_it_began() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_until_listening(
        on_embedded(&["serve"], dir.path()),
        "sandbox-broker listening",
    );
    import_over_http(&server.address, 0..4000).await;

    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..16)
        .map(|worker| {
            let (address, stop, acknowledged) =
                (server.address.clone(), stop.clone(), acknowledged.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let mut done = Vec::new();
                for n in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let holder = format!("w{worker}-s{n}");
                    let response = client
                        .post(format!("{address}/v1/allocate"))
                        .bearer_auth(LAB_TOKEN)
                        .header("X-Instruqt-Sandbox-ID", &holder)
                        .send()
                        .await
                        .unwrap();
                    if response.status() != StatusCode::CREATED {
                        break;
                    }
                    let body: Value = response.json().await.unwrap();
                    let id = body["sandbox_id"].as_str().unwrap().to_owned();
                    done.push((holder, id, Instant::now()));
                    acknowledged.fetch_add(1, Ordering::Relaxed);
                }
                done
            })
        })
        .collect();
    while acknowledged.load(Ordering::Relaxed) < 300 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let began = Instant::now();
    let response = reqwest::Client::new()
        .get(format!("{}/v1/admin/export", server.address))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let body = response.bytes().await.unwrap();
    stop.store(true, Ordering::Relaxed);
    let mut before = Vec::new();
    for worker in workers {
        before.extend(
            worker
                .await
                .unwrap()
                .into_iter()
                .filter(|(_, _, at)| *at < began),
        );
    }

    let file = dir.path().join("online.ndjson");
    std::fs::write(&file, &body).unwrap();
    let checked = check_export(body.as_ref()).unwrap();
    assert_eq!(checked.header.store, "embedded");
    assert_eq!(checked.header.consistency, Consistency::Snapshot);
    let items = export_items(&file);
    assert!(before.len() >= 300, "{}", before.len());
    for (holder, id, _) in &before {
        match items.get(&format!("sandbox {id}")) {
            Some(BackupItem::Sandbox(row)) => {
                assert_eq!(row.status, SandboxStatus::Allocated, "{id}");
                assert_eq!(row.holder.as_deref(), Some(holder.as_str()), "{id}");
            }
            other => panic!("{id}, acknowledged before the export, is missing: {other:?}"),
        }
        assert!(
            items.contains_key(&format!("allocation_key {holder:?}")),
            "{holder}'s key is missing"
        );
    }
    // One snapshot: every allocated row in it has its key, and no key lacks its row.
    let allocated = checked.trailer.counts["sandbox:allocated"];
    assert_eq!(checked.trailer.counts["allocation_key"], allocated);
    assert_eq!(
        checked.trailer.counts.values().sum::<u64>(),
        checked.header.items
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_refuses_a_store_that_is_not_empty_and_with_merge_keeps_what_it_holds() {
    let (source, target, files) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    populated(source.path(), 0..6, &["stu-a", "stu-b"]).await;
    populated(target.path(), 4..10, &["stu-c"]).await;
    let (from, target_before) = (
        files.path().join("a.ndjson"),
        files.path().join("b0.ndjson"),
    );
    export(source.path(), &from);
    export(target.path(), &target_before);

    // Into an empty store, every item counts as written: the two allocation keys too,
    // which the embedded store derives from their restored rows.
    let fresh = tempfile::tempdir().unwrap();
    let first = restore(fresh.path(), &from, &[]);
    assert_eq!(first.code, Some(0), "{}", first.stderr);
    let file_items = export_items(&from);
    let keys = file_items
        .keys()
        .filter(|key| key.starts_with("allocation_key "));
    assert_eq!(keys.count(), 2);
    let items = file_items.len();
    let line = format!("written {items} items; 0 were already there");
    assert!(first.stdout.contains(&line), "{}", first.stdout);

    let refused = restore(target.path(), &from, &[]);
    assert_ne!(refused.code, Some(0));
    let named = format!(
        "the embedded store in {} is not empty",
        target.path().display()
    );
    assert!(refused.stderr.contains(&named), "{}", refused.stderr);
    assert!(refused.stderr.contains("--merge"), "{}", refused.stderr);
    let after_refusal = files.path().join("b1.ndjson");
    export(target.path(), &after_refusal);
    assert_eq!(
        digest_of(&after_refusal),
        digest_of(&target_before),
        "nothing was written"
    );

    let merged = restore(target.path(), &from, &["--merge"]);
    assert_eq!(merged.code, Some(0), "{}", merged.stderr);
    assert!(merged.stdout.contains("kept (--merge"), "{}", merged.stdout);
    assert!(merged.stdout.contains("verified"), "{}", merged.stdout);
    let after = files.path().join("b2.ndjson");
    export(target.path(), &after);
    let (file, held, merged_items) = (
        export_items(&from),
        export_items(&target_before),
        export_items(&after),
    );
    for (key, item) in &merged_items {
        let expected = held.get(key).or_else(|| file.get(key));
        assert_eq!(Some(item), expected, "{key}: the store's version wins");
    }
    let union: std::collections::BTreeSet<&String> = file.keys().chain(held.keys()).collect();
    assert_eq!(union.len(), merged_items.len());
    // Rows 4 and 5 were in both: the target's are kept, and reported.
    assert!(
        merged.stdout.contains("sandbox 000004"),
        "{}",
        merged.stdout
    );

    let again = restore(target.path(), &from, &["--merge"]);
    assert_eq!(again.code, Some(0), "{}", again.stderr);
    assert!(again.stdout.contains("written 0 items"), "{}", again.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_or_truncated_file_is_refused_and_nothing_is_written() {
    let (source, files) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    populated(source.path(), 0..3, &["stu-a"]).await;
    let good = files.path().join("good.ndjson");
    export(source.path(), &good);
    let checked = run_to_end(on_embedded(
        &["restore", "--check", "--from", &good.to_string_lossy()],
        source.path(),
    ));
    assert_eq!(checked.code, Some(0), "{}", checked.stderr);
    assert!(
        checked.stdout.contains("a complete embedded export"),
        "{}",
        checked.stdout
    );

    let text = std::fs::read_to_string(&good).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let all_but_last = lines[..lines.len() - 1].join("\n") + "\n";
    let cut_mid_line = &text[..text.len() - 10];
    let edited = text.replacen("lab-000001", "lab-000009", 1);
    let bad_line = format!(
        "{}\n{{\"item\":\"sandbox\"}}\n{}",
        lines[0],
        lines[1..].join("\n")
    );
    let cases = [
        ("empty", String::new(), "the file is empty"),
        (
            "not an export",
            "[1,2,3]\n".to_owned(),
            "is not an export header",
        ),
        ("truncated", all_but_last, "it is truncated"),
        ("cut mid-line", cut_mid_line.to_owned(), "it is truncated"),
        ("edited", edited, "damaged or was edited"),
        ("malformed line", bad_line, "line 2"),
    ];
    for (what, content, says) in cases {
        let bad = files
            .path()
            .join(format!("{}.ndjson", what.replace(' ', "-")));
        std::fs::write(&bad, content).unwrap();
        let target = files
            .path()
            .join(format!("store-{}", what.replace(' ', "-")));
        let refused = restore(&target, &bad, &[]);
        assert_ne!(refused.code, Some(0), "{what}");
        assert!(refused.stderr.contains(says), "{what}: {}", refused.stderr);
        assert!(
            refused.stderr.contains("nothing was written"),
            "{what}: {}",
            refused.stderr
        );
        assert!(!target.exists(), "{what}: the store was not even created");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_killed_halfway_finishes_when_run_again_without_duplicates() {
    let (target, files) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let file = files.path().join("large.ndjson");
    crate::helpers::process::write_export_of_rows(&file, 8_000);
    let digest = digest_of(&file);
    let store = target.path().join("data");

    kill_after_first_progress(on_embedded(
        &["restore", "--from", &file.to_string_lossy()],
        &store,
    ));
    let serve = run_to_end(on_embedded(&["serve"], &store));
    assert_ne!(serve.code, Some(0));
    assert!(
        serve.stderr.contains("unfinished restore"),
        "{}",
        serve.stderr
    );

    let finished = restore(&store, &file, &[]);
    assert_eq!(finished.code, Some(0), "{}", finished.stderr);
    assert!(
        finished.stdout.contains("carrying on"),
        "{}",
        finished.stdout
    );
    assert!(finished.stdout.contains("verified"), "{}", finished.stdout);
    let exported = files.path().join("back.ndjson");
    export(&store, &exported);
    assert_eq!(
        digest_of(&exported),
        digest,
        "every row once, as in the file"
    );
    assert_eq!(export_items(&exported).len(), 8_000);
}
