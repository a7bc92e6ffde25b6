// Overview: the broker's rates, depths, connections, memory and disk against their alarm limits, live.

import {api} from '../api.js';
import {Chart} from '../chart.js';
import {append, bytes, duration, get, h, num, rate, replace} from '../dom.js';
import {isMonitor} from '../app.js';

const RATES = [
  ['publish', 'publish'], ['deliver_get', 'deliver'], ['ack', 'ack'], ['redeliver', 'redeliver'],
];

function stat(label, value, testid) {
  return h('div', {class: 'stat', 'data-testid': testid}, h('span', {class: 'label'}, label), h('b', {}, value));
}

export function render(view) {
  const monitor = isMonitor();
  const rates = new Chart({title: 'Message rates', series: RATES.map(([key, label]) => ({key, label})),
    format: rate, testid: 'chart-rates'});
  const queued = new Chart({title: 'Queued messages', series: [{key: 'ready', label: 'ready'},
    {key: 'unacked', label: 'unacked'}], format: num, testid: 'chart-queued'});
  const connections = new Chart({title: 'Connections', series: [{key: 'connections', label: 'connections'},
    {key: 'channels', label: 'channels'}, {key: 'consumers', label: 'consumers'}], format: num,
  testid: 'chart-connections'});
  const memory = new Chart({title: 'Memory', series: [{key: 'used', label: 'used'}], format: bytes,
    limit: {label: 'alarm at', value: 0}, testid: 'chart-memory'});
  const disk = new Chart({title: 'Free disk', series: [{key: 'free', label: 'free'}], format: bytes,
    limit: {label: 'alarm below', value: 0}, testid: 'chart-disk'});
  const alarms = h('div', {class: 'alarms', 'data-testid': 'alarms'});
  const totals = h('div', {class: 'stats', 'data-testid': 'totals'});
  const about = h('p', {class: 'muted about'});
  const charts = [rates.el, queued.el, connections.el];
  if (monitor) charts.push(memory.el, disk.el);
  append(view.main, h('h1', {}, 'Overview'), alarms, totals, h('div', {class: 'charts'}, charts), about);

  view.live(async (signal) => {
    const doc = await api.get('/overview', {signal});
    const node = monitor ? (await api.get('/nodes', {signal}))[0] : null;
    const stats = doc.message_stats || {};
    const sample = {};
    for (const [key] of RATES) sample[key] = get(stats, `${key}_details.rate`) || 0;
    rates.push(sample);
    const q = doc.queue_totals || {};
    queued.push({ready: q.messages_ready || 0, unacked: q.messages_unacknowledged || 0});
    const o = doc.object_totals || {};
    connections.push({connections: o.connections, channels: o.channels, consumers: o.consumers});
    replace(totals,
      stat('Ready', num(q.messages_ready), 'total-ready'),
      stat('Unacked', num(q.messages_unacknowledged), 'total-unacked'),
      stat('Publish', rate(sample.publish)),
      stat('Deliver', rate(sample.deliver_get)),
      stat('Connections', num(o.connections), 'total-connections'),
      stat('Queues', num(o.queues), 'total-queues'),
      stat('Exchanges', num(o.exchanges)),
      stat('Consumers', num(o.consumers)));
    const fired = [];
    if (node) {
      memory.setLimit({label: 'alarm at', value: node.mem_limit});
      memory.push({used: node.mem_used});
      disk.setLimit({label: 'alarm below', value: node.disk_free_limit});
      disk.push({free: node.disk_free});
      if (node.mem_alarm) fired.push(`Memory alarm: ${bytes(node.mem_used)} used, limit ${bytes(node.mem_limit)}. Publishers are blocked.`);
      if (node.disk_free_alarm) fired.push(`Disk alarm: ${bytes(node.disk_free)} free, limit ${bytes(node.disk_free_limit)}. Publishers are blocked.`);
    }
    replace(alarms, fired.map((text) => h('div', {class: 'alarm', role: 'alert'}, text)));
    about.textContent = `${doc.product_name} ${doc.product_version} on ${doc.node}` +
      (node ? ` · ${node.storage} · up ${duration(node.uptime / 1000)}` : '') +
      ` · speaks RabbitMQ ${doc.rabbitmq_version}'s management API`;
  });
}
