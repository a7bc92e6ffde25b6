import {h} from '../dom.js';

export function render(view) {
  view.main.append(h('p', {}, 'Coming soon.'));
}

export const list = render;
