//! The Infoblox CSP client against a simulated CSP (wiremock) on a loopback port.

use std::time::Duration;

use sandbox_broker::provider::client::{CspClient, CspSettings};
use sandbox_broker::provider::{ProviderClient, ProviderError};
use serde_json::json;
use wiremock::matchers::{header, header_exists, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn client_for(server: &MockServer, read_timeout: Duration) -> CspClient {
    CspClient::new(&CspSettings {
        base_url: format!("{}/v2/", server.uri()),
        token: "csp-secret".into(),
        connect_timeout: Duration::from_secs(1),
        read_timeout,
        allow_http: true,
    })
    .unwrap()
}

#[tokio::test]
async fn listing_keeps_active_sandboxes_maps_them_and_counts_unusable_rows() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v2/current_user/accounts"))
        .and(header("authorization", "Token csp-secret"))
        .and(header_exists("user-agent"))
        .and(query_param("_offset", "0"))
        .and(query_param("_limit", "1000"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"results": [
            {"id": "identity/accounts/1e96e538", "csp_id": 2009521, "name": "lab-a-1", "account_type": "sandbox", "state": "active", "created_at": "2025-03-27T16:53:47.605459Z", "sfdc_account_id": "001SAND"},
            {"id": "identity/accounts/2", "csp_id": "2009522", "name": "lab-a-2", "account_type": "sandbox", "state": "active"},
            {"id": "identity/accounts/3", "csp_id": 2009523, "name": "lab-a-3", "account_type": "sandbox", "state": "deleted"},
            {"id": "identity/accounts/4", "csp_id": 2009524, "name": "corp", "account_type": "enterprise", "state": "active"},
            {"id": "identity/accounts/5", "csp_id": null, "name": "no-id", "account_type": "sandbox", "state": "active"},
            {"id": "identity/accounts/6", "csp_id": 2009526, "account_type": "sandbox", "state": "active"},
            {"id": "identity/accounts/7", "csp_id": 2009527, "name": "", "account_type": "sandbox", "state": "active"},
        ]})))
        .expect(1)
        .mount(&server)
        .await;
    // The second page (after the seven entries of the first) is empty: the list ends.
    Mock::given(method("GET"))
        .and(path("/v2/current_user/accounts"))
        .and(query_param("_offset", "7"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"results": []})))
        .expect(1)
        .mount(&server)
        .await;

    let listing = client_for(&server, Duration::from_secs(5))
        .list_sandboxes()
        .await
        .unwrap();

    let ids: Vec<&str> = listing
        .sandboxes
        .iter()
        .map(|s| s.sandbox_id.as_str())
        .collect();
    assert_eq!(ids, ["2009521", "2009522"]);
    assert_eq!(
        listing.skipped, 3,
        "rows without a usable csp_id or name are counted, never stored"
    );
    let first = &listing.sandboxes[0];
    assert_eq!(first.external_id.as_str(), "identity/accounts/1e96e538");
    assert_eq!(first.sfdc_account_id.as_deref(), Some("001SAND"));
    assert_eq!(first.created_at, Some(1_743_094_427));
    assert_eq!(listing.sandboxes[1].sfdc_account_id, None);
}

#[tokio::test]
async fn deleting_uses_the_account_uuid_and_treats_200_204_404_as_deleted() {
    let server = MockServer::start().await;
    for (uuid, status) in [("a-200", 200), ("b-204", 204), ("c-404", 404)] {
        Mock::given(method("DELETE"))
            .and(path(format!("/v2/sandbox/accounts/{uuid}")))
            .and(header("authorization", "Token csp-secret"))
            .respond_with(ResponseTemplate::new(status))
            .expect(1)
            .mount(&server)
            .await;
    }
    let client = client_for(&server, Duration::from_secs(5));
    for uuid in ["a-200", "b-204", "c-404"] {
        client
            .delete_sandbox(&format!("identity/accounts/{uuid}"))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn each_failure_maps_to_its_kind_and_only_outages_are_transient() {
    let server = MockServer::start().await;
    let cases = [
        ("unauthorized", ResponseTemplate::new(401)),
        (
            "limited",
            ResponseTemplate::new(429).insert_header("retry-after", "7"),
        ),
        ("broken", ResponseTemplate::new(503)),
        ("refused", ResponseTemplate::new(400)),
        (
            "slow",
            ResponseTemplate::new(200).set_delay(Duration::from_secs(3)),
        ),
    ];
    for (uuid, response) in cases {
        Mock::given(method("DELETE"))
            .and(path(format!("/v2/sandbox/accounts/{uuid}")))
            .respond_with(response)
            .mount(&server)
            .await;
    }
    let client = client_for(&server, Duration::from_millis(300));
    let delete = |uuid: &'static str| {
        let client = &client;
        async move {
            client
                .delete_sandbox(&format!("identity/accounts/{uuid}"))
                .await
                .unwrap_err()
        }
    };

    assert!(matches!(
        delete("unauthorized").await,
        ProviderError::Unauthorized(401)
    ));
    let limited = delete("limited").await;
    assert!(
        matches!(limited, ProviderError::RateLimited { retry_after: Some(d) } if d == Duration::from_secs(7))
    );
    assert!(limited.is_transient());
    let broken = delete("broken").await;
    assert!(matches!(broken, ProviderError::Unavailable(_)) && broken.is_transient());
    let refused = delete("refused").await;
    assert!(
        matches!(refused, ProviderError::Other(_)) && !refused.is_transient(),
        "a 400 is a refusal: {refused:?}"
    );
    let slow = delete("slow").await;
    assert!(
        matches!(slow, ProviderError::Unavailable(_)),
        "a read timeout is an outage: {slow:?}"
    );
}

#[tokio::test]
async fn an_unreachable_provider_is_a_transient_outage() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let client = CspClient::new(&CspSettings {
        base_url: format!("http://127.0.0.1:{port}/v2"),
        token: "t".into(),
        connect_timeout: Duration::from_millis(300),
        read_timeout: Duration::from_secs(1),
        allow_http: true,
    })
    .unwrap();

    let err = client.list_sandboxes().await.unwrap_err();

    assert!(
        matches!(err, ProviderError::Unavailable(_)) && err.is_transient(),
        "{err:?}"
    );
}

#[tokio::test]
async fn an_unreadable_listing_is_an_error_not_a_panic() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_string("<html>maintenance</html>"))
        .mount(&server)
        .await;

    let err = client_for(&server, Duration::from_secs(5))
        .list_sandboxes()
        .await
        .unwrap_err();

    assert!(matches!(err, ProviderError::Other(_)), "{err:?}");
}

#[tokio::test]
async fn a_redirect_is_not_followed_so_the_token_goes_nowhere_else() {
    let elsewhere = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"results": []})))
        .expect(0)
        .mount(&elsewhere)
        .await;
    let server = MockServer::start().await;
    for status in [301, 302, 307, 308] {
        server.reset().await;
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(status).insert_header(
                "location",
                format!("{}/v2/current_user/accounts", elsewhere.uri()).as_str(),
            ))
            .mount(&server)
            .await;
        let client = client_for(&server, Duration::from_secs(2));

        let refused = client.list_sandboxes().await;

        assert!(refused.is_err(), "{status} was followed: {refused:?}");
    }
    assert!(elsewhere.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn plain_http_is_refused_unless_explicitly_allowed() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"results": []})))
        .mount(&server)
        .await;
    let client = CspClient::new(&CspSettings {
        base_url: format!("{}/v2", server.uri()),
        token: "csp-secret".into(),
        connect_timeout: Duration::from_secs(1),
        read_timeout: Duration::from_secs(2),
        allow_http: false,
    })
    .unwrap();

    assert!(client.list_sandboxes().await.is_err());
    assert!(server.received_requests().await.unwrap().is_empty());
    let allowed = client_for(&server, Duration::from_secs(2));
    assert!(allowed.list_sandboxes().await.is_ok());
}
