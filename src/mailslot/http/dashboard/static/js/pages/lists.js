import {h} from '../dom.js';

function soon(view) {
  view.main.append(h('p', {}, 'Coming soon.'));
}

export const exchanges = soon;
export const exchange = soon;
export const connections = soon;
export const connection = soon;
export const channels = soon;
export const consumers = soon;
