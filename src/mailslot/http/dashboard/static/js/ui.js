// Pieces the pages share: messages, tables (sortable headers), the pager, small forms.

import {h, replace, get, num} from './dom.js';

// ---- messages --------------------------------------------------------------------------------------------

let flashBox = null;

export function setFlashBox(element) {
  flashBox = element;
}

export function flash(text, kind = 'ok') {
  if (!flashBox) return;
  const item = h('div', {class: ['flash', kind], role: kind === 'error' ? 'alert' : 'status'}, text,
    h('button', {class: 'link close', 'aria-label': 'dismiss', onclick: () => item.remove()}, '×'));
  flashBox.append(item);
  setTimeout(() => item.remove(), kind === 'error' ? 10000 : 4000);
}

// Run an action, report its failure as a message (the API's reason) rather than an uncaught error.
export async function attempt(action, done) {
  try {
    const result = await action();
    if (done) flash(typeof done === 'function' ? done(result) : done);
    return result;
  } catch (error) {
    flash(error.message || String(error), 'error');
    return undefined;
  }
}

// ---- tables ------------------------------------------------------------------------------------------

// columns: [{label, key (dotted path), sort (server field), render(row) -> node|text, num, opt (hidden on
// phones)}]; sort: {field, reverse, onSort(field)}
export function table(columns, rows, {sort = null, empty = 'Nothing here.', rowKey = null, testid = null} = {}) {
  const head = h('tr', {}, columns.map((col) => {
    const classes = [col.num && 'num', col.opt && 'opt'];
    if (!sort || !col.sort) return h('th', {class: classes, scope: 'col'}, col.label);
    const active = sort.field === col.sort;
    const arrow = active ? (sort.reverse ? ' ▼' : ' ▲') : '';
    return h('th', {class: classes, scope: 'col', 'aria-sort': active ? (sort.reverse ? 'descending' : 'ascending') : 'none'},
      h('button', {class: 'sort', 'data-sort': col.sort, onclick: () => sort.onSort(col.sort)}, col.label, arrow));
  }));
  const body = rows.length
    ? rows.map((row) => h('tr', {'data-key': rowKey ? rowKey(row) : null}, columns.map((col) => {
      const value = col.render ? col.render(row) : get(row, col.key);
      return h('td', {class: [col.num && 'num', col.opt && 'opt'], 'data-label': col.label},
        value === undefined || value === null ? '–' : value);
    })))
    : [h('tr', {}, h('td', {colspan: columns.length, class: 'empty'}, empty))];
  return h('div', {class: 'table-wrap'}, h('table', {'data-testid': testid}, h('thead', {}, head), h('tbody', {}, body)));
}

export function pager(state, doc, onChange) {
  const {page, page_count: count, filtered_count: filtered, total_count: total} = doc;
  const go = (n) => () => onChange(n);
  const sizes = [20, 50, 100, 500].map((n) => h('option', {value: n, selected: n === state.pageSize}, `${n} a page`));
  return h('div', {class: 'pager'},
    h('button', {onclick: go(1), disabled: page <= 1, 'aria-label': 'first page'}, '«'),
    h('button', {onclick: go(page - 1), disabled: page <= 1, 'data-testid': 'prev'}, '‹ prev'),
    h('span', {class: 'page-of', 'data-testid': 'page-of'}, `page ${num(page)} of ${num(Math.max(count, 1))}`),
    h('button', {onclick: go(page + 1), disabled: page >= count, 'data-testid': 'next'}, 'next ›'),
    h('button', {onclick: go(count), disabled: page >= count, 'aria-label': 'last page'}, '»'),
    h('select', {'aria-label': 'page size', onchange: (e) => {
      state.pageSize = Number(e.target.value);
      onChange(1);
    }}, sizes),
    h('span', {class: 'muted', 'data-testid': 'counts'},
      filtered === total ? `${total.toLocaleString('en')} in all` : `${filtered.toLocaleString('en')} of ${total.toLocaleString('en')} match`));
}

// ---- forms ----------------------------------------------------------------------------------------------

export function field(label, input) {
  return h('label', {class: 'field'}, h('span', {}, label), input);
}

export function formValues(form) {
  return Object.fromEntries(new FormData(form).entries());
}

// A JSON object typed by the user ("" is {}): the API answers bad shapes with a 400 that names them.
export function parseJson(text, what) {
  if (!text || !text.trim()) return {};
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new Error(`${what}: not JSON (${error.message})`);
  }
}

export function section(title, ...children) {
  return h('section', {class: 'card'}, h('h2', {}, title), ...children);
}

export function kv(pairs) {
  return h('dl', {class: 'kv'}, pairs.flatMap(([key, value]) => [h('dt', {}, key), h('dd', {}, value ?? '–')]));
}

export function pill(text, kind = '') {
  return h('span', {class: ['pill', kind]}, text);
}

export function setBusy(button, busy) {
  button.disabled = busy;
}

export function tabs(items, active) {
  return h('nav', {class: 'tabs'}, items.map(([href, label]) =>
    h('a', {href, class: href === active ? 'active' : null, 'aria-current': href === active ? 'page' : null}, label)));
}

export {replace};
