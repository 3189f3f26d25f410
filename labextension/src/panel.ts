/**
 * The right side panel "nbflow": the live DAG of the active notebook's kernel, drawn by the
 * shared DAG view. It follows the active notebook; clicking a node scrolls to its cell and
 * opens the node's details.
 */

import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { Message } from '@lumino/messaging';
import { Widget } from '@lumino/widgets';

import { cellSteps } from './badges';
import { FlowConnection, connectionFor } from './connection';
import { DagCommand, DagGraph } from './dag';
import { IDetails, IResultMessage, Statuses, stepMessage } from './protocol';

export const PANEL_ID = 'nbflow-panel';

export class FlowPanel extends Widget {
  constructor(tracker: INotebookTracker) {
    super();
    this.id = PANEL_ID;
    this.addClass('nbflow-panel');
    this.title.label = 'nbflow';
    this.title.caption = 'nbflow: the live DAG of the active notebook';
    this._tracker = tracker;

    const header = document.createElement('div');
    header.className = 'nbflow-panel-header';
    this._heading = document.createElement('div');
    this._heading.className = 'nbflow-panel-title';
    this._note = document.createElement('div');
    this._note.className = 'nbflow-panel-note';
    header.append(this._heading, this._note);

    this._dag = new DagGraph({
      fill: true,
      wheelZoom: true,
      details: true,
      onSelect: step => this._onSelect(step),
      onCommand: (command, step) => this._onCommand(command, step)
    });
    this.node.append(header, this._dag.node);

    tracker.currentChanged.connect(this._follow, this);
    this._follow();
  }

  /** The notebook the panel shows. */
  get notebook(): NotebookPanel | null {
    return this._notebook;
  }

  get dag(): DagGraph {
    return this._dag;
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    this._tracker.currentChanged.disconnect(this._follow, this);
    this._setConnection(null);
    this._dag.dispose();
    super.dispose();
  }

  protected onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    this._render();
  }

  private _follow(): void {
    const panel = this._tracker.currentWidget;
    if (panel === this._notebook) {
      return;
    }
    this._notebook = panel;
    panel?.disposed.connect(() => {
      if (this._notebook === panel) {
        this._notebook = null;
        this._setConnection(null);
        this._render();
      }
    });
    this._setConnection(panel ? connectionFor(panel.sessionContext) : null);
    this._dag.select(null);
    this._render();
  }

  private _setConnection(connection: FlowConnection | null): void {
    const old = this._connection;
    if (old === connection) {
      return;
    }
    if (old && !old.isDisposed) {
      old.stateChanged.disconnect(this._render, this);
      old.statusChanged.disconnect(this._onStatus, this);
      old.detailsReceived.disconnect(this._onDetails, this);
      old.resultReceived.disconnect(this._onResult, this);
    }
    this._connection = connection;
    if (connection) {
      connection.stateChanged.connect(this._render, this);
      connection.statusChanged.connect(this._onStatus, this);
      connection.detailsReceived.connect(this._onDetails, this);
      connection.resultReceived.connect(this._onResult, this);
    }
  }

  private _render(): void {
    const panel = this._notebook;
    const state = this._connection?.state ?? null;
    this._heading.textContent = panel ? panel.title.label || panel.context.path : 'No notebook';
    let note = '';
    if (!panel) {
      note = 'Open a notebook to see its flow.';
    } else if (!state) {
      note = 'nbflow is not loaded in this kernel: run %load_ext nbflow.';
    } else if (this._connection?.outdated) {
      note = `Flow '${state.flow}' as last reported; the kernel has restarted.`;
    } else {
      const n = state.graph.nodes.length;
      note = `Flow '${state.flow}': ${n} step${n === 1 ? '' : 's'}.`;
    }
    this._note.textContent = note;
    this.node.dataset.connected = String(Boolean(this._connection?.connected));
    if (!this.isVisible) {
      return;
    }
    const graph = state?.graph ?? { dot: '', nodes: [] };
    void this._dag.setGraph(graph).then(() => {
      this._dag.setStatuses(this._connection?.state?.statuses ?? {});
    });
    this._dag.setStatuses(state?.statuses ?? {});
  }

  private _onStatus(_: FlowConnection, updates: Statuses): void {
    if (this.isVisible) {
      this._dag.updateStatuses(updates);
    }
  }

  private _onDetails(_: FlowConnection, details: IDetails): void {
    this._dag.setDetails(details);
  }

  private _onResult(_: FlowConnection, result: IResultMessage): void {
    this._dag.setMessage(result.ok ? result.message : `failed: ${result.message}`, !result.ok);
  }

  private _onSelect(step: string): void {
    this._connection?.send(stepMessage('details', step));
    void this._scrollToStep(step);
  }

  private _onCommand(command: DagCommand, step: string): void {
    this._dag.setMessage(`${command} ${step}…`);
    if (!this._connection?.send(stepMessage(command, step))) {
      this._dag.setMessage('The kernel has no nbflow comm: run %load_ext nbflow.', true);
    }
  }

  private async _scrollToStep(step: string): Promise<void> {
    const panel = this._notebook;
    const state = this._connection?.state ?? null;
    if (!panel || !state) {
      return;
    }
    const notebook = panel.content;
    for (const [cellId, steps] of cellSteps(notebook, state)) {
      if (!steps.includes(step)) {
        continue;
      }
      const index = notebook.widgets.findIndex(c => c.model.id === cellId);
      if (index < 0) {
        return;
      }
      notebook.activeCellIndex = index;
      notebook.mode = 'command';
      await notebook.scrollToCell(notebook.widgets[index], 'center');
      return;
    }
  }

  private _tracker: INotebookTracker;
  private _notebook: NotebookPanel | null = null;
  private _connection: FlowConnection | null = null;
  private _dag: DagGraph;
  private _heading: HTMLDivElement;
  private _note: HTMLDivElement;
}
