//! `glmtune serve` over real HTTP on 127.0.0.1: the OpenAI-compatible chat API and JSON errors.
//!
//! Past 500 lines on purpose: one test binary for the served APIs (each binary links the whole
//! server again, which costs CI minutes and disk); each test is short.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

mod common;
use common::fixture;

fn expected() -> serde_json::Value {
    common::expected_of(common::CHATGLM6B)
}

/// A server on a free loopback port, stopped when dropped.
struct Server {
    child: Child,
    address: String,
    data_dir: PathBuf,
}

impl Server {
    fn start() -> Self {
        let tiny = format!("tiny={}", fixture("model"));
        let expert = format!("expert={}:{}", fixture("model"), fixture("adapter_init"));
        Self::start_with(&[tiny, expert])
    }

    fn start_with(models: &[String]) -> Self {
        Self::start_with_args(models, &[])
    }

    fn start_with_args(models: &[String], extra: &[&str]) -> Self {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let data_dir = std::env::temp_dir().join(format!(
            "glmtune-serve-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&data_dir);
        let mut child = Command::new(env!("CARGO_BIN_EXE_glmtune"))
            .args([
                "serve",
                "--bind",
                "127.0.0.1:0",
                "--no-auth",
                "--max-json-bytes",
                "65536",
            ])
            .args(models.iter().flat_map(|m| ["--model", m.as_str()]))
            .args(extra)
            .arg("--data-dir")
            .arg(&data_dir)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let address = line.trim().rsplit("http://").next().unwrap().to_owned();
        Server {
            child,
            address,
            data_dir,
        }
    }

    /// Sends one HTTP/1.0 request (the server closes the connection after the body).
    fn request(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        let host = format!("Host: {}", self.address);
        self.request_with(method, path, &[&host], body)
    }

    /// As [`Server::request`], with exactly the header lines given (besides the body's).
    fn request_with(
        &self,
        method: &str,
        path: &str,
        headers: &[&str],
        body: Option<&str>,
    ) -> (u16, String) {
        let (status, _, body) = self.exchange(method, path, headers, body);
        (status, body)
    }

    /// As [`Server::request_with`], with the response's head too.
    fn exchange(
        &self,
        method: &str,
        path: &str,
        headers: &[&str],
        body: Option<&str>,
    ) -> (u16, String, String) {
        let mut stream = TcpStream::connect(&self.address).unwrap();
        let body = body.unwrap_or("");
        let mut head = String::new();
        for line in headers {
            head.push_str(line);
            head.push_str("\r\n");
        }
        write!(
            stream,
            "{method} {path} HTTP/1.0\r\n{head}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        (status, head.to_owned(), body.to_owned())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

fn decoded(ids: &serde_json::Value) -> String {
    // The fixture's greedy text, through the same CLI decode the server uses.
    let ids: Vec<String> = ids
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.to_string())
        .collect();
    let output = Command::new(env!("CARGO_BIN_EXE_glmtune"))
        .args([
            "generate",
            "--model",
            &fixture("model"),
            "--prompt",
            "你好",
            "--max-new-tokens",
            &ids.len().to_string(),
            "--json",
        ])
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    json["text"].as_str().unwrap().to_owned()
}

#[test]
fn chat_completions_streamed_and_not() {
    let server = Server::start();
    let (status, body) = server.request("GET", "/healthz", None);
    assert_eq!((status, body.as_str()), (200, "ok"));
    let (status, body) = server.request("GET", "/v1/models", None);
    assert_eq!(status, 200);
    let models: serde_json::Value = serde_json::from_str(&body).unwrap();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["expert", "tiny"]);

    let request = r#"{"model":"tiny","messages":[{"role":"user","content":"你好"}],"temperature":0,"max_tokens":10}"#;
    let (status, body) = server.request("POST", "/v1/chat/completions", Some(request));
    assert_eq!(status, 200, "{body}");
    let completion: serde_json::Value = serde_json::from_str(&body).unwrap();
    let content = completion["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    // Greedy decoding of the bare query is the fixture's greedy continuation, cleaned up as chat().
    let reference = decoded(&expected()["cases"][0]["greedy_base"]);
    assert_eq!(content, reference.trim());
    assert_eq!(completion["usage"]["prompt_tokens"], 9);
    assert_eq!(completion["usage"]["completion_tokens"], 10);
    assert_eq!(completion["choices"][0]["finish_reason"], "length");

    let streamed_request =
        request.replace("\"max_tokens\":10", "\"max_tokens\":10,\"stream\":true");
    let (status, body) = server.request("POST", "/v1/chat/completions", Some(&streamed_request));
    assert_eq!(status, 200);
    let events: Vec<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(events.last(), Some(&"[DONE]"));
    let mut text = String::new();
    for event in &events[..events.len() - 1] {
        let chunk: serde_json::Value = serde_json::from_str(event).unwrap();
        assert_eq!(chunk["object"], "chat.completion.chunk");
        if let Some(piece) = chunk["choices"][0]["delta"]["content"].as_str() {
            text.push_str(piece);
        }
    }
    assert_eq!(
        text, content,
        "streamed text equals the non-streamed answer"
    );
}

#[test]
fn errors_are_json_with_codes() {
    let server = Server::start();
    let cases = [
        (
            r#"{"model":"nope","messages":[{"role":"user","content":"x"}]}"#,
            404,
            "not_found",
        ),
        (
            r#"{"model":"tiny","messages":[{"role":"assistant","content":"x"}]}"#,
            400,
            "invalid_request",
        ),
        (
            r#"{"model":"tiny","messages":[{"role":"robot","content":"x"}]}"#,
            400,
            "invalid_request",
        ),
        ("{bad", 400, "invalid_request"),
    ];
    for (body, status, code) in cases {
        let (got, response) = server.request("POST", "/v1/chat/completions", Some(body));
        assert_eq!(got, status, "{body}: {response}");
        let error: serde_json::Value = serde_json::from_str(&response).unwrap();
        assert_eq!(error["error"]["code"], code, "{response}");
    }
    let (status, _) = server.request("GET", "/nowhere", None);
    assert_eq!(status, 404);
    let huge = format!(
        r#"{{"model":"tiny","messages":[{{"role":"user","content":"{}"}}]}}"#,
        "x".repeat(100_000)
    );
    let (status, response) = server.request("POST", "/v1/chat/completions", Some(&huge));
    assert_eq!(status, 413, "{response}");
    let error: serde_json::Value = serde_json::from_str(&response).unwrap();
    assert_eq!(error["error"]["code"], "payload_too_large");
}

#[test]
fn dashboard_pages_are_the_app_and_other_paths_stay_not_found() {
    let web = common::scratch("serve", "web-dir");
    std::fs::create_dir_all(web.join("pkg")).unwrap();
    std::fs::write(web.join("index.html"), "<!doctype html><title>app</title>").unwrap();
    let server = Server::start_with_args(&[], &["--web-dir", web.to_str().unwrap()]);
    for page in [
        "/",
        "/runs",
        "/runs/ftjob-1",
        "/compare/a,b",
        "/local",
        "/keys",
    ] {
        let (status, body) = server.request("GET", page, None);
        assert_eq!(status, 200, "{page}: {body}");
        assert!(body.contains("<title>app</title>"), "{page}: {body}");
    }
    for other in ["/nowhere", "/runsx", "/api/v1/nowhere"] {
        let (status, body) = server.request("GET", other, None);
        assert_eq!(status, 404, "{other}: {body}");
        assert!(body.contains("not_found"), "{other}: {body}");
    }
}

#[test]
fn sigterm_shuts_down_cleanly() {
    let mut server = Server::start();
    assert_eq!(server.request("GET", "/healthz", None).0, 200);
    let status = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = server.child.wait().unwrap();
    assert!(exit.success(), "{exit:?}");
}

/// The banner says the server is up: a SIGTERM right after it (before any request) is a clean
/// shutdown too, not the default action of a signal with no handler yet.
#[test]
fn sigterm_right_after_the_banner_shuts_down_cleanly() {
    for _ in 0..5 {
        let mut server = Server::start_with(&[]);
        let status = Command::new("kill")
            .args(["-TERM", &server.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let exit = server.child.wait().unwrap();
        assert!(exit.success(), "{exit:?}");
    }
}

fn glm3_fixture(path: &str) -> String {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/chatglm3-tiny");
    dir.join(path).to_string_lossy().into_owned()
}

#[test]
fn chatglm3_checkpoints_are_served_in_their_chat_format() {
    let glm3 = format!("glm3={}", glm3_fixture("model"));
    let tuned = format!(
        "glm3-tuned={}:{}",
        glm3_fixture("model"),
        glm3_fixture("adapter_init")
    );
    let server = Server::start_with(&[glm3, tuned]);
    let (status, body) = server.request("GET", "/api/v1/models", None);
    assert_eq!(status, 200, "{body}");
    let models: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(models["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m["family"] == "ChatGLM3-6B"));
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(glm3_fixture("expected.json")).unwrap())
            .unwrap();
    // The fixture's case with a system message: the OpenAI messages become ChatGLM3's roles.
    let case = &expected["chat_cases"][3];
    for (model, key) in [("glm3", "greedy_base"), ("glm3-tuned", "greedy_ptuned")] {
        let request = serde_json::json!({
            "model": model,
            "messages": [
                {"role": "system", "content": case["history"][0]["content"]},
                {"role": "user", "content": case["query"]},
            ],
            "temperature": 0,
            "max_tokens": 10,
        });
        let (status, body) =
            server.request("POST", "/v1/chat/completions", Some(&request.to_string()));
        assert_eq!(status, 200, "{body}");
        let completion: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            completion["usage"]["prompt_tokens"],
            case["chat_ids"].as_array().unwrap().len()
        );
        // The same ids as THUDM's greedy generation, up to a stop token.
        let ids: Vec<u64> = case[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        let stop = expected["eos_token_ids"].as_array().unwrap();
        let kept = ids
            .iter()
            .take_while(|id| !stop.contains(&serde_json::json!(id)))
            .count();
        let produced = if kept < ids.len() {
            kept + 1
        } else {
            ids.len()
        };
        assert_eq!(
            completion["usage"]["completion_tokens"].as_u64(),
            Some(produced as u64)
        );
        let tokenizer = glmtune_engine::tokenizer::ChatGlmTokenizer::from_dir(
            std::path::Path::new(&glm3_fixture("model")),
        )
        .unwrap();
        let ids: Vec<u32> = ids[..kept].iter().map(|&id| id as u32).collect();
        let answer =
            glmtune_engine::generation::response_text(tokenizer.family(), &tokenizer.decode(&ids));
        let content = completion["choices"][0]["message"]["content"]
            .as_str()
            .unwrap();
        eprintln!("{model}: {content:?} ({produced} tokens)");
        assert_eq!(content, answer, "{model}");
    }
}

#[test]
fn generation_beyond_the_configured_limits_is_refused() {
    let tiny = format!("tiny={}", fixture("model"));
    let server = Server::start_with_args(
        &[tiny],
        &["--max-new-tokens", "16", "--max-prompt-tokens", "12"],
    );
    let ask = |content: &str, max_tokens: u32| {
        let request = serde_json::json!({
            "model": "tiny",
            "messages": [{"role": "user", "content": content}],
            "temperature": 0,
            "max_tokens": max_tokens,
        });
        server.request("POST", "/v1/chat/completions", Some(&request.to_string()))
    };
    let (status, body) = ask("你好", 16);
    assert_eq!(status, 200, "{body}");
    let (status, body) = ask("你好", 17);
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("max_tokens") && body.contains("--max-new-tokens"),
        "{body}"
    );
    let (status, body) = ask(&"你好".repeat(20), 4);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("--max-prompt-tokens"), "{body}");
    // A deeply nested body is refused as JSON, not followed down.
    let nested = format!("{}{}", "[".repeat(20_000), "]".repeat(20_000));
    let (status, body) = server.request("POST", "/v1/chat/completions", Some(&nested));
    assert_eq!(status, 400, "{body}");
}

/// The `error.code` of a JSON error body, failing on anything else.
fn error_code(body: &str) -> String {
    let json: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not a JSON error ({e}): {body}"));
    json["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error.code: {body}"))
        .to_owned()
}

#[test]
fn other_hosts_and_cross_site_writes_are_refused_even_without_auth() {
    let server = Server::start_with_args(&[], &["--allowed-host", "glmtune.example.test"]);
    let port = server.address.rsplit(':').next().unwrap().to_owned();
    let chat = r#"{"model": "tiny", "messages": []}"#;
    // DNS rebinding: the attacker's name, pointed at 127.0.0.1, arrives as the Host.
    for host in [
        format!("rebind.evil.test:{port}"),
        "rebind.evil.test".into(),
    ] {
        let (status, body) =
            server.request_with("GET", "/api/v1/datasets", &[&format!("Host: {host}")], None);
        assert_eq!(status, 403, "{host}: {body}");
        assert_eq!(error_code(&body), "forbidden");
        assert!(body.contains("--allowed-host"), "{body}");
    }
    // The loopback forms on the bound port, a configured name, and a script sending no Host.
    for host in [
        format!("Host: localhost:{port}"),
        format!("Host: [::1]:{port}"),
        "Host: glmtune.example.test".into(),
        String::new(),
    ] {
        let headers: Vec<&str> = [host.as_str()]
            .into_iter()
            .filter(|h| !h.is_empty())
            .collect();
        let (status, body) = server.request_with("GET", "/api/v1/datasets", &headers, None);
        assert_eq!(status, 200, "{host:?}: {body}");
    }
    let (status, _) = server.request_with("GET", "/api/v1/datasets", &["Host: localhost:1"], None);
    assert_eq!(status, 403, "another port on loopback");
    // A cross-site form POST under --no-auth: refused before it reaches the route.
    let host = format!("Host: {}", server.address);
    // localhost is another origin than 127.0.0.1, though both name this server.
    let sibling = format!("Origin: http://localhost:{port}");
    for origin in ["Origin: http://evil.test", "Origin: null", sibling.as_str()] {
        let (status, body) =
            server.request_with("POST", "/api/v1/chats", &[&host, origin], Some(chat));
        assert_eq!(status, 403, "{origin}: {body}");
        assert_eq!(error_code(&body), "forbidden");
    }
    let (status, body) = server.request_with(
        "POST",
        "/api/v1/chats",
        &[&host, "Sec-Fetch-Site: cross-site"],
        Some(chat),
    );
    assert_eq!(status, 403, "{body}");
    // The server's own pages, and scripts that send no Origin, reach the route (which then
    // judges the body: an empty chat is a 400 of its own, not a 403).
    let own = format!("Origin: http://{}", server.address);
    for extra in [own.as_str(), "Sec-Fetch-Site: same-origin", ""] {
        let headers: Vec<&str> = [host.as_str(), extra]
            .into_iter()
            .filter(|h| !h.is_empty())
            .collect();
        let (status, body) = server.request_with("POST", "/api/v1/chats", &headers, Some(chat));
        assert_ne!(status, 403, "{extra:?}: {body}");
    }
    // Reads carry no Origin check: a page may not read the answer anyway (no CORS).
    let (status, _) = server.request_with(
        "GET",
        "/api/v1/datasets",
        &[&host, "Origin: http://evil.test"],
        None,
    );
    assert_eq!(status, 200);
}

#[test]
fn extractor_rejections_answer_the_json_error() {
    let server = Server::start_with(&[]);
    let host = format!("Host: {}", server.address);
    // (method, path, extra header, body, status, code): a bad query string on each route that
    // reads one, a multipart upload that is not multipart, a path segment that is not UTF-8, a
    // method the route lacks.
    let cases: [(&str, &str, &str, &str, u16, &str); 7] = [
        (
            "POST",
            "/api/v1/datasets?max_source_length=many",
            "",
            "{}",
            400,
            "invalid_request",
        ),
        (
            "GET",
            "/api/v1/runs/x/events.json?after=soon",
            "",
            "",
            400,
            "invalid_request",
        ),
        (
            "GET",
            "/api/v1/runs/x/events?after=soon",
            "",
            "",
            400,
            "invalid_request",
        ),
        (
            "GET",
            "/v1/fine_tuning/jobs?limit=-1",
            "",
            "",
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/v1/files",
            "Content-Type: text/plain",
            "x",
            400,
            "invalid_request",
        ),
        ("GET", "/api/v1/runs/%FF", "", "", 400, "invalid_request"),
        ("PUT", "/api/v1/runs", "", "{}", 405, "method_not_allowed"),
    ];
    for (method, path, extra, body, status, code) in cases {
        let headers: Vec<&str> = [host.as_str(), extra]
            .into_iter()
            .filter(|h| !h.is_empty())
            .collect();
        let (got, response) = server.request_with(method, path, &headers, Some(body));
        assert_eq!(got, status, "{method} {path}: {response}");
        assert_eq!(error_code(&response), code, "{method} {path}: {response}");
    }
}

#[test]
fn sign_in_edges_bearer_case_password_limit_and_secure_cookie() {
    let password = "correct horse battery";
    let login = format!(r#"{{"username": "admin", "password": "{password}"}}"#);
    let proxied = Server::start_with_args(&[], &["--admin-password", password, "--behind-proxy"]);
    let host = format!("Host: {}", proxied.address);
    let cookie_of = |head: &str| -> String {
        head.lines()
            .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
            .unwrap_or_else(|| panic!("no cookie: {head}"))
            .to_owned()
    };
    // Behind a TLS proxy that says so, the cookie is Secure; the same server asked directly is not.
    let (status, head, body) = proxied.exchange(
        "POST",
        "/api/v1/auth/login",
        &[&host, "X-Forwarded-Proto: https"],
        Some(&login),
    );
    assert_eq!(status, 200, "{body}");
    assert!(cookie_of(&head).contains("; Secure"), "{head}");
    let (status, head, _) = proxied.exchange("POST", "/api/v1/auth/login", &[&host], Some(&login));
    assert_eq!(status, 200);
    assert!(!cookie_of(&head).contains("Secure"), "{head}");
    // Without --behind-proxy a client's own X-Forwarded-Proto is not believed.
    let direct = Server::start_with_args(&[], &["--admin-password", password]);
    let direct_host = format!("Host: {}", direct.address);
    let (status, head, _) = direct.exchange(
        "POST",
        "/api/v1/auth/login",
        &[&direct_host, "X-Forwarded-Proto: https"],
        Some(&login),
    );
    assert_eq!(status, 200);
    assert!(!cookie_of(&head).contains("Secure"), "{head}");
    // An over-long password is refused before any hashing, naming the limit.
    let long = format!(
        r#"{{"username": "admin", "password": "{}"}}"#,
        "x".repeat(5000)
    );
    let (status, body) =
        direct.request_with("POST", "/api/v1/auth/login", &[&direct_host], Some(&long));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("at most 1024 characters"), "{body}");
    // A wrong name and a wrong password get the same answer.
    let (status, wrong_name) = direct.request_with(
        "POST",
        "/api/v1/auth/login",
        &[&direct_host],
        Some(&format!(
            r#"{{"username": "nobody", "password": "{password}"}}"#
        )),
    );
    assert_eq!(status, 401);
    let (status, wrong_password) = direct.request_with(
        "POST",
        "/api/v1/auth/login",
        &[&direct_host],
        Some(r#"{"username": "admin", "password": "not the one"}"#),
    );
    assert_eq!(status, 401);
    assert_eq!(wrong_name, wrong_password);
    // `bearer` in any case names the key (under --no-auth a header-less caller is `local`).
    let (status, key) = direct.request_with(
        "POST",
        "/api/v1/keys",
        &[&direct_host],
        Some(r#"{"name": "script"}"#),
    );
    assert_eq!(status, 201, "{key}");
    let key: serde_json::Value = serde_json::from_str(&key).unwrap();
    let secret = key["secret"].as_str().unwrap();
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let auth = format!("Authorization: {scheme} {secret}");
        let (status, me) =
            direct.request_with("GET", "/api/v1/auth/me", &[&direct_host, &auth], None);
        assert_eq!(status, 200, "{me}");
        let me: serde_json::Value = serde_json::from_str(&me).unwrap();
        assert_eq!(me["principal"], key["key"]["id"], "{scheme}: {me}");
    }
}

#[test]
fn runs_past_the_server_bounds_are_refused_on_both_apis() {
    let server = Server::start_with_args(
        &[format!("tiny={}", fixture("model"))],
        &["--run-max-pre-seq-len", "64", "--run-max-batch", "32"],
    );
    let host = format!("Host: {}", server.address);
    let data = std::fs::read_to_string(fixture("train.jsonl")).unwrap();
    let (status, dataset) = server.request_with(
        "POST",
        "/api/v1/datasets?name=t.jsonl",
        &[&host],
        Some(&data),
    );
    assert_eq!(status, 201, "{dataset}");
    let dataset: serde_json::Value = serde_json::from_str(&dataset).unwrap();
    let id = dataset["id"].as_str().unwrap();
    let cases = [
        (
            "/api/v1/runs",
            serde_json::json!({"model": "tiny", "train_dataset": id, "preset": "quick", "settings": {"pre_seq_len": 100000}}),
            "settings.pre_seq_len: 100000 is more than this server allows (64, its --run-max-pre-seq-len)",
        ),
        (
            "/api/v1/runs",
            serde_json::json!({"model": "tiny", "train_dataset": id, "preset": "quick", "settings": {"per_device_train_batch_size": 8, "gradient_accumulation_steps": 8}}),
            "--run-max-batch",
        ),
        (
            "/v1/fine_tuning/jobs",
            serde_json::json!({"model": "tiny", "training_file": id, "hyperparameters": {"pre_seq_len": 65}}),
            "--run-max-pre-seq-len",
        ),
        (
            "/v1/fine_tuning/jobs",
            serde_json::json!({"model": "tiny", "training_file": id, "hyperparameters": {"n_epochs": 1000}}),
            "--run-max-epochs",
        ),
    ];
    for (path, body, says) in cases {
        let (status, answer) = server.request_with("POST", path, &[&host], Some(&body.to_string()));
        assert_eq!(status, 400, "{path} {body}: {answer}");
        assert_eq!(error_code(&answer), "invalid_request");
        assert!(answer.contains(says), "{path} {body}: {answer}");
    }
}

#[test]
fn a_source_prefix_starting_with_a_dash_trains() {
    let server = Server::start_with(&[format!("tiny={}", fixture("model"))]);
    let host = format!("Host: {}", server.address);
    let data = std::fs::read_to_string(fixture("train.jsonl")).unwrap();
    let (status, dataset) = server.request_with(
        "POST",
        "/api/v1/datasets?name=t.jsonl",
        &[&host],
        Some(&data),
    );
    assert_eq!(status, 201, "{dataset}");
    let dataset: serde_json::Value = serde_json::from_str(&dataset).unwrap();
    let run = serde_json::json!({
        "model": "tiny",
        "train_dataset": dataset["id"],
        "preset": "quick",
        "settings": {"max_steps": 2, "save_steps": 2, "source_prefix": "-x --help"},
    });
    let (status, run) =
        server.request_with("POST", "/api/v1/runs", &[&host], Some(&run.to_string()));
    assert_eq!(status, 201, "{run}");
    let run: serde_json::Value = serde_json::from_str(&run).unwrap();
    let path = format!("/api/v1/runs/{}", run["id"].as_str().unwrap());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    let finished = loop {
        let (_, body) = server.request_with("GET", &path, &[&host], None);
        let run: serde_json::Value = serde_json::from_str(&body).unwrap();
        if ["succeeded", "failed", "cancelled"].contains(&run["state"].as_str().unwrap()) {
            break run;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the run did not finish: {run}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_eq!(finished["state"], "succeeded", "{finished}");
}

#[test]
fn openai_parameters_are_honoured_or_refused_by_name() {
    let server = Server::start();
    let ask = |extra: &str| {
        let body = format!(
            r#"{{"model": "tiny", "messages": [{{"role": "user", "content": "你好"}}], "temperature": 0{extra}}}"#
        );
        server.request("POST", "/v1/chat/completions", Some(&body))
    };
    let answer = |body: &str| -> (String, u64) {
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        (
            json["choices"][0]["message"]["content"]
                .as_str()
                .unwrap()
                .to_owned(),
            json["usage"]["completion_tokens"].as_u64().unwrap(),
        )
    };
    let (status, by_old_name) = ask(r#", "max_tokens": 3"#);
    assert_eq!(status, 200, "{by_old_name}");
    let (status, by_new_name) = ask(r#", "max_completion_tokens": 3"#);
    assert_eq!(status, 200, "{by_new_name}");
    assert_eq!(answer(&by_new_name), answer(&by_old_name));
    assert!(answer(&by_new_name).1 <= 3);
    // Neutral values and fields that change nothing are accepted.
    let (status, body) = ask(
        r#", "max_tokens": 2, "n": 1, "presence_penalty": 0, "frequency_penalty": 0.0, "user": "u1", "logprobs": false, "tools": null"#,
    );
    assert_eq!(status, 200, "{body}");
    for (extra, named) in [
        (r#", "n": 2"#, "n: 2"),
        (r#", "presence_penalty": 0.5"#, "presence_penalty"),
        (r#", "frequency_penalty": -1"#, "frequency_penalty"),
        (r#", "logit_bias": {"5": 10}"#, "logit_bias"),
        (
            r#", "response_format": {"type": "json_object"}"#,
            "response_format",
        ),
        (
            r#", "max_tokens": 2, "max_completion_tokens": 3"#,
            "disagree",
        ),
    ] {
        let (status, body) = ask(extra);
        assert_eq!(status, 400, "{extra}: {body}");
        assert_eq!(error_code(&body), "invalid_request");
        assert!(body.contains(named), "{extra}: {body}");
    }
}
