//! Attacks on the server, each a test: CSRF on every cookie-authenticated change, session fixation
//! and expiry, secrets that must never reach the disk or the logs, and names that try to leave
//! their folders (path segments, dataset names, links).

use serde_json::json;

use crate::harness::{files_under, fixture, Backend, Response, Server, Site};
use crate::on_both_backends;

fn post_json(server: &Server, path: &str, headers: &[(&str, &str)], body: &str) -> Response {
    let mut all = vec![("Content-Type", "application/json")];
    all.extend_from_slice(headers);
    server.call("POST", path, &all, body.as_bytes())
}

/// Signs in; returns the cookie (`name=value`), its token and the CSRF token.
fn sign_in(server: &Server, headers: &[(&str, &str)], user: &str, password: &str) -> Session {
    let login = post_json(
        server,
        "/api/v1/auth/login",
        headers,
        &json!({"username": user, "password": password}).to_string(),
    );
    assert_eq!(login.status, 200, "{}", login.text());
    let cookie = login
        .header("set-cookie")
        .expect("a session cookie")
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    Session {
        token: cookie.split_once('=').unwrap().1.to_owned(),
        cookie,
        csrf: login.json()["csrf_token"].as_str().unwrap().to_owned(),
    }
}

struct Session {
    cookie: String,
    token: String,
    csrf: String,
}

impl Session {
    /// A JSON POST as this signed-in browser, CSRF header included.
    fn post(&self, server: &Server, path: &str, body: serde_json::Value) -> Response {
        post_json(
            server,
            path,
            &[("Cookie", &self.cookie), ("X-CSRF-Token", &self.csrf)],
            &body.to_string(),
        )
    }
}

fn me(server: &Server, cookie: &str) -> Response {
    server.call("GET", "/api/v1/auth/me", &[("Cookie", cookie)], b"")
}

fn make_user(server: &Server, admin: &str, name: &str, password: &str, role: &str) -> String {
    let created = server.post(
        "/api/v1/users",
        admin,
        &json!({"username": name, "password": password, "role": role}),
    );
    assert_eq!(created.status, 201, "{}", created.text());
    created.json()["id"].as_str().unwrap().to_owned()
}

/// Every documented change (POST, PUT, PATCH, DELETE) made with only a session cookie is refused
/// without the session's CSRF token, and with another session's; the cookie is `SameSite=Strict`
/// besides.
fn csrf_on_every_change(backend: Backend) {
    let site = Site::new("csrf", backend);
    let admin = site.token("admin");
    let server = site.start(&["--rate-limit", "0"]);
    make_user(&server, &admin, "ann", "ann's password", "admin");
    make_user(&server, &admin, "bob", "bob's password", "admin");
    let ann = sign_in(&server, &[], "ann", "ann's password");
    let bob = sign_in(&server, &[], "bob", "bob's password");
    let document = server.get("/api/openapi.json", &admin).json();
    let mut checked = 0;
    for (path, operations) in document["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            let method = method.to_uppercase();
            if method == "GET" || operation["x-glmtune-access"] == "public" {
                continue;
            }
            let concrete = path.replace("{id}", "nonexistent");
            let route = format!("{method} {concrete}");
            let attempt = |csrf: Option<&str>| {
                let mut headers = vec![
                    ("Cookie", ann.cookie.as_str()),
                    ("Content-Type", "application/json"),
                ];
                if let Some(csrf) = csrf {
                    headers.push(("X-CSRF-Token", csrf));
                }
                server.call(&method, &concrete, &headers, b"{}")
            };
            for csrf in [None, Some(bob.csrf.as_str()), Some("")] {
                let refused = attempt(csrf);
                assert_eq!(refused.status, 403, "{route} with CSRF {csrf:?}");
                assert!(refused.text().contains("X-CSRF-Token"), "{route}");
            }
            // With the right token the same request gets past the check (to a 4xx of its own
            // for this empty body and nonexistent id, or through); signing out would end the
            // session the other routes need.
            if concrete == "/api/v1/auth/logout" {
                checked += 1;
                continue;
            }
            let allowed = attempt(Some(&ann.csrf));
            assert!(
                !allowed.text().contains("X-CSRF-Token"),
                "{route}: {}",
                allowed.text()
            );
            checked += 1;
        }
    }
    assert!(checked >= 15, "only {checked} changes checked");
}
on_both_backends!(csrf_on_every_change);

/// Sign-in always makes a new session id (a planted one is never adopted), sessions expire after
/// `--session-seconds`, and deleting a user ends their sessions and keys at once.
fn sessions_are_fresh_and_end(backend: Backend) {
    let site = Site::new("sessions", backend);
    let admin = site.token("admin");
    // Long enough for the checks before expiry on a loaded machine; the wait for expiry below is
    // measured from the sign-in, not guessed.
    let lifetime = std::time::Duration::from_secs(6);
    let server = site.start(&[
        "--session-seconds",
        &lifetime.as_secs().to_string(),
        "--rate-limit",
        "0",
    ]);
    let ann_id = make_user(&server, &admin, "ann", "ann's password", "member");

    // Fixation: an attacker plants a session id in the victim's browser before sign-in.
    let planted = "glmtune_session=planted-by-an-attacker";
    let signing_in = std::time::Instant::now();
    let session = sign_in(&server, &[("Cookie", planted)], "ann", "ann's password");
    assert_ne!(session.token, "planted-by-an-attacker");
    assert_eq!(session.token.len(), 64, "a 256-bit random token");
    assert_eq!(me(&server, planted).status, 401);
    assert_eq!(me(&server, &session.cookie).status, 200);
    let again = sign_in(
        &server,
        &[("Cookie", &session.cookie)],
        "ann",
        "ann's password",
    );
    assert_ne!(again.token, session.token, "each sign-in gets its own id");
    assert_ne!(again.csrf, session.csrf);

    assert!(
        signing_in.elapsed() < lifetime,
        "the checks above took longer than the session lives"
    );

    // Expiry: refused once its time is up, with a message that says so.
    let expired_at = signing_in + lifetime + std::time::Duration::from_secs(1);
    std::thread::sleep(expired_at.saturating_duration_since(std::time::Instant::now()));
    let expired = me(&server, &session.cookie);
    assert_eq!(expired.status, 401);
    assert!(expired.text().contains("expired"), "{}", expired.text());

    // Deleting a user ends their live session and their keys.
    let live = sign_in(&server, &[], "ann", "ann's password");
    let key = live.post(&server, "/api/v1/keys", json!({"name": "script"}));
    assert_eq!(key.status, 201, "{}", key.text());
    let secret = key.json()["secret"].as_str().unwrap().to_owned();
    assert_eq!(server.get("/api/v1/runs", &secret).status, 200);
    let deleted = server.call(
        "DELETE",
        &format!("/api/v1/users/{ann_id}"),
        &[("Authorization", &format!("Bearer {admin}"))],
        b"",
    );
    assert_eq!(deleted.status, 204, "{}", deleted.text());
    assert_eq!(me(&server, &live.cookie).status, 401);
    assert_eq!(server.get("/api/v1/runs", &secret).status, 401);
}
on_both_backends!(sessions_are_fresh_and_end);

/// Passwords, session tokens and API keys are stored only as hashes, and never printed: after a
/// server's life of sign-ins, key use, failed attempts and a chat, none of them appears in any
/// file under the data folder (database included), on standard error or standard output.
#[test]
fn secrets_never_reach_the_disk_or_the_logs() {
    let site = Site::new("secrets", Backend::Sqlite);
    let log = site.data_dir.with_extension("stderr.log");
    let mut server = site.start_logged(&["--rate-limit", "0"], &log);
    let setup_token = server.setup_token.clone().expect("a setup token");
    let root_password = "root's secret password 7f3a";
    let setup = post_json(
        &server,
        "/api/v1/auth/setup",
        &[],
        &json!({"setup_token": setup_token, "username": "root", "password": root_password})
            .to_string(),
    );
    assert_eq!(setup.status, 200, "{}", setup.text());
    let root = sign_in(&server, &[], "root", root_password);
    let ann_password = "ann's secret password 91c2";
    let created = root.post(
        &server,
        "/api/v1/users",
        json!({"username": "ann", "password": ann_password, "role": "member"}),
    );
    assert_eq!(created.status, 201, "{}", created.text());
    let ann = sign_in(&server, &[], "ann", ann_password);
    let key = ann.post(&server, "/api/v1/keys", json!({"name": "script"}));
    assert_eq!(key.status, 201, "{}", key.text());
    let secret = key.json()["secret"].as_str().unwrap().to_owned();

    // Use, and failed attempts that a careless server would log with what they sent.
    assert_eq!(server.get("/api/v1/runs", &secret).status, 200);
    let near_miss = format!("{secret}0");
    let refused = server.get("/api/v1/runs", &near_miss);
    assert_eq!(refused.status, 401);
    assert!(!refused.text().contains(&secret));
    let wrong_password = post_json(
        &server,
        "/api/v1/auth/login",
        &[],
        &json!({"username": "ann", "password": format!("{ann_password}!")}).to_string(),
    );
    assert_eq!(wrong_password.status, 401);
    assert!(!wrong_password.text().contains(ann_password));
    assert_eq!(server.get("/api/v1/no/such/route", &secret).status, 404);
    let bad_json = post_json(
        &server,
        "/v1/chat/completions",
        &[("Authorization", &format!("Bearer {secret}"))],
        "{not json",
    );
    assert_eq!(bad_json.status, 400);
    let chat = server.post(
        "/v1/chat/completions",
        &secret,
        &json!({"model": "tiny", "messages": [{"role": "user", "content": "你好"}], "max_tokens": 4}),
    );
    assert_eq!(chat.status, 200, "{}", chat.text());
    let dataset = server.upload_fixture(&secret);
    assert!(dataset["id"].is_string());
    server.signal("TERM");
    let _ = server.child.wait();

    let secrets = [
        ("the first admin's password", root_password.to_owned()),
        ("a member's password", ann_password.to_owned()),
        ("the setup token", setup_token),
        ("a session token", root.token.clone()),
        ("another session token", ann.token.clone()),
        ("an API key", secret.clone()),
    ];
    let mut places = vec![(log.clone(), std::fs::read(&log).unwrap())];
    places.extend(
        files_under(&site.data_dir)
            .into_iter()
            .map(|path| (path.clone(), std::fs::read(&path).unwrap())),
    );
    // What must have been searched, by name: the log, the database and the uploaded blob. The
    // SQLite -wal and -shm files are searched when they exist, but need not: a clean shutdown
    // checkpoints them away.
    let sha256 = dataset["sha256"].as_str().unwrap();
    let searched: Vec<&std::path::PathBuf> = places.iter().map(|(path, _)| path).collect();
    for must in [
        log.clone(),
        site.data_dir.join("glmtune.db"),
        site.data_dir.join("blobs").join(&sha256[..2]).join(sha256),
    ] {
        assert!(
            searched.contains(&&must),
            "{} was not searched: {searched:?}",
            must.display()
        );
    }
    let printed = server.printed.lock().unwrap().join("\n");
    places.push(("standard output".into(), printed.into_bytes()));
    for (place, bytes) in &places {
        for (what, secret) in &secrets {
            // The setup token is printed once at start, by design, before the lines kept here.
            let found = bytes
                .windows(secret.len())
                .any(|window| window == secret.as_bytes());
            assert!(!found, "{what} is in {}", place.display());
        }
    }
    let _ = std::fs::remove_file(&log);
}

/// Names in paths, uploads and model folders cannot reach a file outside the folder they name.
#[test]
fn names_cannot_leave_their_folders() {
    let site = Site::new("traversal", Backend::Sqlite);
    let admin = site.token("admin");
    let server = site.start(&["--rate-limit", "0"]);

    // A model folder from a stranger, with a link to a file outside it.
    let outside = site.data_dir.join("outside-secret.txt");
    std::fs::write(&outside, "TOP SECRET").unwrap();
    let model = site.data_dir.join("linked-model");
    std::fs::create_dir_all(&model).unwrap();
    for file in ["config.json", "ice_text.model"] {
        std::fs::copy(
            std::path::Path::new(&fixture("model")).join(file),
            model.join(file),
        )
        .unwrap();
    }
    std::os::unix::fs::symlink(&outside, model.join("README.md")).unwrap();
    let registered = server.post(
        "/api/v1/models",
        &admin,
        &json!({"name": "linked", "path": model.to_string_lossy()}),
    );
    assert_eq!(registered.status, 201, "{}", registered.text());
    let listed = server.get("/api/v1/models/linked/files", &admin).json();
    let names: Vec<&str> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["config.json", "ice_text.model"]);
    assert_eq!(
        server
            .get("/api/v1/models/linked/files/config.json", &admin)
            .status,
        200
    );
    let escapes = [
        "/api/v1/models/linked/files/README.md",
        "/api/v1/models/linked/files/..",
        "/api/v1/models/linked/files/..%2Foutside-secret.txt",
        "/api/v1/models/linked/files/..%2F..%2F..%2F..%2F..%2Fetc%2Fpasswd",
        "/api/v1/models/linked/files/%2Fetc%2Fpasswd",
        "/api/v1/models/linked/files/..%5Coutside-secret.txt",
        "/api/v1/models/..%2Flinked/files/config.json",
        "/api/v1/runs/..%2F..%2Foutside-secret.txt/adapter/config.json",
        "/api/v1/runs/..%2F..%2Foutside-secret.txt/logs",
        "/api/v1/datasets/..%2F..%2Foutside-secret.txt/content",
        "/pkg/..%2F..%2F..%2Fetc%2Fpasswd",
        "/..%2F..%2F..%2Fetc%2Fpasswd",
        "/../../../etc/passwd",
    ];
    for path in escapes {
        let response = server.get(path, &admin);
        let text = response.text();
        assert!(
            !text.contains("TOP SECRET") && !text.contains("root:x:"),
            "{path} leaked a file"
        );
        assert!(
            response.status == 404 || response.status == 400,
            "{path}: {} {text}",
            response.status
        );
    }

    // A dataset's name is a label: an upload named like a path writes nothing there.
    let escape = std::env::temp_dir().join(format!("glmtune-escape-{}.jsonl", std::process::id()));
    let name = format!("../../../../../..{}", escape.display());
    let bytes = std::fs::read(fixture("train.jsonl")).unwrap();
    let uploaded = server.upload(&format!("name={name}"), &admin, &bytes);
    assert_eq!(uploaded.status, 201, "{}", uploaded.text());
    assert!(!escape.exists());
    let stored: Vec<_> = files_under(&site.data_dir.join("blobs"));
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert!(stored[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .chars()
        .all(|c| c.is_ascii_hexdigit()));
}

/// The route table decides who may call what from the request's path; other spellings of an
/// admin's route (doubled slashes, dot segments, case, escapes, a trailing slash) must not reach
/// its handler without credentials, nor with a viewer's.
#[test]
fn other_spellings_of_a_route_do_not_bypass_auth() {
    let site = Site::new("spellings", Backend::Sqlite);
    let admin = site.token("admin");
    let viewer = site.token("viewer");
    let server = site.start(&["--rate-limit", "0"]);
    make_user(&server, &admin, "listed-user", "a long password", "member");
    let listed = server.get("/api/v1/users", &admin);
    assert!(listed.text().contains("listed-user"));
    let spellings = [
        "/api/v1/users",
        "//api/v1/users",
        "/api//v1/users",
        "/api/v1//users",
        "/api/v1/users/",
        "/API/v1/users",
        "/api/V1/users",
        "/api/v1/./users",
        "/api/v1/x/../users",
        "/healthz/../api/v1/users",
        "/%61pi/v1/users",
        "/api%2Fv1%2Fusers",
        "/api/v1/users%00",
        "/api/v1/users?/healthz",
        "/api/v1/users;/healthz",
        "/./api/v1/users",
    ];
    for path in spellings {
        for (who, headers) in [
            ("nobody", vec![]),
            (
                "a viewer",
                vec![("Authorization", format!("Bearer {viewer}"))],
            ),
            (
                "a method override",
                vec![("X-HTTP-Method-Override", "GET".to_owned())],
            ),
        ] {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            for method in ["GET", "HEAD", "POST"] {
                let response = server.call(method, path, &headers, b"");
                assert!(
                    !response.text().contains("listed-user"),
                    "{method} {path} as {who} reached the users' list"
                );
                // Paths outside the API fall back to the dashboard's page, which is public.
                let page = response
                    .header("content-type")
                    .is_some_and(|t| t.starts_with("text/html"));
                assert!(
                    response.status >= 400 || page,
                    "{method} {path} as {who}: {}",
                    response.status
                );
            }
        }
    }
}

/// Password guessing meets a limit per client address (`--sign-in-rate-limit`), which holds for
/// the right password too once reached, while keys keep working.
#[test]
fn sign_in_attempts_are_limited() {
    let site = Site::new("guessing", Backend::Sqlite);
    let admin = site.token("admin");
    let server = site.start(&["--sign-in-rate-limit", "3"]);
    make_user(&server, &admin, "ann", "ann's password", "member");
    let attempt = |password: &str| {
        post_json(
            &server,
            "/api/v1/auth/login",
            &[],
            &json!({"username": "ann", "password": password}).to_string(),
        )
    };
    for guess in ["123456", "password", "ann"] {
        assert_eq!(attempt(guess).status, 401, "{guess}");
    }
    let limited = attempt("ann's password");
    assert_eq!(limited.status, 429, "{}", limited.text());
    assert!(limited.header("retry-after").is_some());
    let setup = post_json(
        &server,
        "/api/v1/auth/setup",
        &[],
        &json!({"setup_token": "setup-guess", "username": "x", "password": "long enough"})
            .to_string(),
    );
    assert_eq!(setup.status, 429, "{}", setup.text());
    assert_eq!(server.get("/api/v1/runs", &admin).status, 200);
}
