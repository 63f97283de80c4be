//! Connection hygiene with real slow clients on loopback: a dribbled request head is cut
//! off, an idle keep-alive connection is closed, a busy one is not, a slow body is the
//! request timeout's business, and connections beyond the cap get a 503 envelope.

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{ADMIN_TOKEN, TestApp};

/// Long enough for any disconnect the test expects; it fails rather than hangs.
const PATIENCE: Duration = Duration::from_secs(15);

async fn connect(app: &TestApp) -> TcpStream {
    let address = app.address.trim_start_matches("http://");
    TcpStream::connect(address).await.unwrap()
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: broker\r\n\r\n")
}

/// Reads one response (head and `content-length` body): `(status, body)`.
async fn read_response(stream: &mut TcpStream) -> (u16, String) {
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&received).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .unwrap_or(0);
            if body.len() >= length {
                let status = head.split(' ').nth(1).unwrap().parse().unwrap();
                return (status, body[..length].to_owned());
            }
        }
        let read = tokio::time::timeout(PATIENCE, stream.read(&mut chunk))
            .await
            .expect("a response in time")
            .unwrap();
        assert!(read > 0, "closed mid-response: {text}");
        received.extend_from_slice(&chunk[..read]);
    }
}

/// Waits for the server to close the connection (EOF or reset), failing after PATIENCE.
async fn assert_closed_by_server(stream: &mut TcpStream, why: &str) {
    let mut chunk = [0u8; 1024];
    let closed = tokio::time::timeout(PATIENCE, async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "{why}: the connection stayed open");
}

#[tokio::test]
async fn a_client_dribbling_its_request_head_is_disconnected_and_so_is_one_that_sends_nothing() {
    let app = TestApp::builder()
        .config(|c| c.http.header_read_timeout = Duration::from_secs(1))
        .spawn()
        .await;

    let mut half_line = connect(&app).await;
    half_line.write_all(b"GET /heal").await.unwrap();
    let mut silent = connect(&app).await;

    assert_closed_by_server(&mut half_line, "half a request line").await;
    assert_closed_by_server(&mut silent, "nothing sent").await;
    // The server still serves everyone else.
    let mut fresh = connect(&app).await;
    fresh.write_all(get("/healthz").as_bytes()).await.unwrap();
    assert_eq!(read_response(&mut fresh).await.0, 200);
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_but_a_busy_one_is_kept() {
    let app = TestApp::builder()
        .config(|c| {
            c.http.header_read_timeout = Duration::from_secs(1);
            c.http.keep_alive_timeout = Duration::from_secs(2);
        })
        .spawn()
        .await;
    let mut stream = connect(&app).await;

    // Eight requests 500 ms apart: 4 s in all, past both timeouts, on one connection.
    for _ in 0..8 {
        stream.write_all(get("/healthz").as_bytes()).await.unwrap();
        assert_eq!(read_response(&mut stream).await.0, 200);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    assert_closed_by_server(&mut stream, "idle keep-alive").await;
}

#[tokio::test]
async fn a_slow_body_is_not_a_slow_head() {
    let app = TestApp::builder()
        .config(|c| c.http.header_read_timeout = Duration::from_secs(1))
        .spawn()
        .await;
    let body = r#"{"sandboxes": [{"sandbox_id": "9001", "name": "lab-slow-1", "external_id": "identity/accounts/slow"}]}"#;
    let head = format!(
        "POST /v1/admin/sandboxes HTTP/1.1\r\nHost: broker\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut stream = connect(&app).await;
    stream.write_all(head.as_bytes()).await.unwrap();

    // The body takes 2.5 s, longer than the head may: the request timeout governs it.
    let (first, rest) = body.split_at(body.len() / 2);
    for part in [first, rest] {
        tokio::time::sleep(Duration::from_millis(1250)).await;
        stream.write_all(part.as_bytes()).await.unwrap();
    }

    let (status, answer) = read_response(&mut stream).await;
    assert_eq!(status, 200, "{answer}");
    let answer: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["imported"], 1, "{answer}");
}

#[tokio::test]
async fn connections_beyond_the_cap_are_answered_503_with_the_envelope_and_slots_come_back() {
    let app = TestApp::builder()
        .config(|c| c.http.max_connections = 3)
        .spawn()
        .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut stream = connect(&app).await;
        stream.write_all(get("/healthz").as_bytes()).await.unwrap();
        assert_eq!(read_response(&mut stream).await.0, 200);
        held.push(stream);
    }

    let mut extra = connect(&app).await;
    extra.write_all(get("/healthz").as_bytes()).await.unwrap();
    let (status, body) = read_response(&mut extra).await;
    assert_eq!(status, 503, "{body}");
    let envelope: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        envelope["detail"]["code"], "SERVICE_UNAVAILABLE",
        "{envelope}"
    );
    assert!(envelope["detail"]["request_id"].is_string(), "{envelope}");
    assert_closed_by_server(&mut extra, "a shed connection").await;

    // A slot freed is a slot taken: the held connection serves the count.
    drop(held.pop());
    let mut admitted = None;
    let mut shed_while_waiting = 0;
    for _ in 0..50 {
        let mut stream = connect(&app).await;
        stream.write_all(get("/metrics").as_bytes()).await.unwrap();
        let (status, body) = read_response(&mut stream).await;
        if status == 200 {
            admitted = Some(body);
            break;
        }
        shed_while_waiting += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let metrics = admitted.expect("a freed slot admits a new connection");
    assert!(
        metrics.contains("broker_connections_open 3"),
        "two held and this one"
    );
    let shed = metrics
        .lines()
        .find_map(|line| line.strip_prefix("broker_connections_shed_total "))
        .unwrap();
    assert_eq!(shed.parse::<u64>().unwrap(), 1 + shed_while_waiting);
}
