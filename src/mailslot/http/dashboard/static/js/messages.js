// A message as a browse or a peek returns it: routing, properties, dead-letter history and the body,
// shown as text (JSON pretty-printed when it is JSON), never as markup.

import {h, json, num, duration, time} from './dom.js';
import {pill} from './ui.js';

export function body(doc) {
  if (doc.payload_json !== undefined) return h('pre', {class: 'body'}, json(doc.payload_json));
  const note = doc.payload_encoding === 'base64' ? ' (base64: not UTF-8 text)' : '';
  return h('div', {}, h('pre', {class: 'body'}, doc.payload), note ? h('span', {class: 'muted'}, note) : null);
}

export function deathTable(deaths) {
  if (!deaths || !deaths.length) return null;
  return h('table', {class: 'deaths'},
    h('thead', {}, h('tr', {}, ['queue', 'reason', 'count', 'exchange', 'routing keys', 'at'].map((t) => h('th', {}, t)))),
    h('tbody', {}, deaths.map((d) => h('tr', {},
      h('td', {}, d.queue), h('td', {}, d.reason), h('td', {class: 'num'}, num(d.count)), h('td', {}, d.exchange || '(default)'),
      h('td', {}, (d.routing_keys || []).join(', ')), h('td', {}, time(d.time))))));
}

export function messageCard(doc, {select = null} = {}) {
  const props = {...(doc.properties || {})};
  const headers = props.headers || {};
  delete props.headers;
  const shownHeaders = Object.fromEntries(Object.entries(headers).filter(([k]) => k !== 'x-death'));
  return h('article', {class: 'message', 'data-testid': 'message', 'data-id': doc.id},
    h('header', {},
      select,
      h('span', {}, 'position ', h('b', {}, num(doc.position))),
      h('span', {}, 'id ', h('b', {}, String(doc.id))),
      h('span', {}, 'routing key ', h('b', {class: 'name'}, doc.routing_key || '(none)')),
      h('span', {}, 'exchange ', h('b', {class: 'name'}, doc.exchange || '(default)')),
      h('span', {'data-testid': 'redelivered'}, 'redelivered ', h('b', {}, String(doc.redelivered))),
      doc.payload_bytes !== undefined ? h('span', {}, num(doc.payload_bytes), ' bytes') : null,
      doc.age_seconds !== null && doc.age_seconds !== undefined ? h('span', {}, 'age ', h('b', {}, duration(doc.age_seconds))) : null,
      doc.first_death ? pill(`died in ${doc.first_death.queue}: ${doc.first_death.reason}`, 'warn') : null),
    body(doc),
    Object.keys(props).length || Object.keys(shownHeaders).length
      ? h('details', {}, h('summary', {}, 'properties and headers'),
        h('pre', {}, json({...props, headers: shownHeaders})))
      : null,
    doc.x_death && doc.x_death.length ? h('details', {}, h('summary', {}, `x-death (${doc.x_death.length})`), deathTable(doc.x_death)) : null);
}
