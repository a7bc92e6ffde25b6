// Where is my message: tracing on or off per vhost, and a message's history (published by whom, routed
// where, delivered to which consumer, acked, requeued, dead-lettered...) by message id or header value.

import {api, enc, query} from '../api.js';
import {append, h, json, num, replace, time} from '../dom.js';
import {currentVhost, isAdmin, vhostNames} from '../app.js';
import {attempt, field, kv, pill, section} from '../ui.js';

const BAD = new Set(['rejected', 'expired', 'dead_lettered', 'dropped', 'requeued']);
const GOOD = new Set(['acked']);

function describe(e) {
  const on = e.connection ? ` on ${e.connection}` : '';
  switch (e.event) {
    case 'published':
      return `published${e.user ? ` by ${e.user}` : ''}${on || ' by the broker (API or redrive)'} to exchange ` +
        `'${e.exchange}' with key '${e.routing_key}' → ${e.queues && e.queues.length ? e.queues.join(', ') : 'no queue'}`;
    case 'delivered':
      return `delivered from ${e.queue} ${e.consumer_tag ? `to consumer ${e.consumer_tag}` : 'to a basic.get'}${on}` +
        `${e.redelivered ? ' (redelivered)' : ''}${e.no_ack ? ' (no ack)' : ''}`;
    case 'dead_lettered':
      return `dead-lettered from ${e.queue} (${e.reason}) to exchange '${e.dead_letter_exchange ?? ''}'`;
    default:
      return `${e.event.replace('_', ' ')}${e.queue ? ` in ${e.queue}` : ''}`;
  }
}

function history(item) {
  return h('article', {class: 'card', 'data-testid': 'history'},
    h('h2', {}, 'Message ', h('span', {class: 'name'}, item.message_id ?? '(no message id)')),
    kv([['Published to', `exchange '${item.exchange}' with routing key '${item.routing_key}'`],
      ['Headers', Object.keys(item.headers || {}).length ? h('pre', {}, json(item.headers)) : 'none'],
      item.events_dropped ? ['Events not kept', num(item.events_dropped)] : null].filter(Boolean)),
    h('ol', {class: 'timeline'}, item.events.map((e) => h('li', {class: BAD.has(e.event) ? 'bad' : GOOD.has(e.event) ? 'good' : null,
      'data-event': e.event}, h('span', {class: 'when'}, time(e.at)), describe(e)))));
}

export function render(view) {
  const vhosts = vhostNames();
  let vhost = currentVhost() || (vhosts.includes('/') ? '/' : vhosts[0]);
  const choose = h('select', {'aria-label': 'vhost', onchange: (e) => {
    vhost = e.target.value;
    live.tick();
  }}, vhosts.map((v) => h('option', {value: v, selected: v === vhost}, v)));
  const status = h('div', {'data-testid': 'trace-status'});
  const toggles = h('div', {class: 'actions'});
  const results = h('div', {'data-testid': 'trace-results'});
  const messageId = h('input', {name: 'message_id', placeholder: 'order-991'});
  const header = h('input', {name: 'header', placeholder: 'tenant=acme'});
  const form = h('form', {class: 'inline-form', 'data-testid': 'trace-lookup', onsubmit: async (event) => {
    event.preventDefault();
    const params = messageId.value ? {message_id: messageId.value} : {header: header.value};
    if (!params.message_id && !params.header) return;
    const doc = await attempt(() => api.get(`/mailslot/trace/${enc(vhost)}/messages${query({...params, limit: 20})}`));
    if (!doc) return;
    replace(results,
      doc.dropped_messages ? h('p', {class: 'muted'}, `${num(doc.dropped_messages)} older histories were dropped (capacity).`) : null,
      doc.items.length ? doc.items.map(history) : h('p', {class: 'muted', 'data-testid': 'no-history'},
        `No message with this ${params.message_id ? 'id' : 'header'} in the history of ${vhost}` +
        (doc.tracing ? '.' : ': tracing is off in this vhost.')));
  }}, field('Message id', messageId), h('span', {class: 'muted'}, 'or'), field('Header', header),
  h('button', {type: 'submit', class: 'primary'}, 'Look up'));

  append(view.main, h('h1', {}, 'Where is my message'),
    section('Tracing', h('div', {class: 'toolbar'}, field('Vhost', choose)), status, toggles),
    section('Look up a message', form, results));

  async function setTracing(on) {
    const current = await api.get(`/vhosts/${enc(vhost)}`);
    await api.put(`/vhosts/${enc(vhost)}`, {description: current.description || '', tags: current.tags || [],
      default_queue_type: current.default_queue_type, tracing: on});
    live.tick();
  }

  const live = view.live(async (signal) => {
    const s = await api.get(`/mailslot/trace/${enc(vhost)}`, {signal});
    replace(status, kv([
      ['Tracing', h('span', {'data-testid': 'tracing-state'}, pill(s.tracing ? 'on' : 'off', s.tracing ? 'good' : ''))],
      ['History', `${num(s.messages)} messages, ${num(s.events)} events (keeps the last ${num(s.capacity)} messages)`],
      ['Dropped', `${num(s.dropped_messages)} messages, ${num(s.dropped_events)} events`],
      ['On disk', s.archive ? `${s.archive.path}: ${num(s.archive.messages)} messages${s.archive.failed ? ' (failed: stopped)' : ''}` : 'no'],
    ]));
    replace(toggles, isAdmin() ? [
      h('button', {class: s.tracing ? 'danger' : 'primary', 'data-testid': 'toggle-tracing',
        onclick: () => attempt(() => setTracing(!s.tracing), s.tracing ? 'Tracing off.' : 'Tracing on.')},
      s.tracing ? 'Turn tracing off' : 'Turn tracing on'),
      s.tracing ? h('button', {onclick: () => attempt(async () => {
        await api.put(`/mailslot/trace/${enc(vhost)}`, {archive: !s.archive});
        live.tick();
      })}, s.archive ? 'Stop keeping it on disk' : 'Keep it on disk') : null,
    ] : h('p', {class: 'muted'}, 'An administrator turns tracing on and off.'));
  });
}
