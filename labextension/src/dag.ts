/**
 * The DAG view shared by the notebook widget and the side panel.
 *
 * Graphviz (WebAssembly, @viz-js/viz, loaded on first use) lays out the DOT it is given; a
 * status change only toggles attributes and text on the existing SVG nodes, so it never
 * re-lays-out. Every user string (step names, variables, code, previews, tracebacks) goes into
 * the page as text (`textContent`), never as HTML.
 */

import type { Viz } from '@viz-js/viz';

import {
  IDetails,
  IGraphInfo,
  IStatusInfo,
  Status,
  STATUS_ICONS,
  STATUSES,
  Statuses,
  formatBytes,
  formatSeconds,
  isStatus,
  statusText
} from './protocol';

export type DagCommand = 'run' | 'rerun' | 'invalidate';

export interface IDagOptions {
  /** Show the details pane when a node is clicked (default true). */
  details?: boolean;
  /** Zoom with the plain mouse wheel; otherwise only with Ctrl/Cmd held (default false). */
  wheelZoom?: boolean;
  /** Fill the parent's height instead of sizing to the graph (default false). */
  fill?: boolean;
  /** A node was clicked (or activated with the keyboard). */
  onSelect?: (step: string) => void;
  /** A button of the details pane was pressed. */
  onCommand?: (command: DagCommand, step: string) => void;
}

interface INodeRef {
  g: SVGGElement;
  label: SVGTextElement | null;
}

interface IBox {
  x: number;
  y: number;
  w: number;
  h: number;
}

let vizPromise: Promise<Viz> | null = null;

/** The Graphviz instance, loaded (a separate chunk with inlined WebAssembly) on first use. */
export function loadViz(): Promise<Viz> {
  if (!vizPromise) {
    vizPromise = import('@viz-js/viz').then(m => m.instance());
    vizPromise.catch(() => {
      vizPromise = null;
    });
  }
  return vizPromise;
}

function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  className?: string,
  text?: string
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (className) {
    node.className = className;
  }
  if (text !== undefined) {
    node.textContent = text;
  }
  return node;
}

function now(): number {
  return performance.now();
}

const MIN_HEIGHT = 140;
const MAX_HEIGHT = 520;
const PT_TO_PX = 4 / 3;
/** Below this many pixels per point, 11 pt labels would be under 5 px: not drawn. */
const FAR_SCALE = 0.45;

export class DagGraph {
  readonly node: HTMLDivElement;

  constructor(options: IDagOptions = {}) {
    this._options = { details: true, wheelZoom: false, fill: false, ...options };
    this.node = el('div', 'nbflow-dag');
    if (this._options.fill) {
      this.node.classList.add('nbflow-dag-fill');
    }
    this.node.dataset.rendered = 'false';

    const toolbar = el('div', 'nbflow-dag-toolbar');
    const zoomOut = el('button', 'nbflow-dag-zoom-out', '−');
    zoomOut.title = 'Zoom out';
    zoomOut.onclick = () => this.zoom(1 / 1.25);
    const zoomIn = el('button', 'nbflow-dag-zoom-in', '+');
    zoomIn.title = 'Zoom in';
    zoomIn.onclick = () => this.zoom(1.25);
    const fit = el('button', 'nbflow-dag-fit', 'Fit');
    fit.title = 'Fit the whole graph in view';
    fit.onclick = () => this.fit();
    for (const b of [zoomOut, zoomIn, fit]) {
      b.type = 'button';
    }
    const legend = el('span', 'nbflow-dag-legend');
    for (const status of STATUSES) {
      const item = el(
        'span',
        'nbflow-legend-item',
        `${STATUS_ICONS[status]} ${status}`
      );
      item.dataset.status = status;
      legend.appendChild(item);
    }
    this._message = el('span', 'nbflow-dag-message');
    toolbar.append(zoomOut, zoomIn, fit, legend, this._message);

    this._viewport = el('div', 'nbflow-dag-viewport');
    this._viewport.tabIndex = -1;
    this._tooltip = el('div', 'nbflow-dag-tooltip');
    this._tooltip.hidden = true;
    this._viewport.appendChild(this._tooltip);

    this._details = el('div', 'nbflow-details');
    this._details.hidden = true;

    this.node.append(toolbar, this._viewport, this._details);
    this._listen();
    // keep a fitted view fitted when the area changes size (panel resize, first show)
    if (typeof ResizeObserver !== 'undefined') {
      this._resize = new ResizeObserver(() => {
        if (this._fitted) {
          this.fit();
        }
      });
      this._resize.observe(this._viewport);
    }
  }

  /** The step names in node order of the current layout. */
  get nodes(): readonly string[] {
    return this._nodes;
  }

  get selected(): string | null {
    return this._selected;
  }

  /** The SVG group of a step's node (for tests and hosts). */
  nodeElement(step: string): SVGGElement | null {
    return this._refs.get(step)?.g ?? null;
  }

  /**
   * Lay out and draw a graph. A graph equal to the drawn one is a no-op; while a layout is
   * under way a newer graph supersedes it.
   */
  async setGraph(graph: Pick<IGraphInfo, 'dot' | 'nodes'>): Promise<void> {
    const nodes = Array.isArray(graph.nodes) ? graph.nodes.map(String) : [];
    if (
      graph.dot === this._dot &&
      nodes.length === this._nodes.length &&
      nodes.every((n, i) => n === this._nodes[i])
    ) {
      return;
    }
    this._dot = graph.dot;
    this._nodes = nodes;
    const seq = ++this._seq;
    const started = now();
    if (!nodes.length || !graph.dot) {
      this._clear();
      this._setMessage('No steps yet');
      this.node.dataset.rendered = 'true';
      this.node.dataset.nodeCount = '0';
      return;
    }
    if (!this._svg) {
      this._setMessage(`Laying out ${nodes.length} steps…`);
    }
    let viz: Viz;
    try {
      viz = await loadViz();
    } catch (error) {
      this._setMessage(`Could not load Graphviz: ${String(error)}`, true);
      return;
    }
    if (seq !== this._seq) {
      return;
    }
    let svg: SVGSVGElement;
    const layoutStarted = now();
    try {
      svg = viz.renderSVGElement(graph.dot);
    } catch (error) {
      this._setMessage(`Could not lay out the graph: ${String(error)}`, true);
      return;
    }
    const layoutMs = now() - layoutStarted;
    this._install(svg);
    this._setMessage('');
    // timings, for benchmarks: layout alone, everything up to the drawn SVG, the next frame
    const data = this.node.dataset;
    data.rendered = 'true';
    data.nodeCount = String(nodes.length);
    data.layoutMs = layoutMs.toFixed(1);
    data.renderMs = (now() - started).toFixed(1);
    requestAnimationFrame(() => {
      if (seq === this._seq) {
        data.paintMs = (now() - started).toFixed(1);
      }
    });
  }

  /** Replace every status (unknown steps show as stale). */
  setStatuses(statuses: Statuses): void {
    this._statuses = { ...statuses };
    for (const step of this._refs.keys()) {
      this._apply(step);
    }
    this._refreshDetailsStatus();
  }

  /** Apply changed statuses only: attributes and text of existing nodes, no layout. */
  updateStatuses(updates: Statuses): void {
    for (const [step, info] of Object.entries(updates)) {
      this._statuses[step] = info;
      this._apply(step);
    }
    if (this._selected && this._selected in updates) {
      this._refreshDetailsStatus();
    }
  }

  /** Highlight a step and open its details pane (empty until `setDetails`). */
  select(step: string | null, notify = false): void {
    if (this._selected) {
      this._refs.get(this._selected)?.g.classList.remove('nbflow-selected');
    }
    this._selected = step && this._nodes.includes(step) ? step : null;
    if (!this._selected) {
      this._details.hidden = true;
      this._detailsData = null;
      return;
    }
    this._refs.get(this._selected)?.g.classList.add('nbflow-selected');
    if (this._options.details) {
      if (!this._detailsData || this._detailsData.step !== this._selected) {
        this._detailsData = null;
        this._renderDetails({ step: this._selected });
      }
    }
    if (notify) {
      this._options.onSelect?.(this._selected);
    }
  }

  /** Fill the details pane (ignored unless it is for the selected step). */
  setDetails(details: IDetails | null): void {
    if (!details || !details.step) {
      return;
    }
    if (this._selected !== details.step) {
      if (this._selected === null && this._nodes.includes(details.step)) {
        this.select(details.step);
      } else {
        return;
      }
    }
    this._detailsData = details;
    if (this._options.details) {
      this._renderDetails(details);
    }
  }

  /** A short line in the toolbar (command results, errors). */
  setMessage(text: string, error = false): void {
    this._setMessage(text, error);
  }

  /** A fixed CSS height for the graph area ("" = size to the graph). */
  setHeight(height: string): void {
    this._fixedHeight = height;
    if (height) {
      this._viewport.style.height = height;
    }
  }

  /** Show the whole graph (never magnified beyond its natural size), top-aligned. */
  fit(): void {
    if (!this._svg || !this._box) {
      return;
    }
    const box = this._box;
    const rect = this._viewport.getBoundingClientRect();
    if (rect.width < 2 || rect.height < 2) {
      this._view = { ...box };
    } else {
      const scale = Math.min(rect.width / box.w, rect.height / box.h, PT_TO_PX);
      const w = rect.width / scale;
      const h = rect.height / scale;
      this._view = { x: box.x - (w - box.w) / 2, y: box.y, w, h };
    }
    this._fitted = true;
    this._applyView();
  }

  /** Zoom by `factor` around a point in client coordinates (default: the centre). */
  zoom(factor: number, clientX?: number, clientY?: number): void {
    if (!this._svg || !this._box || !this._view) {
      return;
    }
    const rect = this._viewport.getBoundingClientRect();
    const { scale, ox, oy } = this._scale(rect);
    const px = (clientX ?? rect.left + rect.width / 2) - rect.left;
    const py = (clientY ?? rect.top + rect.height / 2) - rect.top;
    const sx = this._view.x + (px - ox) / scale;
    const sy = this._view.y + (py - oy) / scale;
    const minW = this._box.w / 40;
    const maxW = this._box.w * 4;
    const w = Math.min(maxW, Math.max(minW, this._view.w / factor));
    const f = this._view.w / w;
    const h = this._view.h / f;
    this._fitted = false;
    this._view = {
      x: sx - (sx - this._view.x) / f,
      y: sy - (sy - this._view.y) / f,
      w,
      h
    };
    this._applyView();
  }

  dispose(): void {
    this._resize?.disconnect();
    this._seq++;
    this._clear();
    this.node.remove();
  }

  // -- drawing --------------------------------------------------------------------------------
  private _install(svg: SVGSVGElement): void {
    // graphviz escapes labels; still, nothing active may come from a layout
    svg.querySelectorAll('script, foreignObject, a').forEach(n => {
      n.replaceWith(...Array.from(n.childNodes));
    });
    const vb = svg.viewBox.baseVal;
    const widthPt = parseFloat(svg.getAttribute('width') || '0');
    const heightPt = parseFloat(svg.getAttribute('height') || '0');
    this._box =
      vb && vb.width > 0
        ? { x: vb.x, y: vb.y, w: vb.width, h: vb.height }
        : { x: 0, y: 0, w: widthPt || 100, h: heightPt || 100 };
    svg.removeAttribute('width');
    svg.removeAttribute('height');
    svg.setAttribute('preserveAspectRatio', 'xMidYMid meet');
    svg.classList.add('nbflow-dag-svg');
    // the graph's own tooltip ("nbflow") would cover ours
    svg.querySelector(':scope > g > title')?.remove();

    const refs = new Map<string, INodeRef>();
    svg.querySelectorAll<SVGGElement>('g.node').forEach(g => {
      const title = g.querySelector('title');
      const id = title?.textContent ?? '';
      const step = this._nodeName(id);
      title?.remove();
      if (step === null) {
        return;
      }
      g.dataset.step = step;
      g.setAttribute('tabindex', '0');
      g.setAttribute('role', 'button');
      g.setAttribute('aria-label', `step ${step}`);
      const texts = g.querySelectorAll<SVGTextElement>('text');
      const label = texts.length >= 2 ? texts[texts.length - 1] : null;
      label?.classList.add('nbflow-node-status');
      if (texts.length) {
        texts[0].classList.add('nbflow-node-name');
      }
      refs.set(step, { g, label });
    });
    svg.querySelectorAll<SVGGElement>('g.edge').forEach(g => {
      const title = g.querySelector('title');
      if (title) {
        const [a, b] = (title.textContent ?? '').split('->');
        const from = this._nodeName(a ?? '') ?? a;
        const to = this._nodeName(b ?? '') ?? b;
        title.textContent = `${from} → ${to}`;
        g.dataset.from = from ?? '';
        g.dataset.to = to ?? '';
      }
    });

    const height = Math.round(this._box.h * PT_TO_PX) + 8;
    if (!this._options.fill && !this._fixedHeight) {
      this._viewport.style.height = `${Math.min(MAX_HEIGHT, Math.max(MIN_HEIGHT, height))}px`;
    }
    if (this._svg) {
      this._svg.replaceWith(svg);
    } else {
      this._viewport.insertBefore(svg, this._tooltip);
    }
    this._svg = svg;
    this._refs = refs;
    for (const step of refs.keys()) {
      this._apply(step);
    }
    const selected = this._selected;
    this._selected = null;
    this.select(selected);
    this.fit();
  }

  private _nodeName(id: string): string | null {
    const match = /^n(\d+)$/.exec(id.trim());
    if (!match) {
      return null;
    }
    return this._nodes[Number(match[1])] ?? null;
  }

  private _apply(step: string): void {
    const ref = this._refs.get(step);
    if (!ref) {
      return;
    }
    const info = this._statuses[step];
    const status: Status = info && isStatus(info.status) ? info.status : 'stale';
    if (ref.g.dataset.status !== status) {
      ref.g.dataset.status = status;
      ref.g.setAttribute('aria-label', `step ${step}: ${status}`);
    }
    if (ref.label) {
      const text = `${STATUS_ICONS[status]} ${status}`;
      if (ref.label.textContent !== text) {
        ref.label.textContent = text;
      }
    }
  }

  private _clear(): void {
    this._svg?.remove();
    this._svg = null;
    this._refs = new Map();
    this._box = null;
    this._view = null;
    this._tooltip.hidden = true;
    if (!this._options.fill && !this._fixedHeight) {
      this._viewport.style.height = `${MIN_HEIGHT / 2}px`;
    }
  }

  private _setMessage(text: string, error = false): void {
    this._message.textContent = text;
    this._message.classList.toggle('nbflow-error', error);
  }

  private _scale(rect: DOMRect): { scale: number; ox: number; oy: number } {
    const view = this._view ?? this._box ?? { x: 0, y: 0, w: 1, h: 1 };
    const scale = Math.min(rect.width / view.w, rect.height / view.h) || 1;
    return {
      scale,
      ox: (rect.width - view.w * scale) / 2,
      oy: (rect.height - view.h * scale) / 2
    };
  }

  private _applyView(): void {
    if (this._svg && this._view) {
      const v = this._view;
      this._svg.setAttribute('viewBox', `${v.x} ${v.y} ${v.w} ${v.h}`);
      // level of detail: text too small to read is not drawn (it is also what makes repaints
      // of a large graph expensive); colours and outlines still show every status
      const rect = this._viewport.getBoundingClientRect();
      const far = rect.width > 1 && this._scale(rect).scale < FAR_SCALE;
      this.node.classList.toggle('nbflow-dag-far', far);
    }
  }

  // -- interaction ----------------------------------------------------------------------------
  private _listen(): void {
    const vp = this._viewport;
    let drag: { x: number; y: number; view: IBox; moved: boolean } | null = null;

    vp.addEventListener('pointerdown', event => {
      if (event.button !== 0 || !this._view) {
        return;
      }
      drag = { x: event.clientX, y: event.clientY, view: { ...this._view }, moved: false };
    });
    vp.addEventListener('pointermove', event => {
      if (drag && this._view) {
        const dx = event.clientX - drag.x;
        const dy = event.clientY - drag.y;
        if (!drag.moved && Math.abs(dx) + Math.abs(dy) > 4) {
          drag.moved = true;
          vp.setPointerCapture(event.pointerId);
          vp.classList.add('nbflow-panning');
        }
        if (drag.moved) {
          const { scale } = this._scale(vp.getBoundingClientRect());
          this._fitted = false;
          this._view = { ...drag.view, x: drag.view.x - dx / scale, y: drag.view.y - dy / scale };
          this._applyView();
          this._tooltip.hidden = true;
          return;
        }
      }
      this._moveTooltip(event);
    });
    const endDrag = (event: PointerEvent) => {
      if (drag?.moved) {
        vp.releasePointerCapture?.(event.pointerId);
        vp.classList.remove('nbflow-panning');
        this._suppressClick = true;
        window.setTimeout(() => (this._suppressClick = false), 0);
      }
      drag = null;
    };
    vp.addEventListener('pointerup', endDrag);
    vp.addEventListener('pointercancel', endDrag);

    vp.addEventListener('click', event => {
      if (this._suppressClick) {
        return;
      }
      const step = this._stepAt(event.target);
      if (step) {
        this.select(step, true);
      }
    });
    vp.addEventListener('keydown', event => {
      const step = this._stepAt(event.target);
      if (step && (event.key === 'Enter' || event.key === ' ')) {
        event.preventDefault();
        this.select(step, true);
      }
    });
    vp.addEventListener(
      'wheel',
      event => {
        if (!this._svg || !(this._options.wheelZoom || event.ctrlKey || event.metaKey)) {
          return;
        }
        event.preventDefault();
        this.zoom(Math.exp(-event.deltaY / 300), event.clientX, event.clientY);
      },
      { passive: false }
    );
    vp.addEventListener('pointerover', event => {
      const step = this._stepAt(event.target);
      if (step) {
        this._showTooltip(step, event);
      }
    });
    vp.addEventListener('pointerout', event => {
      const from = this._stepAt(event.target);
      const to = this._stepAt(event.relatedTarget);
      if (from && from !== to) {
        this._tooltip.hidden = true;
      }
    });
    vp.addEventListener('dblclick', event => {
      if (!this._stepAt(event.target)) {
        this.fit();
      }
    });
  }

  private _stepAt(target: EventTarget | null): string | null {
    if (!(target instanceof Element)) {
      return null;
    }
    const g = target.closest('g.node') as SVGGElement | null;
    if (!g || !this._viewport.contains(g)) {
      return null;
    }
    return g.dataset.step ?? null;
  }

  private _showTooltip(step: string, event: PointerEvent): void {
    const info: IStatusInfo | undefined = this._statuses[step];
    const tip = this._tooltip;
    tip.replaceChildren();
    tip.appendChild(el('div', 'nbflow-tooltip-title', step));
    const status = info && isStatus(info.status) ? info.status : 'stale';
    const line = el('div', 'nbflow-tooltip-status', `${STATUS_ICONS[status]} ${statusText(info)}`);
    line.dataset.status = status;
    tip.appendChild(line);
    const rows: [string, string][] = [
      ['last run', formatSeconds(info?.duration)],
      ['saved by cache', status === 'cached' ? formatSeconds(info?.saved) : '-']
    ];
    const sizes = info?.sizes ?? {};
    const names = Object.keys(sizes);
    rows.push([
      'outputs',
      names.length ? names.map(n => `${n} ${formatBytes(sizes[n])}`).join(', ') : '-'
    ]);
    for (const [k, v] of rows) {
      const row = el('div', 'nbflow-tooltip-row');
      row.append(el('span', 'nbflow-tooltip-key', k), el('span', 'nbflow-tooltip-value', v));
      tip.appendChild(row);
    }
    if (status === 'failed' && info?.error) {
      const last = info.error.trim().split('\n').pop() ?? '';
      tip.appendChild(el('div', 'nbflow-tooltip-error', last));
    }
    tip.hidden = false;
    this._moveTooltip(event);
  }

  private _moveTooltip(event: PointerEvent): void {
    const tip = this._tooltip;
    if (tip.hidden) {
      return;
    }
    const rect = this._viewport.getBoundingClientRect();
    let x = event.clientX - rect.left + 14;
    let y = event.clientY - rect.top + 14;
    const w = tip.offsetWidth;
    const h = tip.offsetHeight;
    if (x + w > rect.width) {
      x = Math.max(0, event.clientX - rect.left - w - 10);
    }
    if (y + h > rect.height) {
      y = Math.max(0, event.clientY - rect.top - h - 10);
    }
    tip.style.left = `${x}px`;
    tip.style.top = `${y}px`;
  }

  // -- details pane ---------------------------------------------------------------------------
  private _renderDetails(details: IDetails): void {
    const pane = this._details;
    pane.replaceChildren();
    pane.hidden = false;
    pane.dataset.step = details.step;

    const header = el('div', 'nbflow-details-header');
    header.appendChild(el('span', 'nbflow-details-title', details.step));
    const chip = el('span', 'nbflow-details-status');
    header.appendChild(chip);
    const close = el('button', 'nbflow-details-close', '×');
    close.type = 'button';
    close.title = 'Close';
    close.onclick = () => this.select(null);
    header.appendChild(close);
    pane.appendChild(header);

    const actions = el('div', 'nbflow-details-actions');
    const buttons: [DagCommand, string, string][] = [
      ['run', 'Run', 'Bring this step up to date (runs only what is stale)'],
      ['rerun', 'Rerun from here', 'Force this step, then bring its descendants up to date'],
      ['invalidate', 'Invalidate', 'Drop the cached result; it and its descendants become stale']
    ];
    for (const [command, label, title] of buttons) {
      const b = el('button', `nbflow-action nbflow-action-${command}`, label);
      b.type = 'button';
      b.title = title;
      b.dataset.command = command;
      b.onclick = () => {
        if (this._selected) {
          this._options.onCommand?.(command, this._selected);
        }
      };
      actions.appendChild(b);
    }
    pane.appendChild(actions);

    if (details.doc) {
      pane.appendChild(el('div', 'nbflow-details-doc', details.doc));
    }
    if (details.inputs === undefined) {
      pane.appendChild(el('div', 'nbflow-details-loading', 'Loading…'));
    } else {
      const previews = details.previews ?? {};
      this._section(pane, 'Inputs', details.inputs, previews, 'nbflow-details-inputs');
      this._section(pane, 'Outputs', details.outputs ?? [], previews, 'nbflow-details-outputs');
      if (details.code) {
        pane.appendChild(el('div', 'nbflow-details-heading', 'Code'));
        pane.appendChild(el('pre', 'nbflow-details-code', details.code));
      }
    }
    this._refreshDetailsStatus();
  }

  private _section(
    pane: HTMLElement,
    title: string,
    names: string[],
    previews: { [name: string]: string },
    className: string
  ): void {
    pane.appendChild(el('div', 'nbflow-details-heading', title));
    const list = el('ul', `nbflow-details-vars ${className}`);
    if (!names.length) {
      list.appendChild(el('li', 'nbflow-details-none', 'none'));
    }
    for (const name of names) {
      const item = el('li');
      item.appendChild(el('code', 'nbflow-var-name', name));
      const preview = previews[name];
      item.appendChild(el('span', 'nbflow-var-preview', preview ?? '(not computed yet)'));
      list.appendChild(item);
    }
    pane.appendChild(list);
  }

  private _refreshDetailsStatus(): void {
    const step = this._selected;
    if (!step || this._details.hidden) {
      return;
    }
    const info = this._statuses[step] ?? this._detailsData?.status;
    const status = info && isStatus(info.status) ? info.status : 'stale';
    const chip = this._details.querySelector('.nbflow-details-status');
    if (chip) {
      chip.textContent = `${STATUS_ICONS[status]} ${statusText(info)}`;
      (chip as HTMLElement).dataset.status = status;
    }
    let figures = this._details.querySelector('.nbflow-details-figures');
    if (!figures) {
      figures = el('div', 'nbflow-details-figures');
      this._details.querySelector('.nbflow-details-header')?.after(figures);
    }
    const sizes = info?.sizes ?? {};
    const parts = [`last run ${formatSeconds(info?.duration)}`];
    if (status === 'cached') {
      parts.push(`saved ${formatSeconds(info?.saved)}`);
    }
    const names = Object.keys(sizes);
    if (names.length) {
      parts.push(names.map(n => `${n} ${formatBytes(sizes[n])}`).join(', '));
    }
    figures.textContent = parts.join(' · ');
    const error = status === 'failed' ? info?.error ?? this._detailsData?.error : null;
    let pre = this._details.querySelector('.nbflow-details-error');
    if (error) {
      if (!pre) {
        this._details.appendChild(el('div', 'nbflow-details-heading nbflow-details-error-heading', 'Error'));
        pre = el('pre', 'nbflow-details-error');
        this._details.appendChild(pre);
      }
      pre.textContent = error;
    } else if (pre) {
      this._details.querySelector('.nbflow-details-error-heading')?.remove();
      pre.remove();
    }
  }

  private _options: IDagOptions;
  private _viewport: HTMLDivElement;
  private _tooltip: HTMLDivElement;
  private _details: HTMLDivElement;
  private _message: HTMLSpanElement;
  private _dot = '';
  private _nodes: string[] = [];
  private _svg: SVGSVGElement | null = null;
  private _refs = new Map<string, INodeRef>();
  private _statuses: Statuses = {};
  private _selected: string | null = null;
  private _detailsData: IDetails | null = null;
  private _box: IBox | null = null;
  private _view: IBox | null = null;
  private _seq = 0;
  private _suppressClick = false;
  private _fixedHeight = '';
  private _fitted = true;
  private _resize: ResizeObserver | null = null;
}
