/**
 * The ipywidgets model and view of `nbflow.widget.DagWidget`, drawn by the shared DAG view.
 *
 * Synced state: `dot`/`nodes` (layout source), `statuses` (full, synced when the flow is
 * quiet), `details` (the selected step). Status deltas arrive as custom `status` messages and
 * are applied at once; commands go to the kernel as protocol messages, validated there.
 */

import { DOMWidgetModel, DOMWidgetView } from '@jupyter-widgets/base';

import { DagGraph } from './dag';
import {
  IDetails,
  Statuses,
  WIDGET_MODULE,
  WIDGET_MODULE_VERSION,
  parseKernelMessage,
  stepMessage,
  syncMessage
} from './protocol';

export class DagModel extends DOMWidgetModel {
  defaults(): any {
    return {
      ...super.defaults(),
      _model_name: 'DagModel',
      _model_module: WIDGET_MODULE,
      _model_module_version: WIDGET_MODULE_VERSION,
      _view_name: 'DagView',
      _view_module: WIDGET_MODULE,
      _view_module_version: WIDGET_MODULE_VERSION,
      protocol_version: 1,
      flow_name: '',
      dot: '',
      nodes: [],
      steps: {},
      statuses: {},
      selected: '',
      details: {},
      message: '',
      height: ''
    };
  }

  initialize(attributes: any, options: any): void {
    super.initialize(attributes, options);
    this.on('msg:custom', this._onCustom, this);
  }

  private _onCustom(content: unknown): void {
    const msg = parseKernelMessage(content);
    if (!msg) {
      return;
    }
    if (msg.type === 'status') {
      // keep the model current for views created later, without marking it for a sync back
      const merged: Statuses = { ...(this.get('statuses') as Statuses), ...msg.updates };
      this.attributes['statuses'] = merged;
      this.trigger('nbflow:status', msg.updates);
    } else if (msg.type === 'result') {
      this.trigger('nbflow:result', msg);
    }
  }

  /** A view of this model asked the kernel for the current statuses. */
  synced = false;

  static model_name = 'DagModel';
  static model_module = WIDGET_MODULE;
  static model_module_version = WIDGET_MODULE_VERSION;
  static view_name = 'DagView';
  static view_module = WIDGET_MODULE;
  static view_module_version = WIDGET_MODULE_VERSION;
}

export class DagView extends DOMWidgetView {
  render(): void {
    this.el.classList.add('nbflow-widget');
    this._dag = new DagGraph({
      details: true,
      onSelect: step => this._send('details', step),
      onCommand: (command, step) => {
        this._dag?.setMessage(`${command} ${step}…`);
        this._send(command, step);
      }
    });
    this.el.appendChild(this._dag.node);
    this.listenTo(this.model, 'change:dot change:nodes', this._drawGraph);
    this.listenTo(this.model, 'change:statuses', () =>
      this._dag?.setStatuses(this.model.get('statuses') ?? {})
    );
    this.listenTo(this.model, 'nbflow:status', (updates: Statuses) =>
      this._dag?.updateStatuses(updates)
    );
    this.listenTo(this.model, 'change:details', this._showDetails);
    this.listenTo(this.model, 'change:message', () =>
      this._dag?.setMessage(this.model.get('message') ?? '', String(this.model.get('message')).startsWith('failed'))
    );
    this.listenTo(this.model, 'change:height', this._applyHeight);
    this._applyHeight();
    this._dag.setStatuses(this.model.get('statuses') ?? {});
    void this._drawGraph().then(() => this._showDetails());
    // the synced statuses may lag while steps run (a reloaded page): ask for the current ones
    const model = this.model as DagModel;
    if (!model.synced) {
      model.synced = true;
      this.model.send(syncMessage(), {});
    }
  }

  remove(): any {
    this._dag?.dispose();
    this._dag = null;
    return super.remove();
  }

  private async _drawGraph(): Promise<void> {
    const dag = this._dag;
    if (!dag) {
      return;
    }
    await dag.setGraph({ dot: this.model.get('dot') ?? '', nodes: this.model.get('nodes') ?? [] });
    dag.setStatuses(this.model.get('statuses') ?? {});
    this.el.dataset.rendered = dag.node.dataset.rendered ?? 'false';
  }

  private _showDetails(): void {
    const details = this.model.get('details') as IDetails | undefined;
    if (details && typeof details.step === 'string' && details.step) {
      this._dag?.setDetails(details);
    }
  }

  private _applyHeight(): void {
    const height = this.model.get('height');
    this._dag?.setHeight(typeof height === 'string' ? height : '');
  }

  private _send(type: 'details' | 'run' | 'rerun' | 'invalidate', step: string): void {
    this.model.send(stepMessage(type, step), {});
  }

  private _dag: DagGraph | null = null;
}
