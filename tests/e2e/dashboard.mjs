// The dashboard as a user walks it, in headless Chromium: first-run setup, models, a bad and a good
// upload (checked in the browser first, then sent with progress), a run watched live and reloaded mid-run, a streamed chat, base vs tuned side by side.
// Run by server/tests/platform/dashboard.rs with BASE_URL, SETUP_TOKEN, BAD_FILE, GOOD_FILE,
// BIG_FILE and SCREENSHOTS set; prints one JSON line of what it saw.
import { chromium } from "playwright-core";

const base = process.env.BASE_URL;
const shots = process.env.SCREENSHOTS;
const seen = {};
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--enable-unsafe-webgpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"],
});
const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
page.setDefaultTimeout(60_000);
const errors = [];
page.on("pageerror", (e) => errors.push(String(e)));
const shot = (name) => page.screenshot({ path: `${shots}/${name}.png`, fullPage: true });

try {
  // First-run setup with the token the server printed.
  await page.goto(base);
  await page.getByRole("heading", { name: "Create the first admin" }).waitFor();
  await shot("1-setup");
  await page.locator("input[name=setup_token]").fill(process.env.SETUP_TOKEN);
  await page.locator("input[name=password]").fill("a long password");
  await page.getByRole("button", { name: "Create admin" }).click();
  await page.getByRole("heading", { name: "Datasets", exact: true }).waitFor();
  seen.signed_in = await page.locator(".user").innerText();

  // An API key from the user menu; its secret is shown once.
  await page.getByRole("link", { name: "API keys" }).click();
  await page.locator("input[name=key_name]").fill("e2e script");
  await page.getByRole("button", { name: "Create key" }).click();
  seen.key_secret = await page.locator(".secret pre").innerText();
  await page.locator("table tbody tr", { hasText: "e2e script" }).waitFor();
  seen.key_rows = await page.locator("table tbody tr").count();
  await shot("2-keys");

  await page.goto(`${base}/#/models`);
  await page.locator("td", { hasText: "tiny" }).first().waitFor();
  seen.demo_badge = await page.locator(".badge").first().innerText();
  await shot("2-models-list");

  // A file is checked and measured in the browser before anything is uploaded.
  await page.goto(`${base}/#/datasets`);
  await page.locator("select").first().selectOption("tiny");
  // By keyboard alone: Tab from the top of the page reaches the file picker.
  await page.locator(".brand").focus();
  seen.tabs_to_file_picker = null;
  for (let tabs = 1; tabs <= 20; tabs++) {
    await page.keyboard.press("Tab");
    if (await page.evaluate(() => document.activeElement && document.activeElement.type === "file")) {
      seen.tabs_to_file_picker = tabs;
      break;
    }
  }
  await page.locator("input[type=file]").setInputFiles(process.env.BAD_FILE);
  await page.locator(".error table.issues").waitFor();
  seen.bad_rows = await page.locator(".error table.issues tbody tr").allInnerTexts();
  seen.upload_enabled_when_bad = await page.locator("button[name=upload]").isEnabled();
  await shot("3-bad-file");
  await page.locator("input[type=file]").setInputFiles(process.env.GOOD_FILE);
  await page.locator(".local-check figure.histogram").first().waitFor();
  seen.local_truncation = await page.locator(".local-check .truncation").innerText();
  seen.stored_before_upload = await page.locator("table.datasets tbody tr").count();
  await page.locator("input[type=number]").first().fill("128");
  await page.locator(".local-check .truncation", { hasText: "128" }).waitFor();
  seen.local_truncation_128 = await page.locator(".local-check .truncation").innerText();
  await page.locator("input[type=number]").first().fill("64");
  await shot("4-checked-in-browser");
  await page.locator("button[name=upload]").click();
  await page.locator(".detail figure.histogram").first().waitFor();
  seen.histograms = await page.locator(".detail figure.histogram figcaption").allInnerTexts();
  seen.truncation = await page.locator(".detail .truncation").innerText();
  seen.preview_rows = await page.locator("table.preview tbody tr").count();
  await shot("4-dataset");

  // A new version of it: new prompts by rule, previewed, then saved and shown beside the prompts
  // they came from.
  await page.locator("button[name=augment_preview]").click();
  await page.locator("table.augment-preview tbody tr").first().waitFor();
  seen.preview_examples = await page.locator("table.augment-preview tbody tr").count();
  await page.locator("form.augment button[type=submit]").click();
  await page.locator(".detail h2", { hasText: "(augmented)" }).waitFor();
  await page.locator("table.version-diff tbody tr").first().waitFor();
  seen.augmented_rows = await page.locator("table.version-diff tbody tr").count();
  seen.version_of = await page.locator("table.datasets tbody tr", { hasText: "(augmented)" }).first().innerText();
  await shot("4-dataset-augmented");

  // This server registered as a teacher of itself, then asked for its answers to the dataset.
  await page.goto(`${base}/#/teachers`);
  await page.locator("input[name=teacher_name]").fill("this server");
  await page.locator("input[name=teacher_base_url]").fill(`${base}/v1`);
  await page.locator("input[name=teacher_model]").fill("tiny");
  await page.locator("input[name=teacher_key]").fill(seen.key_secret);
  await page.locator("input[name=teacher_concurrency]").fill("2");
  await page.getByRole("button", { name: "Register" }).click();
  await page.locator("table.teachers tbody tr", { hasText: "this server" }).waitFor();
  seen.teacher_row = await page.locator("table.teachers tbody tr").first().innerText();
  await shot("4-teachers");
  await page.goto(`${base}/#/datasets`);
  await page.locator("table.datasets button.link", { hasText: /^train\.jsonl$/ }).click();
  await page.locator("select[name=teach_teacher] option", { hasText: "this server" }).waitFor({ state: "attached" });
  const teacherValue = await page.locator("select[name=teach_teacher] option", { hasText: "this server" }).getAttribute("value");
  await page.locator("select[name=teach_teacher]").selectOption(teacherValue);
  await page.locator("input[name=teach_max_tokens]").fill("4");
  // First a preview of reworded prompts: the task's own question shown, the first 5 records
  // asked, what they made listed, nothing stored.
  await page.locator("select[name=teach_task]").selectOption("paraphrase");
  seen.paraphrase_template = await page.locator("textarea[name=teach_template]").inputValue();
  await page.locator("button[name=teach_preview]").click();
  await page.locator("form.teach table.version-diff tbody tr").first().waitFor({ timeout: 120_000 });
  seen.teach_preview_rows = await page.locator("form.teach table.version-diff tbody tr").count();
  seen.teach_preview_heading = await page.locator("form.teach h3", { hasText: "New records" }).innerText();
  await page.locator("select[name=teach_task]").selectOption("answer");
  await page.locator("form.teach button[type=submit]").click();
  await page.locator(".detail h2", { hasText: "(taught: answer)" }).waitFor({ timeout: 120_000 });
  seen.taught_version = await page.locator("table.datasets tbody tr", { hasText: "(taught: answer)" }).first().innerText();
  // Listed under its parent, indented; its new answers beside the parent's.
  seen.taught_row_class = await page.locator("table.datasets tbody tr", { hasText: "(taught: answer)" }).first().getAttribute("class");
  await page.locator("table.version-diff tbody tr").first().waitFor();
  seen.taught_diff_rows = await page.locator("table.version-diff tbody tr").count();
  seen.taught_diff_changed = await page.locator("table.version-diff tbody tr td:nth-child(3) .answer.changed").count();
  await shot("4-dataset-taught");

  // Questions about a Markdown document picked in the form, with a template of our own.
  await page.locator("table.datasets button.link", { hasText: /^train\.jsonl$/ }).click();
  await page.locator("select[name=teach_teacher] option", { hasText: "this server" }).waitFor({ state: "attached" });
  await page.locator("select[name=teach_teacher]").selectOption(teacherValue);
  await page.locator("select[name=teach_task]").selectOption("questions");
  await page.locator("input[name=teach_documents]").setInputFiles({
    name: "guide.md", mimeType: "text/markdown",
    buffer: Buffer.from("高血压患者应当少盐饮食，规律服药，定期测量血压。\n\n骨折之后需要固定伤处并尽快就医。\n"),
  });
  await page.locator("form.teach p.muted", { hasText: "1 documents read" }).waitFor();
  await page.locator("textarea[name=teach_template]").fill("就下面的资料提一个问题：{prompt}");
  await page.locator("input[name=teach_max_tokens]").fill("4");
  await page.locator("form.teach button[type=submit]").click();
  await page.locator(".detail h2", { hasText: "(taught: questions)" }).waitFor({ timeout: 120_000 });
  seen.questions_status = await page.locator(".detail p.derivation").innerText();
  // The new version's own form starts afresh: its task select agrees with its template.
  seen.task_after_made = await page.locator("select[name=teach_task]").inputValue();
  seen.template_after_made = await page.locator("textarea[name=teach_template]").inputValue();
  seen.questions_version = await page.locator("table.datasets tbody tr", { hasText: "(taught: questions)" }).first().innerText();
  await shot("4-dataset-questions");

  // A larger upload over a slow link shows its progress.
  const cdp = await page.context().newCDPSession(page);
  await cdp.send("Network.enable");
  await cdp.send("Network.emulateNetworkConditions", { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: 512 * 1024 });
  await page.locator("input[type=file]").setInputFiles(process.env.BIG_FILE);
  await page.locator(".local-check figure.histogram").first().waitFor();
  await page.locator("button[name=upload]").click();
  seen.progress_seen = await page.waitForFunction(() => {
    const bar = document.querySelector("progress");
    return bar && bar.value > 0 && bar.value < 100 ? bar.value : null;
  }, null, { polling: 50 }).then((v) => v.jsonValue());
  await shot("4-upload-progress");
  await page.locator(".detail h2", { hasText: "big.jsonl" }).waitFor();
  await cdp.send("Network.emulateNetworkConditions", { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: -1 });

  // A run, live; a reload mid-run shows the whole curve again.
  await page.goto(`${base}/#/runs`);
  await page.locator("select[name=model]").selectOption("tiny");
  const trainOption = await page.locator("select[name=train] option", { hasText: /^train\.jsonl \(\d+ records\)$/ }).first().getAttribute("value");
  await page.locator("select[name=train]").selectOption(trainOption);
  // A domain template suggests a system prompt and its lengths; the quick try keeps the test short.
  await page.locator("select[name=preset]").selectOption("medical");
  await page.waitForFunction(() => document.querySelector("textarea[name=source_prefix]").value.includes("医生"));
  seen.medical_system = await page.locator("textarea[name=source_prefix]").inputValue();
  seen.medical_target_placeholder = await page.locator("input[name=max_target_length]").getAttribute("placeholder");
  await page.locator("select[name=preset]").selectOption("quick");
  await page.locator("textarea[name=source_prefix]").fill("你是医生。");
  await page.locator("summary").click();
  await page.locator("input[name=max_steps]").fill("300");
  await page.locator("input[name=logging_steps]").fill("1");
  await page.locator("input[name=pre_seq_len]").fill("4");
  await page.getByRole("button", { name: "Start run" }).click();
  await page.waitForURL(/\/runs\/ftjob-/);
  const points = async () => Number((await page.locator("figure[data-title=Loss] .points").textContent()).split(" ")[0]);
  await page.waitForFunction(() => {
    const t = document.querySelector("figure[data-title=Loss] .points");
    return t && Number(t.textContent.split(" ")[0]) >= 20;
  });
  const before = await points();
  await shot("5-run-live");
  await page.reload();
  await page.waitForFunction((n) => {
    const t = document.querySelector("figure[data-title=Loss] .points");
    return t && Number(t.textContent.split(" ")[0]) >= n;
  }, before);
  seen.points_before_reload = before;
  seen.points_after_reload = await points();
  await page.locator(".state.succeeded").first().waitFor({ timeout: 120_000 });
  seen.final_points = await points();
  seen.run_url = page.url();
  await shot("6-run-done");

  // A second run with another learning rate, then both compared.
  const firstRun = seen.run_url.split("/").pop();
  await page.goto(`${base}/#/runs`);
  await page.locator("select[name=model]").selectOption("tiny");
  await page.locator("select[name=train]").selectOption(trainOption);
  await page.locator("summary").click();
  await page.locator("input[name=max_steps]").fill("30");
  await page.locator("input[name=logging_steps]").fill("1");
  await page.locator("input[name=pre_seq_len]").fill("4");
  await page.locator("input[name=learning_rate]").fill("0.01");
  // Evaluated on the training set every 10 steps, with the forgetting guard.
  await page.locator("select[name=validation]").selectOption(trainOption);
  await page.locator("input[name=eval_steps]").fill("10");
  await page.locator("input[name=forgetting_guard]").check();
  await page.getByRole("button", { name: "Start run" }).click();
  await page.waitForURL((url) => /\/runs\/ftjob-/.test(url.href) && !url.href.endsWith(firstRun));
  await page.locator(".state.succeeded").first().waitFor({ timeout: 120_000 });
  const forgetting = page.locator("figure[data-title='Forgetting: KL from the base on general prompts'] .points");
  await forgetting.waitFor();
  seen.forgetting_points = await forgetting.innerText();
  await shot("6-run-forgetting");
  await page.goto(`${base}/#/runs`);
  await page.locator("input[name=compare_run]").nth(1).waitFor();
  for (const box of await page.locator("input[name=compare_run]").all()) await box.check();
  await page.getByRole("button", { name: "Compare selected runs" }).click();
  await page.locator("table.metrics tbody tr").nth(1).waitFor();
  seen.compared_rows = await page.locator("table.metrics tbody tr").count();
  seen.compare_points = await page.locator("figure[data-title='Training loss'] .points").innerText();
  seen.compare_legend = await page.locator("figure[data-title='Training loss'] .legend li").count();
  seen.settings_differ = await page.locator("table.config-diff tbody th").allInnerTexts();
  await shot("6-compare-runs");

  // A sweep from its form: 4 trials (2 learning rates × 2 prefix lengths), two at a time, halved
  // at step 4; its leaderboard, a scatter plot a swept setting, and the best promoted for chats.
  await page.goto(`${base}/#/sweeps`);
  await page.locator("select[name=model]").selectOption("tiny");
  await page.locator("select[name=train]").selectOption(trainOption);
  await page.locator("select[name=validation]").selectOption(trainOption);
  await page.locator("summary").click();
  await page.locator("input[name=max_steps]").fill("8");
  await page.locator("input[name=eval_steps]").fill("2");
  await page.locator("input[name=eval_samples]").fill("0");
  await page.locator("input[name=space_learning_rate]").fill("0.02, 0.5");
  await page.locator("input[name=space_pre_seq_len]").fill("4, 8");
  await page.locator("input[name=rungs]").fill("4");
  await page.locator("input[name=parallelism]").fill("2");
  await page.getByRole("button", { name: "Start sweep" }).click();
  await page.waitForURL((url) => /\/sweeps\/sweep-/.test(url.href));
  await page.locator("main p > .state.succeeded").waitFor({ timeout: 120_000 });
  seen.sweep_rows = await page.locator("table.leaderboard tbody tr").count();
  seen.sweep_stopped = await page.locator("table.leaderboard tbody tr", { hasText: "stopped at step 4" }).count();
  seen.sweep_plots = await page.locator("figure.scatter").evaluateAll((figures) =>
    figures.map((f) => `${f.dataset.title}: ${f.querySelector(".points").textContent}`));
  await page.getByRole("button", { name: "Promote the best" }).click();
  await page.locator("main p", { hasText: "answers with" }).waitFor();
  seen.sweep_promoted_row = await page.locator("table.leaderboard tbody tr.promoted td").first().innerText();
  await shot("7-sweep");

  // A run distilled from the first one onto a 4-bit copy of the base.
  await page.goto(`${base}/#/runs`);
  await page.locator("select[name=model]").selectOption("tiny");
  await page.locator("select[name=train]").selectOption(trainOption);
  await page.locator(`select[name=teacher_run] option[value='${firstRun}']`).waitFor({ state: "attached" });
  await page.locator("select[name=teacher_run]").selectOption(firstRun);
  await page.locator("summary").click();
  await page.locator("input[name=max_steps]").fill("4");
  await page.locator("input[name=pre_seq_len]").fill("4");
  await page.locator("select[name=quantization_bit]").selectOption("4");
  await page.getByRole("button", { name: "Start run" }).click();
  await page.waitForURL((url) => /\/runs\/ftjob-/.test(url.href) && !url.href.endsWith(firstRun));
  await page.locator(".state.succeeded").first().waitFor({ timeout: 120_000 });
  await page.getByText("distilling from").first().waitFor();
  seen.distilled_note = await page.getByText("distilling from").first().innerText();

  // Where each run trained, and the training workers.
  await page.goto(`${base}/#/runs`);
  await page.locator("td.trained-on", { hasText: "this server" }).first().waitFor();
  seen.trained_on = await page.locator("td.trained-on").first().innerText();
  await page.goto(`${base}/#/workers`);
  await page.locator("table.workers tbody tr").first().waitFor();
  seen.worker_row = await page.locator("table.workers tbody tr").first().innerText();
  // (the last cell, "N s ago", changes; the rest is fixed)
  seen.worker_row = seen.worker_row.replace(/[^\t]*$/, "");
  await shot("7-workers");

  // A chat with the tuned model, streamed.
  await page.goto(`${base}/#/chats`);
  const tuned = await page.locator("select[name=target] option", { hasText: firstRun }).first().getAttribute("value");
  await page.locator("select[name=target]").selectOption(tuned);
  seen.chat_system = await page.locator("textarea[name=system]").inputValue();
  await page.getByRole("button", { name: "New chat" }).click();
  seen.conversation_system = await page.locator(".conversation .system").innerText();
  await page.locator("textarea[name=question]").fill("你好");
  await page.locator("input[name=max_tokens]").fill("8");
  await page.getByRole("button", { name: "Send" }).click();
  await page.locator(".message.assistant:not(.streaming)").first().waitFor();
  seen.chat_answer = await page.locator(".message.assistant").first().innerText();
  await shot("7-chat");

  // The same question to the base model and the adapter.
  await page.locator("input[name=compare]").fill("你好");
  await page.getByRole("button", { name: "Compare" }).click();
  await page.waitForFunction(() => {
    const answers = [...document.querySelectorAll(".compare .answer")];
    return answers.length >= 2 && answers.every((a) => a.textContent.length > 0);
  });
  seen.compare = await page.locator(".compare h3").allInnerTexts();
  await shot("8-compare");

  // A quantized model answering in the browser (in a worker), then again from the browser's cache
  // after a reload; a download cut short resumes with the missing piece only; and with a run's
  // adapter.
  const askLocally = async (adapter = "", model = "tiny-q4") => {
    await page.locator(`select[name=local_model] option[value=${model}]`).waitFor({ state: "attached" });
    await page.locator("select[name=local_model]").selectOption(model);
    await page.locator("select[name=local_adapter] option").nth(1).waitFor({ state: "attached" });
    await page.locator("select[name=local_adapter]").selectOption(adapter);
    await page.getByRole("button", { name: "Download and load" }).click();
    await page.locator(".local-chat[data-history=loaded]").waitFor({ timeout: 120_000 });
    // Earlier turns with this model and adapter come back from the browser's IndexedDB.
    const kept = await page.locator(".local-chat .message.user").count();
    // Cleared, so every answer here has the same prompt as the server's below. (With the turns
    // kept, the GPU's f32 activations and the CPU's 8-bit ones can tip a near tie of the random
    // model late in an answer.)
    if (kept > 0) {
      await page.locator("button[name=local_clear]").click();
      await page.locator(".local-chat .message.user").first().waitFor({ state: "detached" });
    }
    await page.locator("textarea[name=local_question]").fill("你好");
    await page.locator("input[name=local_max_tokens]").fill("8");
    await page.locator(".local-chat button[type=submit]").click();
    const answers = page.locator(".local-chat .message.assistant:not(.streaming)");
    await answers.first().waitFor({ timeout: 120_000 });
    return {
      backend: await page.locator(".local-chat").getAttribute("data-backend"),
      source: await page.locator(".local-chat").getAttribute("data-source"),
      status: await page.locator(".status").first().innerText(),
      kept,
      answer: await answers.first().innerText(),
    };
  };
  await page.goto(`${base}/#/local`);
  seen.local_first = await askLocally();
  await shot("8-in-browser");
  await page.reload();
  seen.local_after_reload = await askLocally();
  seen.local_pieces = await page.evaluate(async () => {
    const cache = await caches.open("glmtune-models");
    const pieces = (await cache.keys()).map((r) => r.url).filter((u) => u.includes("model.gguf?version="));
    const last = pieces.sort((a, b) => Number(a.split("piece=")[1]) - Number(b.split("piece=")[1])).pop();
    await cache.delete(last);
    return pieces.length + 1;
  });
  await page.reload();
  seen.local_resumed = await askLocally();
  await page.reload();
  seen.local_adapter_run = await page.locator("select[name=local_adapter] option").nth(1).getAttribute("value");
  seen.local_with_adapter = await askLocally(seen.local_adapter_run);
  await shot("8-in-browser-adapter");
  // A quantized ChatGLM3 checkpoint in the browser: its tokenizer.model, chat format and stop ids.
  await page.reload();
  seen.local_glm3 = await askLocally("", "glm3-q4");

  // A phone's width: nothing wider than the screen; and the dark theme.
  await page.setViewportSize({ width: 390, height: 844 });
  seen.phone_overflow = [];
  for (const [name, hash] of [["datasets", "#/datasets"], ["runs", "#/runs"], ["sweeps", "#/sweeps"], ["teachers", "#/teachers"], ["run", new URL(seen.run_url).pathname.slice(1)], ["chats", "#/chats"]]) {
    await page.goto(`${base}/${hash}`);
    await page.locator("main h1").first().waitFor();
    await page.waitForTimeout(300);
    const wide = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    if (wide > 0) seen.phone_overflow.push(`${name}: ${wide}px too wide`);
    await shot(`9-phone-${name}`);
  }
  await page.emulateMedia({ colorScheme: "dark" });
  await page.goto(seen.run_url);
  await page.locator(".state.succeeded").first().waitFor();
  await shot("9-phone-run-dark");

  // What the server answers for the same model (and adapter), then the server stopped: the app,
  // the model and the adapter come from this browser alone and give the same answer.
  await page.setViewportSize({ width: 1280, height: 900 });
  await page.emulateMedia({ colorScheme: "light" });
  const call = async (path, body) => {
    const response = await fetch(`${base}${path}`, {
      method: "POST",
      headers: { Authorization: `Bearer ${seen.key_secret}`, "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    return { status: response.status, body: await response.json() };
  };
  const served = async (model) => {
    const question = { model, messages: [{ role: "user", content: "你好" }], max_tokens: 8, temperature: 0 };
    return (await call("/v1/chat/completions", question)).body.choices[0].message.content;
  };
  seen.served_base = await served("tiny-q4");
  seen.served_glm3 = await served("glm3-q4");
  const registered = await call("/api/v1/models", {
    name: "tiny-q4-tuned",
    path: process.env.QUANTIZED_DIR,
    adapter: `${process.env.RUNS_DIR}/${seen.local_adapter_run}`,
  });
  seen.registered_tuned = registered.status;
  seen.served_tuned = await served("tiny-q4-tuned");
  // A browser without WebGPU: the same model answers on the CPU (candle in wasm, simd128).
  const plain = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-blink-features=WebGPU", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"],
  });
  try {
    const cpuPage = await plain.newPage({ viewport: { width: 1280, height: 900 } });
    cpuPage.setDefaultTimeout(120_000);
    cpuPage.on("pageerror", (e) => errors.push(`without WebGPU: ${e}`));
    await cpuPage.goto(`${base}/#/local`);
    await cpuPage.locator("input[name=username]").fill("admin");
    await cpuPage.locator("input[name=password]").fill("a long password");
    await cpuPage.getByRole("button", { name: "Sign in" }).click();
    await cpuPage.locator("select[name=local_model] option[value=tiny-q4]").waitFor({ state: "attached" });
    await cpuPage.locator("select[name=local_model]").selectOption("tiny-q4");
    await cpuPage.getByRole("button", { name: "Download and load" }).click();
    await cpuPage.locator(".local-chat[data-history=loaded]").waitFor();
    await cpuPage.locator("textarea[name=local_question]").fill("你好");
    await cpuPage.locator("input[name=local_max_tokens]").fill("8");
    await cpuPage.locator(".local-chat button[type=submit]").click();
    await cpuPage.locator(".local-chat .message.assistant:not(.streaming)").first().waitFor();
    seen.local_cpu = {
      backend: await cpuPage.locator(".local-chat").getAttribute("data-backend"),
      answer: await cpuPage.locator(".local-chat .message.assistant").first().innerText(),
    };
    await cpuPage.screenshot({ path: `${shots}/8-in-browser-cpu.png`, fullPage: true });
  } finally {
    await plain.close();
  }
  process.kill(Number(process.env.SERVER_PID));
  for (let i = 0; i < 100; i++) {
    try { await fetch(`${base}/api/v1/auth/status`); await new Promise((r) => setTimeout(r, 100)); } catch { break; }
  }
  await page.goto(`${base}/#/local`);
  seen.local_offline = await askLocally(seen.local_adapter_run);
  await shot("10-offline");
} catch (error) {
  await shot("failure").catch(() => {});
  seen.failure = String(error);
} finally {
  seen.page_errors = errors;
  await browser.close();
}
console.log(JSON.stringify(seen));
