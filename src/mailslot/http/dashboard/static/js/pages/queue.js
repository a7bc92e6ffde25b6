// One queue: live depth and rate charts, consumers, bindings, effective arguments and policy, and the
// actions: publish, peek (nothing taken, nothing marked redelivered), purge, delete, move.

import {api, enc, query} from '../api.js';
import {Chart} from '../chart.js';
import {append, duration, get, h, json, num, rate, replace, bytes} from '../dom.js';
import {href} from '../app.js';
import {messageCard} from '../messages.js';
import {attempt, field, kv, parseJson, pill, section, table} from '../ui.js';

const RATES = [['publish', 'publish'], ['deliver_get', 'deliver'], ['ack', 'ack'], ['redeliver', 'redeliver']];
const BINDINGS_EVERY = 5; // ticks: bindings change rarely

function stat(label, value, testid) {
  return h('div', {class: 'stat', 'data-testid': testid}, h('span', {class: 'label'}, label), h('b', {}, value));
}

function consumersTable(rows) {
  return table([
    {label: 'Consumer tag', render: (c) => h('span', {class: 'name'}, c.consumer_tag)},
    {label: 'Channel', render: (c) => get(c, 'channel_details.name'), opt: true},
    {label: 'User', render: (c) => get(c, 'channel_details.user'), opt: true},
    {label: 'Prefetch', num: true, render: (c) => (c.prefetch_count ? num(c.prefetch_count) : 'unlimited')},
    {label: 'Unacked', num: true, render: (c) => num(c.messages_unacknowledged)},
    {label: 'Ack', render: (c) => (c.ack_required ? 'manual' : 'auto')},
    {label: 'Exclusive', render: (c) => (c.exclusive ? 'yes' : 'no'), opt: true},
  ], rows, {empty: 'No consumers.', testid: 'consumers'});
}

function bindingsTable(rows, onChange) {
  return table([
    {label: 'From exchange', render: (b) => (b.source ? h('a', {href: href('exchange', b.vhost, b.source), class: 'name'}, b.source) : '(default)')},
    {label: 'Routing key', render: (b) => h('span', {class: 'name'}, b.routing_key)},
    {label: 'Arguments', render: (b) => (Object.keys(b.arguments || {}).length ? h('code', {}, JSON.stringify(b.arguments)) : '–')},
    {label: '', render: (b) => (b.source ? h('button', {class: 'link', onclick: async () => {
      await attempt(() => api.del(`/bindings/${enc(b.vhost)}/e/${enc(b.source)}/q/${enc(b.destination)}/${enc(b.properties_key)}`), 'Unbound.');
      onChange();
    }}, 'Unbind') : null)},
  ], rows, {empty: 'No bindings.', testid: 'bindings'});
}

function bindForm(vhost, name, onBound) {
  const source = h('input', {name: 'source', required: true, placeholder: 'amq.topic'});
  const key = h('input', {name: 'binding_key', placeholder: 'orders.#'});
  const args = h('input', {name: 'binding_arguments', placeholder: '{}'});
  return h('form', {class: 'inline-form', 'data-testid': 'bind', onsubmit: async (event) => {
    event.preventDefault();
    const done = await attempt(() => api.post(`/bindings/${enc(vhost)}/e/${enc(source.value)}/q/${enc(name)}`,
      {routing_key: key.value, arguments: parseJson(args.value, 'arguments')}), 'Bound.');
    if (done !== undefined) onBound();
  }}, field('From exchange', source), field('Routing key', key), field('Arguments (JSON)', args),
  h('button', {type: 'submit'}, 'Bind'));
}

function publishForm(vhost, name) {
  const payload = h('textarea', {name: 'payload', rows: 3, placeholder: '{"hello": "world"}'});
  const headers = h('textarea', {name: 'headers', rows: 2, placeholder: '{"tenant": "acme"}'});
  const messageId = h('input', {name: 'message_id', placeholder: 'optional'});
  const persistent = h('input', {type: 'checkbox', checked: true});
  const form = h('form', {class: 'inline-form', 'data-testid': 'publish', onsubmit: async (event) => {
    event.preventDefault();
    await attempt(async () => {
      const properties = {delivery_mode: persistent.checked ? 2 : 1, headers: parseJson(headers.value, 'headers')};
      if (messageId.value) properties.message_id = messageId.value;
      const result = await api.post(`/exchanges/${enc(vhost)}/amq.default/publish`,
        {routing_key: name, payload: payload.value, payload_encoding: 'string', properties});
      if (!result.routed) throw new Error('The message was not routed.');
    }, 'Message published.');
  }},
  field('Payload', payload), field('Headers (JSON)', headers), field('Message id', messageId),
  field('Persistent', persistent), h('button', {type: 'submit', class: 'primary'}, 'Publish'));
  return h('details', {class: 'card'}, h('summary', {}, 'Publish a message'), form);
}

function peekForm(vhost, name) {
  const count = h('input', {type: 'number', min: 1, max: 1000, value: 10, 'aria-label': 'how many'});
  const out = h('div', {'data-testid': 'peeked'});
  const button = h('button', {class: 'primary', 'data-testid': 'peek', onclick: async () => {
    const docs = await attempt(() => api.get(`/mailslot/queues/${enc(vhost)}/${enc(name)}/peek${query({count: count.value, truncate: 50000})}`));
    if (docs) replace(out, docs.length ? docs.map((d) => messageCard(d)) : h('p', {class: 'muted'}, 'The queue has no ready messages.'));
  }}, 'Peek');
  return h('details', {class: 'card', open: true}, h('summary', {}, 'Peek at messages'),
    h('p', {class: 'muted'}, 'Shows the next messages in the order consumers would get them. Nothing is taken, nothing is marked redelivered.'),
    h('div', {class: 'toolbar'}, field('Messages', count), button), out);
}

function moveForm(vhost, name, onMoved) {
  const exchange = h('input', {name: 'exchange', placeholder: '(default exchange)'});
  const key = h('input', {name: 'routing_key', placeholder: 'target queue or key', required: true});
  const limit = h('input', {type: 'number', min: 1, placeholder: 'all'});
  const out = h('div', {'data-testid': 'move-result'});
  const send = async (dryRun) => {
    const body = {target: {exchange: exchange.value, routing_key: key.value}, dry_run: dryRun};
    if (limit.value) body.limit = Number(limit.value);
    const result = await attempt(() => api.post(`/mailslot/queues/${enc(vhost)}/${enc(name)}/move`, body));
    if (!result) return;
    if (dryRun) {
      out.textContent = `Dry run: ${num(result.matched)} selected, ${num(result.would_move)} would move, ${num(result.unroutable)} unroutable (would stay).`;
    } else {
      out.textContent = `Moving ${num(result.matched)} messages (redrive ${result.id}).`;
      onMoved();
    }
  };
  return h('details', {class: 'card'}, h('summary', {}, 'Move messages'),
    h('form', {class: 'inline-form', onsubmit: (e) => {
      e.preventDefault();
      send(false);
    }},
    field('To exchange', exchange), field('Routing key', key), field('At most', limit),
    h('button', {type: 'button', onclick: () => send(true)}, 'Dry run'),
    h('button', {type: 'submit', class: 'primary'}, 'Move')), out);
}

export function render(view) {
  const {vhost, name} = view.params;
  const base = `/queues/${enc(vhost)}/${enc(name)}`;
  const depth = new Chart({title: 'Depth', series: [{key: 'ready', label: 'ready'}, {key: 'unacked', label: 'unacked'}],
    format: num, testid: 'chart-depth'});
  const rates = new Chart({title: 'Rates', series: RATES.map(([key, label]) => ({key, label})), format: rate,
    testid: 'chart-queue-rates'});
  const stats = h('div', {class: 'stats', 'data-testid': 'queue-stats'});
  const consumers = h('div');
  const bindings = h('div');
  const settings = h('div');
  let live = null;
  const refresh = () => live && live.tick();
  const actions = h('div', {class: 'actions'},
    h('button', {class: 'danger', 'data-testid': 'purge', onclick: async () => {
      if (!window.confirm(`Purge every ready message of ${name}?`)) return;
      await attempt(() => api.del(`${base}/contents`), 'Queue purged.');
      refresh();
    }}, 'Purge'),
    h('button', {class: 'danger', 'data-testid': 'delete', onclick: async () => {
      if (!window.confirm(`Delete the queue ${name} and its messages?`)) return;
      const done = await attempt(() => api.del(base), 'Queue deleted.');
      if (done !== undefined) location.hash = '#/queues';
    }}, 'Delete'));
  append(view.main,
    h('p', {class: 'muted crumbs'}, h('a', {href: '#/queues'}, 'Queues'), ` › vhost ${vhost}`),
    h('h1', {class: 'name'}, name),
    actions, stats,
    h('div', {class: 'charts'}, depth.el, rates.el),
    peekForm(vhost, name),
    publishForm(vhost, name),
    moveForm(vhost, name, refresh),
    h('div', {class: 'grid-2'}, section('Consumers', consumers),
      section('Bindings', bindings, bindForm(vhost, name, () => { ticks = 0; refresh(); }))),
    section('Arguments and policy', settings));

  let ticks = 0;
  live = view.live(async (signal) => {
    const q = await api.get(base, {signal});
    if (ticks % BINDINGS_EVERY === 0) {
      replace(bindings, bindingsTable(await api.get(`${base}/bindings`, {signal}), () => { ticks = 0; refresh(); }));
    }
    ticks += 1;
    const sample = {};
    for (const [key] of RATES) sample[key] = get(q, `message_stats.${key}_details.rate`) || 0;
    depth.push({ready: q.messages_ready, unacked: q.messages_unacknowledged});
    rates.push(sample);
    const forecast = !q.messages_ready && q.full_seconds !== 0 ? 'empty' : q.full_seconds === 0 ? 'full' : q.full_seconds != null ? `full in ${duration(q.full_seconds)}`
      : q.drain_seconds != null ? `empty in ${duration(q.drain_seconds)}` : '–';
    replace(stats,
      stat('Ready', num(q.messages_ready), 'ready'),
      stat('Unacked', num(q.messages_unacknowledged), 'unacked'),
      stat('Consumers', num(q.consumers)),
      stat('Publish', rate(sample.publish)),
      stat('Deliver', rate(sample.deliver_get)),
      stat('Forecast', forecast, 'forecast'),
      stat('Memory', bytes(q.memory)));
    replace(consumers, consumersTable(q.consumer_details || []));
    const policyNames = [q.policy, q.operator_policy].filter(Boolean);
    replace(settings, kv([
      ['Type', q.type],
      ['Features', [q.durable ? 'durable' : 'transient', q.auto_delete ? 'auto-delete' : null, q.exclusive ? 'exclusive' : null]
        .filter(Boolean).join(', ')],
      ['Arguments', Object.keys(q.arguments || {}).length ? h('pre', {}, json(q.arguments)) : 'none'],
      ['Policy', policyNames.length ? policyNames.map((n) => pill(n, 'policy')) : 'none'],
      ['Effective policy definition', Object.keys(q.effective_policy_definition || {}).length
        ? h('pre', {'data-testid': 'effective-policy'}, json(q.effective_policy_definition)) : 'none'],
      ['Dead letters', q.arguments && q.arguments['x-dead-letter-exchange'] !== undefined
        ? `to exchange ${q.arguments['x-dead-letter-exchange'] || '(default)'}` : 'not dead-lettered'],
    ]));
  });
}
