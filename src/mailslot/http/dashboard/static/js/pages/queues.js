// Queues: the API's server-side paging, sorting and name filter (so 100,000 queues cost one page), with
// depths, rates, consumers, the policy in force and the drain/fill forecasts, refreshed every second.

import {api, enc, query} from '../api.js';
import {append, duration, get, h, num, rate, replace} from '../dom.js';
import {currentVhost, href, vhostNames} from '../app.js';
import {attempt, field, parseJson, pager, pill, table} from '../ui.js';
import {filterByName, sortControl} from '../list.js';

// Kept while the tab lives, so coming back from a queue's page finds the same page, sort and filter.
const state = {page: 1, pageSize: 20, name: '', regex: false, sort: 'name', reverse: false};

const COLUMNS = 'name,vhost,type,durable,auto_delete,exclusive,state,policy,operator_policy,messages,' +
  'messages_ready,messages_unacknowledged,consumers,drain_seconds,full_seconds,arguments,' +
  'message_stats.publish_details.rate,message_stats.deliver_get_details.rate,message_stats.ack_details.rate';

function features(q) {
  const marks = [];
  if (q.durable) marks.push(pill('D', 'feature'));
  if (q.auto_delete) marks.push(pill('AD', 'feature'));
  if (q.exclusive) marks.push(pill('Excl', 'feature'));
  if (q.arguments && q.arguments['x-max-length'] !== undefined) marks.push(pill(`max ${num(q.arguments['x-max-length'])}`, 'feature'));
  if (q.arguments && q.arguments['x-dead-letter-exchange'] !== undefined) marks.push(pill('DLX', 'feature'));
  return marks;
}

function policy(q) {
  const names = [q.policy, q.operator_policy].filter(Boolean);
  return names.length ? names.map((n) => pill(n, 'policy')) : '–';
}

function forecast(q) {
  if (!q.messages_ready && q.full_seconds !== 0) return h('span', {class: 'muted'}, 'empty');
  if (q.full_seconds === 0) return pill('full', 'bad');
  if (q.full_seconds !== null && q.full_seconds !== undefined) return pill(`full in ${duration(q.full_seconds)}`, 'warn');
  if (q.drain_seconds !== null && q.drain_seconds !== undefined) return pill(`empty in ${duration(q.drain_seconds)}`, 'good');
  return '–';
}

export function columns(showVhost) {
  return [
    {label: 'Name', sort: 'name', render: (q) => h('a', {href: href('queue', q.vhost, q.name), class: 'name'}, q.name)},
    showVhost && {label: 'Vhost', key: 'vhost', sort: 'vhost', opt: true},
    {label: 'Features', render: features, opt: true},
    {label: 'Policy', render: policy, opt: true},
    {label: 'Ready', key: 'messages_ready', sort: 'messages_ready', num: true, render: (q) => num(q.messages_ready)},
    {label: 'Unacked', key: 'messages_unacknowledged', sort: 'messages_unacknowledged', num: true, opt: true,
      render: (q) => num(q.messages_unacknowledged)},
    {label: 'Total', sort: 'messages', num: true, render: (q) => num(q.messages), opt: true},
    {label: 'In', num: true, render: (q) => rate(get(q, 'message_stats.publish_details.rate') || 0)},
    {label: 'Out', num: true, render: (q) => rate(get(q, 'message_stats.deliver_get_details.rate') || 0), opt: true},
    {label: 'Ack', num: true, render: (q) => rate(get(q, 'message_stats.ack_details.rate') || 0), opt: true},
    {label: 'Consumers', key: 'consumers', sort: 'consumers', num: true},
    {label: 'Forecast', render: forecast},
  ].filter(Boolean);
}

function addQueueForm(refresh) {
  const vhosts = vhostNames().map((v) => h('option', {value: v, selected: v === (currentVhost() || '/')}, v));
  const name = h('input', {name: 'name', required: true, placeholder: 'orders'});
  const vhost = h('select', {name: 'vhost'}, vhosts);
  const durable = h('input', {type: 'checkbox', name: 'durable', checked: true});
  const args = h('textarea', {name: 'arguments', rows: 2, placeholder: '{"x-max-length": 10000}'});
  const form = h('form', {class: 'inline-form', onsubmit: async (event) => {
    event.preventDefault();
    await attempt(async () => {
      const body = {durable: durable.checked, auto_delete: false, arguments: parseJson(args.value, 'arguments')};
      await api.put(`/queues/${enc(vhost.value)}/${enc(name.value)}`, body);
      name.value = '';
      refresh();
    }, 'Queue declared.');
  }},
  field('Name', name), field('Vhost', vhost), field('Durable', durable), field('Arguments (JSON)', args),
  h('button', {type: 'submit', class: 'primary'}, 'Add queue'));
  return h('details', {class: 'card add'}, h('summary', {}, 'Add a queue'), form);
}

export function render(view) {
  const vhost = currentVhost();
  const filter = h('input', {type: 'search', placeholder: 'Filter by name', value: state.name,
    'aria-label': 'filter queues by name', 'data-testid': 'filter'});
  const regex = h('input', {type: 'checkbox', checked: state.regex, 'aria-label': 'regular expression'});
  const body = h('div', {class: 'list-body'});
  const pages = h('div');
  let live = null;
  const refresh = () => live && live.tick();
  filterByName(view, filter, state, refresh);
  regex.addEventListener('change', () => {
    state.regex = regex.checked;
    state.page = 1;
    refresh();
  });
  append(view.main,
    h('h1', {}, 'Queues', vhost ? h('small', {}, ` in ${vhost}`) : null),
    h('div', {class: 'toolbar'}, filter, h('label', {class: 'check'}, regex, ' regex')),
    pages, body, addQueueForm(refresh));

  const sort = sortControl(state, refresh);
  const go = (page) => {
    state.page = page;
    refresh();
  };

  live = view.live(async (signal) => {
    const path = `/queues${vhost ? `/${enc(vhost)}` : ''}${query({
      page: state.page, page_size: state.pageSize, name: state.name, use_regex: state.regex ? 'true' : '',
      sort: state.sort, sort_reverse: state.reverse ? 'true' : '', columns: COLUMNS})}`;
    let doc;
    try {
      doc = await api.get(path, {signal});
    } catch (error) {
      if (error.error === 'page_out_of_range' && state.page > 1) { // the list shrank under us
        state.page = 1;
        doc = await api.get(path.replace(/page=\d+/, 'page=1'), {signal});
      } else {
        throw error;
      }
    }
    replace(pages, pager(state, doc, go));
    replace(body, table(columns(!vhost), doc.items, {sort, testid: 'queues',
      rowKey: (q) => `${q.vhost}/${q.name}`, empty: state.name ? 'No queue matches.' : 'No queues yet.'}));
  });
}
