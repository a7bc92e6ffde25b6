// Building the page with DOM APIs only. Every string a child is becomes a text node (textContent), so a
// queue called "<img src=x onerror=...>" is shown as those characters and never parsed as HTML. Nothing
// in the dashboard assigns innerHTML.

const SVG_NS = 'http://www.w3.org/2000/svg';

function build(element, attrs, children) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') {
      element.addEventListener(key.slice(2), value);
    } else if (key === 'class') {
      element.setAttribute('class', Array.isArray(value) ? value.filter(Boolean).join(' ') : value);
    } else if (key === 'value' && 'value' in element) {
      element.value = value;
    } else if (key === 'checked' || key === 'disabled' || key === 'selected') {
      element[key] = Boolean(value);
    } else {
      element.setAttribute(key, value === true ? '' : String(value));
    }
  }
  append(element, children);
  return element;
}

export function append(element, ...children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

// h('a', {href: '#/x', class: 'y'}, 'text', otherNode)
export function h(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

export function svg(tag, attrs, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

export function clear(element) {
  element.replaceChildren();
  return element;
}

export function replace(element, ...children) {
  element.replaceChildren();
  return append(element, children);
}

// ---- formatting ----------------------------------------------------------------------------------------

const integer = new Intl.NumberFormat('en');
const decimal = new Intl.NumberFormat('en', {maximumFractionDigits: 1});

export function num(value) {
  if (value === undefined || value === null) return '–';
  return Number.isInteger(value) ? integer.format(value) : decimal.format(value);
}

export function rate(value) {
  if (value === undefined || value === null) return '–';
  return `${decimal.format(value)}/s`;
}

export function bytes(value) {
  if (value === undefined || value === null) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let n = value;
  let unit = 0;
  while (Math.abs(n) >= 1024 && unit < units.length - 1) {
    n /= 1024;
    unit += 1;
  }
  return `${unit ? decimal.format(n) : integer.format(n)} ${units[unit]}`;
}

export function duration(seconds) {
  if (seconds === undefined || seconds === null) return '–';
  if (seconds < 1) return seconds <= 0 ? 'now' : '<1s';
  const parts = [];
  let s = Math.round(seconds);
  for (const [unit, size] of [['d', 86400], ['h', 3600], ['m', 60], ['s', 1]]) {
    if (s >= size) {
      parts.push(`${Math.floor(s / size)}${unit}`);
      s %= size;
    }
    if (parts.length === 2) break;
  }
  return parts.join(' ');
}

export function time(epochSeconds) {
  if (epochSeconds === undefined || epochSeconds === null) return '–';
  const d = new Date(epochSeconds * 1000);
  const pad = (n, w = 2) => String(n).padStart(w, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

// A dotted path into a document: get(q, 'message_stats.publish_details.rate').
export function get(object, path) {
  let value = object;
  for (const key of path.split('.')) {
    if (value === undefined || value === null) return undefined;
    value = value[key];
  }
  return value;
}

export function json(value) {
  return JSON.stringify(value, null, 2);
}
