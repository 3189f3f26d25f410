/**
 * nbflow for JupyterLab 4 and Notebook 7: the DAG widget's model and view, status badges on
 * step cells, the "nbflow" side panel, and commands (palette, cell context menu, toolbar).
 */

import { IJupyterWidgetRegistry } from '@jupyter-widgets/base';
import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette } from '@jupyterlab/apputils';
import { INotebookTracker } from '@jupyterlab/notebook';

import { CellBadges } from './badges';
import { registerCommands } from './commands';
import { connectionFor } from './connection';
import { loadViz } from './dag';
import { FlowPanel } from './panel';
import { WIDGET_MODULE, WIDGET_MODULE_VERSION } from './protocol';

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'nbflow-labextension:plugin',
  description: 'Cell status badges, the nbflow DAG side panel and commands.',
  autoStart: true,
  requires: [INotebookTracker],
  optional: [ICommandPalette],
  activate: (
    app: JupyterFrontEnd,
    tracker: INotebookTracker,
    palette: ICommandPalette | null
  ) => {
    const panel = new FlowPanel(tracker);
    app.shell.add(panel, 'right', { rank: 900 });
    tracker.widgetAdded.connect((_, notebook) => {
      const badges = new CellBadges(notebook, connectionFor(notebook.sessionContext));
      notebook.disposed.connect(() => badges.dispose());
      // a notebook that uses nbflow will show a DAG: fetch Graphviz while the user reads
      void notebook.context.ready.then(() => {
        const cells = notebook.content.model?.cells;
        for (let i = 0; cells && i < cells.length; i++) {
          if (cells.get(i).sharedModel.getSource().includes('nbflow')) {
            const idle = (window as any).requestIdleCallback ?? ((f: () => void) => setTimeout(f, 500));
            idle(() => void loadViz().catch(() => undefined));
            break;
          }
        }
      });
    });
    registerCommands(app, tracker, palette);
    console.log('nbflow-labextension activated');
  }
};

const widgets: JupyterFrontEndPlugin<void> = {
  id: 'nbflow-labextension:widgets',
  description: 'The nbflow DAG widget.',
  autoStart: true,
  requires: [IJupyterWidgetRegistry],
  activate: (_app: JupyterFrontEnd, registry: IJupyterWidgetRegistry) => {
    registry.registerWidget({
      name: WIDGET_MODULE,
      version: WIDGET_MODULE_VERSION,
      exports: async () => {
        const { DagModel, DagView } = await import('./widget');
        return { DagModel, DagView } as any;
      }
    });
  }
};

export default [plugin, widgets];
