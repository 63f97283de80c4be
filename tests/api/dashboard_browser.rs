//! `/dashboard` as an operator uses it: Debian's Chromium, headless, driven through
//! `playwright-core` (pinned, from npm, cached under `target/`) by
//! `tests/browser/dashboard.mjs`, against the real service with data in it. The script
//! reports what the page showed; this test compares every number with the admin API's
//! own answers, and checks that a wrong token shows nothing, that no request leaves the
//! origin and that the console stays clean. It runs in both suites, so on both stores.
//! Screenshots and the downloaded CSV are kept in `target/browser-test/artifacts/<suite>/`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use reqwest::StatusCode;
use sandbox_broker::domain::time::EpochSecs;
use sandbox_broker::domain::{NiosxaasCleanup, SandboxId, now_epoch};
use sandbox_broker::store::DeletionOutcome;
use serde_json::{Value, json};

use crate::helpers::tools::target_dir;
use crate::helpers::{ADMIN_TOKEN, LAB_TOKEN, TestApp, json_of};

/// The npm package that drives the browser (pinned: its protocol must match the script).
const PLAYWRIGHT: &str = "playwright-core@1.65.1";

/// Debian's Chromium, installed with apt-get when missing.
fn chromium() -> PathBuf {
    crate::helpers::tools::debian_binary("chromium", "chromium")
}

/// `playwright-core`'s ES module entry, installed into `target/browser-test` on first use.
fn playwright_core(dir: &Path) -> PathBuf {
    let entry = dir.join("node_modules/playwright-core/index.mjs");
    if entry.is_file() {
        return entry;
    }
    // Install beside, then move into place, so a run stopped midway leaves no half package.
    let work = dir.join(format!("install-{}", std::process::id()));
    std::fs::create_dir_all(&work).expect("create the npm work directory");
    let status = Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--silent", "--prefix"])
        .arg(&work)
        .arg(PLAYWRIGHT)
        .status()
        .expect("run npm (is it installed?)");
    assert!(status.success(), "npm install {PLAYWRIGHT} failed");
    let modules = dir.join("node_modules");
    if !entry.is_file() {
        let _ = std::fs::remove_dir_all(&modules);
        std::fs::rename(work.join("node_modules"), &modules).expect("move node_modules into place");
    }
    let _ = std::fs::remove_dir_all(&work);
    entry
}

/// A pool with labs, holders, releases and NIOSXaaS history, as a class day leaves it.
async fn class_day(app: &TestApp) {
    app.seed("lab-", 0, 120).await;
    app.seed("other-", 500, 5).await;
    let mut released = Vec::new();
    for n in 0..12 {
        let holder = format!("stu-{n}");
        let lab = if n % 2 == 0 { "dns" } else { "sec" };
        let held = json_of(
            app.allocate_with(&holder, &[("X-Instruqt-Track-ID", lab)])
                .await,
            StatusCode::CREATED,
        )
        .await;
        let id = held["sandbox_id"].as_str().unwrap().to_owned();
        if n < 3 {
            app.mark(&id, &holder).await;
            released.push((id, holder));
        }
    }
    // Two of the released sandboxes went through the NIOSXaaS hook and were deleted.
    let now = now_epoch();
    let outcomes = [
        NiosxaasCleanup {
            niosxaas_cleaned_at: Some(EpochSecs::new(now)),
            niosxaas_services_matched: 1,
            ..NiosxaasCleanup::default()
        },
        NiosxaasCleanup {
            niosxaas_cleanup_failed_reason: Some("sign-in refused".into()),
            ..NiosxaasCleanup::default()
        },
    ];
    // The first is deleted; the second was given up (the auditor reports it).
    let finals = [
        DeletionOutcome::Deleted {
            ttl: EpochSecs::new(now + 3600),
        },
        DeletionOutcome::Failed {
            attempts: 3,
            error: "HTTP 400".into(),
        },
    ];
    for (((id, _), hook), outcome) in released.iter().zip(outcomes).zip(finals) {
        let id = SandboxId::parse("id", id).unwrap();
        let now = EpochSecs::new(now);
        crate::helpers::finish_deletion_of(&app.store, &id, outcome, Some(hook), now, now).await;
    }
}

async fn api(app: &TestApp, path: &str) -> Value {
    json_of(app.admin_get(path).await, StatusCode::OK).await
}

/// Every row a filter selects, following cursors.
async fn all_rows(app: &TestApp, query: &str) -> Vec<Value> {
    let mut rows = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/v1/admin/sandboxes?limit=100&{query}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page = api(app, &path).await;
        rows.extend(page["sandboxes"].as_array().unwrap().iter().cloned());
        match page["cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return rows,
        }
    }
}

fn ids(rows: &[Value]) -> Vec<String> {
    rows.iter()
        .map(|r| r["sandbox_id"].as_str().unwrap().to_owned())
        .collect()
}

/// The page's table rows' first column.
fn first_column(rows: &Value) -> Vec<String> {
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| r[0].as_str().unwrap().to_owned())
        .collect()
}

/// A number or null as the page prints it.
fn shown(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_reads_searches_pages_and_downloads_the_pool_on_the_dashboard() {
    let browser = chromium();
    let dir = target_dir().join("browser-test");
    let playwright = playwright_core(&dir);
    // One folder per suite (api: embedded store, dynamodb: DynamoDB Local).
    let suite = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .and_then(|stem| stem.split('-').next().map(str::to_owned))
        .unwrap_or_else(|| "suite".into());
    let artefacts = dir.join("artifacts").join(suite);
    std::fs::create_dir_all(&artefacts).unwrap();
    let app = TestApp::builder()
        .config(|c| c.webhooks.allow_private_webhooks = true)
        .spawn()
        .await;
    class_day(&app).await;

    let stats = api(&app, "/v1/admin/stats").await;
    let labs = api(&app, "/v1/admin/tracks").await;
    let usage = api(&app, "/v1/admin/usage?hours=24&bucket_minutes=60").await;
    let jobs = api(&app, "/v1/admin/jobs").await;
    let niosxaas = api(&app, "/v1/admin/niosxaas").await;
    let audit = json_of(
        app.admin(reqwest::Method::POST, "/v1/admin/audit")
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    let holders = all_rows(&app, "status=allocated").await;
    let every = all_rows(&app, "").await;
    let searched = all_rows(&app, "q=stu-3").await;
    let filtered = all_rows(&app, "status=allocated&track_name=dns").await;
    let prefixed = all_rows(&app, "name_prefix=lab-").await;

    let run = tokio::task::spawn_blocking({
        let (browser, playwright, artefacts) =
            (browser.clone(), playwright.clone(), artefacts.clone());
        let base = app.address.clone();
        move || {
            Command::new("node")
                .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/dashboard.mjs"))
                .env("BASE_URL", base)
                .env("ADMIN_TOKEN", ADMIN_TOKEN)
                .env("TRACK_TOKEN", LAB_TOKEN)
                .env("CHROMIUM", browser)
                .env("PLAYWRIGHT_CORE", playwright)
                .env("OUT_DIR", artefacts)
                .env("SEARCH_TEXT", "stu-3")
                .env("FILTER_LAB", "dns")
                .env("CSV_PREFIX", "lab-")
                .env("WEBHOOK_URL", "http://127.0.0.1:9/hooks")
                .output()
                .expect("run node")
        }
    })
    .await
    .unwrap();
    assert!(
        run.status.success(),
        "the browser run failed:\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let page: Value = serde_json::from_slice(&run.stdout).expect("the script prints JSON");
    // Reported, not asserted: timing belongs to benchmarks, not tests.
    eprintln!(
        "dashboard: first data on screen {} ms after the token",
        page["firstDataMs"]
    );
    let after = api(&app, "/v1/admin/stats").await;

    // A wrong token: an error and nothing else.
    let wrong = &page["wrongToken"];
    assert!(
        wrong["error"]
            .as_str()
            .unwrap()
            .contains("not an admin token")
    );
    assert_eq!(
        (
            &wrong["boardHidden"],
            &wrong["cardsShown"],
            &wrong["rowsShown"]
        ),
        (&json!(true), &json!(0), &json!(0))
    );

    // The board shows the API's numbers.
    let before = &page["before"];
    for (name, value) in stats.as_object().unwrap() {
        assert_eq!(
            before["pool"][name],
            json!(value.to_string()),
            "pool card {name}"
        );
    }
    let statuses_with_rows: Vec<&str> = [
        "available",
        "allocated",
        "pending_deletion",
        "stale",
        "deletion_failed",
        "deleted",
    ]
    .into_iter()
    .filter(|s| stats[*s].as_u64().unwrap() > 0)
    .collect();
    assert_eq!(before["statusBars"], json!(statuses_with_rows));
    let mut bars = Vec::new();
    for bucket in usage["buckets"].as_array().unwrap() {
        bars.push(json!(["allocated", bucket["start"], bucket["allocated"]]));
        bars.push(json!(["released", bucket["start"], bucket["released"]]));
    }
    assert_eq!(before["usageBars"], json!(bars));
    let duration = &usage["lab_duration"];
    assert_eq!(
        before["labDuration"],
        json!({"held_now": usage["held_now"], "count": duration["count"],
               "mean_seconds": duration["mean_seconds"], "p50_seconds": duration["p50_seconds"],
               "p90_seconds": duration["p90_seconds"], "max_seconds": duration["max_seconds"]})
    );
    let lab_rows: Vec<Value> = labs["tracks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let counts = [
                "allocated",
                "released",
                "pending_deletion",
                "deleted",
                "total",
            ]
            .map(|f| shown(&t[f]));
            json!([t["track_name"], counts])
        })
        .collect();
    let page_labs: Vec<Value> = before["tracks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| json!([r[0], [&r[1], &r[2], &r[3], &r[4], &r[5]]]))
        .collect();
    assert_eq!(page_labs, lab_rows);
    assert_eq!(before["labBars"], json!(2 * lab_rows.len()));
    let held_by: BTreeSet<(String, String)> = holders
        .iter()
        .map(|r| {
            let text = |field: &str| r[field].as_str().unwrap_or_default().to_owned();
            (text("allocated_to_track"), text("track_name"))
        })
        .collect();
    let page_held_by: BTreeSet<(String, String)> = before["holders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r[0].as_str().unwrap().to_owned(),
                r[1].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(page_held_by, held_by);
    assert_eq!(held_by.len(), 9, "12 students, 3 released");
    let job_names: Vec<&Value> = jobs["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| &j["job"])
        .collect();
    assert_eq!(json!(first_column(&before["jobs"])), json!(job_names));
    assert_eq!(
        before["breakers"],
        json!({"provider": "not configured", "niosxaas": "not configured"})
    );
    let audit_counts: serde_json::Map<String, Value> = audit["counts"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(check, count)| (check.clone(), json!(count.to_string())))
        .collect();
    assert_eq!(before["auditCounts"], Value::Object(audit_counts));
    let violations: Vec<Value> = audit["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            let text = |field: &str| v[field].as_str().unwrap_or_default().to_owned();
            json!([
                text("check"),
                text("sandbox_id"),
                text("student"),
                text("detail")
            ])
        })
        .collect();
    assert_eq!(before["auditViolations"], json!(violations));
    assert_eq!(audit["counts"]["deletion_failed"], 1, "{audit}");
    // The action log, newest first: the audit run just now (the token the browser minted
    // and revoked, and reservations made and deleted, later in the run came after what the page first showed).
    let actions = api(&app, "/v1/admin/actions?limit=20").await;
    let logged: Vec<Value> = actions["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| {
            let action = a["action"].as_str().unwrap();
            !action.starts_with("admin.token_")
                && !action.starts_with("admin.reservation_")
                && !action.starts_with("admin.webhook_")
        })
        .map(|a| json!([a["actor"], a["action"]]))
        .collect();
    let shown_actions: Vec<Value> = before["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| json!([row[1], row[2]]))
        .collect();
    assert_eq!(shown_actions, logged);
    assert_eq!(logged.first().map(|a| &a[1]), Some(&json!("admin.audit")));
    let counts = &niosxaas["counts"];
    assert_eq!(
        before["niosxaasCounts"],
        json!({"cleaned": counts["cleaned"].to_string(), "skipped": counts["skipped"].to_string(),
               "failed": counts["failed"].to_string(), "pending": counts["pending"].to_string()})
    );
    assert_eq!(
        (counts["cleaned"].as_u64(), counts["failed"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(
        first_column(&before["niosxaasRecords"]),
        ids(niosxaas["records"].as_array().unwrap())
    );
    assert_eq!(first_column(&before["niosxaasRecords"]).len(), 2);

    // Cursor paging walks the API's pages, forward and back.
    assert_eq!(before["firstPage"], json!(ids(&every[..50])));
    assert_eq!(
        before["headings"],
        json!([
            "id",
            "name",
            "status",
            "student",
            "lab",
            "allocated",
            "lab ends"
        ])
    );
    assert_eq!(page["paging"]["second"], json!(ids(&every[50..100])));
    assert_eq!(page["paging"]["third"], json!(ids(&every[100..])));
    assert_eq!(page["paging"]["back"], page["paging"]["second"]);

    // Search and filters select what the API selects.
    assert_eq!(json!(first_column(&page["search"])), json!(ids(&searched)));
    assert_eq!(searched.len(), 1);
    assert_eq!(
        json!(first_column(&page["filtered"])),
        json!(ids(&filtered))
    );
    assert_eq!(
        filtered.len(),
        4,
        "stu-4, -6, -8 and -10 hold dns sandboxes"
    );
    let columns = &page["columns"];
    let headings: Vec<&str> = columns["headings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap())
        .collect();
    let external = headings
        .iter()
        .position(|h| *h == "external id")
        .expect("external id column");
    assert!(headings.contains(&"idempotency key"));
    let shown_external: Vec<&Value> = columns["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r[external])
        .collect();
    let api_external: Vec<&Value> = filtered.iter().map(|r| &r["external_id"]).collect();
    assert_eq!(shown_external, api_external);

    // The CSV holds every row the filter selects (all pages), in the chosen columns.
    let csv = page["csv"].as_str().unwrap();
    std::fs::write(artefacts.join("sandboxes-checked.csv"), csv).unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(
        header,
        [
            "sandbox_id",
            "name",
            "status",
            "allocated_to_track",
            "track_name",
            "allocated_at",
            "expires_at",
            "external_id",
            "idempotency_key"
        ]
    );
    let csv_rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(csv_rows.len(), 120);
    assert_eq!(
        csv_rows.iter().map(|r| r[0].to_owned()).collect::<Vec<_>>(),
        ids(&prefixed)
    );
    for (row, api_row) in csv_rows.iter().zip(&prefixed) {
        assert_eq!(row[1], api_row["name"].as_str().unwrap());
        assert_eq!(row[2], api_row["status"].as_str().unwrap());
        assert_eq!(row[7], api_row["external_id"].as_str().unwrap());
    }

    // Auto-refresh moved the numbers and kept the filter and the page.
    assert_eq!(page["refreshAllocation"], 201);
    let refreshed = &page["afterRefresh"];
    // The lab-token phase, after the refresh, allocated one more.
    let allocated_at_refresh = after["allocated"].as_u64().unwrap() - 1;
    assert_eq!(
        refreshed["pool"]["allocated"],
        json!(allocated_at_refresh.to_string())
    );
    assert_eq!(
        Some(allocated_at_refresh),
        stats["allocated"].as_u64().map(|n| n + 1)
    );
    assert!(
        refreshed["pageInfo"]
            .as_str()
            .unwrap()
            .starts_with("page 2")
    );
    assert_eq!(
        (&refreshed["namePrefix"], &refreshed["sameRows"]),
        (&json!("lab-"), &json!(true))
    );

    // The lab tokens panel mints (the secret shown once, never listed), lists, and revokes.
    let tokens = &page["labTokens"];
    assert_eq!(tokens["secretShape"], json!(true), "{tokens}");
    assert_eq!(tokens["secretListed"], json!(false));
    assert_eq!(tokens["listed"][0][0], json!("browser-class"));
    assert_eq!(tokens["listed"][0][3], json!("lab-"));
    assert_eq!(tokens["listed"][0][4], json!("0 / 3"));
    assert_eq!(tokens["listed"][0][5], json!("active"));
    assert_eq!(
        (&tokens["allocated"], &tokens["afterRevoke"]),
        (&json!(201), &json!(401))
    );
    assert_eq!(tokens["revokedRow"], json!("revoked"));

    // The reservations panel refuses what does not fit (its shortfall said), lists and
    // draws one that fits beside the pool's forecast, and deletes it.
    let reservations = &page["reservations"];
    assert!(
        reservations["refused"].as_str().unwrap().contains("short"),
        "{reservations}"
    );
    assert_eq!(
        reservations["listed"],
        json!([["browser-class", "any", "2", "holding"]])
    );
    assert_eq!(
        reservations["timeline"],
        json!({"reservations": 1, "wholePool": 1, "now": 1})
    );
    assert_eq!(
        (&reservations["afterDelete"], &reservations["errorCleared"]),
        (&json!(0), &json!(""))
    );

    // The webhooks panel refuses a bad field, adds an endpoint (its secret shown once,
    // never listed), shows a failed test, and deletes it.
    let webhooks = &page["webhooks"];
    assert!(
        webhooks["refused"]
            .as_str()
            .unwrap()
            .contains("must be one of"),
        "{webhooks}"
    );
    assert_eq!(
        (&webhooks["secretShape"], &webhooks["secretListed"]),
        (&json!(true), &json!(false))
    );
    assert_eq!(
        webhooks["listed"],
        json!([["sandbox.allocated, pool.low", "0", "0", "1"]])
    );

    // A token that stops working clears the page and asks again.
    assert_eq!(
        page["revoked"],
        json!({"boardHidden": true, "promptShown": true, "cardsLeft": 0, "rowsLeft": 0, "tokenKept": null})
    );

    // Nothing left the origin; the console stayed clean (a refused token's 403, and the
    // refused reservation's 409, are the browser's own network log lines, and the only ones).
    let origin = format!("{}/", app.address);
    for url in page["requests"].as_array().unwrap() {
        let url = url.as_str().unwrap();
        assert!(
            url.starts_with(&origin) || url.starts_with("blob:"),
            "a request left the origin: {url}"
        );
    }
    assert_eq!(page["pageErrors"], json!([]));
    for error in page["consoleErrors"].as_array().unwrap() {
        if error["phase"] == "reservations" || error["phase"] == "webhooks" {
            assert!(
                ["409", "400"]
                    .iter()
                    .any(|status| error["text"].as_str().unwrap().contains(status)),
                "console error: {error}"
            );
            continue;
        }
        assert!(
            error["phase"] == "wrong-token" || error["phase"] == "revoked",
            "console error: {error}"
        );
        assert!(
            ["401", "403"]
                .iter()
                .any(|status| error["text"].as_str().unwrap().contains(status)),
            "console error: {error}"
        );
    }
    for shot in ["wrong-token.png", "dashboard.png", "filtered.png"] {
        assert!(artefacts.join(shot).is_file(), "{shot} kept");
    }
}
