// Exchanges, connections, channels and consumers: live lists, and detail pages for an exchange and a
// connection (which an administrator, or its own user, may close).

import {api, enc} from '../api.js';
import {append, bytes, get, h, json, num, rate, replace, time} from '../dom.js';
import {currentVhost, href, vhostNames} from '../app.js';
import {pagedList} from '../list.js';
import {attempt, field, flash, kv, parseJson, pill, section, table} from '../ui.js';

function inVhost(path) {
  const vhost = currentVhost();
  return vhost ? `${path}/${enc(vhost)}` : path;
}

const vhostColumn = () => !currentVhost() && {label: 'Vhost', key: 'vhost', sort: 'vhost', opt: true};

function exchangeName(e) {
  return e.name || '(AMQP default)';
}

function addExchangeForm(refresh) {
  const name = h('input', {name: 'name', required: true});
  const vhost = h('select', {name: 'vhost'}, vhostNames().map((v) => h('option', {value: v, selected: v === (currentVhost() || '/')}, v)));
  const type = h('select', {name: 'type'}, ['direct', 'fanout', 'topic', 'headers', 'x-delayed-message']
    .map((t) => h('option', {value: t}, t)));
  const args = h('textarea', {rows: 2, placeholder: '{"alternate-exchange": "unrouted"}'});
  return h('details', {class: 'card add'}, h('summary', {}, 'Add an exchange'),
    h('form', {class: 'inline-form', onsubmit: async (event) => {
      event.preventDefault();
      await attempt(async () => {
        await api.put(`/exchanges/${enc(vhost.value)}/${enc(name.value)}`,
          {type: type.value, durable: true, auto_delete: false, internal: false, arguments: parseJson(args.value, 'arguments')});
        name.value = '';
        refresh();
      }, 'Exchange declared.');
    }}, field('Name', name), field('Vhost', vhost), field('Type', type), field('Arguments (JSON)', args),
    h('button', {type: 'submit', class: 'primary'}, 'Add exchange')));
}

export function exchanges(view) {
  let list = null;
  list = pagedList(view, {
    title: 'Exchanges', path: inVhost('/exchanges'), testid: 'exchanges', empty: 'No exchanges.',
    columns: [
      {label: 'Name', sort: 'name', render: (e) => h('a', {href: href('exchange', e.vhost, e.name || 'amq.default'), class: 'name'}, exchangeName(e))},
      vhostColumn(),
      {label: 'Type', key: 'type', sort: 'type'},
      {label: 'Features', opt: true, render: (e) => [e.durable && pill('D', 'feature'), e.auto_delete && pill('AD', 'feature'),
        e.internal && pill('I', 'feature'), Object.keys(e.arguments || {}).length ? pill('Args', 'feature') : null]},
      {label: 'In', num: true, render: (e) => rate(get(e, 'message_stats.publish_in_details.rate') || 0)},
      {label: 'Out', num: true, render: (e) => rate(get(e, 'message_stats.publish_out_details.rate') || 0)},
    ].filter(Boolean),
    extra: addExchangeForm(() => list && list.refresh()),
  });
}

export async function exchange(view) {
  const {vhost, name} = view.params;
  const base = `/exchanges/${enc(vhost)}/${enc(name)}`;
  const info = h('div');
  const outgoing = h('div');
  const key = h('input', {name: 'routing_key', placeholder: 'routing key'});
  const payload = h('textarea', {rows: 2, name: 'payload'});
  append(view.main, h('p', {class: 'muted'}, h('a', {href: '#/exchanges'}, 'Exchanges'), ` › vhost ${vhost}`),
    h('h1', {class: 'name'}, name === 'amq.default' ? '(AMQP default)' : name),
    section('Exchange', info), section('Bindings from here', outgoing),
    h('details', {class: 'card'}, h('summary', {}, 'Publish a message'),
      h('form', {class: 'inline-form', onsubmit: async (event) => {
        event.preventDefault();
        const result = await attempt(() => api.post(`${base}/publish`,
          {routing_key: key.value, payload: payload.value, payload_encoding: 'string', properties: {}}));
        if (result) flash(result.routed ? 'Published and routed.' : 'Published, but routed to no queue.', result.routed ? 'ok' : 'error');
      }}, field('Routing key', key), field('Payload', payload), h('button', {type: 'submit', class: 'primary'}, 'Publish'))),
    name === 'amq.default' || name.startsWith('amq.') ? null : h('div', {class: 'actions'},
      h('button', {class: 'danger', onclick: async () => {
        if (!window.confirm(`Delete the exchange ${name}?`)) return;
        if (await attempt(() => api.del(base), 'Exchange deleted.') !== undefined) location.hash = '#/exchanges';
      }}, 'Delete')));
  view.live(async (signal) => {
    const e = await api.get(base, {signal});
    replace(info, kv([['Type', e.type], ['Durable', String(e.durable)], ['Auto-delete', String(e.auto_delete)],
      ['Internal', String(e.internal)], ['Arguments', h('pre', {}, json(e.arguments || {}))],
      ['Publish in', rate(get(e, 'message_stats.publish_in_details.rate') || 0)],
      ['Publish out', rate(get(e, 'message_stats.publish_out_details.rate') || 0)]]));
    const bindings = name === 'amq.default' ? [] : await api.get(`${base}/bindings/source`, {signal});
    replace(outgoing, table([
      {label: 'To', render: (b) => h('a', {href: b.destination_type === 'queue' ? href('queue', b.vhost, b.destination)
        : href('exchange', b.vhost, b.destination), class: 'name'}, b.destination)},
      {label: 'Kind', key: 'destination_type'},
      {label: 'Routing key', render: (b) => h('span', {class: 'name'}, b.routing_key)},
    ], bindings, {empty: name === 'amq.default' ? 'Every queue, by its name.' : 'No bindings.'}));
  });
}

async function closeConnection(name, done) {
  if (!window.confirm(`Close the connection ${name}?`)) return;
  await attempt(() => api.del(`/connections/${enc(name)}`, {headers: {'X-Reason': 'Closed from the mailslot dashboard'}}),
    'Connection closed.');
  done();
}

export function connections(view) {
  let list = null;
  const refresh = () => list && list.refresh();
  list = pagedList(view, {
    title: 'Connections', path: currentVhost() ? `/vhosts/${enc(currentVhost())}/connections` : '/connections',
    testid: 'connections', empty: 'No connections.', rowKey: (c) => c.name,
    columns: [
      {label: 'Name', sort: 'name', render: (c) => h('a', {href: href('connection', c.name), class: 'name'}, c.name)},
      vhostColumn(),
      {label: 'User', key: 'user', sort: 'user'},
      {label: 'Client', opt: true, render: (c) => [get(c, 'client_properties.product'), get(c, 'client_properties.version')].filter(Boolean).join(' ')},
      {label: 'Channels', key: 'channels', num: true, sort: 'channels'},
      {label: 'State', key: 'state', opt: true},
      {label: 'From client', num: true, opt: true, render: (c) => `${bytes(get(c, 'recv_oct_details.rate') || 0)}/s`},
      {label: 'To client', num: true, opt: true, render: (c) => `${bytes(get(c, 'send_oct_details.rate') || 0)}/s`},
      {label: '', render: (c) => h('button', {class: 'danger', 'data-testid': 'close', onclick: () => closeConnection(c.name, refresh)}, 'Close')},
    ].filter(Boolean),
  });
}

export function connection(view) {
  const {name} = view.params;
  const info = h('div');
  const client = h('div');
  const channels = h('div');
  append(view.main, h('p', {class: 'muted'}, h('a', {href: '#/connections'}, 'Connections')),
    h('h1', {class: 'name'}, name),
    h('div', {class: 'actions'}, h('button', {class: 'danger', 'data-testid': 'close', onclick: () =>
      closeConnection(name, () => { location.hash = '#/connections'; })}, 'Close connection')),
    h('div', {class: 'grid-2'}, section('Connection', info), section('Client', client)),
    section('Channels', channels));
  view.live(async (signal) => {
    const c = await api.get(`/connections/${enc(name)}`, {signal});
    replace(info, kv([['User', c.user], ['Vhost', c.vhost], ['Protocol', c.protocol], ['State', c.state],
      ['Connected at', time(c.connected_at / 1000)], ['Heartbeat', `${c.timeout} s`], ['TLS', c.ssl ? c.ssl_protocol : 'no'],
      ['From client', `${bytes(get(c, 'recv_oct_details.rate') || 0)}/s`], ['To client', `${bytes(get(c, 'send_oct_details.rate') || 0)}/s`]]));
    replace(client, h('pre', {}, json(c.client_properties || {})));
    replace(channels, channelTable(await api.get(`/connections/${enc(name)}/channels`, {signal})));
  });
}

function channelColumns(sortable) {
  return [
    {label: 'Channel', sort: sortable && 'name', render: (c) => h('a', {href: href('channel', c.name), class: 'name'}, c.name)},
    {label: 'User', key: 'user', opt: true},
    {label: 'Mode', render: (c) => [c.confirm && pill('confirm'), c.transactional && pill('tx')]},
    {label: 'Prefetch', num: true, render: (c) => (c.prefetch_count ? num(c.prefetch_count) : 'unlimited')},
    {label: 'Unacked', key: 'messages_unacknowledged', num: true, sort: sortable && 'messages_unacknowledged'},
    {label: 'Consumers', key: 'consumer_count', num: true},
    {label: 'Publish', num: true, opt: true, render: (c) => rate(get(c, 'message_stats.publish_details.rate') || 0)},
    {label: 'Deliver', num: true, opt: true, render: (c) => rate(get(c, 'message_stats.deliver_get_details.rate') || 0)},
    {label: 'Ack', num: true, opt: true, render: (c) => rate(get(c, 'message_stats.ack_details.rate') || 0)},
  ];
}

function channelTable(rows) {
  return table(channelColumns(false), rows, {empty: 'No channels.', testid: 'channels'});
}

export function channels(view) {
  pagedList(view, {
    title: 'Channels', path: currentVhost() ? `/vhosts/${enc(currentVhost())}/channels` : '/channels',
    testid: 'channels', empty: 'No channels.', columns: channelColumns(true),
  });
}

export function channel(view) {
  const {name} = view.params;
  const info = h('div');
  const consumerBox = h('div');
  append(view.main, h('p', {class: 'muted'}, h('a', {href: '#/channels'}, 'Channels')),
    h('h1', {class: 'name'}, name), section('Channel', info), section('Consumers', consumerBox));
  view.live(async (signal) => {
    const c = await api.get(`/channels/${enc(name)}`, {signal});
    const connection = get(c, 'connection_details.name');
    replace(info, kv([['Connection', connection ? h('a', {href: href('connection', connection), class: 'name'}, connection) : '–'],
      ['User', c.user], ['Vhost', c.vhost], ['State', c.state],
      ['Mode', [c.confirm ? 'publisher confirms' : null, c.transactional ? 'transactional' : null].filter(Boolean).join(', ') || 'plain'],
      ['Prefetch', c.prefetch_count ? num(c.prefetch_count) : 'unlimited'],
      ['Global prefetch', c.global_prefetch_count ? num(c.global_prefetch_count) : 'unlimited'],
      ['Unacked', num(c.messages_unacknowledged)], ['Unconfirmed', num(c.messages_unconfirmed)],
      ['Publish', rate(get(c, 'message_stats.publish_details.rate') || 0)],
      ['Deliver', rate(get(c, 'message_stats.deliver_get_details.rate') || 0)],
      ['Ack', rate(get(c, 'message_stats.ack_details.rate') || 0)]]));
    replace(consumerBox, table([
      {label: 'Queue', render: (k) => h('a', {href: href('queue', k.queue.vhost, k.queue.name), class: 'name'}, k.queue.name)},
      {label: 'Consumer tag', render: (k) => h('span', {class: 'name'}, k.consumer_tag)},
      {label: 'Prefetch', num: true, render: (k) => (k.prefetch_count ? num(k.prefetch_count) : 'unlimited')},
      {label: 'Unacked', num: true, render: (k) => num(k.messages_unacknowledged)},
      {label: 'Ack', render: (k) => (k.ack_required ? 'manual' : 'auto')},
    ], c.consumer_details || [], {empty: 'No consumers on this channel.', testid: 'channel-consumers'}));
  });
}

export function consumers(view) {
  pagedList(view, {
    title: 'Consumers', path: inVhost('/consumers'), testid: 'consumers', empty: 'No consumers.', filter: false,
    sort: 'queue.name',
    columns: [
      {label: 'Queue', sort: 'queue.name', render: (c) => h('a', {href: href('queue', c.queue.vhost, c.queue.name), class: 'name'}, c.queue.name)},
      !currentVhost() && {label: 'Vhost', key: 'queue.vhost', opt: true},
      {label: 'Consumer tag', render: (c) => h('span', {class: 'name'}, c.consumer_tag)},
      {label: 'Channel', opt: true, render: (c) => h('a', {href: href('channel', get(c, 'channel_details.name')), class: 'name'},
        get(c, 'channel_details.name'))},
      {label: 'Prefetch', num: true, render: (c) => (c.prefetch_count ? num(c.prefetch_count) : 'unlimited')},
      {label: 'Unacked', num: true, render: (c) => num(c.messages_unacknowledged)},
      {label: 'Ack', render: (c) => (c.ack_required ? 'manual' : 'auto')},
      {label: 'Active', opt: true, render: (c) => (c.active ? 'yes' : 'no')},
    ].filter(Boolean),
  });
}
