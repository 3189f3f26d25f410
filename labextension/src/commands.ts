/**
 * Commands in the palette, the cell context menu and the notebook toolbar: run a step, rerun
 * from a step, run all stale steps (with a shortcut), invalidate a step, and export the
 * notebook to a flow script (only shown when the kernel reports an exporter).
 */

import { JupyterFrontEnd } from '@jupyterlab/application';
import { ICommandPalette, Notification } from '@jupyterlab/apputils';
import { DocumentRegistry } from '@jupyterlab/docregistry';
import { INotebookModel, INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { CommandToolbarButton } from '@jupyterlab/ui-components';
import { DisposableDelegate, IDisposable } from '@lumino/disposable';

import { stepsOfCell } from './badges';
import { FlowConnection, connectionFor } from './connection';
import { PANEL_ID } from './panel';
import { IResultMessage, StepCommand, exportMessage, runStaleMessage, stepMessage } from './protocol';

export namespace CommandIDs {
  export const runStep = 'nbflow:run-step';
  export const rerunFromStep = 'nbflow:rerun-from-step';
  export const runStale = 'nbflow:run-stale';
  export const invalidateStep = 'nbflow:invalidate-step';
  export const exportScript = 'nbflow:export-script';
  export const showPanel = 'nbflow:show-panel';
}

export const RUN_STALE_KEYS = ['Accel Shift Enter'];

const TOOLBAR: [string, string, string][] = [
  [CommandIDs.runStep, 'nbflow-run-step', '▶ Step'],
  [CommandIDs.rerunFromStep, 'nbflow-rerun-step', '⟲ From here'],
  [CommandIDs.runStale, 'nbflow-run-stale', '▶▶ Stale'],
  [CommandIDs.invalidateStep, 'nbflow-invalidate-step', '✗ Invalidate'],
  [CommandIDs.exportScript, 'nbflow-export-script', '⇩ Export']
];

function basename(path: string): string {
  const parts = path.split('/');
  return parts[parts.length - 1] ?? path;
}

export function registerCommands(
  app: JupyterFrontEnd,
  tracker: INotebookTracker,
  palette: ICommandPalette | null
): void {
  const { commands } = app;

  const current = (): { panel: NotebookPanel; connection: FlowConnection } | null => {
    const panel = tracker.currentWidget;
    if (!panel) {
      return null;
    }
    return { panel, connection: connectionFor(panel.sessionContext) };
  };

  /** The step of the active cell (the first, when the cell defines several). */
  const activeStep = (): { connection: FlowConnection; step: string } | null => {
    const cur = current();
    if (!cur || !cur.connection.connected) {
      return null;
    }
    const steps = stepsOfCell(cur.panel.content, cur.connection.state, cur.panel.content.activeCell);
    return steps.length ? { connection: cur.connection, step: steps[0] } : null;
  };

  const stepCommand = (id: string, type: StepCommand, label: string, caption: string) => {
    commands.addCommand(id, {
      label: args => {
        const step = activeStep()?.step;
        return args.isPalette || !step ? label : `${label} (${step})`;
      },
      caption,
      isEnabled: () => activeStep() !== null,
      execute: () => {
        const target = activeStep();
        if (target) {
          target.connection.send(stepMessage(type, target.step));
        }
      }
    });
  };

  stepCommand(
    CommandIDs.runStep,
    'run',
    'Run Step',
    'Bring the step of the active cell up to date (runs only what is stale)'
  );
  stepCommand(
    CommandIDs.rerunFromStep,
    'rerun',
    'Rerun from This Step',
    'Force the step of the active cell, then bring its descendants up to date'
  );
  stepCommand(
    CommandIDs.invalidateStep,
    'invalidate',
    'Invalidate Step',
    'Drop the cached result of the active cell’s step; it and its descendants become stale'
  );

  commands.addCommand(CommandIDs.runStale, {
    label: 'Run All Stale Steps',
    caption: 'Bring every step of the flow up to date (only stale steps run)',
    isEnabled: () => Boolean(current()?.connection.connected),
    execute: () => {
      current()?.connection.send(runStaleMessage());
    }
  });

  commands.addCommand(CommandIDs.exportScript, {
    label: 'Export Notebook to Flow Script',
    caption: 'Write this notebook as a flow script next to it',
    isVisible: () => Boolean(current()?.connection.state?.exporter),
    isEnabled: () => {
      const cur = current();
      return Boolean(cur?.connection.connected && cur.connection.state?.exporter);
    },
    execute: async () => {
      const cur = current();
      if (!cur) {
        return;
      }
      await cur.panel.context.save();
      cur.connection.send(exportMessage(basename(cur.panel.context.path)));
    }
  });

  commands.addCommand(CommandIDs.showPanel, {
    label: 'Show nbflow DAG Panel',
    execute: () => {
      app.shell.activateById(PANEL_ID);
    }
  });

  commands.addKeyBinding({
    command: CommandIDs.runStale,
    keys: RUN_STALE_KEYS,
    selector: '.jp-Notebook'
  });

  const all = [
    CommandIDs.runStep,
    CommandIDs.rerunFromStep,
    CommandIDs.runStale,
    CommandIDs.invalidateStep,
    CommandIDs.exportScript,
    CommandIDs.showPanel
  ];
  if (palette) {
    for (const command of all) {
      palette.addItem({ command, category: 'nbflow', args: { isPalette: true } });
    }
  }
  let rank = 40;
  for (const command of all.slice(0, 5)) {
    app.contextMenu.addItem({ command, selector: '.jp-Notebook .jp-Cell', rank: rank++ });
  }

  // enabled/visible states follow the active cell and the kernel's state
  const refresh = () => {
    for (const command of all) {
      commands.notifyCommandChanged(command);
    }
  };
  tracker.currentChanged.connect(refresh);
  tracker.activeCellChanged.connect(refresh);
  tracker.widgetAdded.connect((_, panel) => {
    const connection = connectionFor(panel.sessionContext);
    connection.stateChanged.connect(refresh);
    connection.resultReceived.connect((_c: FlowConnection, result: IResultMessage) => {
      if (!result.ok) {
        Notification.error(`nbflow ${result.request}: ${result.message}`, { autoClose: 8000 });
      } else if (result.request === 'export') {
        Notification.success(result.message, { autoClose: 5000 });
      }
    });
  });

  app.docRegistry.addWidgetExtension('Notebook', new ToolbarButtons(app));
}

class ToolbarButtons implements DocumentRegistry.IWidgetExtension<NotebookPanel, INotebookModel> {
  constructor(app: JupyterFrontEnd) {
    this._app = app;
  }

  createNew(panel: NotebookPanel): IDisposable {
    const buttons = TOOLBAR.map(([id, className, label]) => {
      const button = new CommandToolbarButton({ commands: this._app.commands, id, label });
      button.addClass(className);
      button.addClass('nbflow-toolbar-button');
      return button;
    });
    let index = 10;
    for (const button of buttons) {
      panel.toolbar.insertItem(index++, button.commandId, button);
    }
    return new DisposableDelegate(() => {
      for (const button of buttons) {
        button.dispose();
      }
    });
  }

  private _app: JupyterFrontEnd;
}
