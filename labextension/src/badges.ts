/**
 * Status badges on step cells: step name + status in the prompt area, and a dimmed output while
 * a cell's step is stale.
 *
 * Badges live only in the DOM (never in cell metadata, so the notebook never gets dirty). The
 * statuses are kept in a map by cell id and re-applied whenever a cell is (re)created, scrolled
 * into view in a windowed notebook, or the state is re-synced from the kernel.
 */

import { Cell } from '@jupyterlab/cells';
import { CellList, Notebook, NotebookPanel } from '@jupyterlab/notebook';
import { IDisposable } from '@lumino/disposable';

import { FlowConnection, IFlowState } from './connection';
import { IStatusInfo, STATUS_ICONS, Statuses, formatSeconds, isStatus } from './protocol';

const BADGES_CLASS = 'nbflow-badges';
const STEP_CELL_CLASS = 'nbflow-step-cell';
const STALE_CELL_CLASS = 'nbflow-stale-cell';
const MAX_BADGES = 3;
/** Most urgent first: the summary badge of a many-step cell takes the most urgent status. */
const SEVERITY = ['failed', 'running', 'queued', 'stale', 'cached', 'done'];

function sourceOf(cell: Cell): string {
  try {
    return cell.model.sharedModel.getSource();
  } catch {
    return '';
  }
}

/**
 * Which steps each cell defines: by the cell id the kernel saw with the execute request, else
 * by matching the cell's source (front ends that send no cell id).
 */
export function cellSteps(notebook: Notebook, state: IFlowState | null): Map<string, string[]> {
  const result = new Map<string, string[]>();
  if (!state) {
    return result;
  }
  const ids = new Set<string>();
  for (const cell of notebook.widgets) {
    ids.add(cell.model.id);
  }
  let bySource: Map<string, string> | null = null;
  for (const step of state.graph.nodes) {
    const info = state.graph.steps[step];
    if (!info) {
      continue;
    }
    let cellId: string | null = info.cell_id && ids.has(info.cell_id) ? info.cell_id : null;
    if (!cellId && info.cell_source) {
      if (!bySource) {
        bySource = new Map();
        for (const cell of notebook.widgets) {
          const source = sourceOf(cell).trim();
          if (source && !bySource.has(source)) {
            bySource.set(source, cell.model.id);
          }
        }
      }
      cellId = bySource.get(info.cell_source.trim()) ?? null;
    }
    if (cellId) {
      const list = result.get(cellId) ?? [];
      list.push(step);
      result.set(cellId, list);
    }
  }
  return result;
}

/** The steps of a cell (empty when the cell defines none). */
export function stepsOfCell(
  notebook: Notebook,
  state: IFlowState | null,
  cell: Cell | null
): string[] {
  if (!cell) {
    return [];
  }
  return cellSteps(notebook, state).get(cell.model.id) ?? [];
}

function badgeText(info: IStatusInfo | undefined): { state: string; extra: string } {
  const status = info && isStatus(info.status) ? info.status : 'stale';
  const state = `${STATUS_ICONS[status]} ${status}`;
  if (status === 'cached' && typeof info?.saved === 'number') {
    return { state, extra: `(saved ${formatSeconds(info.saved)})` };
  }
  if ((status === 'done' || status === 'failed') && typeof info?.duration === 'number') {
    return { state, extra: `in ${formatSeconds(info.duration)}` };
  }
  return { state, extra: '' };
}

export class CellBadges implements IDisposable {
  constructor(panel: NotebookPanel, connection: FlowConnection) {
    this._panel = panel;
    this._connection = connection;
    connection.stateChanged.connect(this._onState, this);
    connection.statusChanged.connect(this._onStatus, this);
    const notebook = panel.content;
    this._cells = notebook.model?.cells ?? null;
    this._cells?.changed.connect(this._scheduleAll, this);
    notebook.modelChanged.connect(this._onModelChanged, this);
    notebook.cellInViewportChanged.connect(this._onCellInViewport, this);
    notebook.activeCellChanged.connect(this._onActiveCell, this);
    this._onState();
  }

  get isDisposed(): boolean {
    return this._disposed;
  }

  /** Recompute the cell map from the state and redraw every badge. */
  refresh(): void {
    this._onState();
  }

  dispose(): void {
    if (this._disposed) {
      return;
    }
    this._disposed = true;
    this._connection.stateChanged.disconnect(this._onState, this);
    this._connection.statusChanged.disconnect(this._onStatus, this);
    const notebook = this._panel.content;
    this._cells?.changed.disconnect(this._scheduleAll, this);
    notebook.modelChanged.disconnect(this._onModelChanged, this);
    notebook.cellInViewportChanged.disconnect(this._onCellInViewport, this);
    notebook.activeCellChanged.disconnect(this._onActiveCell, this);
    for (const cell of notebook.widgets) {
      this._remove(cell);
    }
  }

  private _onState(): void {
    const state = this._connection.state;
    if (state) {
      const map = cellSteps(this._panel.content, state);
      // a cell the kernel does not (yet) know keeps its last badge, marked as outdated: after
      // a restart the steps come back one by one as their cells run
      const next = new Map<string, Map<string, IStatusInfo>>();
      for (const [cellId, steps] of map) {
        const entries = new Map<string, IStatusInfo>();
        for (const step of steps) {
          entries.set(step, state.statuses[step] ?? { status: 'stale' });
        }
        next.set(cellId, entries);
      }
      for (const [cellId, entries] of this._badges) {
        if (!next.has(cellId)) {
          next.set(cellId, entries);
          this._old.add(cellId);
        }
      }
      for (const cellId of map.keys()) {
        this._old.delete(cellId);
      }
      this._badges = next;
      this._stepCell = new Map();
      for (const [cellId, steps] of map) {
        for (const step of steps) {
          this._stepCell.set(step, cellId);
        }
      }
    }
    if (this._connection.outdated) {
      for (const cellId of this._badges.keys()) {
        this._old.add(cellId);
      }
    }
    this._applyAll();
  }

  private _onStatus(_: FlowConnection, updates: Statuses): void {
    const touched = new Set<string>();
    let unknown = false;
    for (const [step, info] of Object.entries(updates)) {
      const cellId = this._stepCell.get(step);
      if (!cellId) {
        const info = this._connection.state?.graph.steps[step];
        unknown = unknown || Boolean(info && (info.cell_id || info.cell_source));
        continue;
      }
      this._badges.get(cellId)?.set(step, info);
      this._old.delete(cellId);
      touched.add(cellId);
    }
    if (unknown && this._connection.state) {
      // a step whose cell we have not placed yet (e.g. matched by source after an edit)
      this._onState();
      return;
    }
    if (!touched.size) {
      return;
    }
    for (const cell of this._panel.content.widgets) {
      if (touched.has(cell.model.id)) {
        this._apply(cell);
      }
    }
  }

  private _onModelChanged(): void {
    this._cells?.changed.disconnect(this._scheduleAll, this);
    this._cells = this._panel.content.model?.cells ?? null;
    this._cells?.changed.connect(this._scheduleAll, this);
    this._scheduleAll();
  }

  private _onCellInViewport(_: Notebook, cell: Cell): void {
    this._apply(cell);
  }

  private _onActiveCell(_: Notebook, cell: Cell | null): void {
    if (cell) {
      this._apply(cell);
    }
  }

  private _scheduleAll(): void {
    if (this._scheduled) {
      return;
    }
    this._scheduled = true;
    requestAnimationFrame(() => {
      this._scheduled = false;
      if (!this._disposed) {
        // cells may have been added or replaced: their ids may now match steps by source
        this._onState();
      }
    });
  }

  private _applyAll(): void {
    for (const cell of this._panel.content.widgets) {
      this._apply(cell);
    }
  }

  private _apply(cell: Cell): void {
    if (this._disposed) {
      return;
    }
    const entries = this._badges.get(cell.model.id);
    if (!entries || !entries.size) {
      this._remove(cell);
      return;
    }
    let box = cell.node.querySelector(`:scope > .${BADGES_CLASS}`) as HTMLDivElement | null;
    if (!box) {
      box = document.createElement('div');
      box.className = BADGES_CLASS;
      cell.node.appendChild(box);
    }
    const old = this._old.has(cell.model.id);
    box.classList.toggle('nbflow-badges-outdated', old);
    const existing = new Map<string, HTMLElement>();
    box.querySelectorAll<HTMLElement>(':scope > .nbflow-badge').forEach(b => {
      existing.set(b.dataset.step ?? '', b);
    });
    let stale = false;
    let index = 0;
    // a cell that defines many steps (a loop, a generated flow) shows a few and a summary
    const all = [...entries];
    const shown = all.length > MAX_BADGES ? all.slice(0, MAX_BADGES - 1) : all;
    for (const [, info] of all) {
      stale = stale || info.status === 'stale';
    }
    for (const [step, info] of shown) {
      const status = isStatus(info.status) ? info.status : 'stale';
      let badge = existing.get(step);
      existing.delete(step);
      if (!badge) {
        badge = document.createElement('div');
        badge.className = 'nbflow-badge';
        badge.dataset.step = step;
        const name = document.createElement('span');
        name.className = 'nbflow-badge-name';
        const state = document.createElement('span');
        state.className = 'nbflow-badge-status';
        const extra = document.createElement('span');
        extra.className = 'nbflow-badge-extra';
        badge.append(name, state, extra);
      }
      const text = badgeText(info);
      (badge.children[0] as HTMLElement).textContent = step;
      (badge.children[1] as HTMLElement).textContent = text.state;
      (badge.children[2] as HTMLElement).textContent = text.extra;
      badge.dataset.status = status;
      badge.title =
        `step ${step}: ${status}${text.extra ? ' ' + text.extra : ''}` +
        (old ? ' (from an earlier kernel session)' : '');
      if (box.children[index] !== badge) {
        box.insertBefore(badge, box.children[index] ?? null);
      }
      index++;
    }
    const summaryKey = '\u0000more';
    const rest = all.slice(shown.length);
    if (rest.length) {
      let summary = existing.get(summaryKey);
      existing.delete(summaryKey);
      if (!summary) {
        summary = document.createElement('div');
        summary.className = 'nbflow-badge nbflow-badge-summary';
        summary.dataset.step = summaryKey;
      }
      const worst = rest
        .map(([, info]) => (isStatus(info.status) ? info.status : 'stale'))
        .sort((a, b) => SEVERITY.indexOf(a) - SEVERITY.indexOf(b))[0];
      const counts = new Map<string, number>();
      for (const [, info] of rest) {
        counts.set(info.status, (counts.get(info.status) ?? 0) + 1);
      }
      summary.textContent = `+${rest.length} steps`;
      summary.dataset.status = worst;
      summary.title = [...counts].map(([st, n]) => `${n} ${st}`).join(', ');
      if (box.children[index] !== summary) {
        box.insertBefore(summary, box.children[index] ?? null);
      }
    }
    for (const badge of existing.values()) {
      badge.remove();
    }
    cell.node.classList.add(STEP_CELL_CLASS);
    cell.node.classList.toggle(STALE_CELL_CLASS, stale);
  }

  private _remove(cell: Cell): void {
    cell.node.querySelector(`:scope > .${BADGES_CLASS}`)?.remove();
    cell.node.classList.remove(STEP_CELL_CLASS, STALE_CELL_CLASS);
  }

  private _panel: NotebookPanel;
  private _cells: CellList | null = null;
  private _connection: FlowConnection;
  private _badges = new Map<string, Map<string, IStatusInfo>>();
  private _stepCell = new Map<string, string>();
  private _old = new Set<string>();
  private _scheduled = false;
  private _disposed = false;
}
