import {append, h} from '../dom.js';

export function render(view) {
  append(view.main, h('p', {}, 'Coming soon.'));
}

export const list = render;
