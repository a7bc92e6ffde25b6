// A live list on one of the API's paged endpoints: the server sorts, filters by name and pages, so the
// browser holds one page whatever the number of objects.

import {api, query} from './api.js';
import {append, h, replace} from './dom.js';
import {pager, table} from './ui.js';

// options: {title, path (without query), columns, sort (default field), pageSize, filter (bool),
//           testid, empty, extra (a node under the list), rowKey}
export function pagedList(view, options) {
  const state = {page: 1, pageSize: options.pageSize || 50, name: '', sort: options.sort || 'name', reverse: false};
  const pages = h('div');
  const body = h('div', {class: 'list-body'});
  let live = null;
  const refresh = () => live && live.tick();
  const filter = options.filter === false ? null : h('input', {type: 'search', placeholder: 'Filter by name',
    'aria-label': 'filter by name', 'data-testid': 'filter'});
  if (filter) filterByName(view, filter, state, refresh);
  append(view.main, h('h1', {}, options.title), filter ? h('div', {class: 'toolbar'}, filter) : null, pages, body,
    options.extra || null);
  const sort = sortControl(state, refresh);
  live = view.live(async (signal) => {
    const ask = (page) => api.get(`${options.path}${query({page, page_size: state.pageSize, name: state.name,
      sort: state.sort, sort_reverse: state.reverse ? 'true' : ''})}`, {signal});
    let doc;
    try {
      doc = await ask(state.page);
    } catch (error) {
      if (error.error !== 'page_out_of_range' || state.page === 1) throw error;
      state.page = 1; // the list shrank under us
      doc = await ask(1);
    }
    replace(pages, pager(state, doc, (page) => {
      state.page = page;
      refresh();
    }));
    replace(body, table(options.columns, doc.items, {sort, testid: options.testid, empty: options.empty,
      rowKey: options.rowKey}));
  });
  return {refresh};
}

// What a table's headers need to sort on the server: the field and direction in `state` (a second click on
// the same field reverses it), back to page 1, then `refresh()`.
export function sortControl(state, refresh) {
  return {
    get field() { return state.sort; },
    get reverse() { return state.reverse; },
    onSort(field) {
      if (state.sort === field) state.reverse = !state.reverse;
      else Object.assign(state, {sort: field, reverse: false});
      state.page = 1;
      refresh();
    },
  };
}

// Typing in a name filter asks the server again a quarter second after the last key (back to page 1),
// not once per key; leaving the page cancels a pending ask.
export function filterByName(view, filter, state, refresh) {
  let debounce = null;
  filter.addEventListener('input', () => {
    clearTimeout(debounce);
    debounce = setTimeout(() => {
      state.name = filter.value;
      state.page = 1;
      refresh();
    }, 250);
  });
  view.onLeave(() => clearTimeout(debounce));
}
