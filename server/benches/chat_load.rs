//! Load benchmark: bursts of 1, 8 and 50 concurrent streamed chat completions against
//! `glmtune serve` on the tiny model, over real HTTP on 127.0.0.1. Reports first-token and
//! per-token (the gap between two streamed tokens) percentiles at each, and puts the server's
//! overhead beside the model's own time, measured in this process on the same prompt first (the
//! baseline). Run with `cargo bench -p glmtune --bench chat_load`.
//!
//! On the CPU a model's concurrent generations are decoded together (continuous batching); the
//! burst's wall time is set against 50 answers of the model alone, one after another, in this
//! process (no HTTP, no client threads sharing the cores).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use candle_core::{DType, Device};
use glmtune_engine::generation::{build_prompt, generate, GenerationOptions, Sampling};
use glmtune_engine::model::ChatGlmModel;
use glmtune_engine::tokenizer::ChatGlmTokenizer;

/// Concurrent clients of each burst; the last one is set against the model alone.
const BURSTS: [usize; 3] = [1, 8, 50];
const MAX_TOKENS: usize = 32;
const QUERY: &str = "高血压患者平时应该注意什么？";

fn fixture_model() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/chatglm6b-tiny/model")
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The model alone: greedy generation of the chat prompt, as the server runs it.
fn model_seconds(runs: usize) -> f64 {
    let dir = fixture_model();
    let model = ChatGlmModel::load(&dir, DType::F32, &Device::Cpu).expect("the tiny model");
    let tokenizer = ChatGlmTokenizer::from_dir(&dir).expect("its tokenizer");
    let prompt = tokenizer.encode(&build_prompt(QUERY, &[]));
    let options = GenerationOptions {
        max_new_tokens: Some(MAX_TOKENS),
        max_length: Some(2048),
        sampling: Sampling::Greedy,
        repetition_penalty: 1.0,
        stop_at_eos: true,
        stop_ids: Vec::new(),
    };
    let mut times = Vec::new();
    for _ in 0..runs {
        let started = Instant::now();
        // The server decodes the text so far at each token to stream it; so does the baseline.
        let mut ids = Vec::new();
        generate(
            &model,
            None,
            std::slice::from_ref(&prompt),
            &options,
            |_, id| {
                ids.push(id);
                let _ = tokenizer.decode(&ids);
                ControlFlow::Continue(())
            },
        )
        .expect("generation");
        times.push(started.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    percentile(&times, 50.0)
}

struct Timing {
    first_token: f64,
    total: f64,
    chunks: usize,
    /// Seconds between two streamed tokens.
    gaps: Vec<f64>,
}

fn streamed_chat(address: &str) -> Timing {
    let body = serde_json::json!({
        "model": "tiny",
        "messages": [{"role": "user", "content": QUERY}],
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
        "stream": true,
    })
    .to_string();
    let started = Instant::now();
    let mut stream = TcpStream::connect(address).expect("connect");
    write!(
        stream,
        "POST /v1/chat/completions HTTP/1.0\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut reader = BufReader::new(stream);
    let mut first_token = None;
    let mut chunks = 0;
    let mut gaps = Vec::new();
    let mut last = None;
    let mut line = String::new();
    while reader.read_line(&mut line).unwrap_or(0) > 0 {
        if line.starts_with("data: ") && line.contains("\"content\"") {
            chunks += 1;
            let now = started.elapsed().as_secs_f64();
            first_token.get_or_insert(now);
            if let Some(last) = last.replace(now) {
                gaps.push(now - last);
            }
        }
        line.clear();
    }
    let mut rest = Vec::new();
    let _ = reader.read_to_end(&mut rest);
    Timing {
        first_token: first_token.unwrap_or(f64::NAN),
        total: started.elapsed().as_secs_f64(),
        chunks,
        gaps,
    }
}

/// `clients` streamed chats at once; their timings and the burst's wall time.
fn burst(address: &str, clients: usize) -> (Vec<Timing>, f64) {
    let started = Instant::now();
    let handles: Vec<_> = (0..clients)
        .map(|_| {
            let address = address.to_owned();
            std::thread::spawn(move || streamed_chat(&address))
        })
        .collect();
    let timings = handles
        .into_iter()
        .map(|h| h.join().expect("a client"))
        .collect();
    (timings, started.elapsed().as_secs_f64())
}

fn sorted(mut values: Vec<f64>) -> Vec<f64> {
    values.sort_by(f64::total_cmp);
    values
}

/// The server's own count of seconds spent generating, from `/metrics`.
fn server_generation_seconds(address: &str) -> f64 {
    let mut stream = TcpStream::connect(address).expect("connect");
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: {address}\r\n\r\n").expect("send");
    let mut text = String::new();
    stream.read_to_string(&mut text).expect("metrics");
    text.lines()
        .find_map(|l| l.strip_prefix("glmtune_generation_seconds_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("glmtune_generation_seconds_total in /metrics")
}

fn main() {
    let baseline = model_seconds(20);
    let data_dir = std::env::temp_dir().join(format!("glmtune-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data_dir);
    let model = format!("tiny={}", fixture_model().display());
    let mut server = Command::new(env!("CARGO_BIN_EXE_glmtune"))
        .args([
            "serve",
            "--no-auth",
            "--bind",
            "127.0.0.1:0",
            "--rate-limit",
            "0",
            "--model",
            &model,
        ])
        .arg("--data-dir")
        .arg(&data_dir)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the server");
    let mut line = String::new();
    BufReader::new(server.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("the listening line");
    let address = line
        .trim()
        .rsplit("http://")
        .next()
        .unwrap_or_default()
        .to_owned();

    // Warm-up (loads the model), then one request at a time: the per-request overhead.
    streamed_chat(&address);
    let mut alone: Vec<f64> = (0..10).map(|_| streamed_chat(&address).total).collect();
    alone.sort_by(f64::total_cmp);

    let ms = |s: f64| s * 1000.0;
    println!("chat_load: tiny model, {MAX_TOKENS} new tokens greedy, streamed");
    println!(
        "  model alone (in process, p50):      {:8.2} ms per answer",
        ms(baseline)
    );
    println!(
        "  one request at a time (p50):        {:8.2} ms  -> server overhead {:+.2} ms ({:.1}% of the model's time)",
        ms(percentile(&alone, 50.0)),
        ms(percentile(&alone, 50.0) - baseline),
        100.0 * (percentile(&alone, 50.0) - baseline) / baseline
    );
    let mut last = None;
    for clients in BURSTS {
        let generation_before = server_generation_seconds(&address);
        let (timings, wall) = burst(&address, clients);
        let server_model = server_generation_seconds(&address) - generation_before;
        let complete = timings.iter().filter(|t| t.chunks > 0).count();
        let totals = sorted(timings.iter().map(|t| t.total).collect());
        let firsts = sorted(timings.iter().map(|t| t.first_token).collect());
        let gaps = sorted(timings.iter().flat_map(|t| t.gaps.clone()).collect());
        println!(
            "  {clients:2} concurrent clients: {complete}/{clients} answered, wall {wall:.2} s, {:.1} answers/s",
            clients as f64 / wall
        );
        println!(
            "    latency     p50 {:8.1} ms  p99 {:8.1} ms  max {:8.1} ms",
            ms(percentile(&totals, 50.0)),
            ms(percentile(&totals, 99.0)),
            ms(percentile(&totals, 100.0))
        );
        println!(
            "    first token p50 {:8.1} ms  p99 {:8.1} ms",
            ms(percentile(&firsts, 50.0)),
            ms(percentile(&firsts, 99.0))
        );
        if !gaps.is_empty() {
            println!(
                "    per token   p50 {:8.2} ms  p99 {:8.2} ms",
                ms(percentile(&gaps, 50.0)),
                ms(percentile(&gaps, 99.0))
            );
        }
        last = Some((clients, wall, server_model));
    }
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&data_dir);
    if let Some((clients, wall, server_model)) = last {
        println!(
            "  {clients} clients: generation time summed over the requests {:.3} s (they overlap: decoded together) in {:.3} s wall; \
the model alone one answer after another x {clients} = {:.3} s: {:.2}x that",
            server_model,
            wall,
            baseline * clients as f64,
            baseline * clients as f64 / wall
        );
    }
}
