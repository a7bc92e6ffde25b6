// Dead-letter queues: which queues dead-letter where, a browse with the x-death history and filters, and
// redrive (selected messages or all that match) with a dry run, a rate, live progress and cancel.

import {api, enc, query} from '../api.js';
import {append, duration, h, num, replace, time} from '../dom.js';
import {currentVhost, href} from '../app.js';
import {messageCard} from '../messages.js';
import {attempt, field, kv, pill, section, table} from '../ui.js';

const PAGE = 20;
const REASONS = ['rejected', 'expired', 'maxlen', 'delivery_limit'];
const SUMMARY_EVERY = 5; // ticks: a summary reads up to 100,000 messages

function progress(r) {
  const done = r.moved + r.failed + r.skipped;
  const bar = h('div');
  bar.style.width = `${r.matched ? Math.round((100 * done) / r.matched) : 100}%`;
  return h('div', {class: 'progress', role: 'progressbar', 'aria-valuenow': done, 'aria-valuemax': r.matched}, bar);
}

function stateKind(state) {
  return {done: 'good', running: 'warn', cancelled: '', failed: 'bad'}[state] || '';
}

function redriveTable(rows, onCancel) {
  return table([
    {label: 'Redrive', render: (r) => h('span', {class: 'mono'}, r.id)},
    {label: 'Queue', render: (r) => h('a', {href: href('dlq', r.vhost, r.queue), class: 'name'}, r.queue)},
    {label: 'State', render: (r) => pill(r.state, stateKind(r.state))},
    {label: 'Progress', render: (r) => progress(r)},
    {label: 'Moved', num: true, render: (r) => `${num(r.moved)} / ${num(r.matched)}`},
    {label: 'Failed', num: true, key: 'failed', opt: true},
    {label: 'Skipped', num: true, key: 'skipped', opt: true},
    {label: 'To', opt: true, render: (r) => (r.target ? `${r.target.exchange || '(default)'} / ${r.target.routing_key}` : 'original queues')},
    {label: 'Started', opt: true, render: (r) => time(r.started_at)},
    {label: '', render: (r) => (r.state === 'running'
      ? h('button', {class: 'danger', 'data-testid': 'cancel', onclick: () => onCancel(r)}, 'Cancel') : null)},
  ], rows, {empty: 'No redrives yet.', testid: 'redrives', rowKey: (r) => r.id});
}

async function cancel(r, done) {
  await attempt(() => api.del(`/mailslot/redrives/${enc(r.vhost)}/${enc(r.id)}`), 'Redrive cancelled: what moved stays moved.');
  done();
}

export function list(view) {
  const vhost = currentVhost();
  const queues = h('div');
  const redrives = h('div');
  append(view.main, h('h1', {}, 'Dead letters'),
    h('p', {class: 'muted'}, 'Queues that some queue\'s dead-letter exchange routes to. Open one to browse its messages and send them back.'),
    queues, section('Redrives', redrives));
  const live = view.live(async (signal) => {
    const items = await api.get(vhost ? `/mailslot/dlq/${enc(vhost)}` : '/mailslot/dlq', {signal});
    replace(queues, table([
      {label: 'Dead-letter queue', render: (d) => h('a', {href: href('dlq', d.vhost, d.name), class: 'name'}, d.name)},
      !vhost && {label: 'Vhost', key: 'vhost', opt: true},
      {label: 'Messages', num: true, render: (d) => num(d.messages)},
      {label: 'Consumers', num: true, key: 'consumers', opt: true},
      {label: 'Dead letters from', render: (d) => d.sources.map((s) => pill(s))},
    ].filter(Boolean), items, {testid: 'dlqs', empty: 'No dead-letter queues: no queue has a dead-letter exchange that routes to a queue.'}));
    const all = await api.get('/mailslot/redrives', {signal});
    replace(redrives, redriveTable(all.filter((r) => !vhost || r.vhost === vhost), (r) => cancel(r, () => live.tick())));
  });
}

function filterForm(sources, onChange) {
  const reason = h('select', {name: 'reason'}, h('option', {value: ''}, 'any reason'), REASONS.map((r) => h('option', {value: r}, r)));
  const source = h('select', {name: 'source_queue'}, h('option', {value: ''}, 'any queue'));
  const header = h('input', {name: 'header', placeholder: 'name=value'});
  const minAge = h('input', {name: 'min_age', type: 'number', min: 0, placeholder: 'seconds'});
  const maxAge = h('input', {name: 'max_age', type: 'number', min: 0, placeholder: 'seconds'});
  const body = h('input', {name: 'body', placeholder: 'text in the body'});
  const form = h('form', {class: 'inline-form', 'data-testid': 'dlq-filter', onsubmit: (event) => {
    event.preventDefault();
    onChange();
  }},
  field('Reason', reason), field('Died in', source), field('Header', header), field('Older than (s)', minAge),
  field('Younger than (s)', maxAge), field('Body contains', body),
  h('button', {type: 'submit', class: 'primary'}, 'Filter'),
  h('button', {type: 'button', onclick: () => {
    form.reset();
    onChange();
  }}, 'Clear'));
  const setSources = (names) => {
    const chosen = source.value;
    replace(source, h('option', {value: ''}, 'any queue'), names.map((n) => h('option', {value: n, selected: n === chosen}, n)));
  };
  setSources(sources);
  const values = () => {
    const out = {};
    for (const input of [reason, source, header, minAge, maxAge, body]) if (input.value !== '') out[input.name] = input.value;
    if (out.min_age) out.min_age = Number(out.min_age);
    if (out.max_age) out.max_age = Number(out.max_age);
    return out;
  };
  return {form, values, setSources};
}

export function render(view) {
  const {vhost, name} = view.params;
  const summary = h('div', {'data-testid': 'dlq-summary'});
  const messages = h('div', {'data-testid': 'dlq-messages'});
  const browseInfo = h('p', {class: 'muted', 'data-testid': 'browse-info'});
  const dryRun = h('div', {'data-testid': 'dry-run'});
  const progressBox = h('div', {'data-testid': 'redrive-progress'});
  const selected = new Set();
  let offset = 0;
  let sources = [];
  let current = null; // the redrive this page started, followed live

  const filters = filterForm([], () => {
    offset = 0;
    browse();
  });
  const selectedCount = h('span', {}, '0');
  const toExchange = h('input', {name: 'exchange', placeholder: '(back to the queue each died in)'});
  const toKey = h('input', {name: 'routing_key', placeholder: 'routing key'});
  const rate = h('input', {name: 'rate', type: 'number', min: 1, placeholder: 'as fast as it goes'});
  const limit = h('input', {name: 'limit', type: 'number', min: 1, placeholder: 'all'});
  const pages = h('div', {class: 'pager'});

  function redriveBody(which, dry) {
    const body = {dry_run: dry};
    if (which === 'selected') body.ids = [...selected];
    const where = filters.values();
    if (which === 'matching' && Object.keys(where).length) body.filter = where;
    if (toExchange.value || toKey.value) body.target = {exchange: toExchange.value, routing_key: toKey.value};
    if (rate.value) body.rate = Number(rate.value);
    if (limit.value) body.limit = Number(limit.value);
    return body;
  }

  async function redrive(which, dry) {
    if (which === 'selected' && !selected.size) {
      attempt(async () => { throw new Error('Select messages first.'); });
      return;
    }
    const result = await attempt(() => api.post(`/mailslot/dlq/${enc(vhost)}/${enc(name)}/redrive`, redriveBody(which, dry)));
    if (!result) return;
    if (dry) {
      replace(dryRun, h('p', {}, h('b', {}, `Dry run: ${num(result.matched)} selected, ${num(result.would_move)} would move, `
        + `${num(result.unroutable)} unroutable (would stay).`)),
      table([
        {label: 'Id', key: 'id'},
        {label: 'To exchange', render: (m) => (m.target_exchange === null ? '–' : m.target_exchange || '(default)')},
        {label: 'Routing key', render: (m) => m.target_routing_key ?? '–'},
        {label: 'Arrives in', render: (m) => (m.destination_queues.length ? m.destination_queues.map((q) => pill(q)) : pill('nowhere', 'bad'))},
      ], result.items.slice(0, 20), {empty: 'Nothing would move.'}));
      return;
    }
    replace(dryRun);
    current = result;
    selected.clear();
    selectedCount.textContent = '0';
    showProgress();
    live.tick();
  }

  function showProgress() {
    if (!current) return replace(progressBox);
    const r = current;
    return replace(progressBox, h('div', {class: 'card'},
      h('p', {}, 'Redrive ', h('span', {class: 'mono'}, r.id), ' ', pill(r.state, stateKind(r.state)),
        ` moved ${num(r.moved)} of ${num(r.matched)}, failed ${num(r.failed)} (kept here), skipped ${num(r.skipped)}`),
      progress(r),
      r.state === 'running' ? h('button', {class: 'danger', 'data-testid': 'cancel', onclick: () => cancel(r, () => live.tick())}, 'Cancel') : null,
      r.error ? h('p', {class: 'error'}, r.error) : null));
  }

  async function browse() {
    const docs = await attempt(() => api.get(`/mailslot/queues/${enc(vhost)}/${enc(name)}/messages${query({
      offset, limit: PAGE, truncate: 20000, ...filters.values()})}`));
    if (!docs) return;
    browseInfo.textContent = `${num(docs.matched)} matching of ${num(docs.scanned)} looked at` +
      (docs.truncated_scan ? ' (the queue has more: narrow the filter)' : '') + ` · ${num(docs.messages)} in the queue`;
    replace(messages, docs.items.length ? docs.items.map((doc) => {
      const box = h('input', {type: 'checkbox', 'aria-label': `select message ${doc.id}`, checked: selected.has(doc.id),
        onchange: (e) => {
          if (e.target.checked) selected.add(doc.id);
          else selected.delete(doc.id);
          selectedCount.textContent = String(selected.size);
        }});
      return messageCard(doc, {select: box});
    }) : h('p', {class: 'muted'}, 'No messages match.'));
    replace(pages,
      h('button', {disabled: offset === 0, onclick: () => { offset = Math.max(0, offset - PAGE); browse(); }}, '‹ prev'),
      h('span', {}, `${num(offset + 1)}–${num(offset + docs.items.length)}`),
      h('button', {disabled: offset + PAGE >= docs.matched, onclick: () => { offset += PAGE; browse(); }}, 'next ›'));
  }

  append(view.main,
    h('p', {class: 'muted'}, h('a', {href: '#/dlq'}, 'Dead letters'), ` › vhost ${vhost} › `, h('a', {href: href('queue', vhost, name)}, 'queue page')),
    h('h1', {class: 'name'}, name),
    section('What died, and where', summary),
    section('Browse and redrive',
      filters.form,
      h('p', {class: 'muted'}, 'Redrive sends the selected messages, or every one matching the filter, back to the queue each died in '
        + '(or to the exchange you name). They keep their x-death history.'),
      h('div', {class: 'inline-form'}, field('To exchange', toExchange), field('Routing key', toKey),
        field('Messages a second', rate), field('At most', limit)),
      h('div', {class: 'actions'},
        h('button', {'data-testid': 'dry-run-matching', onclick: () => redrive('matching', true)}, 'Dry run (all matching)'),
        h('button', {class: 'primary', 'data-testid': 'redrive-matching', onclick: () => {
          if (window.confirm('Redrive every message that matches the filter?')) redrive('matching', false);
        }}, 'Redrive all matching'),
        h('button', {'data-testid': 'dry-run-selected', onclick: () => redrive('selected', true)}, 'Dry run (selected)'),
        h('button', {class: 'primary', 'data-testid': 'redrive-selected', onclick: () => redrive('selected', false)},
          'Redrive selected (', selectedCount, ')')),
      dryRun, progressBox, browseInfo, pages, messages));

  let ticks = 0;
  const live = view.live(async (signal) => {
    if (current) {
      const before = current.state;
      current = await api.get(`/mailslot/redrives/${enc(vhost)}/${enc(current.id)}`, {signal});
      showProgress();
      if (before === 'running' && current.state !== 'running') browse();
    }
    if (ticks % SUMMARY_EVERY === 0 || (current && current.state === 'running')) {
      const s = await api.get(`/mailslot/dlq/${enc(vhost)}/${enc(name)}`, {signal});
      if (s.sources.join() !== sources.join()) filters.setSources((sources = s.sources));
      const counts = (obj) => Object.entries(obj).map(([k, v]) => pill(`${k}: ${num(v)}`));
      replace(summary, kv([
        ['Messages', h('b', {'data-testid': 'dlq-count'}, num(s.messages))],
        ['Dead letters from', s.sources.length ? s.sources.map((q) => h('a', {href: href('queue', vhost, q)}, pill(q))) : 'no queue now'],
        ['By reason', counts(s.by_reason)],
        ['By queue', counts(s.by_source)],
        ['Oldest death', s.oldest_death ? `${time(s.oldest_death)} (${duration(Date.now() / 1000 - s.oldest_death)} ago)` : '–'],
        ['Newest death', s.newest_death ? time(s.newest_death) : '–'],
      ]));
    }
    ticks += 1;
  });
  browse();
}
