// The console in a real browser: Debian's Chromium, headless, driven by
// playwright-core, against a real Evo server this test builds and starts
// (embedded SQLite, the dev issuer, the builtin agent).
//
//   make e2e                       (or: npm ci --prefix e2e && node --test e2e/)
//
// Without /usr/bin/chromium or playwright-core the test is skipped and says
// why; in CI (CI set) it fails instead. CHROMIUM_PATH picks another browser,
// EVO_BIN a prebuilt server, E2E_SCREENSHOT where the screenshot goes
// (default e2e/out/console.png, untracked; make e2e SCREENSHOT=docs/console.png
// updates the README's).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const SCREENSHOT = resolve(ROOT, process.env.E2E_SCREENSHOT || 'e2e/out/console.png');
const CHROMIUM_FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];
const WAIT = { timeout: 15_000 };

let playwright = null;
try {
  playwright = await import('playwright-core');
} catch {
  // reported below
}
const missing = !existsSync(CHROMIUM)
  ? `Chromium not found at ${CHROMIUM} (apt-get install chromium, or set CHROMIUM_PATH)`
  : !playwright
    ? 'playwright-core is not installed (npm ci --prefix e2e)'
    : '';
const skip = missing && !process.env.CI ? `${missing}; in CI this fails` : false;

function freePort() {
  return new Promise((ok, fail) => {
    const srv = net.createServer();
    srv.on('error', fail);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => ok(port));
    });
  });
}

const sleep = (ms) => new Promise((ok) => setTimeout(ok, ms));

async function until(cond, what, ms = WAIT.timeout) {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

// Server is one Evo process on a fixed port and data directory, so that it
// can be stopped and started again as the same server.
class Server {
  constructor(bin, dir, port) {
    this.bin = bin;
    this.dir = dir;
    this.port = port;
    this.url = `http://127.0.0.1:${port}`;
    this.log = [];
    this.proc = null;
  }

  env() {
    const env = { ...process.env };
    for (const k of Object.keys(env)) {
      if (/^(DATABASE_URL|REDIS_URL|BETTER_AUTH_URL|PUBLIC_URL|ENVIRONMENT|HOST|PORT|DATA_DIR|CORS_ORIGINS|LLM_|OPENAI_|OLLAMA_)/.test(k)) delete env[k];
    }
    return {
      ...env,
      ENVIRONMENT: 'development',
      HOST: '127.0.0.1',
      PORT: String(this.port),
      DATA_DIR: join(this.dir, 'data'),
      // The page's own origin: the WebSocket origin check reads CORS_ORIGINS.
      CORS_ORIGINS: this.url,
      LLM_PROVIDER: 'builtin',
    };
  }

  async start() {
    // The data directory's parent as the working directory: no .env is read.
    const proc = spawn(this.bin, ['serve'], { cwd: this.dir, env: this.env(), stdio: ['ignore', 'pipe', 'pipe'] });
    this.proc = proc;
    for (const s of [proc.stdout, proc.stderr]) {
      s.setEncoding('utf8');
      s.on('data', (d) => this.log.push(...d.split('\n').filter(Boolean)));
    }
    const exited = new Promise((ok) => proc.once('exit', (code) => ok(code)));
    this.exited = exited;
    const deadline = Date.now() + 20_000;
    while (Date.now() < deadline) {
      const code = await Promise.race([exited, sleep(100).then(() => undefined)]);
      if (code !== undefined) throw new Error(`server exited with ${code}:\n${this.tail()}`);
      try {
        const res = await fetch(`${this.url}/health`);
        if (res.ok) return;
      } catch {
        // not up yet
      }
    }
    throw new Error(`server not healthy within 20s:\n${this.tail()}`);
  }

  async stop() {
    if (!this.proc || this.proc.exitCode !== null) return;
    this.proc.kill('SIGTERM');
    const code = await Promise.race([this.exited, sleep(15_000).then(() => 'timeout')]);
    if (code === 'timeout') {
      this.proc.kill('SIGKILL');
      throw new Error('server did not stop within 15s');
    }
  }

  tail() {
    return this.log.slice(-40).join('\n');
  }
}

test('console: sign in, live todos in two tabs, chat, reconnect, history', { skip, timeout: 240_000 }, async (t) => {
  if (missing) assert.fail(`${missing} (CI is set, so this is a failure)`);
  const { chromium } = playwright;

  const dir = mkdtempSync(join(tmpdir(), 'evo-e2e-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  let bin = process.env.EVO_BIN;
  if (!bin) {
    bin = join(dir, 'evo');
    execFileSync('go', ['build', '-o', bin, '.'], { cwd: ROOT, stdio: 'inherit' });
  }
  const server = new Server(bin, dir, await freePort());
  await server.start();
  t.after(() => server.stop());

  const browser = await chromium.launchPersistentContext(join(dir, 'chromium-profile'), {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_FLAGS,
    viewport: { width: 1280, height: 800 },
    locale: 'en-US',
    timezoneId: 'UTC',
  });
  t.after(() => browser.close());

  // Every console error and uncaught exception fails the test, except the
  // refused WebSocket connections while the server is deliberately down.
  const problems = [];
  let serverDown = false;
  const watch = (page, name) => {
    page.on('console', (m) => {
      if (m.type() !== 'error') return;
      if (serverDown && /WebSocket connection to .* failed|ERR_CONNECTION_REFUSED/.test(m.text())) return;
      problems.push(`${name}: console error: ${m.text()}`);
    });
    page.on('pageerror', (e) => problems.push(`${name}: uncaught: ${e.message}`));
  };
  // The chat frames tab 1 receives, to see that the answer is streamed.
  const frames = [];
  const tab1 = browser.pages()[0] ?? (await browser.newPage());
  watch(tab1, 'tab 1');
  tab1.on('websocket', (ws) =>
    ws.on('framereceived', ({ payload }) => {
      try {
        frames.push(JSON.parse(payload));
      } catch {
        // not JSON: not ours
      }
    }),
  );
  const live = (page) => page.locator('#conn[data-state="live"]').waitFor(WAIT);
  const todo = (page, title) => page.locator('.todo').filter({ has: page.getByText(title, { exact: true }) });

  await t.test('signs in with the dev form, by keyboard', async () => {
    await tab1.goto(server.url);
    await tab1.getByRole('heading', { name: 'Sign in' }).waitFor(WAIT);
    // Before sign-in the header is neutral, not a red "Offline" (which reads as "server down").
    await tab1.locator('#conn[data-state="signedout"]').waitFor(WAIT);
    assert.equal(await tab1.locator('#conn-text').textContent(), 'Signed out');
    await tab1.getByLabel('Email').fill('not-an-email');
    await tab1.getByLabel('Email').press('Enter');
    await tab1.getByText('Enter an email address like ada@example.com.').waitFor(WAIT);
    assert.equal(await tab1.getByLabel('Email').getAttribute('aria-invalid'), 'true');
    await tab1.getByLabel('Email').fill('ada@example.com');
    await tab1.getByLabel(/^Name/).fill('Ada Lovelace');
    await tab1.getByLabel(/^Name/).press('Enter');
    await live(tab1);
    await tab1.getByText('Ada Lovelace <ada@example.com>').waitFor(WAIT);
  });

  const tab2 = await browser.newPage();
  watch(tab2, 'tab 2');
  const title = 'Water the plants'; // a fresh DATA_DIR: no earlier todo has it

  await t.test('a todo added in tab 1 appears in tab 2', async () => {
    await tab2.goto(server.url); // signed in: the session is in localStorage
    await live(tab2);
    await tab1.getByLabel('New todo').fill(title);
    await tab1.getByLabel('New todo').press('Enter');
    await todo(tab1, title).waitFor(WAIT);
    await todo(tab2, title).waitFor(WAIT);
  });

  await t.test('an edit in tab 2 appears in tab 1', async () => {
    await todo(tab2, title).getByRole('button', { name: `Edit “${title}”` }).click();
    await todo(tab2, title).getByLabel('Description').fill('the ferns too');
    await todo(tab2, title).getByLabel('Description').press('Enter');
    await todo(tab1, title).getByText('the ferns too').waitFor(WAIT);
  });

  await t.test('completing it by chat streams the answer and checks it in both tabs', async () => {
    await tab1.evaluate(() => {
      // Record every text the answer shows while it streams.
      window.__answers = [];
      new MutationObserver(() => {
        const a = document.querySelector('#chat-log .msg:last-child .msg-agent');
        if (a && a.textContent && window.__answers.at(-1) !== a.textContent) window.__answers.push(a.textContent);
      }).observe(document.getElementById('chat-log'), { subtree: true, childList: true, characterData: true });
    });
    const message = `done with ${title}`;
    await tab1.getByLabel('Message').fill(message);
    await tab1.getByLabel('Message').press('Enter');
    const entry = tab1.locator('#chat-log .msg').filter({ hasText: message });
    await entry.locator('.tool', { hasText: 'complete_task' }).waitFor(WAIT);
    await entry.locator('.msg-agent[aria-busy="false"]').waitFor(WAIT);
    assert.notEqual(await entry.getAttribute('data-status'), 'error', await entry.innerText());

    const id = frames.find((f) => f.type === 'chat.started' && f.message === message)?.id;
    assert.ok(id, 'a chat.started frame for the message');
    const deltas = frames.filter((f) => f.type === 'chat.token' && f.id === id).map((f) => f.delta);
    assert.ok(deltas.length >= 2, `the answer came in ${deltas.length} chat.token frames`);
    const done = frames.find((f) => f.type === 'chat.done' && f.id === id);
    assert.ok(done, 'a chat.done frame');
    const answer = (await entry.locator('.msg-agent').textContent()).trim();
    assert.ok(answer.length > 0, 'an answer');
    assert.equal(answer, (done.message?.response ?? deltas.join('')).trim());
    const partial = await tab1.evaluate(() => window.__answers);
    assert.ok(partial.length >= 2, `the page showed the answer growing (${partial.length} states)`);

    for (const page of [tab1, tab2]) {
      await todo(page, title).locator('.todo-done:checked').waitFor(WAIT);
    }
    await tab2.locator('#chat-log .msg', { hasText: message }).locator('.msg-agent[aria-busy="false"]').waitFor(WAIT);
  });

  await t.test('a token refreshed in tab 2 is sent on tab 1\'s socket (auth frame)', async () => {
    const acks = () => frames.filter((f) => f.type === 'auth.ok').length;
    const before = acks();
    await sleep(1100); // exp has whole seconds: the new token must outlive the old
    // What tab 2 does a minute before its token expires, done now.
    await tab2.evaluate(async () => {
      const s = JSON.parse(localStorage.getItem('evo.console.session'));
      const res = await fetch('/api/dev/token', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ email: s.email, name: s.name }),
      });
      const { token, expires_at: exp } = await res.json();
      localStorage.setItem('evo.console.session', JSON.stringify({ ...s, token, exp: Date.parse(exp) }));
    });
    await until(() => acks() > before, 'an auth.ok frame on tab 1');
  });

  await t.test('reconnects and resumes after the server restarts', async () => {
    serverDown = true;
    await server.stop();
    await tab1.locator('#conn[data-state="reconnecting"]').waitFor(WAIT);
    await server.start();
    // A change while tab 2 may still be away: it arrives live or on resume.
    const token = await tab1.evaluate(() => JSON.parse(localStorage.getItem('evo.console.session')).token);
    const res = await fetch(`${server.url}/api/todos`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ title: 'Buy oat milk', description: 'two cartons' }),
    });
    assert.equal(res.status, 201);
    await live(tab1);
    await live(tab2);
    serverDown = false;
    await todo(tab1, 'Buy oat milk').waitFor(WAIT);
    await todo(tab2, 'Buy oat milk').waitFor(WAIT);
  });

  await t.test('a reload shows the chat history', async () => {
    await tab1.reload();
    await live(tab1);
    const entry = tab1.locator('#chat-log .msg').filter({ hasText: `done with ${title}` });
    await entry.waitFor(WAIT);
    assert.ok((await entry.locator('.msg-agent').textContent()).trim().length > 0, 'the stored answer');
    await entry.locator('.tool', { hasText: 'complete_task' }).waitFor(WAIT);
    await todo(tab1, title).locator('.todo-done:checked').waitFor(WAIT);
  });

  await t.test('one column on a narrow screen', async () => {
    await tab2.setViewportSize({ width: 390, height: 844 });
    const todos = await tab2.locator('section.todos').boundingBox();
    const chatBox = await tab2.locator('section.chat').boundingBox();
    assert.ok(chatBox.y >= todos.y + todos.height - 1, 'the chat is below the todos');
    assert.ok(todos.width > 300, `the todos use the width (${todos.width}px)`);
    const overflow = await tab2.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `no horizontal scrolling (${overflow}px too wide)`);
  });

  await t.test('screenshot', async () => {
    mkdirSync(dirname(SCREENSHOT), { recursive: true });
    await tab1.getByLabel('New todo').fill('Call the plumber');
    await tab1.getByLabel('New todo').press('Enter');
    await todo(tab1, 'Call the plumber').waitFor(WAIT);
    await tab1.getByLabel('Message').fill('what is left?');
    await tab1.getByLabel('Message').press('Enter');
    await tab1.locator('#chat-log .msg', { hasText: 'what is left?' }).locator('.msg-agent[aria-busy="false"]').waitFor(WAIT);
    await tab1.evaluate(() => document.activeElement?.blur());
    await tab1.setViewportSize({ width: 1200, height: 660 });
    await sleep(1300); // let the highlight of changed todos fade
    await tab1.screenshot({ path: SCREENSHOT });
    const size = statSync(SCREENSHOT).size;
    assert.ok(size < 300_000, `screenshot is ${size} bytes`);
  });

  assert.deepEqual(problems, [], 'no console errors');
});
