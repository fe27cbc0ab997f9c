// Evo console: sign in, keep the todo list live over /ws, chat with the agent.
// Plain modern JavaScript, no build step; the server embeds this file as is.
//
// The list is the REST API's, kept current by the socket's todo events,
// applied in seq order. A socket says where it stopped (?since=) when it
// reconnects, so nothing is missed; a resync means the events were pruned:
// the list is fetched again.

const DEV = document.querySelector('meta[name="evo-sign-in"]')?.content === 'dev';
const SESSION_KEY = 'evo.console.session';
const REFRESH_EARLY_MS = 60_000; // fetch a fresh dev token this long before expiry
const MAX_BACKOFF_MS = 30_000;
const CHAT_PAGE = 20;

const $ = (id) => document.getElementById(id);
const el = {
  conn: $('conn'), connText: $('conn-text'), reconnect: $('reconnect'),
  who: $('who'), whoName: $('who-name'), signOut: $('sign-out'),
  banner: $('banner'), signIn: $('sign-in'), devForm: $('dev-form'), tokenForm: $('token-form'),
  devEmail: $('dev-email'), devName: $('dev-name'), tokenInput: $('token-input'),
  console: $('console'), addForm: $('add-form'), addTitle: $('add-title'), addDesc: $('add-description'),
  addError: $('add-error'), todoList: $('todo-list'), todoEmpty: $('todo-empty'), todoCount: $('todo-count'),
  chatLog: $('chat-log'), chatEmpty: $('chat-empty'), chatMore: $('chat-more'), chatForm: $('chat-form'),
  chatInput: $('chat-input'), chatSend: $('chat-send'), chatStop: $('chat-stop'), chatError: $('chat-error'),
};

const state = {
  session: null, // {token, userId, name, email, exp (ms), dev}
  todos: new Map(), // id -> todo
  items: new Map(), // id -> <li>
  seq: null, // the last event applied; null until the first hello
  buffers: new Set(), // per list load: the events that arrived meanwhile
  listGen: 0, // the latest list load
  ws: null,
  conn: 'signedout',
  attempt: 0, // reconnects since the last live socket
  failedOpens: 0, // sockets closed before their hello, in a row
  reconnectTimer: 0,
  refreshTimer: 0,
  refreshing: null, // the token refresh in flight
};

// A chat has the id its frames carry (chosen by the tab that sent it) and,
// once stored, the stored exchange's id: entries are found by either.
const chat = {
  entries: new Map(), // id -> {li, user, tools, agent, meta}
  running: new Set(), // frame ids of runs in progress
  oldest: null, // created_at of the oldest stored exchange shown ("Load earlier")
};

// ---------- small helpers ----------

class ApiError extends Error {
  constructor(status, body) {
    super(body?.detail || `request failed (${status})`);
    this.status = status;
    this.code = body?.code;
    this.field = body?.field;
  }
}

function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === false || v == null) continue;
    if (k === 'class') node.className = v;
    else if (k === 'text') node.textContent = v;
    else node.setAttribute(k, v === true ? '' : v);
  }
  node.append(...children.filter((c) => c != null));
  return node;
}

// guard runs an event handler and shows what it throws: no unhandled
// rejections reach the browser console.
// fn runs synchronously up to its first await, so that it can still call
// preventDefault.
function guard(fn) {
  const report = (err) => showBanner(err instanceof ApiError ? err.message : `Something went wrong: ${err.message}`);
  return (...args) => {
    try {
      Promise.resolve(fn(...args)).catch(report);
    } catch (err) {
      report(err);
    }
  };
}

function showBanner(text) {
  el.banner.textContent = text;
  el.banner.hidden = !text;
}

function fieldError(input, box, text) {
  box.textContent = text || '';
  box.hidden = !text;
  if (input) {
    if (text) input.setAttribute('aria-invalid', 'true');
    else input.removeAttribute('aria-invalid');
  }
}

function decodeClaims(token) {
  const part = token.split('.')[1];
  if (!part) throw new Error('not a JWT');
  const bin = atob(part.replace(/-/g, '+').replace(/_/g, '/'));
  return JSON.parse(new TextDecoder().decode(Uint8Array.from(bin, (c) => c.charCodeAt(0))));
}

function sessionFor(token, extra = {}) {
  const c = decodeClaims(token);
  if (!c.sub) throw new Error('the token has no subject (sub)');
  return {
    token,
    userId: c.sub,
    name: extra.name || c.name || c.email || c.sub,
    email: extra.email || c.email || '',
    exp: c.exp ? c.exp * 1000 : Infinity,
    dev: Boolean(extra.dev),
  };
}

function loadSession() {
  try {
    const s = JSON.parse(localStorage.getItem(SESSION_KEY));
    return s && s.token ? s : null;
  } catch {
    return null;
  }
}

function saveSession(s) {
  localStorage.setItem(SESSION_KEY, JSON.stringify(s));
}

// newID returns a random id; crypto.randomUUID needs a secure context,
// which a console on http://host:8000 is not.
function newID() {
  const b = crypto.getRandomValues(new Uint8Array(16));
  return `c-${Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('')}`;
}

function timeOf(iso) {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? '' : d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}

// ---------- REST ----------

async function api(method, path, body, retried = false) {
  const headers = { Authorization: `Bearer ${state.session.token}` };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (res.status === 401 && state.session?.dev && !retried) {
    await refreshToken();
    return api(method, path, body, true);
  }
  if (res.status === 401) {
    expireSession('Your token is no longer accepted. Paste a fresh one.');
  }
  if (res.status === 204) return null;
  const data = await res.json().catch(() => null);
  if (!res.ok) throw new ApiError(res.status, data);
  return data;
}

async function devToken(email, name) {
  const res = await fetch('/api/dev/token', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ email, name }),
  });
  const data = await res.json().catch(() => null);
  if (!res.ok) throw new ApiError(res.status, data);
  return sessionFor(data.token, { email: data.user?.email || email, name: data.user?.name || name, dev: true });
}

// ---------- session ----------

function refreshToken() {
  if (!state.refreshing) {
    const s = state.session;
    state.refreshing = devToken(s.email, s.name)
      .then((next) => {
        if (state.session?.userId !== next.userId) return;
        adoptToken(next);
      })
      .finally(() => {
        state.refreshing = null;
      });
  }
  return state.refreshing;
}

// adoptToken swaps in a fresh token of the same user: stored for the other
// tabs, and sent to the open socket.
function adoptToken(next) {
  state.session = next;
  saveSession(next);
  scheduleRefresh();
  sendFrame({ type: 'auth', token: next.token });
  if (next.exp > Date.now()) showBanner('');
}

function scheduleRefresh() {
  clearTimeout(state.refreshTimer);
  const s = state.session;
  if (!s || s.exp === Infinity) return;
  const wait = Math.min(Math.max(s.exp - Date.now() - REFRESH_EARLY_MS, 1000), 2 ** 31 - 1);
  state.refreshTimer = setTimeout(
    guard(async () => {
      if (state.session?.dev) return refreshToken();
      const at = new Date(state.session.exp).toLocaleTimeString();
      showBanner(`Your token expires at ${at}. Paste a fresh one below to stay signed in.`);
      showSignIn(true);
    }),
    wait,
  );
}

function expireSession(message) {
  closeSocket();
  setConn('offline', 'Offline: token expired');
  showBanner(message);
  showSignIn(true);
}

async function signIn(session) {
  state.session = session;
  saveSession(session);
  await start();
}

function signOut() {
  closeSocket();
  clearTimeout(state.refreshTimer);
  localStorage.removeItem(SESSION_KEY);
  state.session = null;
  state.todos.clear();
  state.seq = null;
  state.attempt = state.failedOpens = 0;
  chat.entries.clear();
  chat.running.clear();
  chat.oldest = null;
  el.todoList.replaceChildren();
  el.chatLog.replaceChildren();
  state.items.clear();
  el.who.hidden = true;
  el.console.hidden = true;
  setConn('signedout');
  showBanner('');
  showSignIn(false);
}

function showSignIn(keepConsole) {
  el.signIn.hidden = false;
  el.devForm.hidden = !DEV || keepConsole;
  for (const n of el.signIn.querySelectorAll('.dev-only')) n.hidden = !DEV;
  if (!keepConsole) {
    el.console.hidden = true;
    (DEV ? el.devEmail : el.tokenInput).focus();
  }
}

async function start() {
  const s = state.session;
  el.signIn.hidden = true;
  el.console.hidden = false;
  el.who.hidden = false;
  el.whoName.textContent = s.email && s.email !== s.name ? `${s.name} <${s.email}>` : s.name;
  showBanner('');
  scheduleRefresh();
  if (s.exp - Date.now() < 5000) {
    if (!s.dev) return expireSession('Your token has expired. Paste a fresh one.');
    await refreshToken();
  }
  connect();
  await Promise.all([loadTodos(), loadChat()]);
}

// ---------- todos ----------

// loadTodos reads the list. Events that arrive meanwhile may be newer than
// what was read, so they are kept and applied again on top: harmless, as
// each sets or removes a whole todo. Only the latest of overlapping loads
// is used.
async function loadTodos() {
  const gen = ++state.listGen;
  const buffer = [];
  state.buffers.add(buffer);
  try {
    const data = await api('GET', '/api/todos?limit=1000');
    if (gen !== state.listGen || !state.session) return;
    state.todos = new Map(data.todos.map((t) => [t.id, t]));
    for (const ev of buffer) applyEvent(ev);
    renderTodos();
  } finally {
    state.buffers.delete(buffer);
  }
}

function applyEvent(ev) {
  if (ev.type === 'todo.deleted') state.todos.delete(ev.todo.id);
  else state.todos.set(ev.todo.id, ev.todo);
}

function onTodoEvent(ev) {
  if (state.seq != null && ev.seq <= state.seq) return; // already applied
  const gap = state.seq != null && ev.seq > state.seq + 1;
  state.seq = ev.seq;
  for (const buffer of state.buffers) buffer.push(ev);
  applyEvent(ev);
  renderTodos(ev.todo.id);
  if (gap) guard(loadTodos)(); // the server promises none; repair anyway
}

// setTodo shows a todo a REST call returned, unless an event already
// brought a later version.
function setTodo(t) {
  const had = state.todos.get(t.id);
  if (!had || Date.parse(had.updated_at) <= Date.parse(t.updated_at)) state.todos.set(t.id, t);
  renderTodos();
}

// sortedTodos is the list as the API orders it: newest first.
function sortedTodos() {
  return [...state.todos.values()].sort(
    (a, b) => Date.parse(b.created_at) - Date.parse(a.created_at) || (a.id < b.id ? 1 : -1),
  );
}

function renderTodos(changedId) {
  const todos = sortedTodos();
  const keep = new Set(todos.map((t) => t.id));
  for (const [id, li] of state.items) {
    if (!keep.has(id)) {
      li.remove();
      state.items.delete(id);
    }
  }
  let prev = null;
  for (const t of todos) {
    let li = state.items.get(t.id);
    if (!li) {
      li = todoItem(t.id);
      state.items.set(t.id, li);
    }
    fillTodo(li, t);
    const want = prev ? prev.nextSibling : el.todoList.firstChild;
    if (want !== li) el.todoList.insertBefore(li, want);
    if (t.id === changedId) {
      li.classList.remove('flash');
      void li.offsetWidth; // restart the animation
      li.classList.add('flash');
    }
    prev = li;
  }
  const done = todos.filter((t) => t.is_complete).length;
  el.todoEmpty.hidden = todos.length > 0;
  el.todoCount.textContent = todos.length ? `${todos.length - done} open, ${done} done` : '';
}

function todoItem(id) {
  const li = document.getElementById('todo-item').content.firstElementChild.cloneNode(true);
  li.dataset.id = id;
  const box = li.querySelector('.todo-done');
  box.id = `todo-${id}`;
  li.querySelector('.todo-title').htmlFor = box.id;
  const form = li.querySelector('.todo-form');
  const ftitle = li.querySelector('.todo-form-title');
  const fdesc = li.querySelector('.todo-form-desc');
  ftitle.id = `todo-${id}-title`;
  fdesc.id = `todo-${id}-desc`;
  li.querySelector('.todo-form-title-label').htmlFor = ftitle.id;
  li.querySelector('.todo-form-desc-label').htmlFor = fdesc.id;
  const ferr = form.querySelector('.field-error');
  ferr.id = `todo-${id}-error`;
  ftitle.setAttribute('aria-describedby', ferr.id);

  box.addEventListener('change', guard(async () => {
    box.disabled = true;
    try {
      setTodo(await api('PATCH', `/api/todos/${id}`, { is_complete: box.checked }));
    } catch (err) {
      box.checked = !box.checked;
      throw err;
    } finally {
      box.disabled = false;
    }
  }));
  li.querySelector('.todo-edit').addEventListener('click', () => editTodo(li, true));
  li.querySelector('.todo-cancel').addEventListener('click', () => editTodo(li, false));
  form.addEventListener('keydown', (e) => {
    if (e.key === 'Escape') editTodo(li, false);
  });
  form.addEventListener('submit', guard(async (e) => {
    e.preventDefault();
    const title = ftitle.value.trim();
    if (!title) return fieldError(ftitle, ferr, 'A title is required.');
    try {
      const t = await api('PUT', `/api/todos/${id}`, { title, description: fdesc.value.trim() });
      editTodo(li, false);
      setTodo(t);
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
      fieldError(err.field === 'description' ? fdesc : ftitle, ferr, err.message);
    }
  }));
  li.querySelector('.todo-delete').addEventListener('click', guard(async () => {
    const next = li.nextElementSibling || li.previousElementSibling;
    await api('DELETE', `/api/todos/${id}`);
    state.todos.delete(id);
    renderTodos();
    (next?.querySelector('.todo-done') || el.addTitle).focus();
  }));
  return li;
}

function fillTodo(li, t) {
  li.classList.toggle('done', t.is_complete);
  const box = li.querySelector('.todo-done');
  if (!box.disabled) box.checked = t.is_complete;
  li.querySelector('.todo-title').textContent = t.title;
  li.querySelector('.todo-desc').textContent = t.description || '';
  li.querySelector('.todo-edit').setAttribute('aria-label', `Edit “${t.title}”`);
  li.querySelector('.todo-delete').setAttribute('aria-label', `Delete “${t.title}”`);
}

function editTodo(li, on) {
  const form = li.querySelector('.todo-form');
  li.querySelector('.todo-view').hidden = on;
  form.hidden = !on;
  if (on) {
    const t = state.todos.get(li.dataset.id);
    const title = li.querySelector('.todo-form-title');
    title.value = t.title;
    li.querySelector('.todo-form-desc').value = t.description || '';
    fieldError(title, form.querySelector('.field-error'), '');
    title.focus();
    title.select();
  } else {
    li.querySelector('.todo-edit').focus();
  }
}

el.addForm.addEventListener('submit', guard(async (e) => {
  e.preventDefault();
  const title = el.addTitle.value.trim();
  if (!title) return fieldError(el.addTitle, el.addError, 'A title is required.');
  fieldError(el.addTitle, el.addError, '');
  try {
    const t = await api('POST', '/api/todos', { title, description: el.addDesc.value.trim() });
    setTodo(t);
    el.addTitle.value = el.addDesc.value = '';
    el.addTitle.focus();
  } catch (err) {
    if (!(err instanceof ApiError)) throw err;
    fieldError(err.field === 'description' ? el.addDesc : el.addTitle, el.addError, err.message);
  }
}));

// ---------- WebSocket ----------

// signedout: no session yet (or signed out), neutral; offline: a session whose socket is down.
const CONN_TEXT = { signedout: 'Signed out', connecting: 'Connecting…', live: 'Live', reconnecting: 'Reconnecting…', offline: 'Offline' };

function setConn(conn, text) {
  state.conn = conn;
  el.conn.dataset.state = conn;
  el.connText.textContent = text || CONN_TEXT[conn];
  el.reconnect.hidden = !(conn === 'offline' && state.session);
  updateChatControls();
}

function sendFrame(frame) {
  if (state.ws?.readyState !== WebSocket.OPEN) return false;
  state.ws.send(JSON.stringify(frame));
  return true;
}

function closeSocket() {
  clearTimeout(state.reconnectTimer);
  const ws = state.ws;
  state.ws = null;
  if (ws) ws.close(1000, 'bye');
}

// Close codes that mean "reconnect" (README, WebSocket protocol): going
// away, abnormal closure, and 3000-3499.
function reconnectable(code) {
  return code === 1001 || code === 1006 || (code >= 3000 && code <= 3499);
}

function connect() {
  clearTimeout(state.reconnectTimer);
  if (!state.session || state.ws) return;
  setConn(state.attempt === 0 && state.seq == null ? 'connecting' : 'reconnecting');
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  // With since, the server replays what this tab missed before going live
  // (then resumed, or resync if it was pruned); without, it is live at once.
  const since = state.seq == null ? '' : `&since=${state.seq}`;
  const ws = new WebSocket(`${proto}//${location.host}/ws?token=${encodeURIComponent(state.session.token)}${since}`);
  let hello = false;
  state.ws = ws;
  ws.addEventListener('message', (e) => {
    if (state.ws !== ws) return;
    let frame;
    try {
      frame = JSON.parse(e.data);
    } catch {
      return;
    }
    if (frame.type === 'hello') hello = true;
    onFrame(frame);
  });
  ws.addEventListener('close', (e) => {
    if (state.ws !== ws) return; // closed on purpose
    state.ws = null;
    onClose(e.code, e.reason, hello);
  });
}

function onFrame(f) {
  switch (f.type) {
    case 'hello':
      state.failedOpens = 0;
      el.conn.title = f.replica ? `Connected to replica ${f.replica}` : '';
      if (state.seq == null) {
        // First connect: live from here; read the list as of now.
        state.seq = f.seq;
        goneLive();
        guard(loadTodos)();
      } // else the resume of ?since is answered by resumed or resync
      return;
    case 'resumed':
      goneLive();
      return;
    case 'resync':
      state.seq = f.seq;
      goneLive();
      guard(loadTodos)();
      return;
    case 'todo.created':
    case 'todo.updated':
    case 'todo.deleted':
      onTodoEvent(f);
      return;
    case 'auth.ok':
      return;
    case 'error':
      onErrorFrame(f);
      return;
    case 'chat.started':
    case 'chat.token':
    case 'chat.tool':
    case 'chat.done':
    case 'chat.error':
      onChatFrame(f);
  }
}

function goneLive() {
  const again = state.attempt > 0;
  state.attempt = 0;
  setConn('live');
  if (again) showBanner('');
  // A run may have finished while this tab was away: read the stored state.
  if (again && chat.running.size) guard(loadChat)();
}

function onErrorFrame(f) {
  showBanner(`The server refused a message: ${f.message || f.code}`);
}

function onClose(code, reason, hadHello) {
  if (!state.session) return;
  if (code === 3000) {
    // Token expired: reconnect with a fresh one (dev mode), else ask for one.
    if (!state.session.dev) return expireSession('Your token has expired. Paste a fresh one.');
    refreshToken().then(connect, () => retry());
    setConn('reconnecting');
    return;
  }
  if (!navigator.onLine) {
    setConn('offline', 'Offline: no network');
    return;
  }
  if (!reconnectable(code)) {
    setConn('offline', `Offline (${code}${reason ? `: ${reason}` : ''})`);
    return;
  }
  if (!hadHello) {
    state.failedOpens++;
    guard(diagnose)();
  }
  retry();
}

function retry() {
  clearTimeout(state.reconnectTimer);
  const base = Math.min(MAX_BACKOFF_MS, 500 * 2 ** state.attempt);
  state.attempt++;
  setConn('reconnecting');
  state.reconnectTimer = setTimeout(connect, base / 2 + Math.random() * (base / 2));
}

// diagnose explains a socket refused before its hello. The browser hides
// the upgrade's status: an expired token is told from the claims, and a
// token the REST API takes points at the origin check.
async function diagnose() {
  const s = state.session;
  if (s.exp - Date.now() < 5000) {
    if (s.dev) return refreshToken();
    return expireSession('Your token has expired. Paste a fresh one.');
  }
  if (state.failedOpens !== 2) return;
  await api('GET', '/api/todos?limit=1');
  showBanner(
    `The live connection is refused although the token works. If ${location.origin} is not in the server's CORS_ORIGINS, add it.`,
  );
}

window.addEventListener('offline', () => {
  if (state.session && !state.ws) setConn('offline', 'Offline: no network');
});
window.addEventListener('online', () => {
  if (state.session && !state.ws) {
    state.attempt = 0;
    connect();
  }
});
el.reconnect.addEventListener('click', () => {
  state.attempt = 0;
  connect();
});

// ---------- chat ----------

const STATUS_NOTE = { failed: 'failed', cancelled: 'stopped', error: 'failed' };

function chatEntry(id, message, createdAt) {
  let entry = chat.entries.get(id);
  if (entry) return entry;
  const li = h('li', { class: 'msg', 'data-id': id });
  entry = {
    li,
    user: h('p', { class: 'msg-user', text: message ?? '' }),
    tools: h('ul', { class: 'tools', 'aria-label': 'Tool calls' }),
    agent: h('p', { class: 'msg-agent' }),
    meta: h('p', { class: 'msg-meta', text: createdAt ? timeOf(createdAt) : '' }),
  };
  entry.tools.hidden = true;
  li.append(entry.user, entry.tools, entry.agent, entry.meta);
  chat.entries.set(id, entry);
  el.chatLog.append(li);
  el.chatEmpty.hidden = true;
  return entry;
}

function setStatus(entry, status, text) {
  entry.li.dataset.status = status;
  entry.agent.setAttribute('aria-busy', String(status === 'running'));
  if (text != null) entry.meta.textContent = text;
}

function addTool(entry, call) {
  const ok = !call.error;
  const args = typeof call.arguments === 'string' ? call.arguments : JSON.stringify(call.arguments ?? {});
  const out = ok ? JSON.stringify(call.result ?? null, null, 2) : call.error;
  entry.tools.hidden = false;
  entry.tools.append(
    h('li', {},
      h('details', { class: 'tool', 'data-ok': String(ok) },
        h('summary', {}, 'Tool ', h('code', { text: call.name }), ok ? ' ✓' : ' failed'),
        h('pre', { text: `arguments: ${args}\n${ok ? 'result' : 'error'}: ${out}` }))),
  );
}

// showStored shows a stored exchange {id, message, response, tool_calls,
// status, created_at}, in entry if given.
function showStored(m, entry = chat.entries.get(m.id)) {
  entry ??= chatEntry(m.id, m.message, m.created_at);
  chat.entries.set(m.id, entry);
  entry.user.textContent = m.message;
  entry.agent.textContent = m.response || '';
  entry.tools.replaceChildren();
  entry.tools.hidden = true;
  for (const call of m.tool_calls || []) addTool(entry, call);
  const when = timeOf(m.created_at);
  const note = STATUS_NOTE[m.status];
  setStatus(entry, m.status || 'completed', note ? `${when} · ${note}` : when);
  if (!m.response && m.status === 'failed') entry.agent.textContent = 'The agent could not answer.';
  return entry;
}

function scrollChat() {
  el.chatLog.scrollTop = el.chatLog.scrollHeight;
}

function onChatFrame(f) {
  let entry = chat.entries.get(f.id);
  if (!entry && f.type === 'chat.error' && !f.id) {
    // A refusal of a frame without an id (not one of ours).
    showBanner(`The agent refused the message: ${f.message || f.code}`);
    return;
  }
  entry ??= chatEntry(f.id, f.message ?? '', new Date().toISOString()); // started in another tab, or joined mid-run
  switch (f.type) {
    case 'chat.started':
      entry.user.textContent = f.message;
      chat.running.add(f.id);
      setStatus(entry, 'running', 'Answering…');
      break;
    case 'chat.token':
      entry.agent.append(f.delta);
      break;
    case 'chat.tool':
      addTool(entry, f);
      break;
    case 'chat.done':
      chat.running.delete(f.id);
      if (f.message && typeof f.message === 'object') showStored(f.message, entry);
      else setStatus(entry, 'completed', timeOf(new Date().toISOString()));
      break;
    case 'chat.error':
      chat.running.delete(f.id);
      setStatus(entry, 'failed', `Error: ${f.message || f.code}`);
      break;
  }
  scrollChat();
  updateChatControls();
}

// loadChat shows the latest exchanges, or with before (a created_at) the
// ones before it on top. The API answers newest first.
async function loadChat(before) {
  const q = new URLSearchParams({ limit: String(CHAT_PAGE) });
  if (before) q.set('before', before);
  const page = await api('GET', `/api/chat/${encodeURIComponent(state.session.userId)}?${q}`);
  const oldestFirst = [...page].reverse();
  if (before) {
    // Earlier exchanges go on top, keeping the reader's place.
    const first = el.chatLog.firstChild;
    const height = el.chatLog.scrollHeight;
    for (const m of oldestFirst) el.chatLog.insertBefore(showStored(m).li, first);
    el.chatLog.scrollTop += el.chatLog.scrollHeight - height;
  } else {
    for (const m of oldestFirst) showStored(m, chat.entries.get(m.id) ?? claimRun(m));
    scrollChat();
  }
  const first = oldestFirst[0]?.created_at;
  if (first && (!chat.oldest || Date.parse(first) < Date.parse(chat.oldest))) chat.oldest = first;
  if (!before || page.length < CHAT_PAGE) el.chatMore.hidden = page.length < CHAT_PAGE;
  el.chatEmpty.hidden = chat.entries.size > 0;
  updateChatControls();
}

// claimRun returns the entry of a run this tab saw start whose end it
// missed (the socket was down): the stored exchange with its message.
function claimRun(m) {
  for (const id of chat.running) {
    const entry = chat.entries.get(id);
    if (entry?.user.textContent === m.message) {
      chat.running.delete(id);
      return entry;
    }
  }
  return undefined;
}

function updateChatControls() {
  el.chatStop.disabled = state.conn !== 'live' || chat.running.size === 0;
  el.chatSend.disabled = chat.running.size > 0;
}

async function sendChat() {
  const message = el.chatInput.value.trim();
  if (!message) return fieldError(el.chatInput, el.chatError, 'Type a message first.');
  fieldError(el.chatInput, el.chatError, '');
  el.chatInput.value = '';
  const id = newID();
  const entry = chatEntry(id, message, new Date().toISOString());
  chat.running.add(id);
  setStatus(entry, 'running', 'Sending…');
  scrollChat();
  updateChatControls();
  if (sendFrame({ type: 'chat', id, message })) return; // the frames do the rest
  // No socket: POST answers when the run is over.
  setStatus(entry, 'running', 'Answering… (not live: the answer shows when it is complete)');
  try {
    showStored(await api('POST', '/api/chat', { message }), entry);
  } catch (err) {
    setStatus(entry, 'failed', `Error: ${err.message}`);
  } finally {
    chat.running.delete(id);
    updateChatControls();
  }
}

el.chatForm.addEventListener('submit', guard(async (e) => {
  e.preventDefault();
  await sendChat();
}));
el.chatInput.addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    if (!el.chatSend.disabled) el.chatForm.requestSubmit();
  }
});
el.chatStop.addEventListener('click', () => {
  for (const id of chat.running) sendFrame({ type: 'cancel', id });
});
el.chatMore.addEventListener('click', guard(() => loadChat(chat.oldest)));

// ---------- sign-in ----------

el.devForm.addEventListener('submit', guard(async (e) => {
  e.preventDefault();
  const emailErr = $('dev-email-error');
  const nameErr = $('dev-name-error');
  fieldError(el.devEmail, emailErr, '');
  fieldError(el.devName, nameErr, '');
  const email = el.devEmail.value.trim();
  if (!email) return fieldError(el.devEmail, emailErr, 'An email is required.');
  if (!el.devEmail.validity.valid) return fieldError(el.devEmail, emailErr, 'Enter an email address like ada@example.com.');
  try {
    await signIn(await devToken(email, el.devName.value.trim()));
  } catch (err) {
    if (!(err instanceof ApiError) || !err.field) throw err;
    const [input, box] = err.field === 'name' ? [el.devName, nameErr] : [el.devEmail, emailErr];
    fieldError(input, box, err.message);
    input.focus();
  }
}));

el.tokenForm.addEventListener('submit', guard(async (e) => {
  e.preventDefault();
  const err = $('token-error');
  fieldError(el.tokenInput, err, '');
  let next;
  try {
    next = sessionFor(el.tokenInput.value.trim().replace(/^Bearer\s+/i, ''));
  } catch (e2) {
    return fieldError(el.tokenInput, err, `That is not a token: ${e2.message}.`);
  }
  if (next.exp <= Date.now()) return fieldError(el.tokenInput, err, 'That token has expired.');
  el.tokenInput.value = '';
  if (state.session && !el.console.hidden && state.session.userId === next.userId) {
    // A fresh token for the same user: keep everything, swap the token.
    adoptToken(next);
    el.signIn.hidden = true;
    if (!state.ws) connect();
    return;
  }
  if (state.session) signOut();
  await signIn(next);
}));

el.signOut.addEventListener('click', signOut);

// Other tabs: a sign-out signs this tab out too; a refreshed token of the
// same user is adopted.
window.addEventListener('storage', (e) => {
  if (e.key !== SESSION_KEY || !state.session) return;
  const next = loadSession();
  if (!next) signOut();
  else if (next.userId === state.session.userId && next.exp > state.session.exp) adoptToken(next);
});

// ---------- boot ----------

state.session = loadSession();
if (state.session) guard(start)();
else showSignIn(false);
