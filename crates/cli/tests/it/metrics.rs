//! `/metrics` as an operator reads it: help and type for every series,
//! HTTP requests by route and status with a latency histogram, sign-ins by
//! method and result.

use crate::harness::TestServer;
use crate::support::*;

#[tokio::test]
async fn every_series_has_help_and_type_and_requests_and_logins_are_counted() {
    let server = TestServer::start().await;
    let client = server.client();
    let alice = user(&client, "alice").await;
    alice.api.me().await.unwrap();
    let _ws = alice.api.connect_ws(None).await.unwrap();
    let _sse = alice.api.connect_sse(None).await.unwrap();
    let wrong = unimsg_client::proto::api::LoginRequest {
        username: "alice".into(),
        password: "not her password".into(),
        platform: "web".parse().unwrap(),
        device_id: None,
    };
    assert_eq!(
        client.login(&wrong).await.err().and_then(|e| e.status()),
        Some(401)
    );
    let text = metrics_text(&server).await;

    let typed: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    assert!(typed.len() > 5, "{text}");
    for name in &typed {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("# HELP {name} "))),
            "no # HELP for {name}:\n{text}"
        );
    }
    assert!(
        text.lines()
            .any(|l| l.starts_with(r#"unimsg_http_requests_total{route="/v1/me",status="200"} "#)),
        "requests by route and status:\n{text}"
    );
    for series in [
        r#"unimsg_logins_total{method="password",result="ok"} 1"#,
        r#"unimsg_logins_total{method="password",result="failed"} 1"#,
    ] {
        assert!(text.lines().any(|l| l == series), "{series} in:\n{text}");
    }
    assert!(
        text.lines()
            .any(|l| l
                .starts_with(r#"unimsg_http_request_duration_seconds_bucket{route="/v1/me",le="#)),
        "a latency histogram with buckets:\n{text}"
    );
    assert!(
        text.contains("# TYPE unimsg_http_request_duration_seconds histogram"),
        "{text}"
    );
    for series in [
        r#"unimsg_live_connections{transport="ws",platform="web"} 1"#,
        r#"unimsg_live_connections{transport="sse",platform="web"} 1"#,
    ] {
        assert!(text.lines().any(|l| l == series), "{series} in:\n{text}");
    }
    // The process's own series.
    for name in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
    ] {
        let value = text
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no {name} in:\n{text}"));
        assert!(value > 0.0, "{name} = {value}");
    }
}

/// With `metrics.token`, `/metrics` is for its bearer only.
#[tokio::test]
async fn metrics_can_be_kept_for_the_holder_of_a_token() {
    let token = "a metrics token of the operator";
    let server = TestServer::start_with(&[("UNIMSG_METRICS__TOKEN", token)]).await;
    let url = format!("{}/metrics", server.base);
    let http = reqwest::Client::new();
    let anonymous = http.get(&url).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let body: serde_json::Value = anonymous.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("metrics.token")),
        "{body}"
    );
    let wrong = http.get(&url).bearer_auth("not it").send().await.unwrap();
    assert_eq!(wrong.status(), 401);
    let right = http.get(&url).bearer_auth(token).send().await.unwrap();
    assert_eq!(right.status(), 200);
    assert!(
        right
            .text()
            .await
            .unwrap()
            .contains("# TYPE unimsg_hub_connections gauge")
    );
    assert!(
        !server.logs().contains(token),
        "the token never reaches the log"
    );
}

/// Every series the Grafana dashboard in `docs/` queries is one the server
/// exports: described in the catalogue, or on `/metrics` already.
#[tokio::test]
async fn the_grafana_dashboard_queries_only_series_the_server_exports() {
    let dashboard: serde_json::Value =
        serde_json::from_str(include_str!("../../../../docs/grafana-dashboard.json")).unwrap();
    let exprs: Vec<&str> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap())
        .filter_map(|t| t["expr"].as_str())
        .collect();
    assert!(exprs.len() >= 10, "{exprs:?}");
    let server = TestServer::start().await;
    let text = metrics_text(&server).await;
    let described: Vec<&str> = unimsg_core::catalogue::names().collect();
    let mut checked = 0;
    for expr in exprs {
        let names = expr
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("unimsg_") || w.starts_with("process_"));
        for name in names {
            let series = name.strip_suffix("_bucket").unwrap_or(name);
            assert!(
                described.contains(&series) || text.contains(&format!("# TYPE {series} ")),
                "the dashboard queries {name}, which the server does not export ({expr})"
            );
            checked += 1;
        }
    }
    assert!(checked >= 15, "{checked} series checked");
}

/// The URL the server's `metrics on http://ADDR/metrics` line names.
fn metrics_listener_url(server: &TestServer) -> String {
    let logs = server.logs();
    logs.lines()
        .find_map(|l| l.split("metrics on ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no 'metrics on' line in:\n{logs}"))
        .to_owned()
}

/// With `metrics.listen`, `/metrics` moves to a listener of its own, which
/// serves nothing else, and the main listener answers 404 there.
#[tokio::test]
async fn metrics_can_have_a_listener_of_their_own() {
    let server = TestServer::start_with(&[("UNIMSG_METRICS__LISTEN", "127.0.0.1:0")]).await;
    let url = metrics_listener_url(&server);
    assert!(url.ends_with("/metrics"), "{url}");
    let http = reqwest::Client::new();
    let scraped = http.get(&url).send().await.unwrap();
    assert_eq!(scraped.status(), 200);
    assert!(
        scraped
            .text()
            .await
            .unwrap()
            .contains("# TYPE unimsg_hub_connections gauge")
    );
    let main = http
        .get(format!("{}/metrics", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(main.status(), 404);
    let other = http
        .get(url.replace("/metrics", "/v1/me"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        other.status(),
        404,
        "the metrics listener serves nothing else"
    );

    // metrics.token holds on that listener too.
    let token = "the scraper's token";
    let guarded = TestServer::start_with(&[
        ("UNIMSG_METRICS__LISTEN", "127.0.0.1:0"),
        ("UNIMSG_METRICS__TOKEN", token),
    ])
    .await;
    let url = metrics_listener_url(&guarded);
    assert_eq!(http.get(&url).send().await.unwrap().status(), 401);
    assert_eq!(
        http.get(&url)
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let refused = TestServer::try_start_with(&[("UNIMSG_METRICS__LISTEN", "not an address")])
        .await
        .err()
        .unwrap_or_else(|| panic!("a bad metrics.listen was accepted"));
    assert!(
        refused.contains("metrics.listen") && refused.contains("HOST:PORT"),
        "{refused}"
    );
}

/// The store's calls are timed, reads and writes apart, with buckets fine
/// enough for calls of microseconds.
#[tokio::test]
async fn store_calls_are_timed_by_kind() {
    let server = TestServer::start().await;
    let alice = user(&server.client(), "alice").await;
    alice.api.me().await.unwrap();
    for call in ["read", "write"] {
        let series = format!(r#"unimsg_store_duration_seconds_count{{call="{call}"}} "#);
        assert!(counter(&server, &series).await > 0, "{series}");
    }
    let text = metrics_text(&server).await;
    assert!(
        text.contains(r#"unimsg_store_duration_seconds_bucket{call="read",le="0.00001"}"#),
        "fine buckets:\n{text}"
    );
    assert!(
        text.contains("# HELP unimsg_store_duration_seconds "),
        "{text}"
    );
}
