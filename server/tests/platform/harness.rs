//! A server site for tests: a data folder and a database (SQLite in the folder, or a fresh
//! database on the PostgreSQL cluster that `GLMTUNE_TEST_POSTGRES` names; `./test.sh` starts
//! one), servers started on it over real HTTP on 127.0.0.1, and a small HTTP/1.0 client.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub fn fixture(path: &str) -> String {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/chatglm6b-tiny");
    dir.join(path).to_string_lossy().into_owned()
}

/// A data folder and database that outlive the servers started on them.
pub struct Site {
    pub data_dir: PathBuf,
    pub database_url: Option<String>,
}

fn postgres_database(name: &str) -> String {
    let base = std::env::var("GLMTUNE_TEST_POSTGRES").unwrap_or_else(|_| {
        panic!("GLMTUNE_TEST_POSTGRES is not set: run the tests with ./test.sh, which starts a PostgreSQL cluster (tests/postgres-cluster.sh)")
    });
    let database = format!("glmtune_{name}_{}", std::process::id());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        use sqlx::Connection;
        let mut connection = sqlx::PgConnection::connect(&base).await.unwrap();
        sqlx::query(&format!("DROP DATABASE IF EXISTS {database}"))
            .execute(&mut connection)
            .await
            .unwrap();
        sqlx::query(&format!("CREATE DATABASE {database}"))
            .execute(&mut connection)
            .await
            .unwrap();
    });
    let (server, _) = base.rsplit_once('/').unwrap();
    format!("{server}/{database}")
}

impl Site {
    pub fn new(name: &str, backend: Backend) -> Site {
        let tag = match backend {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "pg",
        };
        let data_dir = std::env::temp_dir().join(format!(
            "glmtune-platform-{}-{name}-{tag}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&data_dir);
        std::fs::create_dir_all(&data_dir).unwrap();
        let database_url = (backend == Backend::Postgres).then(|| postgres_database(name));
        Site {
            data_dir,
            database_url,
        }
    }

    fn site_args(&self) -> Vec<String> {
        let mut args = vec![
            "--data-dir".into(),
            self.data_dir.to_string_lossy().into_owned(),
        ];
        if let Some(url) = &self.database_url {
            args.extend(["--database-url".into(), url.clone()]);
        }
        args
    }

    /// `glmtune token create` on this site.
    pub fn token(&self, role: &str) -> String {
        let output: Output = Command::new(env!("CARGO_BIN_EXE_glmtune"))
            .args([
                "token",
                "create",
                "--name",
                &format!("{role} key"),
                "--role",
                role,
            ])
            .args(self.site_args())
            .env_remove("GLMTUNE_DATABASE_URL")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap().trim().to_owned()
    }

    /// A server with the tiny model registered as `tiny`.
    pub fn start(&self, extra: &[&str]) -> Server {
        self.start_with(
            env!("CARGO_BIN_EXE_glmtune").as_ref(),
            extra,
            Stdio::inherit(),
        )
    }

    /// A server as [`Site::start`], its standard error written to `log`.
    pub fn start_logged(&self, extra: &[&str], log: &std::path::Path) -> Server {
        let stderr = std::fs::File::create(log).unwrap().into();
        self.start_with(env!("CARGO_BIN_EXE_glmtune").as_ref(), extra, stderr)
    }

    /// A server as [`Site::start`], run from another copy of the binary.
    pub fn start_binary(&self, binary: &std::path::Path, extra: &[&str]) -> Server {
        self.start_with(binary, extra, Stdio::inherit())
    }

    fn start_with(&self, binary: &std::path::Path, extra: &[&str], stderr: Stdio) -> Server {
        let model = format!("tiny={}", fixture("model"));
        // Tests poll for minutes on end (sweeps, teaching jobs): at the default 600 requests a
        // minute a slow run's polling met 429s and read them as answers. The limit has its own
        // test (auth_matrix), which sets it.
        let unlimited: &[&str] = if extra.contains(&"--rate-limit") {
            &[]
        } else {
            &["--rate-limit", "0"]
        };
        let mut child = Command::new(binary)
            .args(["serve", "--bind", "127.0.0.1:0", "--model", &model])
            .args(self.site_args())
            .args(unlimited)
            .args(extra)
            .env_remove("GLMTUNE_ADMIN_PASSWORD")
            .env_remove("GLMTUNE_DATABASE_URL")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let reader = BufReader::new(child.stdout.take().unwrap());
        let (lines, receive) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in reader.lines() {
                let Ok(line) = line else { break };
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        let line = receive
            .recv_timeout(Duration::from_secs(60))
            .expect("the server did not start");
        assert!(
            line.contains("listening on"),
            "the server did not start: {line:?}"
        );
        let address = line.trim().rsplit("http://").next().unwrap().to_owned();
        // With no users yet, the one-time setup token follows at once.
        let setup_token = receive
            .recv_timeout(Duration::from_millis(300))
            .ok()
            .and_then(|l| {
                l.split_whitespace()
                    .find(|w| w.starts_with("setup-"))
                    .map(str::to_owned)
            });
        let printed = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let keep = printed.clone();
        std::thread::spawn(move || {
            while let Ok(line) = receive.recv() {
                keep.lock().unwrap().push(line);
            }
        });
        Server {
            child,
            address,
            setup_token,
            printed,
        }
    }
}

/// Every file below `dir`, in every folder.
pub fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// Runs a client script that prints one JSON line of what it saw; fails with its output if it
/// fails.
pub fn json_report(command: &mut Command) -> serde_json::Value {
    let output = command.output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

impl Drop for Site {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// `(id, event, data)` of a Server-Sent Events body.
    pub fn events(&self) -> Vec<(Option<i64>, String, String)> {
        self.text()
            .split("\n\n")
            .filter(|block| block.contains("data:"))
            .map(|block| {
                let mut id = None;
                let mut event = "message".to_owned();
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = v.trim().parse().ok();
                    } else if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                (id, event, data)
            })
            .collect()
    }
}

pub struct Server {
    pub child: Child,
    pub address: String,
    pub setup_token: Option<String>,
    /// What the server printed on standard output after its first lines.
    pub printed: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Server {
    /// One HTTP/1.0 request (the server closes the connection after the body).
    pub fn call(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        let mut stream = TcpStream::connect(&self.address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(300)))
            .unwrap();
        let mut head = format!(
            "{method} {path} HTTP/1.0\r\nHost: {}\r\nContent-Length: {}\r\n",
            self.address,
            body.len()
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        // One write: a server that answers without reading the body (a 401) and closes would
        // otherwise reset the connection when a body sent apart arrives after it closed, and the
        // answer already sent would be lost (seen under load, one run in two).
        let mut request = head.into_bytes();
        request.extend_from_slice(body);
        stream.write_all(&request).unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).unwrap();
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a response head");
        let head = String::from_utf8_lossy(&raw[..split]).into_owned();
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap();
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect();
        Response {
            status,
            headers,
            body: raw[split + 4..].to_vec(),
        }
    }

    pub fn get(&self, path: &str, key: &str) -> Response {
        let auth = format!("Bearer {key}");
        self.call("GET", path, &[("Authorization", &auth)], b"")
    }

    pub fn post(&self, path: &str, key: &str, json: &serde_json::Value) -> Response {
        let auth = format!("Bearer {key}");
        self.call(
            "POST",
            path,
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            json.to_string().as_bytes(),
        )
    }

    pub fn upload(&self, query: &str, key: &str, bytes: &[u8]) -> Response {
        let auth = format!("Bearer {key}");
        self.call(
            "POST",
            &format!("/api/v1/datasets?{query}"),
            &[("Authorization", &auth)],
            bytes,
        )
    }

    /// Uploads the fixture's `train.jsonl` and returns the dataset.
    pub fn upload_fixture(&self, key: &str) -> serde_json::Value {
        let bytes = std::fs::read(fixture("train.jsonl")).unwrap();
        let uploaded = self.upload("name=train.jsonl", key, &bytes);
        assert_eq!(uploaded.status, 201, "{}", uploaded.text());
        uploaded.json()
    }

    /// Queues a run of the `quick` preset on the tiny model; returns its id.
    pub fn start_run(
        &self,
        key: &str,
        dataset: &serde_json::Value,
        settings: serde_json::Value,
    ) -> String {
        let run = self.post(
            "/api/v1/runs",
            key,
            &serde_json::json!({"model": "tiny", "train_dataset": dataset["id"], "preset": "quick", "settings": settings}),
        );
        assert_eq!(run.status, 201, "{}", run.text());
        run.json()["id"].as_str().unwrap().to_owned()
    }

    /// The steps of a run's checkpoints, oldest first.
    pub fn checkpoint_steps(&self, id: &str, key: &str) -> Vec<i64> {
        self.get(&format!("/api/v1/runs/{id}/checkpoints"), key)
            .json()["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["step"].as_i64().unwrap())
            .collect()
    }

    /// Polls a run until it reaches a final state, and returns it.
    pub fn wait_for_run(&self, id: &str, key: &str) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let run = self.get(&format!("/api/v1/runs/{id}"), key).json();
            if ["succeeded", "failed", "cancelled"].contains(&run["state"].as_str().unwrap()) {
                return run;
            }
            assert!(Instant::now() < deadline, "run {id} did not finish: {run}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn signal(&mut self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Declares a test once per database backend.
#[macro_export]
macro_rules! on_both_backends {
    ($name:ident) => {
        mod $name {
            #[test]
            fn sqlite() {
                super::$name($crate::harness::Backend::Sqlite);
            }

            #[test]
            fn postgres() {
                super::$name($crate::harness::Backend::Postgres);
            }
        }
    };
}
