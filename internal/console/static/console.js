// Halyard console: plain JavaScript, no build step. Reads the console's
// JSON APIs (docs/console.md) on the admin listener that serves this page.
'use strict';

const $ = (sel) => document.querySelector(sel);
const MAX_DECISIONS = 100;
const decisions = new Map(); // request id -> {row, detail, decision, outcome}
let playgroundID = null;

// el builds an element: el('td', {className: 'num'}, 'text', child...).
function el(tag, props, ...children) {
  const e = document.createElement(tag);
  Object.assign(e, props || {});
  for (const c of children) {
    if (c != null) e.append(c instanceof Node ? c : String(c));
  }
  return e;
}

function pct(v) {
  return v == null ? '–' : (v * 100).toFixed(0) + '%';
}

function ms(v) {
  return v ? v.toFixed(0) + ' ms' : '–';
}

async function getJSON(path) {
  const res = await fetch(path, {cache: 'no-store'});
  if (!res.ok) throw new Error(path + ': HTTP ' + res.status);
  return res.json();
}

function bar(v) {
  const fill = el('span');
  fill.style.width = Math.round(Math.min(Math.max(v || 0, 0), 1) * 100) + '%';
  return el('span', {className: 'bar'}, fill);
}

function health(e) {
  if (e.ejected) return el('span', {className: 'bad', title: 'outlier ejection'}, 'ejected');
  if (!e.healthy) return el('span', {className: 'bad', title: e.lastError || ''}, 'down');
  return el('span', {className: 'ok'}, 'healthy');
}

function renderFleet(endpoints) {
  const body = $('#fleet tbody');
  body.replaceChildren(...endpoints.map((e) => {
    const tr = el('tr', {},
      el('td', {title: e.address + ' (' + e.model + ')'}, e.name),
      el('td', {}, e.pool),
      el('td', {}, e.role || 'both'),
      el('td', {}, health(e)),
      el('td', {className: 'num'}, e.inFlight),
      el('td', {className: 'num'}, e.running + ' / ' + e.waiting),
      el('td', {}, bar(e.kvCacheUsage), pct(e.kvCacheUsage)),
      el('td', {className: 'num', title: e.driftRatio == null ? '' : 'drift ratio ' + e.driftRatio.toFixed(2)},
        pct(e.predictedHitRatio) + ' / ' + pct(e.actualHitRatio)));
    tr.dataset.endpoint = e.name;
    return tr;
  }));
  const healthy = endpoints.filter((e) => e.healthy && !e.ejected).length;
  const pools = new Set(endpoints.map((e) => e.pool)).size;
  $('#summary').textContent = endpoints.length + ' endpoints (' + healthy + ' healthy) in ' + pools + ' pool(s)';
}

function targets(ts) {
  return (ts || []).map((t) => t.pool + (t.model ? ' as ' + t.model : '') + ' (' + t.weight + ')').join(', ');
}

function renderRoutes(routes) {
  $('#routes tbody').replaceChildren(...routes.map((r) => el('tr', {},
    el('td', {}, r.model + (r.adapter ? ' [' + r.adapter + ']' : '')),
    el('td', {}, r.profile),
    el('td', {}, targets(r.targets) + (r.rules ? ' + ' + r.rules.length + ' header rule(s)' : '')),
    el('td', {}, (r.fallback || []).map((t) => t.pool).join(', ') || '–'))));
  const sel = $('#pg-model');
  const keep = sel.value;
  sel.replaceChildren(...routes.map((r) => el('option', {value: r.model}, r.model)));
  if (routes.some((r) => r.model === keep)) sel.value = keep;
}

async function refreshFleet() {
  try {
    renderFleet((await getJSON('api/fleet')).endpoints);
  } catch (err) {
    $('#summary').textContent = 'cannot read the fleet: ' + err.message;
  }
}

async function refreshRoutes() {
  try {
    renderRoutes((await getJSON('api/routes')).routes);
  } catch (err) {
    $('#summary').textContent = 'cannot read the routes: ' + err.message;
  }
}

// explainText spells a decision out, one fact a line.
function explainText(d) {
  const lines = [
    'route ' + d.model + ' > ' + d.pool + (d.fallback ? ' (fallback)' : '') + '   profile ' + d.profile + '   attempt ' + d.attempt,
    'picked ' + d.endpoint + (d.prefill ? '   prefill on ' + d.prefill : ''),
  ];
  if (d.predictedHit != null) lines.push('predicted prefix hit ' + pct(d.predictedHit));
  const x = d.explanation;
  if (x && x.endpoints) {
    lines.push('candidates:');
    for (const e of x.endpoints) {
      if (e.filteredBy) {
        lines.push('  ' + e.name + '  filtered by ' + e.filteredBy);
        continue;
      }
      const scores = Object.keys(e.scores || {}).sort().map((k) => k + ' ' + e.scores[k].toFixed(2)).join('  ');
      lines.push('  ' + e.name + '  total ' + e.total.toFixed(2) + (scores ? '  (' + scores + ')' : ''));
    }
    for (const n of x.notes || []) lines.push('note: ' + n);
  }
  for (const e of d.excluded || []) lines.push('excluded ' + e.name + ': ' + e.reason);
  lines.push('x-halyard-explain: ' + d.explain);
  return lines.join('\n');
}

function decisionCells(d, o) {
  const status = o ? el('span', {className: o.status < 400 ? 'ok' : 'bad'}, o.status) : '…';
  const tokens = o && (o.promptTokens || o.completionTokens)
    ? o.promptTokens + ' → ' + o.completionTokens + (o.cachedTokens ? ' (' + o.cachedTokens + ' cached)' : '')
    : '–';
  return [
    el('td', {}, new Date(d.time).toLocaleTimeString()),
    el('td', {title: d.id}, d.id.slice(0, 12)),
    el('td', {}, d.model),
    el('td', {}, d.pool + (d.fallback ? ' (fallback)' : '')),
    el('td', {}, d.endpoint + (d.prefill ? ' ← ' + d.prefill : '')),
    el('td', {className: 'num'}, pct(d.predictedHit)),
    el('td', {}, status),
    el('td', {className: 'num'}, ms(o && o.ttftMs)),
    el('td', {className: 'num'}, tokens),
  ];
}

function addDecision(d) {
  let entry = decisions.get(d.id);
  if (entry) { // a retry on another endpoint
    entry.decision = d;
    entry.row.replaceChildren(...decisionCells(d, entry.outcome));
    entry.detail.firstChild.textContent = explainText(d);
  } else {
    const row = el('tr', {className: 'decision fresh'}, ...decisionCells(d, null));
    row.dataset.id = d.id;
    const detail = el('tr', {className: 'explain', hidden: true}, el('td', {colSpan: 9}, explainText(d)));
    row.addEventListener('click', () => { detail.hidden = !detail.hidden; });
    $('#decisions tbody').prepend(row, detail);
    entry = {row, detail, decision: d, outcome: null};
    decisions.set(d.id, entry);
    while (decisions.size > MAX_DECISIONS) {
      const [oldest, old] = decisions.entries().next().value;
      old.row.remove();
      old.detail.remove();
      decisions.delete(oldest);
    }
  }
  if (d.id === playgroundID) $('#pg-decision').textContent = explainText(d);
}

function addOutcome(o) {
  const entry = decisions.get(o.id);
  if (!entry) return;
  entry.outcome = o;
  entry.row.replaceChildren(...decisionCells(entry.decision, o));
}

function follow() {
  const es = new EventSource('api/decisions');
  const state = $('#feed-state');
  es.addEventListener('open', () => {
    document.body.dataset.feed = 'open';
    state.textContent = 'feed: live';
  });
  es.addEventListener('error', () => {
    document.body.dataset.feed = 'reconnecting';
    state.textContent = 'feed: reconnecting';
  });
  es.addEventListener('decision', (m) => addDecision(JSON.parse(m.data)));
  es.addEventListener('outcome', (m) => addOutcome(JSON.parse(m.data)));
}

// play sends the playground's chat through the router (POST
// api/playground, which the router serves like /v1/chat/completions) and
// streams the answer; the decision comes from the feed, by request id.
async function play(ev) {
  ev.preventDefault();
  const answer = $('#pg-answer');
  const shown = $('#pg-decision');
  answer.textContent = '';
  answer.dataset.state = 'sending';
  answer.dataset.chunks = '0';
  shown.textContent = '';
  $('#pg-send').disabled = true;
  const headers = {'Content-Type': 'application/json'};
  const key = $('#pg-key').value.trim();
  if (key) headers.Authorization = 'Bearer ' + key;
  const body = {
    model: $('#pg-model').value,
    messages: [{role: 'user', content: $('#pg-prompt').value}],
    max_tokens: Number($('#pg-max').value) || 48,
    stream: true,
    stream_options: {include_usage: true},
  };
  try {
    const res = await fetch('api/playground', {method: 'POST', headers, body: JSON.stringify(body)});
    playgroundID = res.headers.get('X-Request-Id');
    const entry = playgroundID && decisions.get(playgroundID);
    if (entry) shown.textContent = explainText(entry.decision);
    else if (res.headers.get('X-Halyard-Route')) shown.textContent = res.headers.get('X-Halyard-Route');
    if (!res.ok) {
      let msg = 'HTTP ' + res.status;
      try { msg += ': ' + (await res.json()).error.message; } catch (_) { /* not JSON */ }
      answer.textContent = msg;
      answer.dataset.state = 'error';
      return;
    }
    await readStream(res.body.getReader(), answer);
    answer.dataset.state = 'done';
  } catch (err) {
    answer.textContent += '\n[' + err.message + ']';
    answer.dataset.state = 'error';
  } finally {
    $('#pg-send').disabled = false;
  }
}

async function readStream(reader, answer) {
  const dec = new TextDecoder();
  let buf = '';
  let chunks = 0;
  answer.dataset.state = 'streaming';
  for (;;) {
    const {value, done} = await reader.read();
    if (done) return;
    buf += dec.decode(value, {stream: true});
    let nl;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl).trim();
      buf = buf.slice(nl + 1);
      if (!line.startsWith('data:')) continue;
      const data = line.slice(5).trim();
      if (data === '[DONE]') return;
      const msg = JSON.parse(data);
      const delta = msg.choices && msg.choices[0] && msg.choices[0].delta;
      if (delta && delta.content) {
        answer.append(delta.content);
        chunks++;
        answer.dataset.chunks = String(chunks);
        if (chunks === 1) answer.dataset.firstAt = String(performance.now());
        answer.dataset.lastAt = String(performance.now());
      }
      if (msg.usage) answer.dataset.usage = msg.usage.prompt_tokens + ' → ' + msg.usage.completion_tokens;
    }
  }
}

async function start() {
  try {
    const info = await getJSON('api/info');
    $('#pg-key-label').hidden = !info.authRequired;
  } catch (_) { /* shown by the other calls */ }
  $('#playground').addEventListener('submit', play);
  follow();
  await Promise.all([refreshFleet(), refreshRoutes()]);
  setInterval(refreshFleet, 1000);
  setInterval(refreshRoutes, 5000);
}

start();
