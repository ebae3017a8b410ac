//! Health, metrics, OpenAPI, the error shape, the command line and shutdown.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::backends::on_both_backends;
use crate::helpers::{Backend, error_code, free_port, spawn_app};

async fn readiness_checks_database_cache_and_blob_store(b: Backend) {
    let app = spawn_app(&b).await;
    let res = app.client.get(app.url("/health/ready")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    let names: Vec<&str> = body["checks"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["database", "cache", "blob_store"]);
    assert_eq!(app.client.get(app.url("/health/live")).send().await.unwrap().status(), 200);
}

async fn readiness_fails_when_the_blob_store_is_gone(b: Backend) {
    let app = spawn_app(&b).await;
    std::fs::remove_dir_all(app.blob_dir()).unwrap();
    let res = app.client.get(app.url("/health/ready")).send().await.unwrap();
    assert_eq!(res.status(), 503);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["checks"][2]["ok"], false);
}

async fn request_latency_is_recorded_per_route_template(b: Backend) {
    let app = spawn_app(&b).await;
    let meta = app.upload(&app.admin_key, "x", b"x".to_vec()).await;
    app.get(&app.admin_key, &format!("/api/v1/files/{}", meta["id"].as_str().unwrap())).send().await.unwrap();
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(
            r#"http_request_duration_seconds_count{method="GET",endpoint="/api/v1/files/{id}",status="200"} 1"#
        ),
        "{metrics}"
    );
    assert!(metrics.contains(
        r#"http_request_duration_seconds_bucket{method="POST",endpoint="/api/v1/files",status="201",le="0.1"}"#
    ));
}

async fn every_response_has_a_request_id_and_every_error_one_shape(b: Backend) {
    let app = spawn_app(&b).await;
    let res = app.client.get(app.url("/health/live")).send().await.unwrap();
    assert!(res.headers().contains_key("x-request-id"));

    let res = app.get(&app.admin_key, "/no/such/route").send().await.unwrap();
    assert_eq!(res.status(), 404);
    let id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "route-not-found");
    assert_eq!(body["error"]["request_id"], id.as_str());

    let res = app.client.put(app.url("/api/v1/files")).bearer_auth(&app.admin_key).send().await.unwrap();
    assert_eq!(res.status(), 405);
    assert_eq!(error_code(res).await, "method-not-allowed");

    let res = app.get(&app.admin_key, "/api/v1/files/not-a-uuid").send().await.unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(error_code(res).await, "bad-request");

    let res = app
        .client
        .patch(app.url("/api/v1/files/01890000-0000-7000-8000-000000000000"))
        .bearer_auth(&app.admin_key)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    error_code(res).await;
}

async fn the_openapi_document_lists_the_routes(b: Backend) {
    let app = spawn_app(&b).await;
    let doc: Value = app.client.get(app.url("/openapi.json")).send().await.unwrap().json().await.unwrap();
    for path in ["/api/v1/files", "/api/v1/files/{id}", "/api/v1/files/{id}/content", "/api/v1/users", "/health/ready"]
    {
        assert!(doc["paths"].get(path).is_some(), "{path} in the OpenAPI document");
    }
    assert!(doc["components"]["schemas"].get("FileMeta").is_some());
    // Bounds the handlers enforce are in the document, so a request valid by it is not refused.
    let list = doc["paths"]["/api/v1/files"]["get"]["parameters"].as_array().unwrap();
    let limit = list.iter().find(|p| p["name"] == "limit").unwrap();
    assert_eq!((&limit["schema"]["minimum"], &limit["schema"]["maximum"]), (&json!(1), &json!(1000)));
}

async fn every_schema_the_openapi_document_refers_to_is_in_it(b: Backend) {
    let app = spawn_app(&b).await;
    let doc: Value = app.client.get(app.url("/openapi.json")).send().await.unwrap().json().await.unwrap();
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                if let Some(Value::String(r)) = map.get("$ref") {
                    out.push(r.clone());
                }
                map.values().for_each(|v| refs(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut found = Vec::new();
    refs(&doc, &mut found);
    assert!(found.iter().any(|r| r.ends_with("/FileMeta")), "the walk finds references: {found:?}");
    let missing: Vec<&String> = found
        .iter()
        .filter(|r| doc["components"]["schemas"].get(r.trim_start_matches("#/components/schemas/")).is_none())
        .collect();
    assert!(missing.is_empty(), "references to schemas the document lacks: {missing:?}");
}

async fn every_refusal_an_operation_can_answer_is_documented_with_the_error_body(b: Backend) {
    let app = spawn_app(&b).await;
    let doc: Value = app.client.get(app.url("/openapi.json")).send().await.unwrap().json().await.unwrap();
    let statuses = |path: &str, method: &str| -> Vec<String> {
        let responses = doc["paths"][path][method]["responses"].as_object().unwrap();
        for (status, response) in responses.iter().filter(|(s, _)| s.starts_with(['4', '5'])) {
            let schema = &response["content"]["application/json"]["schema"]["$ref"];
            // Readiness answers 503 with its checks, on purpose; everything else with the error body.
            if (path, status.as_str()) != ("/health/ready", "503") {
                assert_eq!(schema, "#/components/schemas/ErrorBody", "{method} {path} {status}");
            }
        }
        responses.keys().cloned().collect()
    };
    let has = |found: &[String], expected: &[&str]| expected.iter().all(|s| found.iter().any(|f| f == s));
    // A key-protected read with a path parameter: malformed input, a refused key, nothing there, the rate limit,
    // load shedding, a failure.
    let get = statuses("/api/v1/files/{id}", "get");
    assert!(has(&get, &["200", "400", "401", "404", "429", "500", "503"]), "{get:?}");
    // Operations with a body add its refusals.
    let upload = statuses("/api/v1/files", "post");
    assert!(has(&upload, &["201", "401", "408", "413", "415", "422", "429", "503"]), "{upload:?}");
    // A share link looks at no key, so it is never a 401.
    let shared = statuses("/s/{token}", "get");
    assert!(has(&shared, &["200", "404", "429", "503"]) && !has(&shared, &["401"]), "{shared:?}");
    // Health is not admitted, rate-limited or keyed.
    let live = statuses("/health/live", "get");
    assert!(has(&live, &["200", "400", "500"]) && !has(&live, &["401"]) && !has(&live, &["429"]), "{live:?}");
    let update = statuses("/api/v1/files/{id}", "patch");
    assert!(has(&update, &["422"]), "{update:?}");
    // The names an upload or a rename accepts: a pattern the served document carries, true to the sanitiser.
    let pattern = doc["components"]["schemas"]["FileName"]["pattern"].as_str().unwrap();
    let pattern = regex::Regex::new(pattern).unwrap();
    for kept in ["report.pdf", "../../etc/passwd", "보고서 2026.pdf", "a\u{202e}fdp.exe", " .x. "] {
        assert!(pattern.is_match(kept), "{kept:?} is a name");
    }
    for refused in ["", "..", "a/", "a/. .", "\u{200b}\u{feff}", "x\\\u{3000}"] {
        assert!(!pattern.is_match(refused), "{refused:?} is not a name");
    }
    assert_eq!(
        doc["components"]["schemas"]["FileUpdate"]["properties"]["name"]["oneOf"][0]["$ref"],
        "#/components/schemas/FileName"
    );
}

async fn api_responses_carry_security_headers_and_no_cors_by_default(b: Backend) {
    let app = spawn_app(&b).await;
    for res in [
        app.get(&app.admin_key, "/api/v1/users/me").send().await.unwrap(),
        app.client.get(app.url("/api/v1/files")).send().await.unwrap(),
    ] {
        let h = res.headers();
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["x-frame-options"], "DENY");
        assert_eq!(h["referrer-policy"], "no-referrer");
        assert!(h["content-security-policy"].to_str().unwrap().starts_with("default-src 'none'"));
        assert_eq!(h["cache-control"], "no-store");
    }
    let meta = app.upload(&app.admin_key, "x", b"x".to_vec()).await;
    let res = app.download(&app.admin_key, meta["id"].as_str().unwrap()).await;
    assert_eq!(res.headers()["cache-control"], "private, no-cache", "content keeps its own caching policy");

    let preflight = app
        .client
        .request(reqwest::Method::OPTIONS, app.url("/api/v1/files"))
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "GET")
        .send()
        .await
        .unwrap();
    assert!(preflight.headers().get("access-control-allow-origin").is_none());
}

async fn cors_answers_only_the_configured_origins(b: Backend) {
    let app =
        crate::helpers::spawn_app_with(&b, |c| c.cors.allowed_origins = vec!["https://app.example.com".into()]).await;
    let preflight = |origin: &'static str| {
        app.client
            .request(reqwest::Method::OPTIONS, app.url("/api/v1/files"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization,content-type")
            .send()
    };
    let ok = preflight("https://app.example.com").await.unwrap();
    assert_eq!(ok.headers()["access-control-allow-origin"], "https://app.example.com");
    let methods = ok.headers()["access-control-allow-methods"].to_str().unwrap().to_owned();
    assert!(methods.contains("POST"), "{methods}");
    let other = preflight("https://evil.example.com").await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
}

fn binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_filewallball"))
}

#[test]
fn invalid_configuration_stops_startup_with_one_line_naming_the_key() {
    let out = binary().env("FWB__UPLOAD__MAX_BYTES", "lots").arg("--print-config").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.to_lowercase().contains("upload.max_bytes"), "{stderr}");
}

#[test]
fn print_config_merges_file_and_environment_and_masks_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fwb.toml");
    std::fs::write(&file, "[upload]\nmax_bytes = 1234\n[database]\nurl = \"sqlite://hidden.db\"\n").unwrap();
    let out = binary()
        .args(["--config", file.to_str().unwrap(), "--print-config"])
        .env("FWB__SERVER__BIND", "127.0.0.1:9999")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("max_bytes = 1234"), "{text}");
    assert!(text.contains("bind = \"127.0.0.1:9999\""), "{text}");
    assert!(!text.contains("hidden.db"), "{text}");
}

/// The whole operator path: create the first admin from the command line, serve, stop on SIGTERM.
#[tokio::test]
async fn the_binary_creates_an_admin_serves_with_its_key_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let out = binary()
        .args(["admin", "create-user", "--name", "root", "--role", "admin"])
        .env("FWB__STORAGE__DATA_DIR", data)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let key = stdout.lines().find_map(|l| l.strip_prefix("api key (shown once): ")).expect(&stdout).to_owned();

    let port = free_port();
    let mut child = binary()
        .env("FWB__STORAGE__DATA_DIR", data)
        .env("FWB__SERVER__BIND", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/api/v1/users/me");
    let mut me = None;
    for _ in 0..100 {
        if let Ok(res) = client.get(&url).bearer_auth(&key).send().await {
            me = Some(res.json::<Value>().await.unwrap());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let me = me.expect("the service answers");
    assert_eq!(me["name"], "root");
    assert_eq!(me["role"], "admin");

    let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let status = tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "exit status after SIGTERM: {status}");
}

on_both_backends!(
    api_responses_carry_security_headers_and_no_cors_by_default,
    cors_answers_only_the_configured_origins,
    readiness_checks_database_cache_and_blob_store,
    readiness_fails_when_the_blob_store_is_gone,
    request_latency_is_recorded_per_route_template,
    every_response_has_a_request_id_and_every_error_one_shape,
    the_openapi_document_lists_the_routes,
    every_schema_the_openapi_document_refers_to_is_in_it,
    every_refusal_an_operation_can_answer_is_documented_with_the_error_body,
);

/// tokio-console attaches: the service started with `telemetry.console_addr` answers a gRPC call on it.
#[tokio::test]
async fn the_console_layer_serves_grpc_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let (port, console) = (free_port(), free_port());
    let mut child = binary()
        .env("FWB__STORAGE__DATA_DIR", dir.path())
        .env("FWB__SERVER__BIND", format!("127.0.0.1:{port}"))
        .env("FWB__TELEMETRY__CONSOLE_ADDR", format!("127.0.0.1:{console}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut tcp = None;
    for _ in 0..100 {
        if let Ok(s) = tokio::net::TcpStream::connect(("127.0.0.1", console)).await {
            tcp = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let tcp = tcp.expect("the console port answers");
    let (mut grpc, connection) = h2::client::handshake(tcp).await.expect("HTTP/2 handshake");
    tokio::spawn(connection);
    let request =
        http::Request::post(format!("http://127.0.0.1:{console}/rs.tokio.console.instrument.Instrument/WatchUpdates"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .unwrap();
    let (response, mut body) = grpc.send_request(request, false).unwrap();
    // An empty InstrumentRequest: no compression flag, zero length.
    body.send_data(bytes::Bytes::from_static(&[0, 0, 0, 0, 0]), true).unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), response).await.expect("an answer").unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("application/grpc"));
    let _ = child.kill();
    let _ = child.wait();
}
