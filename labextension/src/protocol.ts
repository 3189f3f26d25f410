/**
 * The messages between the kernel and the front end. Mirrors `nbflow/protocol.py`: the two
 * files change together, and PROTOCOL_VERSION is bumped on any incompatible change.
 *
 * Kernel -> front end: `state`, `status`, `details`, `result`.
 * Front end -> kernel: `sync`, `details`, `run`, `rerun`, `invalidate`, `run_stale`, `export`.
 */

export const PROTOCOL_VERSION = 1;
export const COMM_TARGET = 'nbflow';
export const WIDGET_MODULE = 'nbflow';
export const WIDGET_MODULE_VERSION = '0.1.0';

export type Status =
  | 'stale'
  | 'queued'
  | 'running'
  | 'cached'
  | 'done'
  | 'failed';

export const STATUSES: readonly Status[] = [
  'stale',
  'queued',
  'running',
  'cached',
  'done',
  'failed'
];

/** What a view shows for one step. */
export interface IStatusInfo {
  status: Status;
  time?: number | null;
  duration?: number | null;
  saved?: number | null;
  sizes?: { [output: string]: number };
  error?: string | null;
  cell_id?: string | null;
}

/** Static facts about one step. */
export interface IStepInfo {
  name: string;
  inputs: string[];
  outputs: string[];
  kind: string;
  doc: string | null;
  cell_id: string | null;
  cell_source: string | null;
}

/** DOT node `n{i}` is step `nodes[i]`. */
export interface IGraphInfo {
  dot: string;
  nodes: string[];
  steps: { [step: string]: IStepInfo };
}

export interface IDetails {
  step: string;
  code?: string;
  doc?: string | null;
  inputs?: string[];
  outputs?: string[];
  previews?: { [name: string]: string };
  status?: IStatusInfo;
  error?: string | null;
}

export type Statuses = { [step: string]: IStatusInfo };

// kernel -> front end
export interface IStateMessage {
  type: 'state';
  version: number;
  flow: string;
  graph: IGraphInfo;
  statuses: Statuses;
  exporter: boolean;
}

/** New facts of some steps (an edited cell's source): the drawing is unchanged. */
export interface IStepsMessage {
  type: 'steps';
  version: number;
  steps: { [step: string]: IStepInfo };
}

export interface IStatusMessage {
  type: 'status';
  version: number;
  updates: Statuses;
}

export interface IDetailsMessage {
  type: 'details';
  version: number;
  details: IDetails;
}

export interface IResultMessage {
  type: 'result';
  version: number;
  request: string;
  step: string | null;
  ok: boolean;
  message: string;
}

export type KernelMessage =
  | IStateMessage
  | IStepsMessage
  | IStatusMessage
  | IDetailsMessage
  | IResultMessage;

// front end -> kernel
export type StepCommand = 'details' | 'run' | 'rerun' | 'invalidate';

export type ClientMessage =
  | { type: 'sync'; version: number }
  | { type: StepCommand; version: number; step: string }
  | { type: 'run_stale'; version: number }
  | { type: 'export'; version: number; notebook: string };

export function syncMessage(): ClientMessage {
  return { type: 'sync', version: PROTOCOL_VERSION };
}

export function stepMessage(type: StepCommand, step: string): ClientMessage {
  return { type, version: PROTOCOL_VERSION, step };
}

export function runStaleMessage(): ClientMessage {
  return { type: 'run_stale', version: PROTOCOL_VERSION };
}

export function exportMessage(notebook: string): ClientMessage {
  return { type: 'export', version: PROTOCOL_VERSION, notebook };
}

function isObject(value: unknown): value is { [key: string]: unknown } {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * The message if it is a kernel message of this protocol version, else null (and a console
 * warning). Checks the envelope and the shapes the views rely on.
 */
export function parseKernelMessage(data: unknown): KernelMessage | null {
  if (!isObject(data)) {
    return null;
  }
  if (data.version !== PROTOCOL_VERSION) {
    console.warn(
      `nbflow: ignored a message of protocol version ${String(data.version)}; ` +
        `this front end speaks version ${PROTOCOL_VERSION}`
    );
    return null;
  }
  switch (data.type) {
    case 'state': {
      const graph = data.graph;
      if (
        isObject(graph) &&
        typeof graph.dot === 'string' &&
        Array.isArray(graph.nodes) &&
        isObject(graph.steps) &&
        isObject(data.statuses)
      ) {
        return data as unknown as IStateMessage;
      }
      break;
    }
    case 'steps':
      if (isObject(data.steps)) {
        return data as unknown as IStepsMessage;
      }
      break;
    case 'status':
      if (isObject(data.updates)) {
        return data as unknown as IStatusMessage;
      }
      break;
    case 'details':
      if (isObject(data.details) && typeof data.details.step === 'string') {
        return data as unknown as IDetailsMessage;
      }
      break;
    case 'result':
      if (typeof data.message === 'string') {
        return data as unknown as IResultMessage;
      }
      break;
  }
  console.warn('nbflow: ignored a malformed message', data);
  return null;
}

export const STATUS_ICONS: { [s in Status]: string } = {
  stale: '○',
  queued: '⋯',
  running: '◐',
  cached: '◆',
  done: '✓',
  failed: '✗'
};

export function isStatus(value: unknown): value is Status {
  return typeof value === 'string' && (STATUSES as string[]).includes(value);
}

export function formatSeconds(value: number | null | undefined): string {
  if (value === null || value === undefined || !isFinite(value)) {
    return '-';
  }
  if (value < 1) {
    return `${Math.round(value * 1000)} ms`;
  }
  if (value < 120) {
    return `${value < 10 ? value.toFixed(1) : Math.round(value)} s`;
  }
  return `${(value / 60).toFixed(1)} min`;
}

export function formatBytes(n: number): string {
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let size = n;
  let unit = 0;
  while (size >= 1024 && unit < units.length - 1) {
    size /= 1024;
    unit++;
  }
  return unit === 0 ? `${size} B` : `${size.toFixed(1)} ${units[unit]}`;
}

/** "cached (saved 12 s)", "done", ... */
export function statusText(info: IStatusInfo | undefined): string {
  if (!info) {
    return 'unknown';
  }
  if (info.status === 'cached' && typeof info.saved === 'number') {
    return `cached (saved ${formatSeconds(info.saved)})`;
  }
  return info.status;
}
