/**
 * The front end of the `nbflow` comm for one notebook session: finds or accepts the kernel's
 * comm, keeps the last full state plus status deltas, and survives reloads (it asks the kernel
 * for the open comm and re-syncs), reconnects (re-sync) and kernel restarts (the kernel
 * announces itself again when `%load_ext nbflow` runs; until then the last state is kept and
 * marked as from an earlier kernel).
 */

import { ISessionContext } from '@jupyterlab/apputils';
import { Kernel, KernelMessage } from '@jupyterlab/services';
import { IDisposable } from '@lumino/disposable';
import { ISignal, Signal } from '@lumino/signaling';

import { loadViz } from './dag';
import {
  COMM_TARGET,
  ClientMessage,
  IDetails,
  IResultMessage,
  IStateMessage,
  Statuses,
  parseKernelMessage,
  syncMessage
} from './protocol';

export interface IFlowState {
  flow: string;
  graph: IStateMessage['graph'];
  statuses: Statuses;
  exporter: boolean;
}

export class FlowConnection implements IDisposable {
  constructor(sessionContext: ISessionContext) {
    this.sessionContext = sessionContext;
    sessionContext.kernelChanged.connect(this._onKernelChanged, this);
    void sessionContext.ready.then(() => this._attach(sessionContext.session?.kernel ?? null));
  }

  readonly sessionContext: ISessionContext;

  /** The full state was replaced (the graph may have changed). */
  get stateChanged(): ISignal<this, void> {
    return this._stateChanged;
  }

  /** Some steps changed status (the updates only). */
  get statusChanged(): ISignal<this, Statuses> {
    return this._statusChanged;
  }

  get detailsReceived(): ISignal<this, IDetails> {
    return this._detailsReceived;
  }

  get resultReceived(): ISignal<this, IResultMessage> {
    return this._resultReceived;
  }

  /** The comm is open (the kernel has nbflow loaded). */
  get connected(): boolean {
    return this._comm !== null;
  }

  /** The state is from a kernel that is gone (restarted); kept until the new one reports. */
  get outdated(): boolean {
    return this._outdated;
  }

  get state(): IFlowState | null {
    return this._state;
  }

  get isDisposed(): boolean {
    return this._disposed;
  }

  /** Send a message to the kernel; false when there is no comm. */
  send(msg: ClientMessage): boolean {
    const comm = this._comm;
    if (!comm || comm.isDisposed) {
      return false;
    }
    try {
      comm.send(msg as any);
      return true;
    } catch (error) {
      console.warn('nbflow: could not send to the kernel', error);
      return false;
    }
  }

  /** Ask for the full state again. */
  sync(): void {
    if (!this.send(syncMessage())) {
      void this._discover();
    }
  }

  dispose(): void {
    if (this._disposed) {
      return;
    }
    this._disposed = true;
    this._detachKernel();
    Signal.clearData(this);
  }

  // -- kernel ---------------------------------------------------------------------------------
  private _onKernelChanged(
    _: ISessionContext,
    change: { newValue: Kernel.IKernelConnection | null }
  ): void {
    this._attach(change.newValue);
  }

  private _attach(kernel: Kernel.IKernelConnection | null): void {
    if (kernel === this._kernel) {
      return;
    }
    this._detachKernel();
    this._kernel = kernel;
    if (!kernel || this._disposed) {
      this._markOutdated();
      return;
    }
    kernel.registerCommTarget(COMM_TARGET, this._onCommOpen);
    kernel.statusChanged.connect(this._onKernelStatus, this);
    kernel.connectionStatusChanged.connect(this._onConnectionStatus, this);
    void this._discover();
  }

  private _detachKernel(): void {
    const kernel = this._kernel;
    if (kernel && !kernel.isDisposed) {
      kernel.removeCommTarget(COMM_TARGET, this._onCommOpen);
      kernel.statusChanged.disconnect(this._onKernelStatus, this);
      kernel.connectionStatusChanged.disconnect(this._onConnectionStatus, this);
    }
    this._dropComm();
    this._kernel = null;
  }

  private _onKernelStatus(_: Kernel.IKernelConnection, status: Kernel.Status): void {
    if (status === 'restarting' || status === 'autorestarting' || status === 'dead') {
      this._dropComm();
      this._markOutdated();
    }
  }

  private _onConnectionStatus(
    _: Kernel.IKernelConnection,
    status: Kernel.ConnectionStatus
  ): void {
    if (status === 'connected') {
      // messages may have been lost while the socket was down
      this.sync();
    }
  }

  /** Adopt the comm the kernel already has open (after a page reload), if any. */
  private async _discover(): Promise<void> {
    const kernel = this._kernel;
    if (!kernel || this._comm || this._discovering) {
      return;
    }
    this._discovering = true;
    try {
      await kernel.info;
      const reply = await kernel.requestCommInfo({ target_name: COMM_TARGET });
      if (kernel !== this._kernel || this._comm || reply.content.status !== 'ok') {
        return;
      }
      const comms = reply.content.comms;
      const ids = Object.keys(comms).filter(id => comms[id].target_name === COMM_TARGET);
      const id = ids[ids.length - 1];
      if (!id || kernel.hasComm(id)) {
        return;
      }
      this._useComm(kernel.createComm(COMM_TARGET, id));
      this.send(syncMessage());
    } catch (error) {
      console.debug('nbflow: no comm found yet', error);
    } finally {
      this._discovering = false;
    }
  }

  private _onCommOpen = (comm: Kernel.IComm, msg: KernelMessage.ICommOpenMsg): void => {
    this._useComm(comm);
    this._handle(msg.content.data);
  };

  private _useComm(comm: Kernel.IComm): void {
    if (this._comm && this._comm !== comm) {
      this._dropComm();
    }
    // our messages may run flows: they belong on the main shell, after the running cell
    if ('commsOverSubshells' in comm) {
      (comm as any).commsOverSubshells = 'disabled';
    }
    comm.onMsg = msg => this._handle(msg.content.data);
    comm.onClose = () => {
      if (this._comm === comm) {
        this._comm = null;
        void this._discover();
      }
    };
    this._comm = comm;
  }

  private _dropComm(): void {
    const comm = this._comm;
    this._comm = null;
    if (comm && !comm.isDisposed) {
      // forget it without closing: the kernel's comm serves every open view
      comm.onMsg = () => undefined;
      comm.onClose = () => undefined;
      comm.dispose();
    }
  }

  private _markOutdated(): void {
    if (this._state && !this._outdated) {
      this._outdated = true;
      this._stateChanged.emit();
    }
  }

  private _handle(data: unknown): void {
    const msg = parseKernelMessage(data);
    if (!msg) {
      return;
    }
    switch (msg.type) {
      case 'state':
        if (!this._state) {
          // nbflow is loaded in this kernel: fetch Graphviz now, before a DAG is first shown
          const idle = (window as any).requestIdleCallback ?? ((f: () => void) => setTimeout(f, 200));
          idle(() => void loadViz().catch(() => undefined));
        }
        this._state = {
          flow: msg.flow,
          graph: msg.graph,
          statuses: { ...msg.statuses },
          exporter: Boolean(msg.exporter)
        };
        this._outdated = false;
        this._stateChanged.emit();
        break;
      case 'steps':
        if (this._state) {
          const graph = this._state.graph;
          this._state = {
            ...this._state,
            graph: { ...graph, steps: { ...graph.steps, ...msg.steps } }
          };
          this._stateChanged.emit();
        }
        break;
      case 'status':
        if (this._state) {
          Object.assign(this._state.statuses, msg.updates);
        }
        this._statusChanged.emit(msg.updates);
        break;
      case 'details':
        this._detailsReceived.emit(msg.details);
        break;
      case 'result':
        this._resultReceived.emit(msg);
        break;
    }
  }

  private _kernel: Kernel.IKernelConnection | null = null;
  private _comm: Kernel.IComm | null = null;
  private _state: IFlowState | null = null;
  private _outdated = false;
  private _disposed = false;
  private _discovering = false;
  private _stateChanged = new Signal<this, void>(this);
  private _statusChanged = new Signal<this, Statuses>(this);
  private _detailsReceived = new Signal<this, IDetails>(this);
  private _resultReceived = new Signal<this, IResultMessage>(this);
}

const connections = new WeakMap<ISessionContext, FlowConnection>();

/** The one connection of a session (shared by every view of the same notebook). */
export function connectionFor(sessionContext: ISessionContext): FlowConnection {
  let connection = connections.get(sessionContext);
  if (!connection || connection.isDisposed) {
    connection = new FlowConnection(sessionContext);
    connections.set(sessionContext, connection);
    sessionContext.disposed.connect(() => connection?.dispose());
  }
  return connection;
}
