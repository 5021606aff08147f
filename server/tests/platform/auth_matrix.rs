//! Every documented route, for every kind of caller: 401 without credentials, 403 for a role
//! below the route's need, through for one that has it. Then sessions: first-run setup, sign-in,
//! the CSRF header, sign-out; and keys made while the server runs.

use serde_json::json;

use crate::harness::{Backend, Server, Site};
use crate::on_both_backends;

fn call_as(server: &Server, method: &str, path: &str, key: Option<&str>) -> u16 {
    let auth = key.map(|k| format!("Bearer {k}"));
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(auth) = &auth {
        headers.push(("Authorization", auth));
    }
    let body: &[u8] = if method == "GET" || method == "DELETE" {
        b""
    } else {
        b"{}"
    };
    server.call(method, path, &headers, body).status
}

fn auth_matrix(backend: Backend) {
    let site = Site::new("auth", backend);
    let admin = site.token("admin");
    let member = site.token("member");
    let viewer = site.token("viewer");
    let worker = site.token("worker");
    let server = site.start(&[]);
    let document = server.get("/api/openapi.json", &viewer).json();
    assert_eq!(document["openapi"], "3.1.0");
    let paths = document["paths"].as_object().unwrap();
    let mut checked = 0;
    for (path, operations) in paths {
        for (method, operation) in operations.as_object().unwrap() {
            let method = method.to_uppercase();
            let access = operation["x-glmtune-access"].as_str().unwrap();
            let concrete = path.replace("{id}", "nonexistent");
            let route = format!("{method} {path}");
            let anonymous = call_as(&server, &method, &concrete, None);
            if access == "public" {
                assert_ne!(anonymous, 401, "{route} is public");
                continue;
            }
            assert_eq!(anonymous, 401, "{route} without credentials");
            assert_eq!(
                call_as(&server, &method, &concrete, Some("glm-wrong")),
                401,
                "{route} with a wrong key"
            );
            // A worker key may call its own routes and nothing else; nobody else may call those.
            let expect = |role: &str| -> bool {
                match access {
                    "worker" => role == "worker",
                    _ if role == "worker" => false,
                    "read" => true,
                    "write" => role != "viewer",
                    _ => role == "admin",
                }
            };
            for (role, key) in [
                ("viewer", &viewer),
                ("member", &member),
                ("admin", &admin),
                ("worker", &worker),
            ] {
                let status = call_as(&server, &method, &concrete, Some(key));
                if expect(role) {
                    assert!(
                        status != 401 && status != 403,
                        "{route} as {role}: {status}"
                    );
                    // The route exists: not the fallback's "no such route".
                    let body = server
                        .call(
                            &method,
                            &concrete,
                            &[("Authorization", &format!("Bearer {key}"))],
                            b"{}",
                        )
                        .text();
                    assert!(
                        !body.contains("no such route"),
                        "{route} is documented but not routed"
                    );
                } else {
                    assert_eq!(status, 403, "{route} as {role}");
                }
                checked += 1;
            }
        }
    }
    assert!(checked > 100, "only {checked} checks");
    assert_eq!(call_as(&server, "GET", "/healthz", None), 200);
    assert_eq!(call_as(&server, "GET", "/api/v1/no/such/route", None), 401);
    assert_eq!(
        call_as(&server, "GET", "/api/v1/no/such/route", Some(&admin)),
        404
    );
    // A known path with a method it lacks tells no more than an unknown one.
    assert_eq!(call_as(&server, "PUT", "/api/v1/runs", None), 401);
    assert_eq!(call_as(&server, "PUT", "/api/v1/runs", Some(&admin)), 405);

    // First-run setup with the printed token makes an admin and a session.
    let token = server
        .setup_token
        .clone()
        .expect("a setup token is printed when there are no users");
    let wrong = server.call(
        "POST",
        "/api/v1/auth/setup",
        &[("Content-Type", "application/json")],
        json!({"setup_token": "setup-wrong", "username": "root", "password": "long enough"})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(wrong.status, 403);
    let setup = server.call(
        "POST",
        "/api/v1/auth/setup",
        &[("Content-Type", "application/json")],
        json!({"setup_token": token, "username": "root", "password": "long enough"})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(setup.status, 200, "{}", setup.text());
    let again = server.call(
        "POST",
        "/api/v1/auth/setup",
        &[("Content-Type", "application/json")],
        json!({"setup_token": token, "username": "root2", "password": "long enough"})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(again.status, 409);

    // An admin creates a member, who signs in with a cookie.
    let created = server.post(
        "/api/v1/users",
        &admin,
        &json!({"username": "ann", "password": "ann's password", "role": "member"}),
    );
    assert_eq!(created.status, 201, "{}", created.text());
    let bad_login = server.call(
        "POST",
        "/api/v1/auth/login",
        &[("Content-Type", "application/json")],
        json!({"username": "ann", "password": "wrong password"})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(bad_login.status, 401);
    let login = server.call(
        "POST",
        "/api/v1/auth/login",
        &[("Content-Type", "application/json")],
        json!({"username": "ann", "password": "ann's password"})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(login.status, 200, "{}", login.text());
    let set_cookie = login.header("set-cookie").unwrap().to_owned();
    assert!(
        set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict"),
        "{set_cookie}"
    );
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    let csrf = login.json()["csrf_token"].as_str().unwrap().to_owned();
    let me = server.call("GET", "/api/v1/auth/me", &[("Cookie", &cookie)], b"");
    assert_eq!(me.json()["user"]["username"], "ann");
    // A change without the CSRF header is refused; with it, it goes through.
    let body = json!({"name": "ann's script"}).to_string();
    let forged = server.call(
        "POST",
        "/api/v1/keys",
        &[("Cookie", &cookie), ("Content-Type", "application/json")],
        body.as_bytes(),
    );
    assert_eq!(forged.status, 403);
    let made = server.call(
        "POST",
        "/api/v1/keys",
        &[
            ("Cookie", &cookie),
            ("Content-Type", "application/json"),
            ("X-CSRF-Token", &csrf),
        ],
        body.as_bytes(),
    );
    assert_eq!(made.status, 201, "{}", made.text());
    let secret = made.json()["secret"].as_str().unwrap().to_owned();
    assert_eq!(made.json()["key"]["role"], "member");
    assert_eq!(
        server.get("/api/v1/auth/me", &secret).json()["user"]["username"],
        "ann"
    );
    // A member cannot mint an admin key.
    let escalate = server.call(
        "POST",
        "/api/v1/keys",
        &[
            ("Cookie", &cookie),
            ("Content-Type", "application/json"),
            ("X-CSRF-Token", &csrf),
        ],
        json!({"name": "x", "role": "admin"}).to_string().as_bytes(),
    );
    assert_eq!(escalate.status, 403);
    // Nor a worker key (an admin's to make), and no user is a worker.
    let worker_key = json!({"name": "box", "role": "worker"}).to_string();
    let as_member = server.call(
        "POST",
        "/api/v1/keys",
        &[
            ("Cookie", &cookie),
            ("Content-Type", "application/json"),
            ("X-CSRF-Token", &csrf),
        ],
        worker_key.as_bytes(),
    );
    assert_eq!(as_member.status, 403, "{}", as_member.text());
    let as_admin = server.post(
        "/api/v1/keys",
        &admin,
        &serde_json::from_str(&worker_key).unwrap(),
    );
    assert_eq!(as_admin.status, 201, "{}", as_admin.text());
    let box_key = as_admin.json()["secret"].as_str().unwrap().to_owned();
    assert_eq!(server.get("/api/v1/auth/me", &box_key).status, 403);
    let worker_user = server.post(
        "/api/v1/users",
        &admin,
        &json!({"username": "bot", "password": "bot's password", "role": "worker"}),
    );
    assert_eq!(worker_user.status, 400, "{}", worker_user.text());
    let logout = server.call(
        "POST",
        "/api/v1/auth/logout",
        &[("Cookie", &cookie), ("X-CSRF-Token", &csrf)],
        b"",
    );
    assert_eq!(logout.status, 204);
    assert_eq!(
        server
            .call("GET", "/api/v1/auth/me", &[("Cookie", &cookie)], b"")
            .status,
        401
    );

    // A key made by the CLI while the server runs works at once; a revoked one stops.
    let late = site.token("viewer");
    assert_eq!(server.get("/api/v1/runs", &late).status, 200);
    let keys = server.get("/api/v1/keys", &admin).json();
    let late_id = keys["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["prefix"] == late[..12])
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let revoke = server.call(
        "DELETE",
        &format!("/api/v1/keys/{late_id}"),
        &[("Authorization", &format!("Bearer {admin}"))],
        b"",
    );
    assert_eq!(revoke.status, 204);
    assert_eq!(server.get("/api/v1/runs", &late).status, 401);
}
on_both_backends!(auth_matrix);

#[test]
fn no_auth_is_refused_off_loopback_and_limits_apply() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_glmtune"))
        .args(["serve", "--no-auth", "--bind", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("loopback"));

    let site = Site::new("ratelimit", Backend::Sqlite);
    let key = site.token("viewer");
    let server = site.start(&["--rate-limit", "5"]);
    let statuses: Vec<u16> = (0..7)
        .map(|_| server.get("/api/v1/runs", &key).status)
        .collect();
    assert_eq!(statuses[..5], [200; 5]);
    let limited = server.get("/api/v1/runs", &key);
    assert_eq!(limited.status, 429);
    assert!(limited.header("retry-after").is_some());
    assert_eq!(limited.json()["error"]["code"], "rate_limited");

    // A request past --request-timeout-s is answered 504 (and its generation stops). 1500 tokens
    // of the tiny model take about a second on this machine's two cores: the limit is far below.
    let slow = site.start(&["--request-timeout-s", "0.05", "--rate-limit", "0"]);
    let started = std::time::Instant::now();
    let timed_out = slow.post(
        "/v1/chat/completions",
        &key,
        &json!({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1500, "temperature": 0}),
    );
    assert_eq!(timed_out.status, 504, "{}", timed_out.text());
    assert_eq!(timed_out.json()["error"]["code"], "timeout");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}
