// Small hand-written SVG line charts: the last minute of one-second samples, kept by the page (the API
// gives the current value and rate; the history is what this browser tab has seen).

import {h, svg, replace} from './dom.js';

const W = 600;
const H = 150;
export const WINDOW = 60; // samples shown

export const COLORS = ['#2f6fde', '#1f9d55', '#e3a008', '#d64545', '#8e44ad', '#0e9aa7'];

function niceMax(value) {
  if (!(value > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) {
    if (value <= step * power) return step * power;
  }
  return 10 * power;
}

export class Chart {
  // series: [{key, label}]; format: value -> text; limit: {label, value} drawn as a dashed line
  constructor({title, series, format = String, limit = null, testid = null}) {
    this.series = series.map((s, i) => ({color: COLORS[i % COLORS.length], ...s}));
    this.format = format;
    this.limit = limit;
    this.samples = [];
    this.plot = svg('svg', {viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: 'none', class: 'plot',
      role: 'img', 'aria-label': title});
    this.scale = h('span', {class: 'scale'});
    this.legend = h('div', {class: 'legend'});
    this.el = h('figure', {class: 'chart', 'data-testid': testid},
      h('figcaption', {}, h('span', {class: 'title'}, title), this.scale),
      h('div', {class: 'plot-box'}, this.plot),
      this.legend);
    this.render();
  }

  push(values) {
    this.samples.push(values);
    if (this.samples.length > WINDOW) this.samples.shift();
    this.render();
  }

  setLimit(limit) {
    this.limit = limit;
  }

  render() {
    let max = 0;
    for (const sample of this.samples) {
      for (const s of this.series) max = Math.max(max, Number(sample[s.key]) || 0);
    }
    if (this.limit && this.limit.value > 0 && this.limit.value < max * 4) max = Math.max(max, this.limit.value);
    max = niceMax(max);
    const x = (i) => (W * (i + WINDOW - this.samples.length)) / (WINDOW - 1);
    const y = (v) => H - (H * (Number(v) || 0)) / max;
    const nodes = [0.25, 0.5, 0.75].map((f) =>
      svg('line', {x1: 0, x2: W, y1: H * f, y2: H * f, class: 'grid', 'vector-effect': 'non-scaling-stroke'}));
    if (this.limit && this.limit.value > 0 && this.limit.value <= max) {
      nodes.push(svg('line', {x1: 0, x2: W, y1: y(this.limit.value), y2: y(this.limit.value), class: 'limit',
        'vector-effect': 'non-scaling-stroke'}));
    }
    for (const s of this.series) {
      if (!this.samples.length) continue;
      const points = this.samples.map((sample, i) => `${x(i).toFixed(1)},${y(sample[s.key]).toFixed(1)}`);
      nodes.push(svg('polyline', {points: points.join(' '), fill: 'none', stroke: s.color, 'stroke-width': 2,
        'vector-effect': 'non-scaling-stroke', 'stroke-linejoin': 'round'}));
    }
    replace(this.plot, nodes);
    this.scale.textContent = `max ${this.format(max)}`;
    const last = this.samples[this.samples.length - 1] || {};
    const items = this.series.map((s) => h('span', {class: 'item'},
      svg('svg', {viewBox: '0 0 10 10', class: 'swatch'}, svg('rect', {width: 10, height: 10, rx: 2, fill: s.color})),
      `${s.label} `, h('b', {}, last[s.key] === undefined ? '–' : this.format(last[s.key]))));
    if (this.limit) items.push(h('span', {class: 'item limit-label'}, `${this.limit.label} `, h('b', {}, this.format(this.limit.value))));
    replace(this.legend, items);
  }
}
